"""ActiveAdaBelief: AdaBelief (Zhuang et al. 2020) whose step is multiplied elementwise by the ActiveLR multiplier.

Spec section 2 ("ActiveBelief", official ``ActiveBelief.py`` = ``adabelief_pytorch`` 0.0.5 plus ``gai``),
per parameter:

    cumm  += g                                     (ActiveLR gradient sum, raw p.grad, before any L2 term)
    weight_decouple:  p *= 1 - lr * wd  (or 1 - wd with fixed_decay)   [x gai if scale_weight_decay]
    else:             g  = g + wd * p              (L2; the official code adds it to p.grad in place,
                                                    here out of place so p.grad is left untouched)
    m      = b1 m + (1 - b1) g
    s      = b2 s + (1 - b2) (g - m)^2,  then s += eps IN PLACE (the state keeps the eps, as published)
    denom  = sqrt(s) / sqrt(1 - b2^t) + eps
    rectify=False:  p -= lr / (1 - b1^t) * gai * m / denom
    rectify=True:   rho_inf = 2/(1 - b2) - 1,  rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
                    rho_t > 4:  r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t))
                                p -= r_t lr / (1 - b1^t) * gai * m / denom
                    else:       p -= lr * gai * m            (SGD-style, no bias correction, as published)

``amsgrad`` as in ``adabelief_pytorch`` 0.0.5: ``max_s = max(max_s, s)``, then ``max_s += eps`` in place.
Defaults are those of the official ActiveBelief in the repository the paper links (code B):
``eps=1e-8, weight_decouple=True, rectify=True`` (also the defaults of ``adabelief_pytorch`` >= 0.1, except
its eps). The multiplier never scales the weight decay in the official code (``scale_weight_decay=False``).
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

__all__ = ["ActiveAdaBelief", "active_adabelief", "active_adabelief_reference"]

#: Rectified (adaptive) update when rho_t > 4, as in the official ActiveBelief / adabelief_pytorch 0.0.5.
RECTIFY_THRESHOLD = 4.0


def adabelief_coefficients(step: float, lr: float, beta1: float, beta2: float,
                           rectify: bool) -> tuple[float, float]:
    """(coefficient of ``gai*m/denom``, coefficient of ``gai*m``) at step ``t``; one of them is 0."""
    bias_correction1 = 1 - beta1**step
    if not rectify:
        return lr / bias_correction1, 0.0
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2 * step * beta2**step / (1.0 - beta2**step)
    if rho_t > RECTIFY_THRESHOLD:
        r_t = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / (rho_inf - 4.0) / (rho_inf - 2.0) / rho_t)
        return r_t * lr / bias_correction1, 0.0
    return 0.0, lr


def adabelief_coefficients_tensor(step: Tensor, lr: float | Tensor, beta1: float, beta2: float,
                                  rectify: bool) -> tuple[Tensor, Tensor]:
    """:func:`adabelief_coefficients` on the step's device without host reads (``capturable``)."""
    bias_correction1 = 1 - beta1**step
    if not rectify:
        return lr / bias_correction1, torch.zeros_like(bias_correction1)
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2 * step * beta2**step / (1.0 - beta2**step)
    rectified = rho_t > RECTIFY_THRESHOLD
    r_sq = (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / (rho_inf - 4.0) / (rho_inf - 2.0) / rho_t
    r_t = torch.where(rectified, r_sq, torch.ones_like(r_sq)).sqrt()
    adaptive = torch.where(rectified, r_t * lr / bias_correction1, 0.0)
    plain = torch.where(rectified, 0.0, lr * torch.ones_like(bias_correction1))
    return adaptive, plain


class ActiveAdaBelief(ActiveOptimizer):
    """AdaBelief (as published in ``adabelief_pytorch`` 0.0.5) with ActiveLR's per-element multiplier.

    Args:
        params, lr, betas, eps, weight_decay, amsgrad, weight_decouple, fixed_decay, rectify: as AdaBelief;
            defaults of the official ActiveBelief (``eps=1e-8``, ``weight_decouple=True``, ``rectify=True``).
        maximize, foreach, capturable: as in the torch optimizers (see
            :class:`~lrpilot.active.adamw.ActiveAdamW`).
        differentiable, fused: accepted for signature compatibility; only ``False``/``None``.
        lr_low, lr_high, max_multiplier, min_multiplier, steps_per_epoch, scale_weight_decay, flip_guard:
            ActiveLR's own arguments, the same in every ActiveLR optimizer: see
            :class:`~lrpilot.active.ActiveOptimizer`
            (``scale_weight_decay`` applies to decoupled decay).
    """

    _BASE_STATE_KEYS = frozenset({"step", "exp_avg", "exp_avg_var", "max_exp_avg_var"})

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        rectify: bool = True,
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
            "weight_decay": weight_decay, "amsgrad": amsgrad, "weight_decouple": weight_decouple,
            "fixed_decay": fixed_decay, "rectify": rectify, "maximize": maximize, "foreach": foreach,
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
        for name in ("amsgrad", "weight_decouple", "fixed_decay", "rectify", "maximize", "capturable",
                     "scale_weight_decay"):
            check_bool(name, group[name])
        check_foreach_lr(group["foreach"], group["capturable"], group["lr"])

    def _step_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        states, mults, sums = self._collect(params)
        amsgrad = group["amsgrad"]
        for p, state in zip(params, states):
            if "step" not in state:
                state["step"] = new_step_tensor(p, group["capturable"])
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_var"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if amsgrad:
                    state["max_exp_avg_var"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        active_adabelief(
            params, cast(list[Tensor], [p.grad for p in params]), [s["exp_avg"] for s in states],
            [s["exp_avg_var"] for s in states], [s["max_exp_avg_var"] for s in states] if amsgrad else [],
            [s["step"] for s in states], mults, sums,
            lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
            amsgrad=amsgrad, weight_decouple=group["weight_decouple"], fixed_decay=group["fixed_decay"],
            rectify=group["rectify"], maximize=group["maximize"], capturable=group["capturable"],
            scale_weight_decay=group["scale_weight_decay"], foreach=group["foreach"],
        )


def active_adabelief(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_vars: list[Tensor],
    max_exp_avg_vars: list[Tensor],
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
    weight_decouple: bool,
    fixed_decay: bool,
    rectify: bool,
    maximize: bool,
    capturable: bool,
    scale_weight_decay: bool,
    foreach: bool | None = None,
) -> None:
    """Functional ActiveAdaBelief step: the foreach path or the plain for-loop reference (``foreach=False``)."""
    use_foreach = resolve_foreach(foreach, params, lr, capturable)
    fn = _foreach_active_adabelief if use_foreach else active_adabelief_reference
    fn(params, grads, exp_avgs, exp_avg_vars, max_exp_avg_vars, state_steps, multipliers, grad_sums, lr=lr,
       beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
       weight_decouple=weight_decouple, fixed_decay=fixed_decay, rectify=rectify, maximize=maximize,
       capturable=capturable, scale_weight_decay=scale_weight_decay)


def active_adabelief_reference(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_vars: list[Tensor],
    max_exp_avg_vars: list[Tensor],
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
    weight_decouple: bool,
    fixed_decay: bool,
    rectify: bool,
    maximize: bool,
    capturable: bool,
    scale_weight_decay: bool,
) -> None:
    """The plain for-loop ActiveAdaBelief step, one tensor at a time (the reference for the foreach path)."""
    if not capturable:
        lr = host_lr(lr)
    for i, param in enumerate(params):
        grad = grads[i]
        gai = multipliers[i]
        grad_sums[i].add_(grad)  # ActiveLR: cumm += p.grad (before the L2 term)
        if maximize:
            grad = -grad
        step_t = state_steps[i]
        step_t += 1
        if weight_decay != 0:
            if weight_decouple:
                decay_(param, gai, weight_decay if fixed_decay else lr * weight_decay, scale_weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)
        exp_avg, exp_avg_var = exp_avgs[i], exp_avg_vars[i]
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)  # m = b1 m + (1 - b1) g
        residual = grad - exp_avg
        exp_avg_var.mul_(beta2).addcmul_(residual, residual, value=1 - beta2)  # s = b2 s + (1 - b2)(g - m)^2
        if amsgrad:
            torch.maximum(max_exp_avg_vars[i], exp_avg_var, out=max_exp_avg_vars[i])
            second = max_exp_avg_vars[i].add_(eps)  # in place, as published
        else:
            second = exp_avg_var.add_(eps)  # s += eps in place, as published
        if capturable:
            adaptive, plain = adabelief_coefficients_tensor(step_t, lr, beta1, beta2, rectify)
            denom = (second.sqrt() / (1 - beta2**step_t).sqrt()).add_(eps)
            param.addcmul_(exp_avg * gai, adaptive / denom + plain, value=-1.0)
        else:
            step = step_value(step_t)
            adaptive_f, plain_f = adabelief_coefficients(step, cast(float, lr), beta1, beta2, rectify)
            if adaptive_f:
                denom = (second.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
                param.addcdiv_(exp_avg * gai, denom, value=-adaptive_f)  # p -= c * gai * m / denom
            else:
                param.add_(exp_avg * gai, alpha=-plain_f)  # p -= lr * gai * m


def _foreach_active_adabelief(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_vars: list[Tensor],
    max_exp_avg_vars: list[Tensor],
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
    weight_decouple: bool,
    fixed_decay: bool,
    rectify: bool,
    maximize: bool,
    capturable: bool,
    scale_weight_decay: bool,
) -> None:
    """The vectorised ActiveAdaBelief step (``torch._foreach_*`` per device and dtype)."""
    lists: list[list[Tensor]] = [params, grads, exp_avgs, exp_avg_vars, state_steps, multipliers, grad_sums]
    if amsgrad:
        lists.append(max_exp_avg_vars)
    grouped = group_tensors_by_device_and_dtype(lists)
    for tensors, _ in grouped.values():
        d_params, d_grads, d_exp_avgs, d_exp_avg_vars, d_steps, d_mults, d_sums = (
            cast(list[Tensor], t) for t in tensors[:7]
        )
        torch._foreach_add_(d_sums, d_grads)  # ActiveLR: cumm += p.grad
        if maximize:
            d_grads = list(torch._foreach_neg(d_grads))
        increment_steps(d_steps)
        if weight_decay != 0:
            if weight_decouple:
                foreach_decay_(d_params, d_mults, weight_decay if fixed_decay else lr * weight_decay,
                               scale_weight_decay)
            elif maximize:
                torch._foreach_add_(d_grads, d_params, alpha=weight_decay)
            else:
                d_grads = list(torch._foreach_add(d_grads, d_params, alpha=weight_decay))
        torch._foreach_mul_(d_exp_avgs, beta1)
        torch._foreach_add_(d_exp_avgs, d_grads, alpha=1 - beta1)
        residual = torch._foreach_sub(d_grads, d_exp_avgs)
        torch._foreach_mul_(d_exp_avg_vars, beta2)
        torch._foreach_addcmul_(d_exp_avg_vars, residual, residual, 1 - beta2)
        del residual
        if amsgrad:
            second = cast(list[Tensor], tensors[7])
            torch._foreach_maximum_(second, d_exp_avg_vars)
        else:
            second = d_exp_avg_vars
        torch._foreach_add_(second, eps)  # in place, as published
        numer = torch._foreach_mul(d_exp_avgs, d_mults)  # gai * m
        denom = torch._foreach_sqrt(second)
        if capturable:
            bias_correction2_sqrt = torch._foreach_pow(beta2, d_steps)
            torch._foreach_neg_(bias_correction2_sqrt)
            torch._foreach_add_(bias_correction2_sqrt, 1)
            torch._foreach_sqrt_(bias_correction2_sqrt)
            torch._foreach_div_(denom, bias_correction2_sqrt)
            torch._foreach_add_(denom, eps)
            coefficients = [adabelief_coefficients_tensor(s, lr, beta1, beta2, rectify) for s in d_steps]
            # scale = adaptive / denom + plain, then p -= gai * m * scale
            torch._foreach_reciprocal_(denom)
            torch._foreach_mul_(denom, [a for a, _ in coefficients])
            torch._foreach_add_(denom, [b for _, b in coefficients])
            torch._foreach_mul_(numer, denom)
            torch._foreach_sub_(d_params, numer)
            continue
        lr_f = host_lr(lr)
        step_values = [step_value(s) for s in d_steps]
        torch._foreach_div_(denom, [math.sqrt(1 - beta2**t) for t in step_values])
        torch._foreach_add_(denom, eps)
        coefficients_f = [adabelief_coefficients(t, lr_f, beta1, beta2, rectify) for t in step_values]
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
