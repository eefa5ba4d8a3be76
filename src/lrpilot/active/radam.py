"""ActiveRAdam: RAdam (Liu et al.) whose step is multiplied elementwise by the ActiveLR multiplier.

Spec section 2 ("ActiveRAdam", official ``ActiveRAdam.py``), per parameter:

    cumm  += g                                               (ActiveLR gradient sum, raw p.grad)
    p     *= 1 - lr * wd * (gai if scale_weight_decay)       (decoupled decay, the code's)
    m      = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
    N_max  = 2 / (1 - b2) - 1,    N_t = N_max - 2 t b2^t / (1 - b2^t)
    N_t >= 5:  r_t = sqrt((N_t - 4)(N_t - 2) N_max / ((N_max - 4)(N_max - 2) N_t))
               p -= lr r_t sqrt(1 - b2^t) / (1 - b1^t) * gai * m / (sqrt(v) + eps)
    N_t <  5:  p -= lr / (1 - b1^t) * gai * m

Both official files re-bind the moment tensors instead of updating them in place, so the update of step
t uses m_{t-1}, v_{t-1} (a one-step lag; the first update is zero). That is a bug, not the method: by
default this is the correct RAdam (equal to ``torch.optim.RAdam(decoupled_weight_decay=True)`` with the
multiplier frozen at 1, up to torch's threshold ``N_t > 5``, which no step count hits exactly);
``lagged_moments=True`` reproduces the official code. ``decoupled_weight_decay=False`` gives torch's
L2 decay (the gradient sum stays the raw gradient).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, cast

import torch
from torch import Tensor

from .._torch_compat import group_tensors_by_device_and_dtype, step_value
from ._base import ActiveOptimizer
from ._foreach import decay_, foreach_decay_, host_lr, increment_steps, new_step_tensor, resolve_foreach
from ._validation import check_betas, check_bool, check_foreach_lr, check_lr, check_number, check_unsupported
from .sign_rule import ACTIVE_DEFAULTS

__all__ = ["RECTIFY_THRESHOLD", "ActiveRAdam", "active_radam", "active_radam_reference"]

#: Rectified (adaptive) update when N_t >= 5, as in the official code (and Liu et al.'s RAdam code).
RECTIFY_THRESHOLD = 5.0


def radam_coefficients(step: float, lr: float, beta1: float, beta2: float) -> tuple[float, float]:
    """(coefficient of ``gai*m/(sqrt(v)+eps)``, coefficient of ``gai*m``) of RAdam's step ``t``; one is 0."""
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    n_max = 2 / (1 - beta2) - 1
    n_t = n_max - 2 * step * beta2**step / bias_correction2
    if n_t >= RECTIFY_THRESHOLD:
        r_t = math.sqrt((n_t - 4) * (n_t - 2) * n_max / ((n_max - 4) * (n_max - 2) * n_t))
        return lr * r_t * math.sqrt(bias_correction2) / bias_correction1, 0.0
    return 0.0, lr / bias_correction1


def radam_coefficients_tensor(step: Tensor, lr: float | Tensor, beta1: float,
                              beta2: float) -> tuple[Tensor, Tensor]:
    """:func:`radam_coefficients` computed on the step's device without host reads (``capturable``)."""
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    n_max = 2 / (1 - beta2) - 1
    n_t = n_max - 2 * step * beta2**step / bias_correction2
    rectified = n_t >= RECTIFY_THRESHOLD
    r_sq = (n_t - 4) * (n_t - 2) * n_max / ((n_max - 4) * (n_max - 2) * n_t)
    r_t = torch.where(rectified, r_sq, torch.ones_like(r_sq)).sqrt()
    adaptive = torch.where(rectified, lr * r_t * bias_correction2.sqrt() / bias_correction1, 0.0)
    plain = torch.where(rectified, 0.0, lr / bias_correction1)
    return adaptive, plain


