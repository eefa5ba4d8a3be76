"""What the ActiveLR optimizers share: the sign rule, the epoch clock, validation and state handling.

ActiveLR (Wadi, Fredette & Senecal, "Read the Signs", arXiv 2301.10133; spec ``shared/papers/activelr.md``)
gives every parameter element ``i`` its own learning-rate multiplier ``gai_i`` (initialised to 1) and
adapts it once per epoch from the sign of the epoch's summed gradient (spec section 1, the code's
``SetLR`` block):

    cumm_e     = sum over the steps of epoch e of p.grad                        (gradient sum, "cumm")
    gai_i     <- gai_i * lr_low   if gradOld_i * cumm_i <= 0   (sign flip or exact zero)
                 gai_i + lr_high  otherwise                    (same sign: additive increase)
    gradOld   <- cumm_e,  cumm <- 0

from the end of the second epoch on (the first epoch's sum is only stored). Every step then multiplies
the base optimizer's update elementwise by ``gai``.

Decisions taken here (documented in ``docs/activelr.md`` and tested):

* **Epoch clock.** One optimizer-level clock: :meth:`ActiveOptimizer.end_epoch`, called by the training
  loop or automatically after every ``steps_per_epoch`` calls of ``step()``. The official code counts
  steps per parameter, so a parameter that misses gradients drifts out of phase with the real epoch; here
  a parameter that received no gradient during an epoch is simply left out of that boundary (its
  multiplier, reference sum and first-epoch status are kept), which is what the per-parameter clock of the
  code does when a parameter gets no gradient for a whole epoch, without the drift.
* **Sign test.** ``sign(gradOld) * sign(cumm) <= 0``: the code's ``gradOld * cumm <= 0`` evaluated on the
  signs, so that the product cannot underflow to 0 (a spurious "flip") or overflow in float16/bfloat16.
* **Non-finite sums.** An element whose current or previous epoch sum is NaN or +-inf (a NaN/inf gradient
  reached it) keeps its multiplier at that boundary. The sums are reset every epoch, so the multiplier
  resumes adapting after one clean epoch; it can never become NaN. The parameter update itself is not
  protected (as in every torch optimizer: skip such steps, e.g. with ``torch.amp.GradScaler``).
* **Bounds.** ``max_multiplier`` / ``min_multiplier`` clamp the multiplier after each update; both default
  to ``None`` (unbounded, as in the paper's code). Both must admit the initial value 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import _default_to_fused_or_foreach

from .._validation import check_number

__all__ = ["ACTIVE_DEFAULTS", "ActiveOptimizer", "EffectiveLR", "apply_sign_rule_"]

#: ActiveLR's own hyperparameters and their defaults (spec section 3: every logged experiment of the paper
#: used lr_high = 2.0 and lr_low = 0.5; the published files' defaults differ).
ACTIVE_DEFAULTS: dict[str, Any] = {"lr_low": 0.5, "lr_high": 2.0, "max_multiplier": None, "min_multiplier": None}


class EffectiveLR(NamedTuple):
    """The learning rate actually applied in one param group: ``lr`` times the mean/min/max multiplier."""

    mean: float
    min: float
    max: float


# ---------------------------------------------------------------------------------------------- validation
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


def check_betas(betas: Any) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair of floats, got {betas!r}")
    for i, beta in enumerate(betas):
        if isinstance(beta, Tensor):
            raise ValueError(f"betas[{i}] must be a float (Tensor betas are not supported), got {beta!r}")
        check_number(f"betas[{i}]", beta, low=0.0, high=1.0, high_open=True)


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
    """Validate ``lr_low``, ``lr_high``, ``max_multiplier``, ``min_multiplier`` of a param group."""
    check_number("lr_low", group["lr_low"], low=0.0, high=1.0)
    check_number("lr_high", group["lr_high"], low=0.0)
    hi, lo = group["max_multiplier"], group["min_multiplier"]
    if hi is not None:
        check_number("max_multiplier", hi, low=1.0)
    if lo is not None:
        check_number("min_multiplier", lo, low=0.0, high=1.0)


def check_steps_per_epoch(steps_per_epoch: Any) -> None:
    if steps_per_epoch is not None:
        check_number("steps_per_epoch", steps_per_epoch, low=1, integer=True)


# ---------------------------------------------------------------------------------------------- the sign rule
@torch.no_grad()
def apply_sign_rule_(multiplier: Tensor, prev_sum: Tensor, cur_sum: Tensor, lr_low: float, lr_high: float,
                     min_multiplier: float | None = None, max_multiplier: float | None = None) -> None:
    """The ActiveLR update of one tensor of multipliers, in place (spec section 1, the code's ``SetLR``).

    ``gai <- where(gradOld * cumm <= 0, gai * lr_low, gai + lr_high)``, evaluated on signs; elements whose
    ``prev_sum`` or ``cur_sum`` is not finite keep their multiplier; then the optional clamp.
    """
    flip = torch.sign(prev_sum) * torch.sign(cur_sum) <= 0
    new = torch.where(flip, multiplier * lr_low, multiplier + lr_high)
    finite = torch.isfinite(prev_sum) & torch.isfinite(cur_sum)
    new = torch.where(finite, new, multiplier)
    if min_multiplier is not None or max_multiplier is not None:
        new.clamp_(min=min_multiplier, max=max_multiplier)
    multiplier.copy_(new)  # in place: a captured step keeps pointing at the same tensor


def resolve_foreach(foreach: bool | None, params: list[Tensor], lr: Any, capturable: bool) -> bool:
    """torch's default: the foreach path when every tensor is on a device with fast foreach kernels (CUDA)."""
    if foreach is not None:
        return foreach
    if isinstance(lr, Tensor) and not capturable:
        return False
    _, use_foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)
    return use_foreach


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


