"""AutoDrop: drop the learning rate when the angular velocity of the parameters saturates.

Teng, Wang & Choromanska, "AutoDrop: Training Deep Learning Models with Automatic Learning Rate
Drop", arXiv 2111.15317 (official code: yunfei-teng/AutoDrop) and UAI 2024 (PMLR 244:3603-3629).

The angular velocity omega (eq. 2, :mod:`lrpilot.angular_velocity`) is the angle between successive
displacements of the parameters. Early in training the parameters travel in a consistent direction and
omega is small; as the iterate settles into a basin, successive moves decorrelate and omega rises to a
plateau. AutoDrop drops the learning rate by ``rho`` at that plateau; omega falls, rises again, and the
cycle repeats.

Three modes (``mode=``):

``"trend"`` (default, lrpilot's)
    One measurement per epoch (``scheduler.step()``), from parameters *averaged over the epoch* (an
    optimizer step hook keeps a running sum; no change to the training loop), tested with
    :class:`~lrpilot.saturation.TrendTest`: saturated when omega has risen (Mann-Kendall z > 2.33 on
    a recent stretch) and no recent stretch still shows an upward trend (z <= 1.28 over every suffix of
    the last 10 epochs); a series that shows no rise within ``patience = 20`` epochs counts as
    saturated once it is not rising. The test is rank-based, so it needs no threshold in degrees and
    works at any noise level. After a drop
    the measurement restarts (snapshots that straddle the drop are discarded). rho = 0.1, floor
    ``min_lr = 1e-3 x`` each group's initial LR, no extra epochs, no weight averaging (see
    ``docs/autodrop.md`` for the measurements behind these choices).
``"code"``
    The official code exactly (spec section 1): snapshot after the first step of each epoch, test
    ``|omega_e - omega_{e-1}| < theta`` after the second step, theta0 = 0.01 degrees, 19 further
    epochs at the old LR after detection (the code's ``--extra_epochs 20`` counts the detecting epoch),
    then theta <- min(theta / rho, 1), lr <- max(rho lr, 1e-4), weights <- linearly weighted average of
    the per-epoch snapshots. rho = 0.2.
``"uai"``
    The published Algorithm 1 (spec section 2): omega from parameters averaged over windows of
    ``interval = 64`` optimizer steps, Gaussian-smoothed over a buffer of m = 10 values, drop by
    rho = 0.95 when the smoothed value rises by less than 0.1 degrees, buffer cleared after each drop.

Every mode accepts every option: ``extra_epochs`` and ``weight_average`` (the code's post-saturation
behaviour), ``adapt_threshold``/``threshold_max`` (the code's threshold schedule), ``interval`` (measure
every N optimizer steps instead of every epoch; not for ``"code"``, whose clock is the epoch).

What is not done, as in the official code: momentum buffers are left untouched by a drop or by weight
averaging, and BatchNorm running statistics are not recomputed after averaging.
"""

from __future__ import annotations

import copy
import math
import warnings
import weakref
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ._validation import check_number
from .angular_velocity import AngularVelocity
from .saturation import DeltaTest, GaussianSmoothedTest, SaturationTest, TrendTest

__all__ = ["MODES", "AutoDrop", "DropEvent"]

#: Defaults of each mode; any of them can be overridden by the constructor's keyword of the same name.
MODES: dict[str, dict[str, Any]] = {
    "trend": {
        "rho": 0.1,
        "threshold": 1.28,
        "rise_threshold": 2.33,
        "window": 10,
        "patience": 20,
        "adapt_threshold": False,
        "threshold_max": math.inf,
        "min_lr": None,  # None: 1e-3 x each group's initial lr
        "extra_epochs": 0,
        "weight_average": False,
        "average_snapshots": True,
        "interval": None,
        "eps": 0.0,
    },
    "code": {
        "rho": 0.2,
        "threshold": 0.01,
        "adapt_threshold": True,
        "threshold_max": 1.0,
        "min_lr": 1e-4,
        "extra_epochs": 19,
        "weight_average": True,
        "average_snapshots": False,
        "interval": None,
        "eps": 1e-8,
    },
    "uai": {
        "rho": 0.95,
        "threshold": 0.1,
        "m": 10,
        "min_buffer": 10,
        "kernel": "value",
        "adapt_threshold": False,
        "threshold_max": math.inf,
        "min_lr": None,
        "extra_epochs": 0,
        "weight_average": False,
        "average_snapshots": True,
        "interval": 64,
        "eps": 1e-8,
    },
}