class ActiveRAdam(ActiveOptimizer):
    """:class:`torch.optim.RAdam` with ActiveLR's per-element learning-rate multiplier.

    Args:
        params, lr, betas, eps, weight_decay, maximize, foreach, capturable: as :class:`torch.optim.RAdam`
            (same defaults); see :class:`~lrpilot.active.adamw.ActiveAdamW` for ``capturable`` and tensor lr.
        decoupled_weight_decay: True (default here, unlike torch): ``p *= 1 - lr * weight_decay``, the
            official code's decay; False: torch's L2 term ``g + weight_decay * p``.
        lagged_moments: reproduce the official code's one-step moment lag (for reproduction only).
        differentiable, fused: accepted for signature compatibility; only ``False``/``None``.
        lr_low, lr_high, max_multiplier, min_multiplier, steps_per_epoch, scale_weight_decay, flip_guard:
            ActiveLR's own arguments, the same in every ActiveLR optimizer: see
            :class:`~lrpilot.active.ActiveOptimizer`
            (``scale_weight_decay`` applies to decoupled decay).
    """

    _BASE_STATE_KEYS = frozenset({"step", "exp_avg", "exp_avg_sq"})

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = True,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        lagged_moments: bool = False,
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
            "weight_decay": weight_decay, "decoupled_weight_decay": decoupled_weight_decay, "foreach": foreach,
            "maximize": maximize, "capturable": capturable, "lagged_moments": lagged_moments, "lr_low": lr_low,
            "lr_high": lr_high, "scale_weight_decay": scale_weight_decay, "max_multiplier": max_multiplier,
            "min_multiplier": min_multiplier, "flip_guard": flip_guard,
        }
        super().__init__(params, defaults, steps_per_epoch=steps_per_epoch)

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        check_lr(group["lr"])
        check_betas(group["betas"])
        check_number("eps", group["eps"], low=0.0)
        check_number("weight_decay", group["weight_decay"], low=0.0)
        for name in ("decoupled_weight_decay", "maximize", "capturable", "lagged_moments", "scale_weight_decay"):
            check_bool(name, group[name])
        check_foreach_lr(group["foreach"], group["capturable"], group["lr"])

    def _step_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        states, mults, sums = self._collect(params)
        for p, state in zip(params, states):
            if "step" not in state:
                state["step"] = new_step_tensor(p, group["capturable"])
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        active_radam(
            params, cast(list[Tensor], [p.grad for p in params]), [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states], [s["step"] for s in states], mults, sums,
            lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"], maximize=group["maximize"],
            capturable=group["capturable"], lagged_moments=group["lagged_moments"],
            scale_weight_decay=group["scale_weight_decay"], foreach=group["foreach"],
        )


def active_radam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    multipliers: list[Tensor],
    grad_sums: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    capturable: bool,
    lagged_moments: bool,
    scale_weight_decay: bool,
    foreach: bool | None = None,
) -> None:
    """Functional ActiveRAdam step: the foreach path or the plain for-loop reference (``foreach=False``)."""
    use_foreach = resolve_foreach(foreach, params, lr, capturable)
    fn = _foreach_active_radam if use_foreach else active_radam_reference
    fn(params, grads, exp_avgs, exp_avg_sqs, state_steps, multipliers, grad_sums, lr=lr, beta1=beta1, beta2=beta2,
       eps=eps, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
       capturable=capturable, lagged_moments=lagged_moments, scale_weight_decay=scale_weight_decay)


def active_radam_reference(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    multipliers: list[Tensor],
    grad_sums: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    capturable: bool,
    lagged_moments: bool,
    scale_weight_decay: bool,
) -> None:
    """The plain for-loop ActiveRAdam step, one tensor at a time (the reference the foreach path is tested on)."""
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
            if decoupled_weight_decay:
                decay_(param, gai, lr * weight_decay, scale_weight_decay)  # p *= 1 - lr*wd(*gai)
            else:
                grad = grad.add(param, alpha=weight_decay)
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
        if lagged_moments:  # the official code: the update uses m_{t-1}, v_{t-1}
            m_used, v_used = exp_avg.clone(), exp_avg_sq.clone()
        else:  # aliases: they see the in-place update below
            m_used, v_used = exp_avg, exp_avg_sq
        exp_avg.lerp_(grad, 1 - beta1)  # m = b1 m + (1 - b1) g
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v = b2 v + (1 - b2) g^2
        if capturable:
            adaptive, plain = radam_coefficients_tensor(step_t, lr, beta1, beta2)
            # p -= adaptive * gai * m / (sqrt(v) + eps) + plain * gai * m   (one of the two is 0)
            scale = adaptive / (v_used.sqrt() + eps) + plain
            param.addcmul_(m_used * gai, scale, value=-1.0)
        else:
            adaptive_f, plain_f = radam_coefficients(step_value(step_t), cast(float, lr), beta1, beta2)
            if adaptive_f:
                param.addcdiv_(m_used * gai, v_used.sqrt().add_(eps), value=-adaptive_f)
            else:
                param.add_(m_used * gai, alpha=-plain_f)


