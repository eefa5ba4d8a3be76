"""``Active(optimizer)``: the ActiveLR meta-algorithm for any torch optimizer.

The dedicated classes put the multiplier inside the update formula. For an arbitrary optimizer (Adagrad,
Adamax, one from another package) the update formula is not ours to edit, so the multiplier is applied to
the displacement the inner optimizer produces:

    cumm += p.grad                      (before the inner step: the raw gradient, as the dedicated classes)
    p_old = p;  inner.step();  p = p_old + gai * (p - p_old)        ("p -= lr * gai * update")

and the sign rule (:func:`~lrpilot.active.sign_rule.apply_sign_rule_`) runs at :meth:`Active.end_epoch` as in
the dedicated classes. For plain SGD, momentum SGD and Adam this is exactly the dedicated update, because
their displacement is ``-lr * update``; any decoupled weight decay the inner optimizer applies is part of
the displacement and so is scaled by ``gai`` (``scale_weight_decay=True`` of the dedicated classes).
Parameters the inner optimizer moves without a gradient are not scaled.

``Active`` is a :class:`torch.optim.Optimizer` whose ``param_groups`` and ``state`` *are* the inner
optimizer's (the same objects), so LR schedulers, ``GradScaler`` and ``isinstance`` checks work on it. Its
per-parameter state is kept in the shared ``state[p]`` under ``active_``-prefixed keys, added only after
the inner optimizer's first step on that parameter (many optimizers initialise when ``len(state) == 0``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._base import ActiveOptimizer
from ._validation import check_active_args, check_steps_per_epoch
from .sign_rule import ACTIVE_DEFAULTS

__all__ = ["Active"]


class Active(ActiveOptimizer):
    """Wrap any :class:`torch.optim.Optimizer` with ActiveLR's per-element learning-rate multiplier.

    Args:
        optimizer: the inner optimizer (not an ActiveLR optimizer, not one whose ``step`` needs to
            re-evaluate a closure such as LBFGS).
        lr_low, lr_high, max_multiplier, min_multiplier, steps_per_epoch, flip_guard: ActiveLR's own arguments,
            the same in every ActiveLR optimizer: see :class:`~lrpilot.active.ActiveOptimizer`. Per-group values may
            also be set as keys of the inner optimizer's param groups.

    ``step(closure)`` evaluates the closure once (with gradients enabled) and then steps the inner
    optimizer without it. Sparse gradients are accepted if the inner optimizer accepts them.
    """

    _MULT = "active_multiplier"
    _SUM = "active_grad_sum"
    _PREV = "active_prev_grad_sum"
    _COUNT = "active_epoch_steps"
    _supports_sparse = True

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        lr_low: float = ACTIVE_DEFAULTS["lr_low"],
        lr_high: float = ACTIVE_DEFAULTS["lr_high"],
        max_multiplier: float | None = None,
        min_multiplier: float | None = None,
        flip_guard: float | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if isinstance(optimizer, ActiveOptimizer):
            raise TypeError(f"optimizer is already an ActiveLR optimizer ({type(optimizer).__name__})")
        if isinstance(optimizer, torch.optim.LBFGS):
            raise TypeError("LBFGS re-evaluates its closure within a step; Active cannot wrap it")
        defaults = {"lr_low": lr_low, "lr_high": lr_high, "max_multiplier": max_multiplier,
                    "min_multiplier": min_multiplier, "flip_guard": flip_guard}
        check_steps_per_epoch(steps_per_epoch)
        check_active_args(defaults)
        for group in optimizer.param_groups:  # per-group overrides, checked before anything is changed
            check_active_args({**defaults, **{k: v for k, v in group.items() if k in defaults}})
        self.optimizer = optimizer
        self._wrapping = True
        # Optimizer.__init__ sets up hooks and adds our defaults to the inner optimizer's group dicts.
        super().__init__(optimizer.param_groups, defaults, steps_per_epoch=steps_per_epoch)
        self._wrapping = False
        self._share()
        self.defaults = {**optimizer.defaults, **defaults}

    def _share(self) -> None:
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the inner optimizer (which fills in its own defaults), then ActiveLR's defaults."""
        if getattr(self, "_wrapping", False):  # Optimizer.__init__: the inner optimizer's existing groups
            Optimizer.add_param_group(self, param_group)
            return
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        active_keys = ("lr_low", "lr_high", "max_multiplier", "min_multiplier", "flip_guard")
        check_active_args({k: param_group.get(k, self.defaults[k]) for k in active_keys})
        self.optimizer.add_param_group(param_group)
        for key in active_keys:
            self.param_groups[-1].setdefault(key, self.defaults[key])

    def __repr__(self) -> str:
        return f"Active({self.optimizer!r})"

    # ------------------------------------------------------------------ stepping
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Accumulate the gradients, step the inner optimizer, scale its displacement by the multipliers."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        stepped, mults, dense_grads, dense_sums, new = self._collect()
        if dense_sums:
            torch._foreach_add_(dense_sums, dense_grads)  # ActiveLR: cumm += p.grad
        if stepped:
            old = [p.detach().clone() for p in stepped]
        inner_loss = self.optimizer.step()
        if stepped:
            # p = p_old + gai * (p - p_old): the inner optimizer's displacement scaled elementwise
            torch._foreach_sub_(stepped, old)
            torch._foreach_mul_(stepped, mults)
            torch._foreach_add_(stepped, old)
        self._create_state(new)
        self._tick()
        return loss if closure is not None else inner_loss

    @torch.compiler.disable
    def _collect(self) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[tuple[Tensor, Tensor]]]:
        """The parameters with a gradient: those with ActiveLR state (their step counted, sparse gradients
        added to their sums here), their multipliers, dense gradients and sums, and the new ones with their
        first gradient sum. Python-int bookkeeping, kept out of ``torch.compile`` graphs so that a compiled
        ``step()`` is not recompiled for every new counter value (as in :class:`ActiveOptimizer`)."""
        stepped: list[Tensor] = []
        mults: list[Tensor] = []
        new: list[tuple[Tensor, Tensor]] = []
        dense_grads: list[Tensor] = []
        dense_sums: list[Tensor] = []
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                state = self.state.get(p)
                if state is not None and self._MULT in state:
                    state[self._COUNT] += 1
                    stepped.append(p)
                    mults.append(state[self._MULT])
                    if grad.is_sparse:
                        state[self._SUM].add_(grad)
                    else:
                        dense_grads.append(grad)
                        dense_sums.append(state[self._SUM])
                else:
                    first = torch.zeros_like(p, memory_format=torch.preserve_format)
                    new.append((p, first.add_(grad)))
        return stepped, mults, dense_grads, dense_sums, new

    @torch.compiler.disable
    def _create_state(self, new: list[tuple[Tensor, Tensor]]) -> None:
        """ActiveLR state of parameters stepped for the first time: multiplier 1, the gradient sum, count 1."""
        for p, grad_sum in new:
            state = self.state[p]
            state[self._MULT] = torch.ones_like(p, memory_format=torch.preserve_format)
            state[self._SUM] = grad_sum
            state[self._COUNT] = 1

    # ------------------------------------------------------------------ checkpointing
    _BASE_STATE_KEYS = None  # the inner optimizer's state keys are its own business

    def _optimizer_name(self) -> str:
        return f"Active({type(self.optimizer).__name__})"

    def _required_group_keys(self, saved_group: dict[str, Any]) -> set[str]:
        """Our defaults and the inner optimizer's, less those its ``__setstate__`` fills in for dicts saved by
        older versions of it (torch's optimizers ``setdefault`` their newer flags there)."""
        inner = type(self.optimizer)
        try:
            probe = object.__new__(inner)
            inner.__setstate__(probe, {"state": {}, "defaults": {}, "param_groups": [{**saved_group, "params": []}]})
            filled = set(probe.param_groups[0]) - set(saved_group)
        except Exception:  # an exotic __setstate__: require only ActiveLR's keys
            return set(ACTIVE_DEFAULTS)
        return set(self.defaults) - filled - {"differentiable"} - self._OPTIONAL_GROUP_KEYS

    def _validate_loaded_group(self, group: dict[str, Any]) -> None:
        check_active_args({**{k: group[k] for k in ACTIVE_DEFAULTS}, "flip_guard": group.get("flip_guard")})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load through the inner optimizer (its own checks and casts), then share its new state again.

        Checked first, as in :meth:`ActiveOptimizer.load_state_dict`: the wrapped class (``"Active(SGD)"``
        does not load into ``Active(Adagrad)``), the layout, ActiveLR's state and hyperparameters; the
        inner optimizer's own state is its own business. ``steps_per_epoch``: this optimizer's value wins.
        """
        clock = self._check_state_dict(state_dict)
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        self.optimizer.load_state_dict(state_dict)
        self._share()
        self._load_clock_state(clock)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["optimizer"] = self.optimizer
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "optimizer" in self.__dict__:
            self._share()
