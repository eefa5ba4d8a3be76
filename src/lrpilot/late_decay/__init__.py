"""Late learning-rate decay (Ren, Ma & Ying, arXiv 2401.11600, AISTATS 2024).

* :mod:`lrpilot.late_decay.toy` -- the paper's nonlinear toy model ``f(x; w) = ||w||^gamma <w, x>``, label-noise
  SGD vectorised over runs, the decay-time sweep and the reproduction's pass criteria.
* :mod:`lrpilot.late_decay.trajectory` -- :class:`TrajectoryRecorder`, :class:`PCAPlane` and
  :func:`loss_surface`: where a real network's training went, and the loss landscape on that plane.
* :mod:`lrpilot.late_decay.branches` -- :func:`decay_branches`: decay the LR at several epochs of one run.
"""

from . import toy
from .branches import Branch, decay_branches, snapshot
from .toy import CONFIG_A, CONFIG_B, ToyConfig, branch_experiment, check_criteria, run_reproduction
from .trajectory import PCAPlane, TrajectoryRecorder, loss_surface

__all__ = [
    "CONFIG_A",
    "CONFIG_B",
    "Branch",
    "PCAPlane",
    "ToyConfig",
    "TrajectoryRecorder",
    "branch_experiment",
    "check_criteria",
    "decay_branches",
    "loss_surface",
    "run_reproduction",
    "snapshot",
    "toy",
]
