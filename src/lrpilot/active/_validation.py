"""Argument checks of the ActiveLR optimizers: each raises ``TypeError``/``ValueError`` naming the argument and
the value, before anything is built or changed (on top of :func:`lrpilot._validation.check_number`)."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from .._validation import check_betas, check_number

__all__ = [
    "check_active_args",
    "check_betas",
    "check_bool",
    "check_foreach_lr",
    "check_lr",
    "check_number",
    "check_steps_per_epoch",
    "check_unsupported",
    "describe",
]


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def check_lr(lr: Any) -> None:
    """A float >= 0 or a 1-element tensor >= 0 (as ``torch.optim``)."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(f"lr as a Tensor must have 1 element, got shape {tuple(lr.shape)}")
        if not lr.is_floating_point():
            raise ValueError(f"lr as a Tensor must be floating point, got dtype {lr.dtype}")
        value = float(lr.detach().cpu())  # construction time only, not the hot path
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"lr must be finite and >= 0, got {lr!r}")
        return
    check_number("lr", lr, low=0.0)


def check_unsupported(differentiable: Any, fused: Any) -> None:
    if differentiable is not False:
        raise ValueError(f"differentiable={differentiable!r} is not supported by the ActiveLR optimizers")
    if fused not in (None, False):
        raise ValueError(f"fused={fused!r} is not supported: no fused kernel applies the per-element multiplier")


def check_foreach_lr(foreach: Any, capturable: bool, lr: Any) -> None:
    if foreach not in (None, True, False):
        raise TypeError(f"foreach must be None or a bool, got {foreach!r}")
    if foreach and isinstance(lr, Tensor) and not capturable:
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True (as in torch.optim)")


def check_active_args(group: dict[str, Any]) -> None:
    """Validate ``lr_low``, ``lr_high``, ``max_multiplier``, ``min_multiplier`` and (if present: groups saved
    before it existed have none) ``flip_guard`` of a param group."""
    check_number("lr_low", group["lr_low"], low=0.0, high=1.0)
    check_number("lr_high", group["lr_high"], low=0.0)
    hi, lo = group["max_multiplier"], group["min_multiplier"]
    if hi is not None:
        check_number("max_multiplier", hi, low=1.0)
    if lo is not None:
        check_number("min_multiplier", lo, low=0.0, high=1.0)
    guard = group.get("flip_guard")
    if guard is not None:
        check_number("flip_guard", guard, low=0.0, high=1.0)


def check_steps_per_epoch(steps_per_epoch: Any) -> None:
    if steps_per_epoch is not None:
        check_number("steps_per_epoch", steps_per_epoch, low=1, integer=True)


def describe(value: Any) -> str:
    """A value as an error message names it: a tensor by its shape, anything else by its type."""
    if isinstance(value, Tensor):
        return f"shape {tuple(value.shape)}"
    return type(value).__name__