def _foreach_active_radam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    multipliers: list[Tensor],
    grad_sums: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    capturable: bool,
    lagged_moments: bool,
    scale_weight_decay: bool,
) -> None:
    """The vectorised ActiveRAdam step (``torch._foreach_*`` per device and dtype)."""
    grouped = group_tensors_by_device_and_dtype(
        [params, grads, exp_avgs, exp_avg_sqs, state_steps, multipliers, grad_sums]
    )
    for tensors, _ in grouped.values():
        d_params, d_grads, d_exp_avgs, d_exp_avg_sqs, d_steps, d_mults, d_sums = (
            cast(list[Tensor], t) for t in tensors
        )
        torch._foreach_add_(d_sums, d_grads)  # ActiveLR: cumm += p.grad
        if maximize:
            d_grads = list(torch._foreach_neg(d_grads))
        increment_steps(d_steps)
        if weight_decay != 0:
            if decoupled_weight_decay:
                foreach_decay_(d_params, d_mults, lr * weight_decay, scale_weight_decay)
            elif maximize:
                torch._foreach_add_(d_grads, d_params, alpha=weight_decay)
            else:
                d_grads = list(torch._foreach_add(d_grads, d_params, alpha=weight_decay))
        if lagged_moments:  # the official code: the update uses m_{t-1}, v_{t-1}
            numer = torch._foreach_mul(d_exp_avgs, d_mults)
            denom = torch._foreach_sqrt(d_exp_avg_sqs)
        torch._foreach_lerp_(d_exp_avgs, d_grads, 1 - beta1)
        torch._foreach_mul_(d_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(d_exp_avg_sqs, d_grads, d_grads, 1 - beta2)
        if not lagged_moments:
            numer = torch._foreach_mul(d_exp_avgs, d_mults)  # gai * m
            denom = torch._foreach_sqrt(d_exp_avg_sqs)
        torch._foreach_add_(denom, eps)  # sqrt(v) + eps
        if capturable:
            coefficients = [radam_coefficients_tensor(s, lr, beta1, beta2) for s in d_steps]
            # scale = adaptive / (sqrt(v) + eps) + plain, then p -= gai * m * scale
            torch._foreach_reciprocal_(denom)
            torch._foreach_mul_(denom, [a for a, _ in coefficients])
            torch._foreach_add_(denom, [b for _, b in coefficients])
            torch._foreach_mul_(numer, denom)
            torch._foreach_sub_(d_params, numer)
            continue
        lr_f = host_lr(lr)
        coefficients_f = [radam_coefficients(step_value(s), lr_f, beta1, beta2) for s in d_steps]
        rect = [j for j, (a, _) in enumerate(coefficients_f) if a]
        plain = [j for j, (a, _) in enumerate(coefficients_f) if not a]
        if len(rect) == len(d_params):
            torch._foreach_addcdiv_(d_params, numer, denom, [-a for a, _ in coefficients_f])
        elif rect:
            torch._foreach_addcdiv_([d_params[j] for j in rect], [numer[j] for j in rect], [denom[j] for j in rect],
                                    [-coefficients_f[j][0] for j in rect])
        if plain:
            scaled = [numer[j] for j in plain]
            torch._foreach_mul_(scaled, [-coefficients_f[j][1] for j in plain])
            torch._foreach_add_([d_params[j] for j in plain], scaled)
