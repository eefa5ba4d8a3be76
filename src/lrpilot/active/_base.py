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
* **Zero-filled gradients.** A parameter whose ``grad`` is a tensor received a gradient, even an all-zero one
  (``zero_grad(set_to_none=False)`` leaves zeros on parameters a step did not use): its epoch sum is 0, which
  the paper's rule (``gradOld * cumm <= 0``) counts as a flip, so its multiplier is multiplied by ``lr_low``.
  Only ``grad is None`` (the default ``set_to_none=True``) leaves a parameter out of the boundary. Telling
  "zero" from "unused" would cost a reduction per parameter and step; torch's optimizers make the same
  distinction (they step on zeros, skip None).
* **Skipped steps.** ``steps_per_epoch`` counts ``step()`` calls. ``torch.amp.GradScaler`` skips the call
  when it finds inf/NaN gradients, so a skipped step is not counted and each later automatic boundary
  comes one batch later; with GradScaler in float16, call ``end_epoch()`` at the end of each epoch (the
  Lightning and Hugging Face callbacks do) for boundaries aligned with the data. Counting them would need
  ``_step_supports_amp_scaling`` (unscaling inside ``step()``), which Lightning answers by refusing
  gradient clipping and accelerate by no longer reporting skipped steps.
* **Checkpoints.** ``state_dict()["active"]`` stores the optimizer's name and the clock; ``load_state_dict``
  checks class, layout, hyperparameters and the ActiveLR state before anything changes, and keeps the
  constructor's ``steps_per_epoch`` (see :meth:`ActiveOptimizer.load_state_dict`).
