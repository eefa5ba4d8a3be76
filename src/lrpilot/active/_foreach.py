"""What the functional ActiveLR steps share (``active_sgd``, ``active_adamw``, ...): the choice between the
vectorised ``torch._foreach_*`` path and the for-loop reference, the step counters, the decoupled weight decay
of both paths and the host read of a tensor ``lr``. Per-parameter maths stays in ``torch._foreach_*`` / in-place
ops; torch's private helpers are reached through :mod:`lrpilot._torch_compat`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._torch_compat import foreach_by_default, scalar_dtype

__all__ = ["decay_", "foreach_decay_", "host_lr", "increment_steps", "new_step_tensor", "resolve_foreach"]


def resolve_foreach(foreach: bool | None, params: list[Tensor], lr: Any, capturable: bool) -> bool:
    """torch's default: the foreach path when every tensor is on a device with fast foreach kernels (CUDA)."""
    if foreach is not None:
        return foreach
    if isinstance(lr, Tensor) and not capturable:
        return False
    return foreach_by_default(params)


def new_step_tensor(p: Tensor, capturable: bool) -> Tensor:
    """The per-parameter step counter, hosted as torch's Adam does: on the CPU unless ``capturable``."""
    if capturable:
        return torch.zeros((), dtype=scalar_dtype(), device=p.device)
    return torch.tensor(0.0, dtype=scalar_dtype())


def increment_steps(steps: list[Tensor]) -> None:
    """``step += 1`` for a list of step tensors (torch's trick to stay on the fast path for CPU steps)."""
    if steps and steps[0].is_cpu:
        torch._foreach_add_(steps, torch.tensor(1.0, device="cpu"), alpha=1.0)
    else:
        torch._foreach_add_(steps, 1)


def decay_(param: Tensor, multiplier: Tensor, factor: float | Tensor, scale: bool) -> None:
    """Decoupled weight decay of one tensor: ``p *= 1 - factor * (gai if scale else 1)`` (spec section 2)."""
    if scale:
        if isinstance(factor, Tensor):
            param.addcmul_(param, multiplier * factor, value=-1.0)
        else:
            param.addcmul_(param, multiplier, value=-factor)
    else:
        param.mul_(1 - factor)


def foreach_decay_(params: list[Tensor], multipliers: list[Tensor], factor: float | Tensor, scale: bool) -> None:
    """:func:`decay_` over a list of tensors with ``torch._foreach_*``."""
    if scale:
        if isinstance(factor, Tensor):
            scaled = torch._foreach_mul(multipliers, factor)
            torch._foreach_addcmul_(params, params, scaled, value=-1.0)
        else:
            torch._foreach_addcmul_(params, params, multipliers, value=-factor)
    else:
        torch._foreach_mul_(params, 1 - factor)


def host_lr(lr: float | Tensor) -> float:
    """A tensor lr used outside capturable mode is read once per group and step (as torch's for-loop path)."""
    return float(lr) if isinstance(lr, Tensor) else lr
