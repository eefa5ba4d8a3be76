"""AutoDrop: drop the learning rate when the angular velocity of the parameters saturates.

Teng, Wang & Choromanska, "AutoDrop: Training Deep Learning Models with Automatic Learning Rate
Drop", arXiv 2111.15317 (official code: yunfei-teng/AutoDrop) and UAI 2024 (PMLR 244:3603-3629).

The angular velocity omega (eq. 2, :mod:`lrpilot.angular_velocity`) is the angle between successive
displacements of the parameters. Early in training the parameters travel in a consistent direction and
omega is small; as the iterate settles into a basin, successive moves decorrelate and omega rises to a
plateau. AutoDrop drops the learning rate by ``rho`` at that plateau; omega falls, rises again, and the
cycle repeats.

:class:`AutoDrop` is three parts, each owning its arguments, validation and state, composed by a torch
``LRScheduler`` that only keeps the clock and the record:

* the **measurement**, :class:`~lrpilot.measurement.AngularVelocityMeter`: when the parameters are
  snapshotted (per epoch or every ``interval`` optimizer steps), which snapshot (``snapshot``: averaged over
  the interval, its end, or the official code's first steps) and the angle between them;
* the **saturation test**, any :class:`~lrpilot.saturation.SaturationTest` (``test=``; by default the
  :class:`~lrpilot.saturation.TrendTest` built from ``threshold``/``window``/``rise_threshold``/``patience``);
* the **drop action**, :class:`~lrpilot.drop_action.DropAction`: factor, floor, post-saturation window,
  weight averaging, threshold adaptation.

The constructor's defaults are lrpilot's (``"trend"``): one measurement per epoch (``scheduler.step()``) from
parameters *averaged over the epoch* (an optimizer step hook keeps a running sum; no change to the training
loop), tested with :class:`~lrpilot.saturation.TrendTest` (saturated when omega has risen, Mann-Kendall z >
2.33 on a recent stretch, and no recent stretch still rises, z <= 1.28 over every suffix of the last 10
epochs; a series with no rise within ``patience = 20`` epochs counts once it is not rising). After a drop the
snapshots restart. rho = 0.1, floor 1e-3 x each group's initial LR. See ``docs/autodrop.md`` for the
measurements behind these choices.

The paper's two versions are presets (:data:`MODES`; ``AutoDrop(optimizer, mode)``, :meth:`AutoDrop.official`,
:meth:`AutoDrop.uai`) whose values replace the defaults; any keyword passed explicitly wins over the preset:

``"code"`` (:meth:`AutoDrop.official`)
    The official code exactly (spec section 1): snapshot after the first step of each epoch, test
    ``|omega_e - omega_{e-1}| < theta`` after the second step (:class:`~lrpilot.saturation.DeltaTest`),
    theta0 = 0.01 degrees, 19 further epochs at the old LR after detection (the code's ``--extra_epochs 20``
    counts the detecting epoch), then theta <- min(theta / rho, 1), lr <- max(rho lr, 1e-4), weights <-
    linearly weighted average of the per-epoch snapshots. rho = 0.2.
``"uai"`` (:meth:`AutoDrop.uai`)
    The published Algorithm 1 (spec section 2): omega from parameters averaged over windows of
    ``interval = 64`` optimizer steps, Gaussian-smoothed over a buffer of m = 10 values
    (:class:`~lrpilot.saturation.GaussianSmoothedTest`), drop by rho = 0.95 when the smoothed value rises by
    less than 0.1 degrees, buffer cleared after each drop.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ._validation import check_number
from .angular_velocity import AngularVelocity
from .drop_action import DropAction
from .measurement import AngularVelocityMeter, Reading
from .saturation import DeltaTest, GaussianSmoothedTest, SaturationTest, TrendTest
from .telemetry import lr_value, set_lr

__all__ = ["MODES", "AutoDrop", "DropEvent"]

#: The presets: the values each mode puts in place of the constructor's defaults ("trend" changes nothing).
#: ``test`` names the saturation test the mode builds from the test keywords.
MODES: dict[str, dict[str, Any]] = {
    "trend": {"test": "TrendTest"},
    "code": {
        "test": "DeltaTest", "threshold": 0.01, "rho": 0.2, "adapt_threshold": True, "threshold_max": 1.0,
        "min_lr": 1e-4, "extra_epochs": 19, "weight_average": True, "snapshot": "first_steps",
        "restart_measurement": False, "eps": 1e-8,
    },
    "uai": {
        "test": "GaussianSmoothedTest", "threshold": 0.1, "rho": 0.95, "interval": 64,
        "restart_measurement": False, "eps": 1e-8,
    },
}

#: The keywords that configure each built-in test (used when no ``test=`` is given).
_TEST_KEYWORDS = {
    "TrendTest": ("threshold", "window", "rise_threshold", "patience"),
    "DeltaTest": ("threshold",),
    "GaussianSmoothedTest": ("threshold", "m", "min_buffer", "kernel"),
}
_ALL_TEST_KEYWORDS = {k for keys in _TEST_KEYWORDS.values() for k in keys}

_F = TypeVar("_F", bound=Callable[..., None])


def _records_explicit_keywords(init: _F) -> _F:
    """Let ``__init__`` know which keywords the caller passed (a preset fills only the others); ``help()`` and
    ``inspect.signature`` still show the typed signature (``functools.wraps``)."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        self._explicit = frozenset(kwargs)
        init(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _upgrade_first_format(old: dict[str, Any]) -> dict[str, Any]:
    """A state dict of the first format (one flat dict, before the measurement / test / action split)."""
    missing = {"mode", "rho", "extra_epochs", "weight_average", "adapt_threshold", "threshold_max",
               "average_snapshots", "interval", "min_lrs", "global_step", "_steps_in_interval", "_pending_omega",
               "_counting", "omega_history", "saturation_epochs", "base_lrs", "last_epoch", "_step_count",
               "_last_lr", "drops", "test", "angular_velocity", "sum", "average"} - set(old)
    if missing:
        raise ValueError(f"AutoDrop state_dict is missing keys {sorted(missing)}")
    code = old["mode"] == "code"
    since = old.get("_steps_since_step_call")
    if since is None:  # the interval's steps are the steps since the last step() (per-epoch intervals)
        since = old["_steps_in_interval"] if old["interval"] is None else 1
    return {
        "format": 2, "mode": old["mode"], "restart_measurement": old["mode"] == "trend",
        **{key: old[key] for key in ("global_step", "omega_history", "saturation_epochs", "base_lrs",
                                     "last_epoch", "_step_count", "_last_lr", "drops", "test")},
        "_steps_since_step_call": since, "_single_step_calls": old.get("_single_step_calls", 0),
        "_warned_per_step": old.get("_warned_per_step", False),
        "meter": {"snapshot": "first_steps" if code else ("average" if old["average_snapshots"] else "end"),
                  "interval": old["interval"], "angular_velocity": old["angular_velocity"], "sum": old["sum"],
                  "steps_in_interval": old["_steps_in_interval"], "pending_omega": old["_pending_omega"],
                  "measured": old.get("measured")},
        "action": {"rho": old["rho"], "extra_epochs": old["extra_epochs"],
                   "weight_average": old["weight_average"], "adapt_threshold": old["adapt_threshold"],
                   "threshold_max": old["threshold_max"], "floors": old["min_lrs"], "counting": old["_counting"],
                   "average": old["average"]},
    }


@dataclass(frozen=True)
class DropEvent:
    """One learning-rate drop: when it happened, what omega was, and the LRs before and after."""

    epoch: int
    step: int
    omega: float | None
    old_lrs: tuple[float, ...]
    new_lrs: tuple[float, ...]


class AutoDrop(LRScheduler):
    """Drop every param group's learning rate by ``rho`` when the parameters' angular velocity saturates.

    Use it like :class:`torch.optim.lr_scheduler.StepLR`: construct it on any ``torch.optim``
    optimizer and call ``scheduler.step()`` once at the end of every epoch. It registers an optimizer
    step hook for what it measures within an epoch; the training loop needs nothing else.

    Args:
        optimizer: any :class:`torch.optim.Optimizer`.
        mode: a preset of :data:`MODES`: ``"trend"`` (the defaults below), ``"code"`` or ``"uai"`` (the paper's;
            see the module docstring). Keywords passed explicitly override the preset.
        test: your own :class:`~lrpilot.saturation.SaturationTest` instance; then the test keywords below
            (``threshold`` ... ``kernel``) must not be passed.
        threshold: the built-in test's threshold: Mann-Kendall z for ``TrendTest`` (``"trend"``), degrees for
            ``DeltaTest`` (``"code"``, on ``|omega_e - omega_{e-1}|``) and ``GaussianSmoothedTest``
            (``"uai"``, on the smoothed rise). Defaults 1.28 / 0.01 / 0.1.
        window, rise_threshold, patience: ``TrendTest`` only: angles per test (>= 6; also the minimum between
            drops), the z a rise must reach before a plateau counts, the angles after which a plateau counts
            without a rise (``None``: never).
        m, min_buffer, kernel: ``GaussianSmoothedTest`` only: filter width, buffer size, ``"value"`` or
            ``"offset"`` kernel.
        rho: drop factor in (0, 1).
        min_lr: floor of the LR, a float or one per group; ``None`` = 1e-3 x each group's initial LR.
            A group already below its floor is left where it is.
        extra_epochs: measurement intervals trained at the old LR after the one in which saturation
            was detected; the drop follows the last of them. 0 drops at once.
        weight_average: at the drop, replace the weights by ``sum_k k z_k / sum_k k`` over the
            snapshots ``z_1..z_E`` taken at each interval from detection to drop (the code's
            ``--var_rd``); meaningful with ``extra_epochs > 0``.
        adapt_threshold, threshold_max: after each drop, ``threshold <- min(threshold / rho,
            threshold_max)`` (the code's ``--auto_theta``).
        snapshot: ``"average"`` (the parameters averaged over each interval), ``"end"`` (at its end) or
            ``"first_steps"`` (the official code's snapshot after each epoch's first step).
        interval: measure every ``interval`` optimizer steps instead of at every ``step()``.
        restart_measurement: after a drop, forget the snapshots (those that straddle the drop are stale).
        eps: added to the norm product of the angle formula (eq. 2).
        params: which parameters to measure (default: every trainable parameter of the optimizer, followed as
            groups are added or parameters unfrozen).
        sharded, process_group: the optimizer holds only this rank's shard of the parameters (FSDP, ZeRO):
            omega is computed from sums all-reduced over ``process_group`` so that every rank measures the
            whole model and takes the same decisions (see :class:`~lrpilot.AngularVelocity`); ``step()``
            is then a collective. Not needed with plain DDP, whose ranks hold identical parameters.
        last_epoch: as in every torch scheduler; use :meth:`load_state_dict` to resume.

    The parts are attributes: :attr:`meter` (measurement), :attr:`test`, :attr:`action`. What a logger can
    read: :meth:`get_last_lr`, :meth:`metrics`, :attr:`omega_history` ((epoch, omega) per measurement),
    :attr:`drops` (:class:`DropEvent` list), :attr:`drop_epochs`, :attr:`saturation_epochs`,
    :attr:`should_drop`, :attr:`threshold`.
    """

    _explicit: frozenset[str]

    @_records_explicit_keywords
    def __init__(self, optimizer: Optimizer, mode: str = "trend", *, test: SaturationTest | None = None,
                 threshold: float = 1.28, window: int = 10, rise_threshold: float = 2.33, patience: int | None = 20,
                 m: int = 10, min_buffer: int = 10, kernel: str = "value",
                 rho: float = 0.1, min_lr: float | Sequence[float] | None = None, extra_epochs: int = 0,
                 weight_average: bool = False, adapt_threshold: bool = False, threshold_max: float = math.inf,
                 snapshot: str = "average", interval: int | None = None, restart_measurement: bool = True,
                 eps: float = 0.0, params: Any = None, sharded: bool = False, process_group: Any = None,
                 last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
        given = dict(locals())
        cfg = {name: given[name] for name in self._explicit}
        for name, value in MODES[mode].items():
            if name != "test" and name not in self._explicit:
                cfg[name] = value
        for name in ("threshold", "window", "rise_threshold", "patience", "m", "min_buffer", "kernel", "rho",
                     "min_lr", "extra_epochs", "weight_average", "adapt_threshold", "threshold_max", "snapshot",
                     "interval", "restart_measurement", "eps"):
            cfg.setdefault(name, given[name])
        test_keywords = _ALL_TEST_KEYWORDS & self._explicit
        if test is not None:
            if not isinstance(test, SaturationTest):
                raise TypeError(f"test must be a lrpilot.saturation.SaturationTest, got {type(test).__name__}")
            if test_keywords:
                raise ValueError(f"{sorted(test_keywords)} configure the built-in test; with test= set them on "
                                 "your test object")
        else:
            kind = MODES[mode]["test"]
            foreign = test_keywords - set(_TEST_KEYWORDS[kind])
            if foreign:
                raise ValueError(f"options {sorted(foreign)} do not apply to mode {mode!r} (its test is {kind})")
            test = self._build_test(kind, cfg)
        if not isinstance(cfg["restart_measurement"], bool):
            raise TypeError(f"restart_measurement must be a bool, got {cfg['restart_measurement']!r}")
        # every part validates its own arguments, all before the optimizer is touched
        action = DropAction(cfg["rho"], min_lr=cfg["min_lr"], extra_epochs=cfg["extra_epochs"],
                            weight_average=cfg["weight_average"], adapt_threshold=cfg["adapt_threshold"],
                            threshold_max=cfg["threshold_max"])
        action.check_groups(len(optimizer.param_groups))
        meter = AngularVelocityMeter(optimizer, snapshot=cfg["snapshot"], interval=cfg["interval"], eps=cfg["eps"],
                                     params=params, sharded=sharded, process_group=process_group)
        self.mode = mode
        self.meter = meter
        self.test: SaturationTest = test
        self.action = action
        self.restart_measurement = cfg["restart_measurement"]

        # The scheduler's own clock and record (all of it goes into state_dict).
        self.global_step = 0
        self.omega_history: list[tuple[int, float]] = []
        self.saturation_epochs: list[int] = []
        self.drops: list[DropEvent] = []
        self._steps_since_step_call = 0  # optimizer steps since the last step() call (misuse detection)
        self._single_step_calls = 0  # consecutive step() calls that each followed exactly one optimizer step
        self._warned_per_step = False
        self._step_count = 0  # step() calls; set here, not left to torch's LRScheduler.__init__ (private there)

        super().__init__(optimizer, last_epoch)
        self.action.bind(self.base_lrs)
        self._hook_handle = self._register_hook()

    @staticmethod
    def _build_test(kind: str, cfg: dict[str, Any]) -> SaturationTest:
        if kind == "DeltaTest":
            return DeltaTest(cfg["threshold"])
        if kind == "GaussianSmoothedTest":
            return GaussianSmoothedTest(cfg["threshold"], cfg["m"], cfg["min_buffer"], cfg["kernel"])
        return TrendTest(cfg["threshold"], cfg["window"], cfg["rise_threshold"], cfg["patience"])

    # ------------------------------------------------------------------ presets
    @classmethod
    def official(cls, optimizer: Optimizer, **overrides: Any) -> AutoDrop:
        """The official code's AutoDrop (``mode="code"``; :data:`MODES`); keywords override the preset."""
        return cls(optimizer, "code", **overrides)

    @classmethod
    def uai(cls, optimizer: Optimizer, **overrides: Any) -> AutoDrop:
        """The UAI 2024 paper's Algorithm 1 (``mode="uai"``; :data:`MODES`); keywords override the preset."""
        return cls(optimizer, "uai", **overrides)

    # ------------------------------------------------------------------ the optimizer hook
    def _register_hook(self) -> Any:
        ref = weakref.ref(self)

        def hook(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
            scheduler = ref()
            if scheduler is not None:
                scheduler._after_optimizer_step()

        return self.optimizer.register_step_post_hook(hook)

    def remove_hook(self) -> None:
        """Detach from the optimizer (the scheduler stops measuring)."""
        self._hook_handle.remove()

    # ------------------------------------------------------------------ public views
    @property
    def angular_velocity(self) -> AngularVelocity:
        """The measurement's :class:`~lrpilot.AngularVelocity` (``meter.angular_velocity``)."""
        return self.meter.angular_velocity

    @angular_velocity.setter
    def angular_velocity(self, value: AngularVelocity) -> None:
        self.meter.angular_velocity = value

    @property
    def min_lrs(self) -> list[float]:
        """Each group's LR floor (``action.floors``)."""
        return self.action.floors

    @property
    def rho(self) -> float:
        return self.action.rho

    @property
    def interval(self) -> int | None:
        return self.meter.interval

    @property
    def threshold(self) -> float:
        """The saturation test's current threshold (changes after drops if ``adapt_threshold``)."""
        return self.test.threshold

    @property
    def drop_epochs(self) -> list[int]:
        """1-based epochs in which the LR was dropped (at their end in ``"trend"``, during them in ``"code"``).

        The new LR applies from the next optimizer step.
        """
        return [event.epoch for event in self.drops]

    @property
    def should_drop(self) -> bool:
        """True while saturation has been detected and its drop is pending (or was just applied)."""
        return self.action.pending or bool(self.drops and self.drops[-1].step == self.global_step)

    @property
    def last_omega(self) -> float | None:
        """The most recent angular velocity in degrees (None before the first one)."""
        return self.omega_history[-1][1] if self.omega_history else None

    def metrics(self) -> dict[str, float]:
        """The telemetry protocol (:mod:`lrpilot.telemetry`): ``autodrop/drops`` (LR changes so far),
        ``autodrop/threshold``, and ``autodrop/omega`` when the last ``step()`` measured a finite angle."""
        out = {"autodrop/drops": float(len(self.drops)), "autodrop/threshold": float(self.threshold)}
        if self.omega_history:
            epoch, omega = self.omega_history[-1]
            if epoch == self.last_epoch and math.isfinite(omega):
                out["autodrop/omega"] = float(omega)
        return out

    def get_lr(self) -> list[float | Tensor]:
        """The current learning rates (AutoDrop changes them only when it drops)."""
        return [group["lr"] for group in self.optimizer.param_groups]

    # ------------------------------------------------------------------ the clock
    def step(self, epoch: int | None = None) -> None:
        """Call once at the end of every epoch, after that epoch's ``optimizer.step()`` calls.

        Misuse is caught when it happens instead of silently changing the schedule:

        * a call with no optimizer step since the previous one (``step()`` called twice per epoch, e.g. in both
          the training and the validation loop) warns and is ignored: nothing moved, nothing is measured;
        * calls that each follow exactly one optimizer step, three in a row (``step()`` inside the batch loop)
          warn once, naming the fix; a full-batch run, whose epoch *is* one step, passes ``interval=1``.

        ``step(0)`` (what ``SequentialLR`` does at AutoDrop's milestone, and older torch's form of it) restarts
        AutoDrop: see :meth:`_update_lr`. Any other ``epoch`` raises ``ValueError``.
        """
        if epoch is not None:
            if epoch == 0 and not isinstance(epoch, bool):
                self._update_lr(0)
                return
            raise ValueError(f"AutoDrop.step() takes no epoch argument, got epoch={epoch!r}")
        self._step_count += 1
        if self._step_count > 1:  # the call made by LRScheduler.__init__ measures nothing
            steps = self._steps_since_step_call
            if steps == 0 and self.last_epoch >= 0:
                warnings.warn(
                    f"AutoDrop.step() was called with no optimizer.step() since its previous call (epoch "
                    f"{self._epoch}): call it once per epoch, after the epoch's optimizer steps (is it called in both "
                    "the training and the validation loop?). This call is ignored.",
                    UserWarning,
                    stacklevel=2,
                )
                return
            self._check_per_step_calls(steps)
            self._follow_groups()
            self._read(self.meter.end_epoch)
        self._steps_since_step_call = 0
        self.last_epoch += 1
        self._last_lr = [lr_value(group["lr"]) for group in self.optimizer.param_groups]

    def _check_per_step_calls(self, steps: int) -> None:
        """Warn once when ``step()`` keeps following single optimizer steps: it is being called per batch."""
        if self.meter.interval is not None or self._warned_per_step:  # interval: the clock is the optimizer step
            return
        self._single_step_calls = self._single_step_calls + 1 if steps == 1 else 0
        if self._single_step_calls >= 3:
            self._warned_per_step = True
            warnings.warn(
                f"AutoDrop.step() has been called after every optimizer step ({self._single_step_calls} calls in a "
                "row with one optimizer step each): it measures one angle per call and counts its window and "
                "patience in calls, so called per batch it drops the LR far too early. Call scheduler.step() once "
                "per epoch, after the batch loop; to measure every N optimizer steps instead, pass interval=N "
                "(interval=1 for full-batch training, whose epoch is one step).",
                UserWarning,
                stacklevel=3,
            )

    def _update_lr(self, epoch: int | None = None) -> None:
        """torch's hook for a scheduler that (re)starts at ``epoch``; ``SequentialLR`` calls ``_update_lr(0)`` on
        AutoDrop at its milestone.

        AutoDrop then starts afresh from the milestone: every group's LR goes back to its initial LR (the
        schedule's value at epoch 0, as for every torch scheduler in ``SequentialLR``; a warmup before
        AutoDrop ends at the full LR), the measurement and the saturation test restart, and epochs count
        from the milestone. Before its milestone (``last_epoch < 0`` after ``SequentialLR`` has undone its
        initial step) AutoDrop's optimizer hook measures nothing, so a warmup never feeds the test.
        """
        if epoch is None:
            self.step()
            return
        if epoch != 0:
            raise ValueError(f"AutoDrop can only restart at epoch 0, got epoch={epoch!r}")
        self._follow_groups()
        self.meter.follow()
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            set_lr(group, lr)
        self.meter.restart()
        self.test.reset()
        self.action.cancel()
        self._steps_since_step_call = 0
        self.last_epoch = 0
        self._last_lr = [lr_value(group["lr"]) for group in self.optimizer.param_groups]

    def _follow_groups(self) -> None:
        """Param groups added after AutoDrop was built get an ``initial_lr``, a base LR and a floor, with a
        warning, so that a drop lowers every group, never only the old ones."""
        groups = self.optimizer.param_groups
        known = len(self.action.floors)
        if len(groups) <= known:
            return
        new = groups[known:]
        for group in new:
            group.setdefault("initial_lr", lr_value(group["lr"]))
            self.base_lrs.append(group["initial_lr"])
        floors = self.action.add_groups([group["initial_lr"] for group in new])
        per_group = isinstance(self.action.min_lr, list)
        warnings.warn(
            f"AutoDrop: the optimizer has {len(groups)} param groups, {len(new)} more than when AutoDrop was "
            f"built (add_param_group); drops now apply to them too, with floor(s) {floors}"
            + (" (1e-3 x their LR: min_lr was given per group)" if per_group else "") + ".",
            UserWarning,
            stacklevel=4,
        )

    @property
    def _epoch(self) -> int:
        """The 1-based number of the epoch in progress."""
        return self.last_epoch + 1

    def _after_optimizer_step(self) -> None:
        self._steps_since_step_call += 1
        if self.last_epoch < 0:  # inside SequentialLR, before AutoDrop's milestone: not running yet
            return
        self.global_step += 1
        if self.meter.interval is not None:
            self._follow_groups()
        self._read(self.meter.after_step)

    def _read(self, measure: Callable[[], Reading]) -> None:
        """Take a reading of the meter (``end_epoch`` or ``after_step``) and decide on it when an interval
        closed; a pending post-saturation window is cancelled if the measured set changed under it."""
        generation = self.meter.generation
        reading = measure()
        if self.meter.generation != generation:
            self.action.cancel()
        if reading.closed:
            self._decide(reading.omega)

    # ------------------------------------------------------------------ the decision
    def _decide(self, omega: float | None) -> None:
        if omega is not None:
            self.omega_history.append((self._epoch, omega))
            if math.isfinite(omega):
                self.test.observe(omega)
            else:
                warnings.warn(
                    f"AutoDrop: the angular velocity at epoch {self._epoch} is not finite (the parameters "
                    "contain NaN/inf or did not move); no drop decision is taken on it",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if not self.action.pending:
            if omega is None or not math.isfinite(omega) or not self.test.saturated():
                return
            self.saturation_epochs.append(self._epoch)
        if self.action.count(self.meter.params):
            self._drop(omega)

    def _drop(self, omega: float | None) -> None:
        """Apply the drop action. A :class:`DropEvent` is recorded only when some LR changed: at the floor the
        saturation is still acted on (threshold, averaging, test reset) but no drop is counted."""
        self._follow_groups()  # every group gets its floor before any LR changes: never a half-applied drop
        old, new = self.action.apply(self.optimizer, self.meter.params, self.test)
        self.test.reset()  # the test's history is stale (DeltaTest keeps its history, as the official code)
        if self.restart_measurement:
            self.meter.reset_snapshots()
        if old != new:
            self.drops.append(DropEvent(self._epoch, self.global_step, omega, old, new))
        self._last_lr = [lr_value(group["lr"]) for group in self.optimizer.param_groups]

    # ------------------------------------------------------------------ checkpointing
    _FORMAT = 2
    _CLOCK_KEYS = ("global_step", "omega_history", "saturation_epochs", "base_lrs", "last_epoch", "_step_count",
                   "_last_lr", "_steps_since_step_call", "_single_step_calls", "_warned_per_step")

    def state_dict(self) -> dict[str, Any]:
        """The parts' state dicts (``meter``, ``test``, ``action``) and the scheduler's clock and record."""
        state: dict[str, Any] = {"format": self._FORMAT, "mode": self.mode,
                                 "restart_measurement": self.restart_measurement}
        for key in self._CLOCK_KEYS:
            value = getattr(self, key)
            state[key] = list(value) if isinstance(value, list) else value
        state["drops"] = [asdict(event) for event in self.drops]
        state["meter"] = self.meter.state_dict()
        state["test"] = self.test.state_dict()
        state["action"] = self.action.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into the parts (never rebuilt: the measurement keeps ``sharded`` and its
        process group). Checkpoints of the first format load too. Everything is checked before anything
        changes."""
        state = state_dict if "format" in state_dict else _upgrade_first_format(state_dict)
        if state["format"] != self._FORMAT:
            raise ValueError(f"AutoDrop state_dict format {state['format']!r} is not one this version reads")
        missing = {"mode", "drops", "meter", "test", "action", *self._CLOCK_KEYS} - set(state)
        if missing:
            raise ValueError(f"AutoDrop state_dict is missing keys {sorted(missing)}")
        if state["mode"] != self.mode:
            raise ValueError(f"state_dict is from mode {state['mode']!r}, this scheduler is {self.mode!r}")
        groups = len(self.optimizer.param_groups)
        if len(state["action"]["floors"]) != groups or len(state["_last_lr"]) != groups:
            raise ValueError(f"state_dict is for {len(state['action']['floors'])} param groups, the optimizer has "
                             f"{groups}")
        for key in ("_steps_since_step_call", "_single_step_calls"):
            check_number(f"state_dict[{key!r}]", state[key], low=0, integer=True)
        # Scratch copies of the test and the action take the load first (the action's averaging buffers checked
        # against the parameters the meter will measure); the meter checks everything before it changes
        # anything: a failure at any point leaves this scheduler intact.
        test = copy.deepcopy(self.test)
        test.load_state_dict(state["test"])
        action = copy.deepcopy(self.action)
        action.load_state_dict(state["action"], self.meter.params_after_load(state["meter"]))
        self.meter.load_state_dict(state["meter"])
        self.test, self.action = test, action
        self.restart_measurement = bool(state.get("restart_measurement", self.restart_measurement))
        for key in self._CLOCK_KEYS:
            value = state[key]
            setattr(self, key, list(value) if isinstance(value, list) else value)
        self.omega_history = [tuple(item) for item in self.omega_history]  # type: ignore[misc]
        self.drops = [DropEvent(d["epoch"], d["step"], d["omega"], tuple(d["old_lrs"]), tuple(d["new_lrs"]))
                      for d in state["drops"]]