* **Bounds.** ``max_multiplier`` / ``min_multiplier`` clamp the multiplier after each update; both default
  to ``None`` (unbounded, as in the paper's code). Both must admit the initial value 1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import _default_to_fused_or_foreach

from .._validation import check_number
from ..telemetry import EffectiveLR

__all__ = ["ACTIVE_DEFAULTS", "ActiveOptimizer", "EffectiveLR", "apply_sign_rule_"]

#: ActiveLR's own hyperparameters and their defaults (spec section 3: every logged experiment of the paper
#: used lr_high = 2.0 and lr_low = 0.5; the published files' defaults differ).
ACTIVE_DEFAULTS: dict[str, Any] = {"lr_low": 0.5, "lr_high": 2.0, "max_multiplier": None, "min_multiplier": None}


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


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"shape {tuple(value.shape)}"
    return type(value).__name__


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
    #: Keys of the base optimizer's per-parameter state besides ActiveLR's: a saved state with any other key
    #: was written by another optimizer. ``None``: not checked (:class:`Active` does not know its inner keys).
    _BASE_STATE_KEYS: frozenset[str] | None = frozenset()

    def _optimizer_name(self) -> str:
        """The name stored in ``state_dict()["active"]["optimizer"]`` and compared at load time."""
        return type(self).__name__

    def _clock_state(self) -> dict[str, Any]:
        return {"optimizer": self._optimizer_name(), "epoch": self.epoch, "steps_in_epoch": self._steps_in_epoch,
                "steps_per_epoch": self.steps_per_epoch}

    def _set_clock_state(self, clock: dict[str, Any]) -> None:
        self.epoch = clock["epoch"]
        self._steps_in_epoch = clock["steps_in_epoch"]
        self.steps_per_epoch = clock["steps_per_epoch"]

    def _load_clock_state(self, clock: dict[str, Any]) -> None:
        """Restore the clock from a state dict; this optimizer's ``steps_per_epoch`` wins (see load_state_dict)."""
        mine, saved = self.steps_per_epoch, clock["steps_per_epoch"]
        self.epoch = clock["epoch"]
        self._steps_in_epoch = clock["steps_in_epoch"]
        if saved != mine:
            late = ""
            if mine is not None and self._steps_in_epoch >= mine:
                late = (f"; the current epoch, already {self._steps_in_epoch} steps long, closes at the next "
                        "step()")
            warnings.warn(
                f"{self._optimizer_name()}.load_state_dict: the state_dict was saved with steps_per_epoch={saved!r}, "
                f"this optimizer has steps_per_epoch={mine!r}; keeping steps_per_epoch={mine!r}{late}",
                UserWarning, stacklevel=3,
            )

    def _check_clock_state(self, state_dict: Any) -> dict[str, Any]:
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        clock = state_dict.get("active")
        if not isinstance(clock, dict):
            raise ValueError(
                f"state_dict has no 'active' entry: it was not saved by an ActiveLR optimizer, so it cannot be loaded "
                f"into {self._optimizer_name()} (a plain torch.optim state dict holds no multipliers)"
            )
        saved = clock.get("optimizer")
        if saved is not None and saved != self._optimizer_name():
            raise ValueError(
                f"state_dict was saved by {saved!r}; it cannot be loaded into {self._optimizer_name()!r} "
                f"(load it into a {saved})"
            )
        missing = {"epoch", "steps_in_epoch", "steps_per_epoch"} - set(clock)
        if missing:
            raise ValueError(f"state_dict['active'] is missing {sorted(missing)}")
        check_number("state_dict['active']['epoch']", clock["epoch"], low=0, integer=True)
        check_number("state_dict['active']['steps_in_epoch']", clock["steps_in_epoch"], low=0, integer=True)
        check_steps_per_epoch(clock["steps_per_epoch"])
        return dict(clock)

    def _required_group_keys(self, saved_group: dict[str, Any]) -> set[str]:
        """Hyperparameters a loaded param group must carry (torch replaces the groups by the saved ones);
        ``differentiable`` is the one key torch's ``__setstate__`` adds to ``defaults`` and not to the groups."""
        return set(self.defaults) - {"differentiable"}

    def _validate_loaded_group(self, group: dict[str, Any]) -> None:
        self._validate_group(group)

    def _check_state_dict(self, state_dict: Any) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` checks, before anything changes; returns the clock entry.

        The optimizer class (``state_dict["active"]["optimizer"]``; for dicts saved before it was stored: the
        param groups' hyperparameter keys and the per-parameter state keys), the param group layout, every
        loaded group's hyperparameters, and per parameter the ActiveLR state: ``multiplier`` and the gradient
        sums of the parameter's shape, multipliers finite and >= 0, the step count an int >= 0.
        """
        clock = self._check_clock_state(state_dict)
        name = self._optimizer_name()
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"state_dict has no {key!r} entry")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(saved_groups)} param group(s), {name} has {len(self.param_groups)}"
            )
        where: dict[Any, tuple[int, int, Tensor, str]] = {}
        for gi, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"state_dict param group {gi} has {len(saved['params'])} parameter(s), {name}'s has "
                    f"{len(group['params'])}"
                )
            missing = self._required_group_keys(saved) - set(saved)
            if missing:
                raise ValueError(
                    f"state_dict param group {gi} has no {sorted(missing)}: it was saved by another optimizer "
                    f"than {name}"
                )
            self._validate_loaded_group({k: v for k, v in saved.items() if k != "params"})
            names = group.get("param_names")
            for pi, (pid, p) in enumerate(zip(saved["params"], group["params"])):
                label = f"param group {gi}, parameter {pi}"
                if names is not None and pi < len(names):
                    label += f" ({names[pi]!r})"
                where[pid] = (gi, pi, p, f"{label} of shape {tuple(p.shape)}")
        for pid, state in state_dict["state"].items():
            if pid in where:
                self._check_param_state(state, *where[pid])
        return clock

    def _check_param_state(self, state: Any, gi: int, pi: int, p: Tensor, label: str) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"state_dict state of {label} must be a dict, got {type(state).__name__}")
        if not state:
            return
        name = self._optimizer_name()
        active = (self._MULT, self._SUM, self._PREV, self._COUNT)
        if self._BASE_STATE_KEYS is not None:
            unknown = set(state) - set(active) - self._BASE_STATE_KEYS
            if unknown:
                raise ValueError(
                    f"state_dict state of {label} has {sorted(map(str, unknown))}, which {name} does not use: it "
                    f"was saved by another optimizer"
                )
            for key in self._BASE_STATE_KEYS & set(state):
                value = state[key]
                if key == "step":
                    if isinstance(value, Tensor) and value.numel() != 1:
                        raise ValueError(f"state_dict 'step' of {label} must have 1 element, got shape "
                                         f"{tuple(value.shape)}")
                elif key == "momentum_buffer" and value is None:
                    continue
                elif not isinstance(value, Tensor) or value.shape != p.shape:
                    raise ValueError(f"state_dict {key!r} of {label} must be a tensor of shape {tuple(p.shape)}, "
                                     f"got {_describe(value)}")
        present = [k for k in active if k in state]
        if not present and self._BASE_STATE_KEYS is None:
            dedicated = {ActiveOptimizer._MULT, ActiveOptimizer._SUM, ActiveOptimizer._COUNT}
            if dedicated <= set(state):
                raise ValueError(f"state_dict state of {label} was saved by a dedicated ActiveLR optimizer, not "
                                 f"by {name}")
            return  # the inner optimizer's state of a parameter Active has not stepped yet
        for key in (self._MULT, self._SUM, self._COUNT):
            if key not in state:
                raise ValueError(f"state_dict state of {label} has no {key!r}")
        for key in (self._MULT, self._SUM, self._PREV):
            if key in state and (not isinstance(state[key], Tensor) or state[key].shape != p.shape):
                raise ValueError(f"state_dict {key!r} of {label} must be a tensor of shape {tuple(p.shape)}, "
                                 f"got {_describe(state[key])}")
        mult = state[self._MULT].detach()
        if not bool(torch.isfinite(mult).all()) or bool((mult < 0).any()):  # load time only, not the hot path
            bad = mult[~torch.isfinite(mult) | (mult < 0)].flatten()[:3].tolist()
            raise ValueError(f"state_dict {self._MULT!r} of {label} must be finite and >= 0, got values {bad}")
        count = state[self._COUNT]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"state_dict {self._COUNT!r} of {label} must be an int >= 0, got {count!r}")

    def state_dict(self) -> dict[str, Any]:
        """torch's ``{"state", "param_groups"}`` (multipliers and sums included) plus ``"active"``: the
        optimizer's name and the clock (``epoch``, ``steps_in_epoch``, ``steps_per_epoch``)."""
        state_dict = super().state_dict()
        state_dict["active"] = self._clock_state()
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; resumes bitwise, mid-epoch included.

        Checked before anything changes (``ValueError`` naming the bad value, the optimizer left intact): a
        dict saved by another optimizer class (both names given), a param group layout that differs, bad
        hyperparameters, and per parameter a ``multiplier``/gradient sum of the wrong shape or a multiplier
        that is not finite or negative. Dicts saved before the class name was stored load as before (another
        class is then recognised by its param group and state keys).

        ``steps_per_epoch``: this optimizer's value (the constructor's) wins over the saved one, because the
        batch size or loader may have changed since; a different saved value gives a ``UserWarning`` naming
        both. An epoch already at least as long as the new ``steps_per_epoch`` closes at the next ``step()``.
        As in torch, loaded tensors on the parameters' device and dtype are shared with ``state_dict`` (load a
        ``copy.deepcopy`` to fork an optimizer within one process).
        """
        clock = self._check_state_dict(state_dict)
        super().load_state_dict(state_dict)
        self._load_clock_state(clock)

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
