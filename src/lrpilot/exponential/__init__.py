"""Exponential learning-rate schedules (Li & Arora, "An Exponential Learning Rate Schedule for Deep Learning",
arXiv 1910.07454, ICLR 2020).

On a scale-invariant network (every trained weight followed by normalization, normalization affine
parameters and output layer fixed), SGD with momentum, weight decay and any LR schedule computes the same
functions as SGD with momentum, *no* weight decay and an exponentially growing LR.

* :mod:`.schedule` -- the arithmetic: :func:`growth_factor` (Theorem 1.1's alpha) and its existence condition,
  :func:`exponential_schedule` / :func:`texp_schedule` (the per-step LR sequence, exact or the paper's closed
  form, with the initial momentum buffer).
* :mod:`.scheduler` -- :class:`TEXP` (step decay) and :class:`ExpLR` (any per-step schedule), per-step
  ``LRScheduler`` s for plain SGD, with renormalisation against float overflow.
* :mod:`.invariance` -- :func:`check_scale_invariance` and :func:`make_scale_invariant`.

See ``docs/exponential.md``.
"""

from .invariance import (
    NORM_TYPES,
    ScaleInvarianceReport,
    ScaleInvariantChanges,
    check_scale_invariance,
    make_scale_invariant,
)
from .schedule import (
    MODES,
    ExpSchedule,
    exponential_schedule,
    growth_factor,
    initial_buffer_coefficient,
    max_weight_decay_lr,
    step_decay_lrs,
    texp_schedule,
)
from .scheduler import TEXP, ExpLR

__all__ = [
    "MODES",
    "NORM_TYPES",
    "TEXP",
    "ExpLR",
    "ExpSchedule",
    "ScaleInvarianceReport",
    "ScaleInvariantChanges",
    "check_scale_invariance",
    "exponential_schedule",
    "growth_factor",
    "initial_buffer_coefficient",
    "make_scale_invariant",
    "max_weight_decay_lr",
    "step_decay_lrs",
    "texp_schedule",
]
