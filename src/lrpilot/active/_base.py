"""The base class of the ActiveLR optimizers: multipliers, epoch gradient sums, the epoch clock and state handling.

The rule applied at each epoch boundary is :func:`~lrpilot.active.sign_rule.apply_sign_rule_`; the
functional steps' shared plumbing is in ``_foreach.py``, the argument checks in ``_validation.py``.

Decisions taken here (documented in ``docs/activelr.md`` and tested):

* **Epoch clock.** One optimizer-level clock: :meth:`ActiveOptimizer.end_epoch`, called by the training
  loop or automatically after every ``steps_per_epoch`` calls of ``step()``. The official code counts
  steps per parameter, so a parameter that misses gradients drifts out of phase with the real epoch; here
  a parameter that received no gradient during an epoch is simply left out of that boundary (its
  multiplier, reference sum and first-epoch status are kept), which is what the per-parameter clock of the
  code does when a parameter gets no gradient for a whole epoch, without the drift.
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
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..telemetry import EffectiveLR

# The "x as x" imports re-export the helpers defined here before the split, for imports written against that.
from ._foreach import decay_ as decay_
from ._foreach import foreach_decay_ as foreach_decay_
from ._foreach import host_lr as host_lr
from ._foreach import increment_steps as increment_steps
from ._foreach import resolve_foreach as resolve_foreach
from ._validation import check_active_args as check_active_args
from ._validation import check_betas as check_betas
from ._validation import check_bool as check_bool
from ._validation import check_foreach_lr as check_foreach_lr
from ._validation import check_lr as check_lr
from ._validation import check_number as check_number
from ._validation import check_steps_per_epoch, describe
from ._validation import check_unsupported as check_unsupported
from .sign_rule import ACTIVE_DEFAULTS, apply_sign_rule_

__all__ = ["ACTIVE_DEFAULTS", "ActiveOptimizer", "EffectiveLR", "apply_sign_rule_"]


class ActiveOptimizer(Optimizer):
    """Base of the ActiveLR optimizers: multipliers, epoch gradient sums, the epoch clock and state handling.

    ActiveLR arguments (the same in :class:`~lrpilot.active.sgd.ActiveSGD`,
    :class:`~lrpilot.active.adamw.ActiveAdamW`, :class:`~lrpilot.active.radam.ActiveRAdam`,
    :class:`~lrpilot.active.adabelief.ActiveAdaBelief` and :class:`~lrpilot.active.active.Active`, which refer
    here; all keyword-only; every one but ``steps_per_epoch`` may differ per param group):

    Args:
        lr_low: multiplicative decrease of a multiplier whose epoch gradient sum changed sign or is exactly
            zero, in [0, 1] (0.5, every logged experiment of the paper).
        lr_high: additive increase of a multiplier whose epoch gradient sum kept its sign, >= 0 (2.0).
        max_multiplier: upper bound of the multiplier, >= 1 (None: unbounded, as in the paper).
        min_multiplier: lower bound of the multiplier, in [0, 1] (None: unbounded, as in the paper).
        flip_guard: lrpilot's stability guard, *not* part of the paper's rule: None (the default: the rule as
            published) or a fraction in [0, 1]. At each boundary the growth of a parameter tensor's same-sign
            multipliers is scaled by ``clamp((flip_guard - flips) / 0.2, 0, 1)``, ``flips`` being the fraction
            of its elements that flipped sign (exact zeros included): full while ``flips <= flip_guard - 0.2``,
            none from ``flips >= flip_guard`` on; the flipped ones still shrink by ``lr_low``. 0.5 (flips as
            frequent as independent noise: no consistent progress) is the measured setting; see
            :func:`~lrpilot.active.sign_rule.apply_sign_rule_` and ``docs/activelr.md``.
        steps_per_epoch: call :meth:`end_epoch` automatically after every that many ``step()`` calls (for
            loops that never call it); None: call ``end_epoch()`` yourself once per epoch.
        scale_weight_decay: multiply the decoupled weight decay by the multiplier too,
            ``p *= 1 - lr * wd * gai`` (False: ``p *= 1 - lr * wd``, the paper's second code; its first code,
            for AdamW and RAdam, scaled it). Not an argument of ``Active``, whose inner optimizer's decay is
            part of the scaled displacement.

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
    #: Param group keys a saved group may lack (added after checkpoints were written); a missing one is off.
    _OPTIONAL_GROUP_KEYS = frozenset({"flip_guard"})

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
                    if p.grad.is_sparse:
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

    @torch.compiler.disable
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

    @torch.compiler.disable
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
            guard = group.get("flip_guard")  # None in groups loaded from dicts saved before the option existed
            for p in group["params"]:
                state = self.state.get(p)
                if not state or not state.get(self._COUNT, 0):
                    continue
                cur = state[self._SUM]
                prev = state.get(self._PREV)
                if prev is None:
                    state[self._PREV] = cur.clone(memory_format=torch.preserve_format)
                else:
                    apply_sign_rule_(state[self._MULT], prev, cur, low, high, lo, hi, guard)
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
        ``differentiable`` is the one key torch's ``__setstate__`` adds to ``defaults`` and not to the groups;
        ``_OPTIONAL_GROUP_KEYS`` (``flip_guard``) are absent from dicts saved before they existed (off there)."""
        return set(self.defaults) - {"differentiable"} - self._OPTIONAL_GROUP_KEYS

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
                                     f"got {describe(value)}")
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
                                 f"got {describe(state[key])}")
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
