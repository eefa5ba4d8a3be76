"""What a logger, the bench or a study reads from an optimizer and a scheduler: one protocol, one reader.

Two methods make the protocol; every lrpilot method answers them, and the readers below fall back to what
torch and the common LR-free optimizers expose for the others:

* an optimizer's ``effective_lr() -> list[EffectiveLR]``: per param group the learning rate actually applied,
  ``(mean, min, max)`` over the group's elements (the ActiveLR optimizers: ``lr`` x their multipliers);
* a scheduler's ``metrics() -> dict[str, float]``: what it measured and decided (AutoDrop: ``autodrop/omega``
  when the last ``step()`` measured an angle, ``autodrop/drops``, ``autodrop/threshold``); an optimizer that
  decides its own schedule answers it too (:class:`~lrpilot.Pilot`: ``pilot/d``, ``pilot/factor``, ...).

:func:`effective_lrs` and :func:`lrpilot_metrics` are the only readers: the bench records and the logging sinks
(:mod:`lrpilot.integrations.logging`, the Lightning and Hugging Face callbacks) all go through them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor
from torch.optim import Optimizer

__all__ = ["EffectiveLR", "effective_lrs", "lr_value", "lrpilot_metrics", "scheduler_metrics", "set_lr"]


class EffectiveLR(NamedTuple):
    """The learning rate actually applied in one param group: ``lr`` times the mean/min/max multiplier."""

    mean: float
    min: float
    max: float


def lr_value(lr: float | Tensor) -> float:
    """A param group's ``lr`` (a float or a 1-element tensor) as a Python float; a host sync for a CUDA tensor."""
    return float(lr.detach().cpu()) if isinstance(lr, Tensor) else float(lr)


def set_lr(group: dict[str, Any], lr: float | Tensor) -> None:
    """Set a param group's ``lr`` to ``lr``: in place for a tensor LR (a captured or compiled step keeps pointing
    at the same tensor), replaced for a float. :func:`lr_value` is its reading twin."""
    value = lr_value(lr)
    if isinstance(group["lr"], Tensor):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


def effective_lrs(optimizer: Optimizer) -> list[EffectiveLR]:
    """Per param group, the LR the optimizer applies.

    ``optimizer.effective_lr()`` when it has one (the protocol); otherwise ``lr x d`` for the D-Adaptation
    family (``d`` in the group: D-Adaptation, Prodigy), ``scheduled_lr`` for schedule-free optimizers (their
    warmup-scaled LR), and the group's ``lr`` for every other torch optimizer.
    """
    own = getattr(optimizer, "effective_lr", None)
    if callable(own):
        return [EffectiveLR(float(e[0]), float(e[1]), float(e[2])) for e in own()]
    out = []
    for group in optimizer.param_groups:
        if "d" in group:
            value = lr_value(group["d"]) * lr_value(group["lr"])
        elif "scheduled_lr" in group:
            value = lr_value(group["scheduled_lr"])
        else:
            value = lr_value(group["lr"])
        out.append(EffectiveLR(value, value, value))
    return out


def scheduler_metrics(scheduler: Any) -> dict[str, float]:
    """``scheduler.metrics()`` when the scheduler answers the protocol, else ``{}`` (torch's schedulers)."""
    own = getattr(scheduler, "metrics", None)
    return {name: float(value) for name, value in own().items()} if callable(own) else {}


def lrpilot_metrics(optimizer: Optimizer, scheduler: Any = None) -> dict[str, float]:
    """The numbers a logger should show for any optimizer and (optionally) a scheduler.

    ``lr/group{i}``: each group's effective LR (:func:`effective_lrs`: for ActiveLR optimizers ``lr`` x the mean
    multiplier), plus ``lr_min/group{i}`` and ``lr_max/group{i}`` for optimizers whose LR varies within a group;
    then the optimizer's own ``metrics()`` when it has one (Pilot: ``pilot/d``, ``pilot/factor``, ``pilot/drops``,
    ``pilot/skipped``, ``pilot/alignment``), then the scheduler's :func:`scheduler_metrics` (AutoDrop:
    ``autodrop/omega``, ``autodrop/drops``, ``autodrop/threshold``).
    """
    metrics: dict[str, float] = {}
    varies = callable(getattr(optimizer, "effective_lr", None))
    for i, eff in enumerate(effective_lrs(optimizer)):
        metrics[f"lr/group{i}"] = eff.mean
        if varies:
            metrics[f"lr_min/group{i}"] = eff.min
            metrics[f"lr_max/group{i}"] = eff.max
    own = getattr(optimizer, "metrics", None)  # an optimizer that decides its own schedule (Pilot)
    if callable(own):
        metrics.update({name: float(value) for name, value in own().items()})
    if scheduler is not None:
        metrics.update(scheduler_metrics(scheduler))
    return metrics
