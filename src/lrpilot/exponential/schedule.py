"""The arithmetic of Li & Arora's equivalence: growth factor, existence condition, equivalent LR sequences.

Li & Arora, "An Exponential Learning Rate Schedule for Deep Learning" (arXiv 1910.07454, ICLR 2020).
Notation of the spec (``shared/papers/exponential_lr.md``): the *WD run* is SGD with momentum ``gamma``
(here ``momentum``), weight decay ``lambda`` (``weight_decay``) and per-step LR ``eta_t``, in PyTorch's
convention (``u_{t+1} = gamma u_t + grad + lambda theta_t``, ``theta_{t+1} = theta_t - eta_t u_{t+1}``,
``u_0 = 0``). The *exponential run* is the same optimizer without weight decay and LR ``eta~_t``.

Theorem 1.1 (constant LR, spec section 3)
    ``alpha`` = the larger root of ``x^2 - (1 + gamma - lambda eta) x + gamma = 0``;
    ``eta~_t = eta alpha^(-2t-1)``; then ``theta~_t = alpha^(-t) theta_t`` for every t, so on a
    scale-invariant loss both runs compute the same function at every step. Real roots exist iff
    ``lambda eta <= (1 - sqrt(gamma))^2`` (strictly ``<`` when ``gamma = 0``, where ``alpha = 1 - lambda eta``).

Exact equivalent of any schedule (spec section 4, derived and verified there; the step-decay case is the
paper's Theorem 2, "TEXP")
    ``r_t = eta_t / eta_{t-1}`` (``r_0 = 1``), ``a_{-1} = alpha(eta_0)``,
    ``a_t = 1 + gamma r_t - lambda eta_t - gamma r_t / a_{t-1}``, ``c_0 = 1``, ``c_{t+1} = a_t c_t``;
    ``eta~_t = eta_t / (c_t c_{t+1})`` and ``theta~_t = theta_t / c_t``.

Initial momentum buffer (spec section 3)
    ``u~_0 = -(1 - alpha) / (alpha eta_0) * theta_0`` with ``alpha = alpha(eta_0)``; with a zero buffer the
    runs differ.

The paper's closed form ("paper" mode)
    The same formulas with ``a_t`` replaced by the fixed point ``alpha(eta_t)`` of the current LR: inside a
    phase of constant LR the LR grows by ``alpha_I^-2`` per step, and at the first step of phase I it is
    multiplied by ``(eta_I / eta_{I-1}) / (alpha_{I-1} alpha_I)``. It equals the exact recursion when
    ``gamma = 0`` or the LR is constant; after a change of LR the exact ``a_t`` starts at
    ``1 - r (1 - alpha_{I-1})`` and relaxes to ``alpha_I`` geometrically, which the closed form ignores.

Numerics: the recursion is run on ``d_t = a_t - 1`` (``d_t = gamma r_t d_{t-1} / (1 + d_{t-1}) -
lambda eta_t``), which keeps full relative precision in the tiny per-step deficit ``1 - a_t``; ``log c_t``
is accumulated with ``log1p``, so ``c_t`` never underflows however long the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from .._validation import check_number

__all__ = [
    "MODES",
    "ExpSchedule",
    "exponential_schedule",
    "growth_factor",
    "initial_buffer_coefficient",
    "max_weight_decay_lr",
    "step_decay_lrs",
    "texp_schedule",
]

#: ``"exact"``: the per-step recursion (exactly equivalent); ``"paper"``: the paper's closed form.
MODES = ("exact", "paper")


# ---------------------------------------------------------------------------------------------- validation
def _check_hyper(lr: Any, weight_decay: Any, momentum: Any) -> None:
    check_number("lr", lr, low=0, low_open=True)
    check_number("weight_decay", weight_decay, low=0)
    check_number("momentum", momentum, low=0, high=1, high_open=True)


def _check_mode(mode: Any) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _check_milestones(milestones: Any) -> tuple[int, ...]:
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise TypeError(f"milestones must be a sequence of ints (steps), got {milestones!r}")
    for m in milestones:
        if isinstance(m, bool) or not isinstance(m, int):
            raise TypeError(f"milestones must contain ints (steps), got {m!r} in {list(milestones)!r}")
    if any(m < 1 for m in milestones):
        raise ValueError(f"milestones must be >= 1 (steps; a drop at step 0 is a smaller lr), got {list(milestones)!r}")
    if any(b <= a for a, b in pairwise(milestones)):
        raise ValueError(f"milestones must be strictly increasing, got {list(milestones)!r}")
    return tuple(milestones)


# ---------------------------------------------------------------------------------------------- Theorem 1.1
def max_weight_decay_lr(momentum: float) -> float:
    """The largest ``weight_decay * lr`` for which the growth factor exists: ``(1 - sqrt(momentum))^2``.

    At ``momentum = 0`` the bound (1) itself is excluded (``alpha = 1 - weight_decay * lr`` must be > 0).
    For momentum 0.9 it is 0.00263.
    """
    check_number("momentum", momentum, low=0, high=1, high_open=True)
    return (1.0 - math.sqrt(momentum)) ** 2


def _check_exists(lr: float, weight_decay: float, momentum: float, what: str = "lr") -> None:
    bound = max_weight_decay_lr(momentum)
    product = weight_decay * lr
    if product > bound or (momentum == 0 and product >= bound):
        relation = ">=" if product == bound else ">"
        raise ValueError(
            f"no exponential equivalent: weight_decay * {what} = {weight_decay!r} * {lr!r} = {product:.6g} "
            f"{relation} (1 - sqrt(momentum))^2 = {bound:.6g} (momentum={momentum!r}); the condition "
            f"weight_decay * lr {'<' if momentum == 0 else '<='} (1 - sqrt(momentum))^2 fails by {product - bound:.3g} "
            f"({product / bound:.3f}x the bound). Lower lr or weight_decay (Theorem 1.1 needs a real root)."
        )


def _deficit(lr: float, weight_decay: float, momentum: float) -> float:
    """``1 - alpha`` for the larger root alpha, computed without cancellation (the input must be valid).

    With ``s = 1 - gamma + lambda eta`` and ``D = (1 + gamma - lambda eta)^2 - 4 gamma``, ``s^2 - D = 4 lambda eta``,
    so ``1 - alpha = (s - sqrt(D)) / 2 = 2 lambda eta / (s + sqrt(D))``.
    """
    le = weight_decay * lr
    disc = max((1.0 - momentum - le) ** 2 - 4.0 * momentum * le, 0.0)  # == (1 + gamma - le)^2 - 4 gamma
    s = 1.0 - momentum + le
    denom = s + math.sqrt(disc)
    return 2.0 * le / denom if denom > 0 else 0.0


def growth_factor(lr: float, weight_decay: float, momentum: float) -> float:
    """Theorem 1.1's ``alpha``: the larger root of ``x^2 - (1 + momentum - weight_decay * lr) x + momentum``.

    The exponential run's LR is ``lr * alpha^(-2t-1)`` (it *grows* by ``alpha^-2`` per step) and its weights
    are ``alpha^(-t)`` times the WD run's. ``alpha`` lies in ``[sqrt(momentum), 1]``;
    ``1 - alpha ~= weight_decay * lr / (1 - momentum)``. Both non-zero roots give an exact equivalence, but
    only the larger one is a stable fixed point of the general recursion and gives a sensible growth rate
    (the smaller one, near ``momentum``, would grow the LR ~``momentum^-2`` per step), so it is the one used.

    Raises:
        TypeError: an argument is not a real number.
        ValueError: an argument is out of range, or ``weight_decay * lr > (1 - sqrt(momentum))^2`` (no real
            root; the message says by how much the condition fails).
    """
    _check_hyper(lr, weight_decay, momentum)
    _check_exists(lr, weight_decay, momentum)
    return 1.0 - _deficit(lr, weight_decay, momentum)


# ---------------------------------------------------------------------------------------------- recursion
class _Recursion:
    """Incremental state of the conversion: step ``t``, ``d_t = a_t - 1``, ``log c_t`` and ``eta_t``.

    Starts at t = 0 with ``d_0 = alpha(eta_0) - 1`` (the fixed point: r_0 = 1 and a_{-1} = alpha(eta_0)).
    """

    __slots__ = ("d", "log_c", "lr", "mode", "momentum", "t", "weight_decay")

    def __init__(self, lr0: float, weight_decay: float, momentum: float, mode: str) -> None:
        self.weight_decay, self.momentum, self.mode = weight_decay, momentum, mode
        self.t, self.lr, self.log_c = 0, lr0, 0.0
        self.d = -_deficit(lr0, weight_decay, momentum)

    def advance(self, lr: float) -> None:
        """Move to step t + 1, whose WD-run LR is ``lr``."""
        if self.mode == "paper":
            d = -_deficit(lr, self.weight_decay, self.momentum)
        else:
            r = lr / self.lr
            d = self.momentum * r * self.d / (1.0 + self.d) - self.weight_decay * lr
        if not d > -1.0:
            raise ValueError(
                f"no exact exponential equivalent at step {self.t + 1}: the recursion factor a_t = {1 + d:.6g} is "
                f"not positive (the WD-run LR rose from {self.lr!r} to {lr!r}, by more than it can absorb)"
            )
        self.log_c += math.log1p(self.d)
        self.t, self.lr, self.d = self.t + 1, lr, d

    @property
    def log_lr(self) -> float:
        """``log eta~_t = log eta_t - 2 log c_t - log a_t``."""
        return math.log(self.lr) - 2.0 * self.log_c - math.log1p(self.d)

    def state(self) -> tuple[int, float, float, float]:
        return (self.t, self.lr, self.log_c, self.d)

    def load(self, state: Sequence[Any]) -> None:
        t, lr, log_c, d = state
        self.t, self.lr, self.log_c, self.d = int(t), float(lr), float(log_c), float(d)


def _exp2(log_value: float, extra_exponent: int = 0) -> float:
    """``exp(log_value) * 2**extra_exponent``, split as ``2^n e^y`` so a power-of-two rescale is exact.

    Raises OverflowError (with the float64 limit in the message) when the result is too large.
    """
    n = math.floor(log_value / math.log(2.0))
    y = log_value - n * math.log(2.0)
    try:
        return math.ldexp(math.exp(y), n + extra_exponent)
    except OverflowError as err:
        raise OverflowError(
            f"exp({log_value:.6g}) * 2**{extra_exponent} exceeds float64 (~1.8e308); renormalise the weights "
            "(renorm_every) to keep the exponential schedule in range"
        ) from err


def _safe_exp(value: float) -> float:
    """``exp(value)``, ``inf`` instead of OverflowError."""
    return math.exp(value) if value < 709.0 else math.inf


def initial_buffer_coefficient(lr: float, weight_decay: float, momentum: float) -> float:
    """``-(1 - alpha) / (alpha lr)``: the exponential run starts with ``momentum_buffer = coef * theta_0``.

    Spec section 3 (derived there and verified): at every step ``u_t = u~_t / alpha^t + (1 - alpha) / (alpha lr)
    theta_t``, so the WD run's ``u_0 = 0`` corresponds to ``u~_0 = coef * theta_0``. With ``u~_0 = 0`` instead the
    runs differ.
    """
    _check_hyper(lr, weight_decay, momentum)
    _check_exists(lr, weight_decay, momentum)
    deficit = _deficit(lr, weight_decay, momentum)
    return -deficit / ((1.0 - deficit) * lr)


# ---------------------------------------------------------------------------------------------- sequences
@dataclass(frozen=True)
class ExpSchedule:
    """The exponential run equivalent to a WD run over ``T = len(lrs)`` steps.

    Attributes:
        lrs: ``eta~_t`` for t = 0..T-1: the LR of the no-WD run at each optimizer step.
        weight_scales: ``1 / c_t`` for t = 0..T: the exponential run's weights are ``weight_scales[t]`` times the
            WD run's (exactly in ``"exact"`` mode; approximately in ``"paper"`` mode).
        factors: ``a_t`` for t = 0..T-1 (``alpha(eta_t)`` in ``"paper"`` mode).
        initial_buffer: the coefficient ``-(1 - alpha_0) / (alpha_0 eta_0)``: set every momentum buffer to
            ``initial_buffer * theta_0`` before the first step (0 when ``momentum == 0``).
        mode: ``"exact"`` or ``"paper"``.
    """

    lrs: tuple[float, ...]
    weight_scales: tuple[float, ...]
    factors: tuple[float, ...]
    initial_buffer: float
    mode: str


def step_decay_lrs(lr: float, milestones: Sequence[int], gamma: float, steps: int) -> list[float]:
    """The WD run's per-step LR: ``lr * gamma^(number of milestones <= t)`` for t = 0..steps-1.

    The same values as :class:`torch.optim.lr_scheduler.MultiStepLR` stepped once per optimizer step.
    """
    check_number("lr", lr, low=0, low_open=True)
    ms = _check_milestones(milestones)
    check_number("gamma", gamma, low=0, high=1, low_open=True)
    check_number("steps", steps, low=1, integer=True)
    out, k = [], 0
    for t in range(steps):
        while k < len(ms) and ms[k] <= t:
            k += 1
        out.append(lr * gamma**k)
    return out


def _validate_schedule(lrs: Any, weight_decay: Any, momentum: Any, mode: Any) -> _Recursion:
    """Check the arguments and that the recursion runs through ``lrs``; return a fresh recursion at t = 0."""
    _check_mode(mode)
    check_number("weight_decay", weight_decay, low=0)
    check_number("momentum", momentum, low=0, high=1, high_open=True)
    if isinstance(lrs, (str, bytes)) or not isinstance(lrs, Sequence) or len(lrs) == 0:
        raise TypeError(f"lrs must be a non-empty sequence of positive floats, got {lrs!r}")
    for t, value in enumerate(lrs):
        check_number(f"lrs[{t}]", value, low=0, low_open=True)
        if mode == "paper" or t == 0:
            _check_exists(value, weight_decay, momentum, what=f"lrs[{t}]")
    rec = _Recursion(float(lrs[0]), weight_decay, momentum, mode)
    for value in lrs[1:]:
        rec.advance(float(value))
    return _Recursion(float(lrs[0]), weight_decay, momentum, mode)


def exponential_schedule(lrs: Sequence[float], weight_decay: float, momentum: float,
                         mode: str = "exact") -> ExpSchedule:
    """Convert any per-step WD schedule ``lrs`` (cosine, step decay, ...) to its exponential equivalent.

    ``"exact"`` runs the recursion of spec section 4 (valid for any positive schedule whose first LR meets
    the existence condition; an LR that rises too fast makes some ``a_t <= 0``, which raises). ``"paper"`` uses
    the fixed point ``alpha(eta_t)`` of every step's LR (every LR must meet the existence condition).

    Raises:
        TypeError, ValueError: for invalid arguments (naming the argument, or the step that fails).
    """
    rec = _validate_schedule(lrs, weight_decay, momentum, mode)
    out_lrs, scales, factors = [], [1.0], []
    for t, value in enumerate(lrs):
        if t > 0:
            rec.advance(float(value))
        out_lrs.append(_exp2(rec.log_lr))
        factors.append(1.0 + rec.d)
        scales.append(_safe_exp(-(rec.log_c + math.log1p(rec.d))))
    coef = initial_buffer_coefficient(float(lrs[0]), weight_decay, momentum) if momentum > 0 else 0.0
    return ExpSchedule(tuple(out_lrs), tuple(scales), tuple(factors), coef, mode)


def texp_schedule(lr: float, weight_decay: float, momentum: float, milestones: Sequence[int], gamma: float,
                  steps: int, mode: str = "exact") -> ExpSchedule:
    """TEXP: the exponential schedule equivalent to step decay (``lr``, ``milestones`` in steps, ``gamma``).

    ``"exact"`` (default) is exactly equivalent; ``"paper"`` is the paper's tapered closed form: growth
    ``alpha_I^-2`` per step inside phase I and ``eta~ <- eta~ (eta_I / eta_{I-1}) / (alpha_{I-1} alpha_I)`` at the
    first step of phase I.
    """
    _check_hyper(lr, weight_decay, momentum)
    return exponential_schedule(step_decay_lrs(lr, milestones, gamma, steps), weight_decay, momentum, mode)