# ---------------------------------------------------------------------------------------------- base class
class ActiveOptimizer(Optimizer):
    """Base of the ActiveLR optimizers: multipliers, epoch gradient sums, the epoch clock and state handling.

    Subclasses implement ``_step_group(group, params)`` (the base optimizer's update with the multiplier
    applied, including the gradient accumulation ``cumm += p.grad``) and ``_validate_group(group)``.

    Per-parameter state (``self.state[p]``), besides the base optimizer's: ``multiplier`` (``gai``, starts
    at 1), ``grad_sum`` (``cumm``, this epoch's gradient sum), ``prev_grad_sum`` (``gradOld``, created at
    the parameter's first epoch boundary) and ``epoch_steps`` (steps with a gradient in this epoch).
    Optimizer-level state (in ``state_dict()["active"]``): ``epoch`` (completed epochs), ``steps_in_epoch``
    and ``steps_per_epoch``.
    """

    # State keys; :class:`~lrpilot.active.active.Active` prefixes them to stay clear of the inner optimizer's.
    _MULT = "multiplier"
    _SUM = "grad_sum"
    _PREV = "prev_grad_sum"
    _COUNT = "epoch_steps"
    _supports_sparse = False

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], *, steps_per_epoch: int | None = None) -> None:
        check_steps_per_epoch(steps_per_epoch)
        self._validate_group(defaults)  # everything is checked before anything is built
        self.steps_per_epoch = steps_per_epoch
        self.epoch = 0
        self._steps_in_epoch = 0
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ validation
    def _validate_group(self, group: dict[str, Any]) -> None:
        check_active_args(group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As :meth:`torch.optim.Optimizer.add_param_group`; the group's hyperparameters are validated first."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        self._validate_group({**self.defaults, **param_group})
        super().add_param_group(param_group)

    # ------------------------------------------------------------------ stepping
    def _step_group(self, group: dict[str, Any], params: list[Tensor]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _params_with_grad(self) -> list[tuple[dict[str, Any], list[Tensor]]]:
        """Per group, the parameters whose ``grad`` is not None; sparse ones raise before anything changes."""
        groups = []
        for gi, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not self._supports_sparse:
                for p in params:
                    if p.grad.is_sparse:  # type: ignore[union-attr]
                        pi = next(i for i, q in enumerate(group["params"]) if q is p)
                        raise RuntimeError(
                            f"{type(self).__name__} does not support sparse gradients (param group {gi}, parameter "
                            f"{pi}, shape {tuple(p.shape)}); nothing was updated"
                        )
            groups.append((group, params))
        return groups

    def _collect(self, params: list[Tensor]) -> tuple[list[dict[str, Any]], list[Tensor], list[Tensor]]:
        """(states, multipliers, gradient sums) of ``params``; creates the ActiveLR state on first use and
        counts the step in each parameter's ``epoch_steps``."""
        mult_key, sum_key = self._MULT, self._SUM
        states = [self.state[p] for p in params]
        self._count_steps(params, states)
        return states, [s[mult_key] for s in states], [s[sum_key] for s in states]

    @torch._dynamo.disable
    def _count_steps(self, params: list[Tensor], states: list[dict[str, Any]]) -> None:
        """Create missing ActiveLR state and count the step in each parameter's epoch counter. Python-int
        bookkeeping, kept out of ``torch.compile`` graphs so that a compiled ``step()`` is not recompiled
        for every new counter value."""
        mult_key, sum_key, count_key = self._MULT, self._SUM, self._COUNT
        for p, state in zip(params, states):
            if mult_key not in state:
                state[mult_key] = torch.ones_like(p, memory_format=torch.preserve_format)
                state[sum_key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state[count_key] = 0
            state[count_key] += 1

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimizer step (multiplier applied); ends the epoch after every ``steps_per_epoch`` steps.

        Sparse gradients raise ``RuntimeError`` before anything changes; parameters whose ``grad`` is
        ``None`` are skipped (their state, multiplier and epoch sum are left as they are).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, params in self._params_with_grad():
            if params:
                self._step_group(group, params)
        self._tick()
        return loss

    @torch._dynamo.disable
    def _tick(self) -> None:
        """Count the step; close the epoch after ``steps_per_epoch`` (eager: see :meth:`_count_steps`)."""
        self._steps_in_epoch += 1
        if self.steps_per_epoch is not None and self._steps_in_epoch >= self.steps_per_epoch:
            self.end_epoch()

    # ------------------------------------------------------------------ the epoch boundary
    @torch.no_grad()
    def end_epoch(self) -> None:
        """Close the epoch: apply the sign rule to every parameter that received a gradient in it.

        A parameter's first epoch only stores its gradient sum (``gradOld``); from its second epoch on the
        multipliers change (:func:`apply_sign_rule_`), effective from the next ``step()``. Parameters
        without a gradient in this epoch are left out, so calling ``end_epoch()`` twice in a row, or right
        after an automatic ``steps_per_epoch`` boundary, changes nothing the second time.
        """
        for group in self.param_groups:
            low, high = group["lr_low"], group["lr_high"]
            lo, hi = group["min_multiplier"], group["max_multiplier"]
            for p in group["params"]:
                state = self.state.get(p)
                if not state or not state.get(self._COUNT, 0):
                    continue
                cur = state[self._SUM]
                prev = state.get(self._PREV)
                if prev is None:
                    state[self._PREV] = cur.clone(memory_format=torch.preserve_format)
                else:
                    apply_sign_rule_(state[self._MULT], prev, cur, low, high, lo, hi)
                    prev.copy_(cur)
                cur.zero_()
                state[self._COUNT] = 0
        self.epoch += 1
        self._steps_in_epoch = 0

    # ------------------------------------------------------------------ visibility
    @torch.no_grad()
    def effective_lr(self) -> list[EffectiveLR]:
        """Per param group, ``lr`` x (mean, min, max) of the multipliers over all its elements.

        Elements of parameters that have not been stepped yet count with their initial multiplier 1. For
        logging: this reads the multipliers on the host (one transfer per group).
        """
        out = []
        for group in self.param_groups:
            lr = float(group["lr"])
            stats, numel, untouched = [], 0, False
            for p in group["params"]:
                state = self.state.get(p)
                mult = state.get(self._MULT) if state else None
                numel += p.numel()
                if mult is None:
                    untouched = untouched or p.numel() > 0
                elif mult.numel() > 0:
                    m = mult.detach().to(torch.float64)
                    stats.append(torch.stack([m.sum() - m.numel(), m.min(), m.max()]))
            if numel == 0:
                out.append(EffectiveLR(lr, lr, lr))
                continue
            excess, lo, hi = 0.0, math.inf, -math.inf
            if stats:
                table = torch.stack([s.cpu() for s in stats])
                excess = float(table[:, 0].sum())
                lo, hi = float(table[:, 1].min()), float(table[:, 2].max())
            if untouched:
                lo, hi = min(lo, 1.0), max(hi, 1.0)
            out.append(EffectiveLR(lr * (1.0 + excess / numel), lr * lo, lr * hi))
        return out

    # ------------------------------------------------------------------ checkpointing
    def _clock_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "steps_in_epoch": self._steps_in_epoch, "steps_per_epoch": self.steps_per_epoch}

    def _set_clock_state(self, clock: dict[str, Any]) -> None:
        self.epoch = clock["epoch"]
        self._steps_in_epoch = clock["steps_in_epoch"]
        self.steps_per_epoch = clock["steps_per_epoch"]

    @staticmethod
    def _check_clock_state(state_dict: dict[str, Any]) -> dict[str, Any]:
        clock = state_dict.get("active")
        if not isinstance(clock, dict):
            raise ValueError("state_dict has no 'active' entry: it was not saved by an ActiveLR optimizer")
        missing = {"epoch", "steps_in_epoch", "steps_per_epoch"} - set(clock)
        if missing:
            raise ValueError(f"state_dict['active'] is missing {sorted(missing)}")
        check_number("state_dict['active']['epoch']", clock["epoch"], low=0, integer=True)
        check_number("state_dict['active']['steps_in_epoch']", clock["steps_in_epoch"], low=0, integer=True)
        check_steps_per_epoch(clock["steps_per_epoch"])
        return dict(clock)

    def state_dict(self) -> dict[str, Any]:
        """torch's ``{"state", "param_groups"}`` (multipliers and sums included) plus ``"active"``: the clock."""
        state_dict = super().state_dict()
        state_dict["active"] = self._clock_state()
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (checked before anything changes); resumes bitwise, mid-epoch included."""
        clock = self._check_clock_state(state_dict)
        super().load_state_dict(state_dict)
        self._set_clock_state(clock)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["active"] = self._clock_state()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        clock = state.pop("active", None)
        super().__setstate__(state)
        if clock is not None:
            self._set_clock_state(clock)