_OPTIONS = {key for mode in MODES.values() for key in mode}
_MIN_LR_RATIO = 1e-3  # the default floor, relative to each group's initial lr


@dataclass(frozen=True)
class DropEvent:
    """One learning-rate drop: when it happened, what omega was, and the LRs before and after."""

    epoch: int
    step: int
    omega: float | None
    old_lrs: tuple[float, ...]
    new_lrs: tuple[float, ...]


def _lr_value(lr: float | Tensor) -> float:
    return float(lr.item()) if isinstance(lr, Tensor) else float(lr)


class AutoDrop(LRScheduler):
    """Drop every param group's learning rate by ``rho`` when the parameters' angular velocity saturates.

    Use it like :class:`torch.optim.lr_scheduler.StepLR`: construct it on any ``torch.optim``
    optimizer and call ``scheduler.step()`` once at the end of every epoch. It registers an optimizer
    step hook for what it measures within an epoch; the training loop needs nothing else.

    Args:
        optimizer: any :class:`torch.optim.Optimizer`.
        mode: ``"trend"`` (default), ``"code"`` or ``"uai"``; see the module docstring.
        rho: drop factor in (0, 1).
        threshold: the saturation test's threshold: Mann-Kendall z for ``"trend"``, degrees for
            ``"code"`` (on ``|omega_e - omega_{e-1}|``) and ``"uai"`` (on the smoothed rise).
        window: ``"trend"`` only: angles per test (>= 6); also the minimum between drops.
        rise_threshold: ``"trend"`` only: the z a rise must reach before a plateau counts.
        patience: ``"trend"`` only: angles after which a plateau counts without a rise (``None``: never).
        m, min_buffer, kernel: ``"uai"`` only: Gaussian filter width, buffer size, ``"value"`` or
            ``"offset"`` kernel (see :class:`~lrpilot.saturation.GaussianSmoothedTest`).
        min_lr: floor of the LR, a float or one per group; ``None`` = 1e-3 x each group's initial LR.
            A group already below its floor is left where it is.
        extra_epochs: measurement intervals trained at the old LR after the one in which saturation
            was detected; the drop follows the last of them. 0 drops at once.
        weight_average: at the drop, replace the weights by ``sum_k k z_k / sum_k k`` over the
            snapshots ``z_1..z_E`` taken at each interval from detection to drop (the code's
            ``--var_rd``); meaningful with ``extra_epochs > 0``.
        adapt_threshold, threshold_max: after each drop, ``threshold <- min(threshold / rho,
            threshold_max)`` (the code's ``--auto_theta``).
        average_snapshots: measure omega on the parameters averaged over each interval rather than on
            the parameters at its end (``"trend"`` and ``"uai"``).
        interval: measure every ``interval`` optimizer steps instead of at every ``step()``.
        eps: added to the norm product of the angle formula (eq. 2).
        params: which parameters to measure (default: every trainable parameter of the optimizer).
        sharded, process_group: the optimizer holds only this rank's shard of the parameters (FSDP, ZeRO):
            omega is computed from sums all-reduced over ``process_group`` so that every rank measures the
            whole model and takes the same decisions (see :class:`~lrpilot.AngularVelocity`); ``step()``
            is then a collective. Not needed with plain DDP, whose ranks hold identical parameters.
        last_epoch: as in every torch scheduler; use :meth:`load_state_dict` to resume.

    Attributes a logger can read: :meth:`get_last_lr`, :attr:`omega_history` ((epoch, omega) per
    measurement), :attr:`drops` (:class:`DropEvent` list), :attr:`drop_epochs`,
    :attr:`saturation_epochs`, :attr:`should_drop`, :attr:`threshold`.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "trend", *, params: Any = None,
                 last_epoch: int = -1, sharded: bool = False, process_group: Any = None,
                 **options: Any) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
        unknown = set(options) - _OPTIONS
        if unknown:
            raise TypeError(f"AutoDrop got unknown options {sorted(unknown)}; known: {sorted(_OPTIONS)}")
        foreign = set(options) - set(MODES[mode])
        if foreign:
            raise ValueError(f"options {sorted(foreign)} do not apply to mode {mode!r}")
        cfg = {**MODES[mode], **options}
        self._validate(cfg, mode, optimizer)
        self.mode = mode
        self.rho = float(cfg["rho"])
        self.extra_epochs = int(cfg["extra_epochs"])
        self.weight_average = bool(cfg["weight_average"])
        self.adapt_threshold = bool(cfg["adapt_threshold"])
        self.threshold_max = float(cfg["threshold_max"])
        self.average_snapshots = bool(cfg["average_snapshots"])
        self.interval: int | None = cfg["interval"]
        self._min_lr_option = cfg["min_lr"]

        # params=None: measure every trainable parameter of the optimizer, and follow that set when it changes
        # (add_param_group, a parameter unfrozen later); an explicit params= list is the user's and is kept.
        self._follow_optimizer = params is None
        self.angular_velocity = AngularVelocity(optimizer if params is None else params, eps=cfg["eps"],
                                                sharded=sharded, process_group=process_group)
        self.test: SaturationTest
        if mode == "code":
            self.test = DeltaTest(cfg["threshold"])
        elif mode == "uai":
            self.test = GaussianSmoothedTest(cfg["threshold"], cfg["m"], cfg["min_buffer"], cfg["kernel"])
        else:
            self.test = TrendTest(cfg["threshold"], cfg["window"], cfg["rise_threshold"], cfg["patience"])

        # Measurement and decision state (all of it goes into state_dict).
        self.global_step = 0
        self._steps_in_interval = 0  # optimizer steps since the last measurement (or epoch start, "code")
        self._sum: list[Tensor] | None = None  # running sum of parameters over the current interval
        self._pending_omega: float | None = None  # "code": angle measured at b == 1, used at b == 2
        self._counting = 0  # k: intervals since saturation was detected (0 = not triggered)
        self._average: list[Tensor] | None = None  # sum_k k z_k
        self.omega_history: list[tuple[int, float]] = []
        self.saturation_epochs: list[int] = []
        self.drops: list[DropEvent] = []
        self._steps_since_step_call = 0  # optimizer steps since the last step() call (misuse detection)
        self._single_step_calls = 0  # consecutive step() calls that each followed exactly one optimizer step
        self._warned_per_step = False

        super().__init__(optimizer, last_epoch)
        self.min_lrs = self._resolve_min_lrs()
        self._hook_handle = self._register_hook()

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _validate(cfg: dict[str, Any], mode: str, optimizer: Optimizer) -> None:
        check_number("rho", cfg["rho"], low=0, high=1, low_open=True, high_open=True)
        check_number("threshold", cfg["threshold"], low=0)
        check_number("threshold_max", cfg["threshold_max"], low=0, allow_inf=True)
        check_number("extra_epochs", cfg["extra_epochs"], low=0, integer=True)
        check_number("eps", cfg["eps"], low=0)
        if cfg["interval"] is not None:
            check_number("interval", cfg["interval"], low=1, integer=True)
            if mode == "code":
                raise ValueError("interval must be None in mode 'code': its clock is the epoch (step())")
        if mode == "trend":
            check_number("window", cfg["window"], low=6, integer=True)
            check_number("rise_threshold", cfg["rise_threshold"])
            if cfg["patience"] is not None:
                check_number("patience", cfg["patience"], low=cfg["window"], integer=True)
        if mode == "uai":
            check_number("m", cfg["m"], low=1, integer=True)
            check_number("min_buffer", cfg["min_buffer"], low=3, integer=True)
            if cfg["kernel"] not in ("value", "offset"):
                raise ValueError(f"kernel must be 'value' or 'offset', got {cfg['kernel']!r}")
        min_lr = cfg["min_lr"]
        if min_lr is not None:
            values = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr]
            if isinstance(min_lr, (list, tuple)) and len(values) != len(optimizer.param_groups):
                raise ValueError(
                    f"min_lr has {len(values)} entries but the optimizer has "
                    f"{len(optimizer.param_groups)} param groups"
                )
            for value in values:
                check_number("min_lr", value, low=0)

    def _resolve_min_lrs(self) -> list[float]:
        option = self._min_lr_option
        if option is None:
            return [_MIN_LR_RATIO * _lr_value(lr) for lr in self.base_lrs]
        if isinstance(option, (list, tuple)):
            return [float(v) for v in option]
        return [float(option)] * len(self.optimizer.param_groups)

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
        return self._counting > 0 or bool(self.drops and self.drops[-1].step == self.global_step)

    @property
    def last_omega(self) -> float | None:
        """The most recent angular velocity in degrees (None before the first one)."""
        return self.omega_history[-1][1] if self.omega_history else None

    def metrics(self) -> dict[str, float]:
        """The telemetry protocol (:mod:`lrpilot.telemetry`): ``autodrop/drops`` (LR changes so far),
        ``autodrop/threshold``, and ``autodrop/omega`` when the last ``step()`` measured a finite angle."""
        out = {"autodrop/drops": float(len(self.drops)), "autodrop/threshold": float(self.threshold)}
        if self.omega_history and self.omega_history[-1][0] == self.last_epoch and math.isfinite(self.last_omega):
            out["autodrop/omega"] = float(self.omega_history[-1][1])
        return out

    def get_lr(self) -> list[float | Tensor]:
        """The current learning rates (AutoDrop changes them only when it drops)."""
        return [group["lr"] for group in self.optimizer.param_groups]

    # ------------------------------------------------------------------ the clock
    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
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
            self._sync_with_optimizer()
            if self.mode == "code":
                self._steps_in_interval = 0
            elif self.interval is None:
                self._measure()
        self._steps_since_step_call = 0
        self.last_epoch += 1
        self._last_lr = [_lr_value(group["lr"]) for group in self.optimizer.param_groups]

    def _check_per_step_calls(self, steps: int) -> None:
        """Warn once when ``step()`` keeps following single optimizer steps: it is being called per batch."""
        if self.interval is not None or self._warned_per_step:  # interval: the clock is the optimizer step
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
        self._sync_with_optimizer()
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(_lr_value(lr))
            else:
                group["lr"] = _lr_value(lr)
        self._restart_measurement()
        self._counting = 0
        self._average = None
        self._steps_since_step_call = 0
        self.last_epoch = 0
        self._last_lr = [_lr_value(group["lr"]) for group in self.optimizer.param_groups]

    def _restart_measurement(self) -> None:
        """Forget the snapshots, the test's history and the interval's running sum."""
        self.angular_velocity.reset()
        self.test.reset()
        self._sum = None
        self._steps_in_interval = 0
        self._pending_omega = None

    # ------------------------------------------------------------------ following the optimizer
    def _sync_with_optimizer(self) -> None:
        """Follow param groups added and parameters unfrozen after AutoDrop was built, with a warning.

        A new group gets an ``initial_lr`` (its LR now), a base LR and a floor (``min_lr`` if one value was
        given, else 1e-3 x its LR), so a drop lowers every group, never only the old ones. With ``params=None``
        the measured set is every trainable parameter of the optimizer: when new ones appear (a group added, a
        parameter whose ``requires_grad`` became True) the measurement restarts on the new set, since an angle
        between displacements of vectors of different sizes has no meaning.
        """
        self._sync_groups()
        self._sync_measured_set()

    def _sync_groups(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) > len(self.min_lrs):
            new = range(len(self.min_lrs), len(groups))
            per_group_floor = isinstance(self._min_lr_option, (list, tuple))
            for i in new:
                group = groups[i]
                group.setdefault("initial_lr", _lr_value(group["lr"]))
                self.base_lrs.append(group["initial_lr"])
                if self._min_lr_option is None or per_group_floor:
                    self.min_lrs.append(_MIN_LR_RATIO * _lr_value(group["initial_lr"]))
                else:
                    self.min_lrs.append(float(self._min_lr_option))
            warnings.warn(
                f"AutoDrop: the optimizer has {len(groups)} param groups, {len(new)} more than when AutoDrop was "
                f"built (add_param_group); drops now apply to them too, with floor(s) "
                f"{[self.min_lrs[i] for i in new]}"
                + (" (1e-3 x their LR: min_lr was given per group)" if per_group_floor else "") + ".",
                UserWarning,
                stacklevel=4,
            )

    def _sync_measured_set(self) -> None:
        if not self._follow_optimizer:
            return
        groups = self.optimizer.param_groups
        measured = {id(p) for p in self.angular_velocity.params}
        trainable = [p for g in groups for p in g["params"] if p.requires_grad]
        added = [p for p in trainable if id(p) not in measured]
        if added:
            av = self.angular_velocity
            self.angular_velocity = AngularVelocity(self.optimizer, eps=av.eps, per_group=av.per_group,
                                                    sharded=av.sharded, process_group=av.process_group)
            self._restart_measurement()
            self._counting, self._average = 0, None  # a pending weight-averaging window no longer fits
            warnings.warn(
                f"AutoDrop: {len(added)} trainable parameter(s) ({sum(p.numel() for p in added)} elements) joined "
                f"the optimizer's trainable set at epoch {self._epoch} (add_param_group or requires_grad set to "
                "True); the angular velocity now includes them and restarts (its next two epochs measure nothing).",
                UserWarning,
                stacklevel=4,
            )

    @property
    def _epoch(self) -> int:
        """The 1-based number of the epoch in progress."""
        return self.last_epoch + 1

    @torch.no_grad()
    def _after_optimizer_step(self) -> None:
        self._steps_since_step_call += 1
        if self.last_epoch < 0:  # inside SequentialLR, before AutoDrop's milestone: not running yet
            return
        self.global_step += 1
        self._steps_in_interval += 1
        if self.mode == "code":
            if self._steps_in_interval == 1:  # spec 1.1: snapshot after the first step of the epoch
                self._pending_omega = self.angular_velocity.update()
            elif self._steps_in_interval == 2:  # spec 1.2: angle, test and drop after the second step
                omega, self._pending_omega = self._pending_omega, None
                self._decide(omega)
            return
        if self.average_snapshots:
            params = self.angular_velocity.params
            if self._sum is None:
                self._sum = [p.detach().clone() for p in params]
            else:
                torch._foreach_add_(self._sum, params)  # read-only under no_grad: no per-step detach list
        if self.interval is not None and self._steps_in_interval >= self.interval:
            self._measure()

    def _measure(self) -> None:
        """End of a measurement interval: snapshot (the interval's mean or the current params), decide."""
        if self.interval is not None:  # step() syncs per epoch; an interval ends inside the optimizer hook
            self._sync_with_optimizer()
        if self._sum is not None and self._steps_in_interval > 0:
            torch._foreach_mul_(self._sum, 1.0 / self._steps_in_interval)
            omega = self.angular_velocity.update(self._sum)
        else:
            omega = self.angular_velocity.update()
        self._sum = None
        self._steps_in_interval = 0
        self._decide(omega)

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
        if self._counting == 0:
            if omega is None or not math.isfinite(omega) or not self.test.saturated():
                return
            self.saturation_epochs.append(self._epoch)
        self._counting += 1
        if self.weight_average:
            params = [p.detach() for p in self.angular_velocity.params]
            if self._average is None:
                self._average = [p.clone() for p in params]
            else:
                torch._foreach_add_(self._average, params, alpha=self._counting)
        if self._counting > self.extra_epochs:
            self._drop(omega)

    @torch.no_grad()
    def _drop(self, omega: float | None) -> None:
        """Lower every group's LR by ``rho`` (not below its floor). A :class:`DropEvent` is recorded only when
        some LR changed: at the floor the saturation is still acted on (threshold, averaging, test reset) but
        no drop is counted."""
        self._sync_groups()  # every group gets its floor before any LR changes: never a half-applied drop
        if self.adapt_threshold:
            self.test.threshold = min(self.test.threshold / self.rho, self.threshold_max)
        old, new = [], []
        for group, floor in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
            lr = _lr_value(group["lr"])
            lowered = max(lr * self.rho, min(lr, floor))
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(lowered)
            else:
                group["lr"] = lowered
            old.append(lr)
            new.append(lowered)
        if self._average is not None:
            total = self._counting * (self._counting + 1) / 2
            torch._foreach_mul_(self._average, 1.0 / total)
            torch._foreach_copy_([p.detach() for p in self.angular_velocity.params], self._average)
            self._average = None
        self._counting = 0
        if self.mode != "code":  # the test's history and the snapshots that straddle the drop are stale
            self.test.reset()
            if self.mode == "trend":
                self.angular_velocity.reset()
        if old != new:
            self.drops.append(DropEvent(self._epoch, self.global_step, omega, tuple(old), tuple(new)))
        self._last_lr = [_lr_value(group["lr"]) for group in self.optimizer.param_groups]

    # ------------------------------------------------------------------ checkpointing
    _STATE_KEYS = (
        "mode", "rho", "extra_epochs", "weight_average", "adapt_threshold", "threshold_max",
        "average_snapshots", "interval", "min_lrs", "global_step", "_steps_in_interval",
        "_pending_omega", "_counting", "omega_history", "saturation_epochs", "base_lrs",
        "last_epoch", "_step_count", "_last_lr",
    )
    # Added after the first checkpoint format ("_steps_since_step_call", "_single_step_calls", "_warned_per_step",
    # "measured"): optional on load, with defaults for older checkpoints (see load_state_dict).

    def state_dict(self) -> dict[str, Any]:
        """All of the scheduler's state: counters, histories, threshold, snapshots and averaging buffers."""
        state: dict[str, Any] = {key: getattr(self, key) for key in self._STATE_KEYS}
        state = {k: (list(v) if isinstance(v, list) else v) for k, v in state.items()}
        state["drops"] = [asdict(event) for event in self.drops]
        state["test"] = self.test.state_dict()
        state["angular_velocity"] = self.angular_velocity.state_dict()
        state["sum"] = None if self._sum is None else [t.clone() for t in self._sum]
        state["average"] = None if self._average is None else [t.clone() for t in self._average]
        state["_steps_since_step_call"] = self._steps_since_step_call
        state["_single_step_calls"] = self._single_step_calls
        state["_warned_per_step"] = self._warned_per_step
        state["measured"] = self._measured_indices()
        return state

    def _optimizer_params(self) -> list[Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _measured_indices(self) -> list[int] | None:
        """Positions of the measured parameters in the optimizer's flattened parameter list (``params=None``)."""
        if not self._follow_optimizer:
            return None
        position = {id(p): i for i, p in enumerate(self._optimizer_params())}
        return [position[id(p)] for p in self.angular_velocity.params]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. Everything is checked before anything changes."""
        missing = {*self._STATE_KEYS, "drops", "test", "angular_velocity", "sum", "average"} - set(state_dict)
        if missing:
            raise ValueError(f"AutoDrop state_dict is missing keys {sorted(missing)}")
        if state_dict["mode"] != self.mode:
            raise ValueError(f"state_dict is from mode {state_dict['mode']!r}, this scheduler is {self.mode!r}")
        groups = len(self.optimizer.param_groups)
        if len(state_dict["min_lrs"]) != groups or len(state_dict["_last_lr"]) != groups:
            raise ValueError(
                f"state_dict is for {len(state_dict['min_lrs'])} param groups, the optimizer has {groups}"
            )
        for key in ("_steps_since_step_call", "_single_step_calls"):
            if state_dict.get(key) is not None:
                check_number(f"state_dict[{key!r}]", state_dict[key], low=0, integer=True)
        # The measured set as saved (it may differ from today's trainable set: a parameter unfrozen during
        # training, then a resume that builds AutoDrop before unfreezing it again).
        av = self.angular_velocity
        measured = state_dict.get("measured")
        if measured is not None and self._follow_optimizer and measured != self._measured_indices():
            everything = self._optimizer_params()
            if not all(isinstance(i, int) and 0 <= i < len(everything) for i in measured) or not measured:
                raise ValueError(f"state_dict 'measured' indices {measured} do not fit the optimizer's "
                                 f"{len(everything)} parameters")
            av = AngularVelocity([everything[i] for i in measured], eps=av.eps, sharded=av.sharded,
                                 process_group=av.process_group, trainable_only=False)
        params = av.params
        buffers: dict[str, list[Tensor] | None] = {}
        for key in ("sum", "average"):
            value = state_dict[key]
            if value is not None and (
                len(value) != len(params) or any(t.shape != p.shape for t, p in zip(value, params))
            ):
                raise ValueError(f"state_dict '{key}' buffers do not match the measured parameters' shapes")
            buffers[key] = None if value is None else [t.to(p).clone() for t, p in zip(value, params)]
        # The test is loaded into a scratch copy, then the measurement, whose load_state_dict checks everything
        # before it changes anything (and keeps its sharded / process_group settings): a failure at any point
        # leaves this scheduler intact.
        scratch_test = copy.deepcopy(self.test)
        scratch_test.load_state_dict(state_dict["test"])
        av.load_state_dict(state_dict["angular_velocity"])

        for key in self._STATE_KEYS:
            value = state_dict[key]
            setattr(self, key, list(value) if isinstance(value, list) else value)
        self.omega_history = [tuple(item) for item in self.omega_history]  # type: ignore[misc]
        self.drops = [
            DropEvent(d["epoch"], d["step"], d["omega"], tuple(d["old_lrs"]), tuple(d["new_lrs"]))
            for d in state_dict["drops"]
        ]
        self.angular_velocity = av
        self.test = scratch_test
        self._sum, self._average = buffers["sum"], buffers["average"]
        since = state_dict.get("_steps_since_step_call")
        if since is None:  # older checkpoints: the steps of the interval are the steps since the last step()
            since = self._steps_in_interval if self.interval is None else 1
        self._steps_since_step_call = int(since)
        self._single_step_calls = int(state_dict.get("_single_step_calls", 0))
        self._warned_per_step = bool(state_dict.get("_warned_per_step", False))
