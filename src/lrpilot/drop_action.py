"""AutoDrop's action: what happens once the saturation test fires.

:class:`DropAction` owns the drop's arguments and state (Teng, Wang & Choromanska, arXiv 2111.15317; the
official code's options in brackets, spec section 1):

* ``rho``: the factor, ``lr <- max(rho * lr, min(lr, floor))`` per param group (``--rd``), the floor being
  ``min_lr`` (a float or one per group; ``None``: 1e-3 x each group's initial LR); a group already below its
  floor is left where it is;
* ``extra_epochs``: measurement intervals trained at the old LR after the one in which saturation was
  detected; the drop follows the last of them (``--extra_epochs``, which counts the detecting epoch: 20 in
  the code is 19 here);
* ``weight_average``: at the drop the weights become ``sum_k k z_k / sum_k k`` over the snapshots
  ``z_1..z_E`` taken at each interval from detection to drop (``--var_rd``);
* ``adapt_threshold`` / ``threshold_max``: after each drop the test's threshold becomes
  ``min(threshold / rho, threshold_max)`` (``--auto_theta``).

What is not done, as in the official code: momentum buffers are left untouched by a drop or by the weight
average, and BatchNorm running statistics are not recomputed after averaging.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._validation import check_number
from .saturation import SaturationTest
from .telemetry import lr_value, set_lr

__all__ = ["MIN_LR_RATIO", "DropAction"]

#: The default floor, relative to each group's initial LR.
MIN_LR_RATIO = 1e-3


class DropAction:
    """The drop of AutoDrop: factor, floor, post-saturation window, weight averaging, threshold adaptation.

    Args:
        rho: drop factor in (0, 1).
        min_lr: floor of the LR, a float or one per param group; ``None`` = 1e-3 x each group's initial LR.
        extra_epochs: intervals at the old LR after the detecting one; 0 drops at once.
        weight_average: replace the weights by the linearly weighted average of the window's snapshots.
        adapt_threshold, threshold_max: ``threshold <- min(threshold / rho, threshold_max)`` after each drop.
    """

    def __init__(self, rho: float = 0.1, *, min_lr: float | Sequence[float] | None = None, extra_epochs: int = 0,
                 weight_average: bool = False, adapt_threshold: bool = False,
                 threshold_max: float = math.inf) -> None:
        check_number("rho", rho, low=0, high=1, low_open=True, high_open=True)
        check_number("extra_epochs", extra_epochs, low=0, integer=True)
        check_number("threshold_max", threshold_max, low=0, allow_inf=True)
        for name, flag in (("weight_average", weight_average), ("adapt_threshold", adapt_threshold)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        if min_lr is not None:
            for value in (list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr]):
                check_number("min_lr", value, low=0)
        self.rho = float(rho)
        self.min_lr: float | list[float] | None
        if min_lr is None or isinstance(min_lr, (int, float)):
            self.min_lr = None if min_lr is None else float(min_lr)
        else:
            self.min_lr = [float(v) for v in min_lr]
        self.extra_epochs = int(extra_epochs)
        self.weight_average = weight_average
        self.adapt_threshold = adapt_threshold
        self.threshold_max = float(threshold_max)
        self.floors: list[float] = []  # one per param group, set by bind()
        self.counting = 0  # k: intervals since saturation was detected (0 = not triggered)
        self._average: list[Tensor] | None = None  # sum_k k z_k

    # ------------------------------------------------------------------ the groups
    def check_groups(self, count: int) -> None:
        """A per-group ``min_lr`` must have one entry per param group."""
        if isinstance(self.min_lr, list) and len(self.min_lr) != count:
            raise ValueError(f"min_lr has {len(self.min_lr)} entries but the optimizer has {count} param groups")

    def bind(self, initial_lrs: Sequence[float | Tensor]) -> None:
        """Set the floors of the optimizer's groups from their initial LRs."""
        self.check_groups(len(initial_lrs))
        if self.min_lr is None:
            self.floors = [MIN_LR_RATIO * lr_value(lr) for lr in initial_lrs]
        elif isinstance(self.min_lr, list):
            self.floors = [float(v) for v in self.min_lr]
        else:
            self.floors = [float(self.min_lr)] * len(initial_lrs)  # a single number

    def add_groups(self, initial_lrs: Sequence[float | Tensor]) -> list[float]:
        """Floors for param groups added after :meth:`bind` (``min_lr`` if one value was given, else 1e-3 x the
        group's initial LR); returns them."""
        new = [float(self.min_lr) if isinstance(self.min_lr, (int, float)) else MIN_LR_RATIO * lr_value(lr)
               for lr in initial_lrs]
        self.floors.extend(new)
        return new

    # ------------------------------------------------------------------ the decision
    @property
    def pending(self) -> bool:
        """Saturation was detected and the drop has not happened yet."""
        return self.counting > 0

    @torch.no_grad()
    def count(self, params: Sequence[Tensor]) -> bool:
        """One interval of the post-saturation window (the detecting one included); True when the drop is due.
        With ``weight_average`` the parameters are added to the window's weighted sum."""
        self.counting += 1
        if self.weight_average:
            current = [p.detach() for p in params]
            if self._average is None:
                self._average = [p.clone() for p in current]
            else:
                torch._foreach_add_(self._average, current, alpha=self.counting)
        return self.counting > self.extra_epochs

    @torch.no_grad()
    def apply(self, optimizer: Optimizer, params: Sequence[Tensor],
              test: SaturationTest) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Drop every group's LR (never below its floor), average the weights, adapt the test's threshold; the
        window closes. Returns the LRs before and after."""
        if len(self.floors) != len(optimizer.param_groups):  # bind()/add_groups() keep them in step
            raise RuntimeError(f"DropAction has {len(self.floors)} floors for {len(optimizer.param_groups)} groups")
        if self.adapt_threshold:
            test.threshold = min(test.threshold / self.rho, self.threshold_max)
        old, new = [], []
        for group, floor in zip(optimizer.param_groups, self.floors, strict=True):
            lr = lr_value(group["lr"])
            lowered = max(lr * self.rho, min(lr, floor))
            set_lr(group, lowered)
            old.append(lr)
            new.append(lowered)
        if self._average is not None:
            total = self.counting * (self.counting + 1) / 2
            torch._foreach_mul_(self._average, 1.0 / total)
            torch._foreach_copy_([p.detach() for p in params], self._average)
            self._average = None
        self.counting = 0
        return tuple(old), tuple(new)

    def cancel(self) -> None:
        """Close a pending window without dropping (the measured set changed under it)."""
        self.counting = 0
        self._average = None

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Arguments, floors, the window's count and weighted sum."""
        return {
            "rho": self.rho, "min_lr": self.min_lr, "extra_epochs": self.extra_epochs,
            "weight_average": self.weight_average, "adapt_threshold": self.adapt_threshold,
            "threshold_max": self.threshold_max, "floors": list(self.floors), "counting": self.counting,
            "average": None if self._average is None else [t.clone() for t in self._average],
        }

    def load_state_dict(self, state: dict[str, Any], params: Sequence[Tensor] | None = None) -> None:
        """Restore :meth:`state_dict`; checked before anything changes (``params``: to check the average's
        shapes and place it on their devices)."""
        missing = {"rho", "extra_epochs", "weight_average", "adapt_threshold", "threshold_max", "floors",
                   "counting", "average"} - set(state)
        if missing:
            raise ValueError(f"DropAction state_dict is missing keys {sorted(missing)}")
        check_number("state_dict['rho']", state["rho"], low=0, high=1, low_open=True, high_open=True)
        check_number("state_dict['counting']", state["counting"], low=0, integer=True)
        average = state["average"]
        if average is not None and params is not None:
            if len(average) != len(params) or any(t.shape != p.shape for t, p in zip(average, params)):
                raise ValueError("state_dict 'average' buffers do not match the measured parameters' shapes")
            average = [t.to(p).clone() for t, p in zip(average, params)]
        self.rho = float(state["rho"])
        self.min_lr = state.get("min_lr", self.min_lr)
        self.extra_epochs = int(state["extra_epochs"])
        self.weight_average = bool(state["weight_average"])
        self.adapt_threshold = bool(state["adapt_threshold"])
        self.threshold_max = float(state["threshold_max"])
        self.floors = [float(v) for v in state["floors"]]
        self.counting = int(state["counting"])
        self._average = average
