"""ActiveSGD: SGD with momentum whose step is multiplied elementwise by the ActiveLR multiplier.

Spec section 2 ("ActiveSGD", official code B ``optimizers/ActiveSGD.py``), per parameter and step:

    cumm += g                                          (ActiveLR gradient sum, raw p.grad)
    p    *= 1 - lr * wd * (gai if scale_weight_decay)  (decoupled weight decay, before the momentum update)
    buf   = g  (first step)  |  momentum * buf + (1 - dampening) * g
    d     = g + momentum * buf  (nesterov)  |  buf
    p    -= lr * gai * d                               (the multiplier scales the final step only)

The momentum buffer is not scaled by ``gai``, so a multiplier change applies to the whole buffer. With
``decoupled_weight_decay=False`` the decay is torch's L2 term ``g + wd * p`` instead (not in the code).
The code hard-codes lr_low = 0.9, lr_high = 0.1 (its constructor arguments are ignored, a bug); here they
are arguments with the defaults every logged experiment of the paper used, 0.5 and 2.0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import torch
from torch import Tensor

from .._torch_compat import group_tensors_by_device_and_dtype
from ._base import ActiveOptimizer
from ._foreach import decay_, foreach_decay_, resolve_foreach
from ._validation import check_bool, check_lr, check_number, check_unsupported
from .sign_rule import ACTIVE_DEFAULTS

__all__ = ["ActiveSGD", "active_sgd", "active_sgd_reference"]


class ActiveSGD(ActiveOptimizer):
    """:class:`torch.optim.SGD` with ActiveLR's per-element learning-rate multiplier.

    Args:
        params, lr, momentum, dampening, weight_decay, nesterov, maximize, foreach: as
            :class:`torch.optim.SGD` (same defaults), except that ``weight_decay`` is decoupled,
            ``p *= 1 - lr * weight_decay``, as in the official ActiveSGD (see ``decoupled_weight_decay``).
            ``lr`` may be a 1-element tensor (used without host reads).
        differentiable, fused: accepted for signature compatibility; only ``False``/``None``.
        decoupled_weight_decay: False gives torch's L2 decay ``g + weight_decay * p`` instead.
        lr_low, lr_high, max_multiplier, min_multiplier, steps_per_epoch, scale_weight_decay, flip_guard:
            ActiveLR's own arguments, the same in every ActiveLR optimizer: see
            :class:`~lrpilot.active.ActiveOptimizer`.
    """

    _BASE_STATE_KEYS = frozenset({"momentum_buffer"})

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        lr_low: float = ACTIVE_DEFAULTS["lr_low"],
        lr_high: float = ACTIVE_DEFAULTS["lr_high"],
        scale_weight_decay: bool = False,
        decoupled_weight_decay: bool = True,
        max_multiplier: float | None = None,
        min_multiplier: float | None = None,
        flip_guard: float | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        check_unsupported(differentiable, fused)
        defaults = {
            "lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
            "nesterov": nesterov, "maximize": maximize, "foreach": foreach, "lr_low": lr_low, "lr_high": lr_high,
            "scale_weight_decay": scale_weight_decay, "decoupled_weight_decay": decoupled_weight_decay,
            "max_multiplier": max_multiplier, "min_multiplier": min_multiplier, "flip_guard": flip_guard,
        }
        super().__init__(params, defaults, steps_per_epoch=steps_per_epoch)

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        check_lr(group["lr"])
        check_number("momentum", group["momentum"], low=0.0)
        check_number("dampening", group["dampening"])
        check_number("weight_decay", group["weight_decay"], low=0.0)
        for name in ("nesterov", "maximize", "scale_weight_decay", "decoupled_weight_decay"):
            check_bool(name, group[name])
        if group["foreach"] not in (None, True, False):
            raise TypeError(f"foreach must be None or a bool, got {group['foreach']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"nesterov=True requires momentum > 0 and dampening == 0, got momentum={group['momentum']!r}, "
                f"dampening={group['dampening']!r}"
            )

    def _step_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        states, mults, sums = self._collect(params)
        momentum = group["momentum"]
        bufs: list[Tensor | None] = [s.get("momentum_buffer") for s in states]
        active_sgd(
            params, cast(list[Tensor], [p.grad for p in params]), bufs, mults, sums,
            lr=group["lr"], momentum=momentum, dampening=group["dampening"], weight_decay=group["weight_decay"],
            nesterov=group["nesterov"], maximize=group["maximize"], scale_weight_decay=group["scale_weight_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"], foreach=group["foreach"],
        )
        if momentum != 0:
            for state, buf in zip(states, bufs):
                state["momentum_buffer"] = buf


def active_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    multipliers: list[Tensor],
    grad_sums: list[Tensor],
    *,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    scale_weight_decay: bool,
    decoupled_weight_decay: bool,
    foreach: bool | None = None,
) -> None:
    """Functional ActiveSGD step: the foreach path or the plain for-loop reference (``foreach=False``).

    New momentum buffers are written into ``momentum_buffers`` (as ``torch.optim.sgd.sgd`` does).
    """
    use_foreach = resolve_foreach(foreach, params, lr, capturable=True)
    fn = _foreach_active_sgd if use_foreach else active_sgd_reference
    fn(params, grads, momentum_buffers, multipliers, grad_sums, lr=lr, momentum=momentum, dampening=dampening,
       weight_decay=weight_decay, nesterov=nesterov, maximize=maximize, scale_weight_decay=scale_weight_decay,
       decoupled_weight_decay=decoupled_weight_decay)


def active_sgd_reference(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    multipliers: list[Tensor],
    grad_sums: list[Tensor],
    *,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    scale_weight_decay: bool,
    decoupled_weight_decay: bool,
) -> None:
    """The plain for-loop ActiveSGD step, one tensor at a time (the reference the foreach path is tested on)."""
    for i, param in enumerate(params):
        grad = grads[i]
        gai = multipliers[i]
        grad_sums[i].add_(grad)  # ActiveLR: cumm += p.grad (raw gradient, before decay and momentum)
        d_p = -grad if maximize else grad
        if weight_decay != 0:
            if decoupled_weight_decay:
                decay_(param, gai, lr * weight_decay, scale_weight_decay)  # p *= 1 - lr*wd(*gai)
            else:
                d_p = d_p.add(param, alpha=weight_decay)  # torch's L2 term
        if momentum != 0:
            buf = momentum_buffers[i]
            if buf is None:
                buf = torch.clone(d_p).detach()
                momentum_buffers[i] = buf
            else:
                buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
            d_p = d_p.add(buf, alpha=momentum) if nesterov else buf
        # p -= lr * gai * d   (ActiveSGD: the multiplier scales the step, not the momentum buffer)
        if isinstance(lr, Tensor):
            param.addcmul_(d_p * lr, gai, value=-1.0)
        else:
            param.addcmul_(d_p, gai, value=-lr)


def _foreach_active_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    multipliers: list[Tensor],
    grad_sums: list[Tensor],
    *,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    scale_weight_decay: bool,
    decoupled_weight_decay: bool,
) -> None:
    """The vectorised ActiveSGD step (``torch._foreach_*`` per device and dtype)."""
    grouped = group_tensors_by_device_and_dtype(
        [params, grads, momentum_buffers, multipliers, grad_sums], with_indices=True
    )
    for (d_params_, d_grads_, d_bufs_, d_mults_, d_sums_), indices in grouped.values():
        d_params = cast(list[Tensor], d_params_)
        d_grads = cast(list[Tensor], d_grads_)
        d_mults = cast(list[Tensor], d_mults_)
        torch._foreach_add_(cast(list[Tensor], d_sums_), d_grads)  # ActiveLR: cumm += p.grad
        copied = maximize
        if maximize:
            d_grads = list(torch._foreach_neg(d_grads))
        if weight_decay != 0:
            if decoupled_weight_decay:
                foreach_decay_(d_params, d_mults, lr * weight_decay, scale_weight_decay)
            elif copied:
                torch._foreach_add_(d_grads, d_params, alpha=weight_decay)
            else:
                d_grads = list(torch._foreach_add(d_grads, d_params, alpha=weight_decay))
                copied = True
        if momentum != 0:
            bufs: list[Tensor] = []
            if all(b is not None for b in d_bufs_):
                bufs = cast(list[Tensor], d_bufs_)
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, d_grads, alpha=1 - dampening)
            else:
                for j, buf in enumerate(d_bufs_):
                    if buf is None:
                        buf = torch.clone(d_grads[j]).detach()
                        momentum_buffers[indices[j]] = buf
                    else:
                        buf.mul_(momentum).add_(d_grads[j], alpha=1 - dampening)
                    bufs.append(buf)
            if nesterov:
                if not copied:
                    d_grads = list(torch._foreach_add(d_grads, bufs, alpha=momentum))
                else:
                    torch._foreach_add_(d_grads, bufs, alpha=momentum)
            else:
                d_grads = bufs
        # p -= lr * gai * d
        if isinstance(lr, Tensor):
            step = torch._foreach_mul(d_grads, d_mults)
            torch._foreach_mul_(step, lr)
            torch._foreach_sub_(d_params, step)
        else:
            torch._foreach_addcmul_(d_params, d_grads, d_mults, value=-lr)
