"""Argument checks shared by lrpilot's optimizers and schedulers: errors that name the argument and the value."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

__all__ = ["check_betas", "check_number"]


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False,
                 allow_inf: bool = False) -> None:
    """Raise ``TypeError`` for a non-number (``bool`` included) and ``ValueError`` naming ``name`` and the value
    for NaN, for +-inf unless ``allow_inf``, and for a value outside ``[low, high]`` (open ends on request)."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise TypeError(f"{name} must be {'an int' if integer else 'a real number'}, got {value!r}")
    if not math.isfinite(value) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")


def check_betas(betas: Any, name: str = "betas") -> None:
    """Adam's ``(beta1, beta2)``: a pair of floats, each in ``[0, 1)`` (``ValueError`` naming ``name[i]``)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{name} must be a pair of floats, got {betas!r}")
    for i, beta in enumerate(betas):
        if isinstance(beta, Tensor):
            raise ValueError(f"{name}[{i}] must be a float (Tensor betas are not supported), got {beta!r}")
        check_number(f"{name}[{i}]", beta, low=0.0, high=1.0, high_open=True)
