"""AutoDrop's measurement: when the parameters are snapshotted, which snapshot, and the angle between them.

:class:`AngularVelocityMeter` owns an :class:`~lrpilot.AngularVelocity` (eq. 2 of Teng, Wang & Choromanska,
arXiv 2111.15317) and the *snapshot policy* that feeds it:

``snapshot="average"`` (lrpilot's default)
    one snapshot per measurement interval: the parameters averaged over the interval's optimizer steps (a
    running sum kept after every step), which removes most of the minibatch noise from omega;
``snapshot="end"``
    the parameters at the end of each interval, as in the paper's definition;
``snapshot="first_steps"`` (the official code, spec section 1.1)
    a snapshot after the *first* optimizer step of every epoch, and the angle, reported after the second step,
    on which the code decides; the epoch boundary is :meth:`end_epoch`.

The interval is an epoch (``interval=None``: :meth:`end_epoch` closes it) or ``interval`` optimizer steps
(:meth:`after_step` closes it). Both methods return a :class:`Reading`: whether an interval closed, and its
angle (``None`` until three snapshots exist).

With ``params=None`` the meter measures every trainable parameter of the optimizer and *follows* that set: a
parameter group added or a parameter unfrozen after construction joins the measurement, which restarts on the
larger vector (an angle between displacements of vectors of different sizes has no meaning), with a warning.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._validation import check_number
from .angular_velocity import AngularVelocity

__all__ = ["SNAPSHOTS", "AngularVelocityMeter", "Reading"]

#: The snapshot policies (see the module docstring).
SNAPSHOTS = ("average", "end", "first_steps")


class Reading(NamedTuple):
    """What one call of :meth:`AngularVelocityMeter.after_step` / :meth:`~AngularVelocityMeter.end_epoch` saw."""

    closed: bool  #: a measurement interval closed (a decision is due)
    omega: float | None  #: its angle in degrees; None before three snapshots exist


_NOTHING = Reading(False, None)


class AngularVelocityMeter:
    """Snapshots of the parameters on a policy, and the angular velocity between them.

    Args:
        optimizer: the optimizer whose parameters are measured (and followed, with ``params=None``).
        snapshot: ``"average"``, ``"end"`` or ``"first_steps"`` (see the module docstring).
        interval: measure every ``interval`` optimizer steps; ``None``: once per epoch (:meth:`end_epoch`).
            Not with ``"first_steps"``, whose clock is the epoch.
        eps: added to the norm product of eq. (2) (:class:`~lrpilot.AngularVelocity`).
        params: measure these tensors (or param groups) only, and never follow the optimizer.
        sharded, process_group: this rank holds a shard of the parameters; see :class:`~lrpilot.AngularVelocity`.
    """

    def __init__(self, optimizer: Optimizer, *, snapshot: str = "average", interval: int | None = None,
                 eps: float = 0.0, params: Any = None, sharded: bool = False, process_group: Any = None) -> None:
        if snapshot not in SNAPSHOTS:
            raise ValueError(f"snapshot must be one of {SNAPSHOTS}, got {snapshot!r}")
        if interval is not None:
            check_number("interval", interval, low=1, integer=True)
            if snapshot == "first_steps":
                raise ValueError("interval must be None with snapshot='first_steps' (mode 'code'): its clock is "
                                 "the epoch (step())")
        check_number("eps", eps, low=0)
        self.optimizer = optimizer
        self.snapshot = snapshot
        self.interval = interval
        self.follows_optimizer = params is None
        self.angular_velocity = AngularVelocity(optimizer if params is None else params, eps=eps, sharded=sharded,
                                                process_group=process_group)
        self._sum: list[Tensor] | None = None  # running sum of the parameters over the interval ("average")
        self.steps_in_interval = 0  # optimizer steps since the interval (or, "first_steps", the epoch) began
        self._pending_omega: float | None = None  # "first_steps": the angle of step 1, decided on at step 2
        self.generation = 0  # +1 each time the measured set changes (follow())

    @property
    def params(self) -> list[Tensor]:
        """The measured tensors."""
        return self.angular_velocity.params

    # ------------------------------------------------------------------ the clock
    @torch.no_grad()
    def after_step(self) -> Reading:
        """Call after every optimizer step; a closed reading when this step ends an interval."""
        self.steps_in_interval += 1
        if self.snapshot == "first_steps":
            if self.steps_in_interval == 1:  # spec 1.1: snapshot after the first step of the epoch
                self._pending_omega = self.angular_velocity.update()
            elif self.steps_in_interval == 2:  # spec 1.2: angle, test and drop after the second step
                omega, self._pending_omega = self._pending_omega, None
                return Reading(True, omega)
            return _NOTHING
        if self.snapshot == "average":
            if self._sum is None:
                self._sum = [p.detach().clone() for p in self.params]
            else:
                torch._foreach_add_(self._sum, self.params)  # read-only under no_grad: no per-step detach list
        if self.interval is not None and self.steps_in_interval >= self.interval:
            self.follow()
            return Reading(True, self._snapshot())
        return _NOTHING

    def end_epoch(self) -> Reading:
        """Call at the end of every epoch; a closed reading when the interval is the epoch."""
        if self.snapshot == "first_steps":
            self.follow()
            self.steps_in_interval = 0
            return _NOTHING
        if self.interval is not None:
            return _NOTHING
        self.follow()
        return Reading(True, self._snapshot())

    @torch.no_grad()
    def _snapshot(self) -> float | None:
        """Close the interval: snapshot the interval's mean (or the current parameters); the angle."""
        if self._sum is not None and self.steps_in_interval > 0:
            torch._foreach_mul_(self._sum, 1.0 / self.steps_in_interval)
            omega = self.angular_velocity.update(self._sum)
        else:
            omega = self.angular_velocity.update()
        self._sum = None
        self.steps_in_interval = 0
        return omega

    def reset_snapshots(self) -> None:
        """Forget the snapshots (after a drop: the ones that straddle it are stale); the interval goes on."""
        self.angular_velocity.reset()

    def restart(self) -> None:
        """Forget the snapshots, the interval's running sum and step count, and a pending angle."""
        self.angular_velocity.reset()
        self._sum = None
        self.steps_in_interval = 0
        self._pending_omega = None

    # ------------------------------------------------------------------ following the optimizer
    def follow(self) -> int:
        """With ``params=None``: take in trainable parameters that joined the optimizer since the last call (a
        group added, ``requires_grad`` set to True); the measurement restarts on the new set, with a warning.
        Returns how many joined."""
        if not self.follows_optimizer:
            return 0
        measured = {id(p) for p in self.params}
        groups = self.optimizer.param_groups
        added = [p for g in groups for p in g["params"] if p.requires_grad and id(p) not in measured]
        if added:
            av = self.angular_velocity
            self.angular_velocity = AngularVelocity(self.optimizer, eps=av.eps, per_group=av.per_group,
                                                    sharded=av.sharded, process_group=av.process_group)
            self.restart()
            self.generation += 1
            warnings.warn(
                f"AutoDrop: {len(added)} trainable parameter(s) ({sum(p.numel() for p in added)} elements) joined "
                "the optimizer's trainable set (add_param_group or requires_grad set to True); the angular velocity "
                "now includes them and restarts (its next two intervals measure nothing).",
                UserWarning,
                stacklevel=4,
            )
        return len(added)

    def _optimizer_params(self) -> list[Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def measured_indices(self) -> list[int] | None:
        """Positions of the measured tensors in the optimizer's flattened parameter list (``params=None``)."""
        if not self.follows_optimizer:
            return None
        position = {id(p): i for i, p in enumerate(self._optimizer_params())}
        return [position[id(p)] for p in self.params]

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """The policy, the snapshots (the angular velocity's buffers), the interval's sum and clock, the set."""
        return {
            "snapshot": self.snapshot,
            "interval": self.interval,
            "angular_velocity": self.angular_velocity.state_dict(),
            "sum": None if self._sum is None else [t.clone() for t in self._sum],
            "steps_in_interval": self.steps_in_interval,
            "pending_omega": self._pending_omega,
            "measured": self.measured_indices(),
        }

    def params_after_load(self, state: dict[str, Any]) -> list[Tensor]:
        """The tensors this meter measures once ``state`` is loaded (checked, nothing changes): the set as saved
        (``state["measured"]``: e.g. a parameter unfrozen during training, and a resume that builds AutoDrop
        before unfreezing it again), or today's."""
        measured = state.get("measured")
        if measured is None or not self.follows_optimizer or measured == self.measured_indices():
            return self.params
        everything = self._optimizer_params()
        if not measured or not all(isinstance(i, int) and 0 <= i < len(everything) for i in measured):
            raise ValueError(f"state_dict 'measured' indices {measured} do not fit the optimizer's "
                             f"{len(everything)} parameters")
        return [everything[i] for i in measured]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` in place (the angular velocity keeps ``sharded``/``process_group``);
        everything is checked before anything changes."""
        missing = {"snapshot", "interval", "angular_velocity", "sum", "steps_in_interval", "pending_omega"} - set(state)
        if missing:
            raise ValueError(f"AngularVelocityMeter state_dict is missing keys {sorted(missing)}")
        if state["snapshot"] not in SNAPSHOTS:
            raise ValueError(f"state_dict snapshot must be one of {SNAPSHOTS}, got {state['snapshot']!r}")
        if state["interval"] is not None:
            check_number("state_dict['interval']", state["interval"], low=1, integer=True)
        check_number("state_dict['steps_in_interval']", state["steps_in_interval"], low=0, integer=True)
        av = self.angular_velocity
        params = self.params_after_load(state)
        if params is not av.params:
            av = AngularVelocity(params, eps=av.eps, sharded=av.sharded, process_group=av.process_group,
                                 trainable_only=False)
        value = state["sum"]
        if value is not None and (len(value) != len(av.params)
                                  or any(t.shape != p.shape for t, p in zip(value, av.params))):
            raise ValueError("state_dict 'sum' buffers do not match the measured parameters' shapes")
        av.load_state_dict(state["angular_velocity"])  # checks everything before it changes anything
        self.angular_velocity = av
        self.snapshot = state["snapshot"]
        self.interval = state["interval"]
        self._sum = None if value is None else [t.to(p).clone() for t, p in zip(value, av.params)]
        self.steps_in_interval = int(state["steps_in_interval"])
        self._pending_omega = state["pending_omega"]
