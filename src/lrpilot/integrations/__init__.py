"""Integrations with the tools people train with. Each module imports its framework lazily, on use.

* :mod:`lrpilot.integrations.logging` -- one logging hook (effective LR, angular velocity, drop events) with
  TensorBoard, CSV and callable sinks.
* :mod:`lrpilot.integrations.lightning` -- ``AutoDropCallback`` and ``ActiveLRCallback`` for ``lightning.Trainer``.
* :mod:`lrpilot.integrations.huggingface` -- ``AutoDropCallback`` for ``transformers.Trainer``.
"""
