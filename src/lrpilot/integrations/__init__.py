"""Integrations with the tools people train with. Each module imports its framework lazily, on use.

* :mod:`lrpilot.integrations.logging` -- one logging hook (effective LR, angular velocity, AutoDrop's drops and
  Pilot's decisions) with TensorBoard, CSV and callable sinks.
* :mod:`lrpilot.integrations.lightning` -- ``AutoDropCallback``, ``ActiveLRCallback`` and ``PilotCallback`` for
  ``lightning.Trainer``.
* :mod:`lrpilot.integrations.huggingface` -- ``AutoDropCallback``, ``ActiveLRCallback`` and ``PilotCallback`` for
  ``transformers.Trainer``.
"""
