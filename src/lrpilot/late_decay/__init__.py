"""Late learning-rate decay (Ren, Ma & Ying, arXiv 2401.11600, AISTATS 2024): the measuring tools.

* :mod:`lrpilot.late_decay.toy` -- the paper's nonlinear toy model ``f(x; w) = ||w||^gamma <w, x>``, label-noise
  SGD vectorised over runs, the decay-time branch experiment and the drift-time law.
* :mod:`lrpilot.late_decay.trajectory` -- :class:`TrajectoryRecorder`, :class:`PCAPlane` and
  :func:`loss_surface`: where a real network's training went, and the loss landscape on that plane.
* :mod:`lrpilot.late_decay.branches` -- :func:`decay_branches`: decay the LR at several epochs of one run.

The reproduction built from them (the toy model's pass criteria, the MNIST-1D study and the report of
``lrpilot late-decay``) is a study, :mod:`lrpilot.bench.studies.late_decay`; ``check_criteria`` and
``run_reproduction``, importable from here before, still are, with a ``DeprecationWarning``.
"""

from typing import Any

from . import toy
from .branches import Branch, decay_branches, snapshot
from .toy import CONFIG_A, CONFIG_B, ToyConfig, branch_experiment
from .trajectory import PCAPlane, TrajectoryRecorder, loss_surface

__all__ = [
    "CONFIG_A",
    "CONFIG_B",
    "Branch",
    "PCAPlane",
    "ToyConfig",
    "TrajectoryRecorder",
    "branch_experiment",
    "decay_branches",
    "loss_surface",
    "snapshot",
    "toy",
]


def __getattr__(name: str) -> Any:
    """Deprecated aliases of the names that moved to :mod:`lrpilot.bench.studies.late_decay`."""
    return toy._moved(__name__, name)
