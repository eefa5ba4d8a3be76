"""ActiveAdamW: AdamW whose step is multiplied elementwise by the ActiveLR multiplier.

Spec section 2 ("ActiveAdamW", official ``ActiveAdam.py``; the scripts' class ConsciousLR), per parameter:

    cumm  += g                                             (ActiveLR gradient sum, raw p.grad)
    p     *= 1 - lr * wd * (gai if scale_weight_decay)     (decoupled decay; code A scales it, code B not)
    m      = b1 * m + (1 - b1) * g,   v = b2 * v + (1 - b2) * g^2
    m_hat  = m / (1 - b1^t),          v_hat = v / (1 - b2^t)
    p     -= lr * gai * m_hat / (sqrt(v_hat) + eps)        (moments are not scaled by gai)

``amsgrad`` works as in :class:`torch.optim.AdamW` (in the official code the flag is computed but never
used). With the multiplier frozen at 1 this is ``torch.optim.AdamW`` exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import torch
from torch import Tensor

from .._torch_compat import group_tensors_by_device_and_dtype, step_value
from ._base import ActiveOptimizer
from ._foreach import decay_, foreach_decay_, host_lr, increment_steps, new_step_tensor, resolve_foreach
from ._validation import check_betas, check_bool, check_foreach_lr, check_lr, check_number, check_unsupported
from .sign_rule import ACTIVE_DEFAULTS

__all__ = ["ActiveAdamW", "active_adamw", "active_adamw_reference"]


class ActiveAdamW(ActiveOptimizer):
    """:class:`torch.optim.AdamW` with ActiveLR's per-element learning-rate multiplier.

    Args:
        params, lr, betas, eps, weight_decay, amsgrad, maximize, foreach, capturable: as
            :class:`torch.optim.AdamW`, same defaults (``weight_decay=1e-2``; the paper's experiments used
            0). ``lr`` may be a 1-element tensor (with ``capturable=True`` for the foreach path, as torch).
            ``capturable=True`` keeps the step counters on the parameters' device and computes the bias
            corrections there (no host reads); it is allowed on any device.
        differentiable, fused: accepted for signature compatibility; only ``False``/``None``.
        lr_low, lr_high, max_multiplier, min_multiplier, steps_per_epoch, scale_weight_decay, flip_guard:
            ActiveLR's own arguments, the same in every ActiveLR optimizer: see
            :class:`~lrpilot.active.ActiveOptimizer`.
    """

    _BASE_STATE_KEYS = frozenset({"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"})

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        lr_low: float = ACTIVE_DEFAULTS["lr_low"],
        lr_high: float = ACTIVE_DEFAULTS["lr_high"],
        scale_weight_decay: bool = False,
        max_multiplier: float | None = None,
        min_multiplier: float | None = None,
        flip_guard: float | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        check_unsupported(differentiable, fused)
        defaults = {
            "lr": lr, "betas": tuple(betas) if isinstance(betas, (list, tuple)) else betas, "eps": eps,
            "weight_decay": weight_decay, "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
            "capturable": capturable, "lr_low": lr_low, "lr_high": lr_high, "scale_weight_decay": scale_weight_decay,
            "max_multiplier": max_multiplier, "min_multiplier": min_multiplier, "flip_guard": flip_guard,
        }
        super().__init__(params, defaults, steps_per_epoch=steps_per_epoch)

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        check_lr(group["lr"])
        check_betas(group["betas"])
        check_number("eps", group["eps"], low=0.0)
        check_number("weight_decay", group["weight_decay"], low=0.0)
        for name in ("amsgrad", "maximize", "capturable", "scale_weight_decay"):
            check_bool(name, group[name])
        check_foreach_lr(group["foreach"], group["capturable"], group["lr"])

    def _step_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        states, mults, sums = self._collect(params)
        amsgrad = group["amsgrad"]
        for p, state in zip(params, states):
            if "step" not in state:
                state["step"] = new_step_tensor(p, group["capturable"])
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if amsgrad:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        active_adamw(
            params, cast(list[Tensor], [p.grad for p in params]), [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states], [s["max_exp_avg_sq"] for s in states] if amsgrad else [],
            [s["step"] for s in states], mults, sums,
            lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
            amsgrad=amsgrad, maximize=group["maximize"], capturable=group["capturable"],
            scale_weight_decay=group["scale_weight_decay"], foreach=group["foreach"],
        )


def active_adamw(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    multipliers: list[Tensor],
    grad_sums: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    capturable: bool,
    scale_weight_decay: bool,
    foreach: bool | None = None,
) -> None:
    """Functional ActiveAdamW step: the foreach path or the plain for-loop reference (``foreach=False``)."""
    use_foreach = resolve_foreach(foreach, params, lr, capturable)
    fn = _foreach_active_adamw if use_foreach else active_adamw_reference
    fn(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, multipliers, grad_sums, lr=lr,
       beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
       capturable=capturable, scale_weight_decay=scale_weight_decay)


def active_adamw_reference(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    multipliers: list[Tensor],
    grad_sums: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    capturable: bool,
    scale_weight_decay: bool,
) -> None:
    """The plain for-loop ActiveAdamW step, one tensor at a time (the reference the foreach path is tested on)."""
    if not capturable:
        lr = host_lr(lr)
    for i, param in enumerate(params):
        grad = grads[i]
        gai = multipliers[i]
        grad_sums[i].add_(grad)  # ActiveLR: cumm += p.grad
        if maximize:
            grad = -grad
        step_t = state_steps[i]
        step_t += 1
        if weight_decay != 0:
            decay_(param, gai, lr * weight_decay, scale_weight_decay)  # p *= 1 - lr*wd(*gai)
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
        exp_avg.lerp_(grad, 1 - beta1)  # m = b1 m + (1 - b1) g
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v = b2 v + (1 - b2) g^2
        second = exp_avg_sq
        if amsgrad:
            torch.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])
            second = max_exp_avg_sqs[i]
        # p -= lr * gai * m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)
        if capturable:
            bias_correction1 = 1 - beta1**step_t
            bias_correction2_sqrt = (1 - beta2**step_t).sqrt()
            denom = (second.sqrt() / bias_correction2_sqrt).add_(eps)
            param.addcdiv_(exp_avg * gai * (lr / bias_correction1), denom, value=-1.0)
        else:
            step = step_value(step_t)
            step_size = lr / (1 - beta1**step)
            denom = (second.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
            param.addcdiv_(exp_avg * gai, denom, value=-step_size)


def _foreach_active_adamw(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    multipliers: list[Tensor],
    grad_sums: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    capturable: bool,
    scale_weight_decay: bool,
) -> None:
    """The vectorised ActiveAdamW step (``torch._foreach_*`` per device and dtype)."""
    lists: list[list[Tensor]] = [params, grads, exp_avgs, exp_avg_sqs, state_steps, multipliers, grad_sums]
    if amsgrad:
        lists.append(max_exp_avg_sqs)
    grouped = group_tensors_by_device_and_dtype(lists)
    for tensors, _ in grouped.values():
        d_params, d_grads, d_exp_avgs, d_exp_avg_sqs, d_steps, d_mults, d_sums = (
            cast(list[Tensor], t) for t in tensors[:7]
        )
        torch._foreach_add_(d_sums, d_grads)  # ActiveLR: cumm += p.grad
        if maximize:
            d_grads = list(torch._foreach_neg(d_grads))
        increment_steps(d_steps)
        if weight_decay != 0:
            foreach_decay_(d_params, d_mults, lr * weight_decay, scale_weight_decay)
        torch._foreach_lerp_(d_exp_avgs, d_grads, 1 - beta1)
        torch._foreach_mul_(d_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(d_exp_avg_sqs, d_grads, d_grads, 1 - beta2)
        second = d_exp_avg_sqs
        if amsgrad:
            second = cast(list[Tensor], tensors[7])
            torch._foreach_maximum_(second, d_exp_avg_sqs)
        numer = torch._foreach_mul(d_exp_avgs, d_mults)  # gai * m
        denom = torch._foreach_sqrt(second)
        if capturable:
            # neg_step_size = -lr / (1 - b1^t), bias_correction2_sqrt = sqrt(1 - b2^t), all on the device
            neg_step_size = torch._foreach_pow(beta1, d_steps)
            torch._foreach_sub_(neg_step_size, 1)
            torch._foreach_div_(neg_step_size, lr)
            torch._foreach_reciprocal_(neg_step_size)
            bias_correction2_sqrt = torch._foreach_pow(beta2, d_steps)
            torch._foreach_neg_(bias_correction2_sqrt)
            torch._foreach_add_(bias_correction2_sqrt, 1)
            torch._foreach_sqrt_(bias_correction2_sqrt)
            torch._foreach_div_(denom, bias_correction2_sqrt)
            torch._foreach_add_(denom, eps)
            torch._foreach_div_(denom, neg_step_size)
            torch._foreach_addcdiv_(d_params, numer, denom)
        else:
            lr_f = host_lr(lr)
            step_sizes = [-lr_f / (1 - beta1 ** step_value(s)) for s in d_steps]
            torch._foreach_div_(denom, [(1 - beta2 ** step_value(s)) ** 0.5 for s in d_steps])
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(d_params, numer, denom, step_sizes)
