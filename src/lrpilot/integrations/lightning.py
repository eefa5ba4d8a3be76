"""Lightning callbacks: AutoDrop on the optimizer ``configure_optimizers`` returned, the ActiveLR epoch boundary,
and Pilot's LR and decisions for the loggers.

    trainer = lightning.Trainer(max_epochs=60, callbacks=[AutoDropCallback(), ActiveLRCallback()])
    trainer = lightning.Trainer(max_epochs=60, callbacks=[PilotCallback()])  # configure_optimizers -> Pilot(...)

* :class:`AutoDropCallback` builds :class:`lrpilot.AutoDrop` on ``trainer.optimizers[optimizer_index]`` when
  training starts, steps it at the end of every training epoch, logs :func:`~lrpilot.integrations.logging.
  lrpilot_metrics` through ``pl_module.log_dict``, and saves its whole state in Lightning checkpoints
  (``state_dict``/``load_state_dict`` of the callback), so ``trainer.fit(model, ckpt_path=...)`` resumes it.
  It refuses an LR scheduler that ``configure_optimizers`` returns for the same optimizer.
* :class:`ActiveLRCallback` calls ``end_epoch()`` at the end of every training epoch on each ActiveLR optimizer
  that was built without ``steps_per_epoch`` (with it, the optimizer handles its own boundary). The
  multipliers and the epoch clock live in the optimizer's ``state_dict``, which Lightning checkpoints.
* :class:`PilotCallback` logs the LR each :class:`lrpilot.Pilot` optimizer applies, its measurements and each of
  its decisions to the trainer's loggers (Lightning's ``LearningRateMonitor`` shows the group ``lr``, Pilot's
  multiplier, 1.0).

**Exactly one epoch end per epoch, resume included.** Both callbacks do their work in ``on_train_epoch_end``,
which Lightning runs before ``ModelCheckpoint``'s (checkpoint callbacks always run last), so an end-of-epoch
checkpoint contains the epoch's decision. A checkpoint written *inside* an epoch (``every_n_train_steps``,
a mid-epoch validation) is saved before that epoch's end; when it was the epoch's last batch, Lightning 2.x
resumes at the next epoch and never calls ``on_train_epoch_end`` for the checkpointed one. Each callback
therefore records in its ``state_dict`` the epoch whose end is still pending, and on resume completes it in
``on_train_start`` (before any step of the next epoch) if Lightning has moved past it, or lets the normal
``on_train_epoch_end`` do it if Lightning resumes inside it: the resumed run is bitwise the uninterrupted one.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

import torch

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("lrpilot.integrations.lightning needs the 'lightning' package: pip install lightning") from err

from .._validation import check_number
from ..active._base import ActiveOptimizer
from ..autodrop import AutoDrop
from ..pilot import Pilot
from ..telemetry import set_lr
from .logging import event_rows as _event_rows
from .logging import lrpilot_metrics

__all__ = ["ActiveLRCallback", "AutoDropCallback", "PilotCallback"]

_PENDING = "epoch_end_pending"  # state_dict key: the 0-based epoch whose end is still to be done, or None


def _logging_step(trainer: Trainer) -> int:
    """The step Lightning gives the metrics it logs now: in ``on_train_batch_end`` that batch's step metrics
    (optimizer steps before this batch's), in ``on_train_start`` the restored step of the checkpointed batch."""
    return int(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", max(trainer.global_step - 1, 0)))


class _EpochEndCallback(Callback):
    """Runs :meth:`_end_epoch` exactly once per training epoch, across checkpoints and resumes."""

    def __init__(self) -> None:
        self._open_epoch: int | None = None  # the epoch whose batches have started and whose end has not run

    def _end_epoch(self, trainer: Trainer, pl_module: LightningModule, *, catch_up: bool) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._open_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._open_epoch is None:  # this epoch's end is already done (or it ran no batch): never twice
            return
        self._open_epoch = None
        self._end_epoch(trainer, pl_module, catch_up=False)

    def _complete_pending_epoch(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """On resume: finish the checkpointed epoch if Lightning resumed past it without its epoch end."""
        if self._open_epoch is not None and self._open_epoch < trainer.current_epoch:
            self._open_epoch = None
            self._end_epoch(trainer, pl_module, catch_up=True)

    @classmethod
    def _log_epoch(cls, trainer: Trainer, pl_module: LightningModule, metrics: dict[str, float], *,
                   catch_up: bool) -> None:
        """Log an epoch end's metrics: through ``pl_module.log_dict`` in ``on_train_epoch_end``, straight to the
        loggers for an epoch end caught up on resume (:meth:`_log_to_loggers`)."""
        if catch_up:
            cls._log_to_loggers(trainer, trainer.current_epoch - 1, metrics)
        elif metrics:
            pl_module.log_dict(metrics, on_step=False, on_epoch=True)

    @staticmethod
    def _log_to_loggers(trainer: Trainer, epoch: int, metrics: dict[str, float], step: int | None = None) -> None:
        """Send a caught-up epoch's metrics to the loggers directly (``pl_module.log_dict`` here would average
        them into the next epoch's values), as Lightning would have at that epoch's end: same step, values
        rounded to the default dtype as ``log_dict`` does. (``step``: another step than :func:`_logging_step`'s.)"""
        if not metrics or not trainer.loggers:
            return
        if step is None:
            # the checkpoint was saved in on_train_batch_end, before Lightning advanced its logging step past that
            # batch; it advances it when the epoch loop restarts, after on_train_start: the restored value is the
            # step of the checkpointed epoch's end-of-epoch metrics
            step = _logging_step(trainer)
        dtype = torch.get_default_dtype()
        values = {k: torch.tensor(v, dtype=dtype).item() for k, v in metrics.items()}
        for logger in trainer.loggers:
            logger.log_metrics({**values, "epoch": epoch}, step=step)

    def _pending_state(self) -> dict[str, Any]:
        return {_PENDING: self._open_epoch}

    def _load_pending_state(self, state_dict: dict[str, Any]) -> None:
        pending = state_dict.get(_PENDING)  # absent from checkpoints written before this key: nothing known pending
        if pending is not None:
            check_number(f"state_dict[{_PENDING!r}]", pending, low=0, integer=True)
        self._open_epoch = pending


class AutoDropCallback(_EpochEndCallback):
    """Run :class:`lrpilot.AutoDrop` inside ``lightning.Trainer``; no change to the LightningModule.

    Args:
        mode: AutoDrop's mode (``"trend"`` default, ``"code"``, ``"uai"``).
        optimizer_index: which of ``trainer.optimizers`` to drive.
        log: log the effective LR, omega and the drop count with ``pl_module.log_dict`` every epoch.
        **options: any AutoDrop option (``rho``, ``threshold``, ``min_lr``, ...), validated at construction.

    AutoDrop is the schedule: ``configure_optimizers`` must not also return an LR scheduler for the driven
    optimizer (``ValueError`` when training starts; the two schedules would compound).
    """

    def __init__(self, mode: str = "trend", *, optimizer_index: int = 0, log: bool = True, **options: Any) -> None:
        super().__init__()
        check_number("optimizer_index", optimizer_index, low=0, integer=True)
        # validate mode and options now, on a throwaway optimizer, so a typo fails before training starts
        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        AutoDrop(probe, mode, **options).remove_hook()
        self.mode = mode
        self.options = options
        self.optimizer_index = optimizer_index
        self.log = log
        self.scheduler: AutoDrop | None = None
        self._state_to_load: dict[str, Any] | None = None
        self._trainer: weakref.ref[Trainer] | None = None  # the Trainer of the last fit, to recognise a second fit

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.optimizer_index >= len(trainer.optimizers):
            raise ValueError(f"AutoDropCallback(optimizer_index={self.optimizer_index}) but the trainer has "
                             f"{len(trainer.optimizers)} optimizer(s); pass an index below {len(trainer.optimizers)}")
        optimizer = trainer.optimizers[self.optimizer_index]
        for config in trainer.lr_scheduler_configs:
            if getattr(config.scheduler, "optimizer", None) is optimizer:
                name = type(config.scheduler).__name__
                raise ValueError(
                    f"AutoDropCallback drives optimizer {self.optimizer_index} ({type(optimizer).__name__}), but "
                    f"configure_optimizers also returns a {name} for it: the two schedules would compound. "
                    f"Return the optimizer without the {name} (AutoDrop is the schedule), or remove "
                    "AutoDropCallback and return AutoDrop yourself, e.g. torch.optim.lr_scheduler.SequentialLR("
                    "optimizer, [warmup, lrpilot.AutoDrop(optimizer)], milestones=[...]) with interval 'epoch'")
        previous, self.scheduler = self.scheduler, None
        if previous is not None:
            previous.remove_hook()
        scheduler = AutoDrop(optimizer, self.mode, **self.options)
        if self._state_to_load is not None:  # trainer.fit(ckpt_path=...)
            scheduler.load_state_dict(self._state_to_load)
            self._state_to_load = None
        elif previous is not None and self._continues(previous, trainer, scheduler):
            # fit() again on the same Trainer: Lightning rebuilt the optimizer from configure_optimizers (its
            # initial LR); AutoDrop's schedule continues where it was, dropped LRs and clock included
            scheduler.load_state_dict(previous.state_dict())
            for group, old in zip(optimizer.param_groups, previous.optimizer.param_groups, strict=True):
                set_lr(group, old["lr"])
        self.scheduler = scheduler
        self._trainer = weakref.ref(trainer)
        self._complete_pending_epoch(trainer, pl_module)

    @property
    def state_key(self) -> str:
        """Unique per driven optimizer, so one callback per optimizer can be checkpointed (Lightning refuses two
        callbacks with one key: two AutoDropCallbacks on one optimizer, whose drops would compound). The key of
        ``optimizer_index=0`` stays the class name, which earlier checkpoints used."""
        if self.optimizer_index == 0:
            return super().state_key
        return self._generate_state_key(optimizer_index=self.optimizer_index)

    def _continues(self, previous: AutoDrop, trainer: Trainer, scheduler: AutoDrop) -> bool:
        """Whether this fit continues the previous one: same Trainer, past epoch 0, same parameters."""
        same = [id(p) for p in previous.angular_velocity.params] == [id(p) for p in scheduler.angular_velocity.params]
        last = self._trainer() if self._trainer is not None else None
        return (last is trainer and trainer.current_epoch > 0 and same
                and len(previous.optimizer.param_groups) == len(scheduler.optimizer.param_groups))

    def _end_epoch(self, trainer: Trainer, pl_module: LightningModule, *, catch_up: bool) -> None:
        if self.scheduler is None:
            return
        self.scheduler.step()
        if self.log:
            metrics = lrpilot_metrics(trainer.optimizers[self.optimizer_index], self.scheduler)
            self._log_epoch(trainer, pl_module, metrics, catch_up=catch_up)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.scheduler is not None:
            self.scheduler.remove_hook()

    def state_dict(self) -> dict[str, Any]:
        state = self._pending_state()
        if self.scheduler is not None:
            state["autodrop"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks before on_train_start builds the scheduler: keep it until then
        self._load_pending_state(state_dict)
        self._state_to_load = state_dict.get("autodrop")


class ActiveLRCallback(_EpochEndCallback):
    """Close the ActiveLR epoch (``optimizer.end_epoch()``) at the end of every training epoch, for each ActiveLR
    optimizer of the trainer that has no ``steps_per_epoch``; log their effective LRs if ``log``.

    Its ``state_dict`` records whether the checkpointed epoch's ``end_epoch()`` is still to be done (a
    checkpoint saved on an epoch's last batch); the optimizers' own state holds the multipliers and clock.
    """

    def __init__(self, *, log: bool = True) -> None:
        super().__init__()
        self.log = log
        self._epochs_at_start: dict[int, int] = {}  # ActiveLR epoch of each optimizer with steps_per_epoch
        self._warned: set[int] = set()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not any(isinstance(opt, ActiveOptimizer) for opt in trainer.optimizers):
            names = ", ".join(type(opt).__name__ for opt in trainer.optimizers) or "none"
            warnings.warn(f"ActiveLRCallback: no ActiveLR optimizer among the trainer's optimizers ({names}), so it "
                          "does nothing; return lrpilot.ActiveAdamW(...) (or lrpilot.Active(optimizer)) from "
                          "configure_optimizers", UserWarning, stacklevel=2)
        self._epochs_at_start = {}
        self._complete_pending_epoch(trainer, pl_module)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epochs_at_start = {i: opt.epoch for i, opt in enumerate(trainer.optimizers)
                                 if isinstance(opt, ActiveOptimizer) and opt.steps_per_epoch is not None}

    def _check_own_boundaries(self, trainer: Trainer) -> None:
        """An optimizer with ``steps_per_epoch`` must close exactly one ActiveLR epoch per Lightning epoch."""
        for i, start in self._epochs_at_start.items():
            opt = trainer.optimizers[i]
            assert isinstance(opt, ActiveOptimizer)  # _epochs_at_start holds only those
            closed, into = opt.epoch - start, getattr(opt, "_steps_in_epoch", 0)
            if (closed != 1 or into != 0) and i not in self._warned:
                self._warned.add(i)
                warnings.warn(
                    f"ActiveLRCallback: {type(opt).__name__} (optimizer {i}) has steps_per_epoch="
                    f"{opt.steps_per_epoch}, but training epoch {trainer.current_epoch} closed {closed} of its "
                    f"epochs and ended {into} steps into the next: its multipliers adapt out of step with the data's "
                    "epochs (gradient accumulation divides the optimizer steps per epoch). Build it with "
                    "steps_per_epoch=len(train_loader) // accumulate_grad_batches, or without steps_per_epoch "
                    "(ActiveLRCallback then closes each epoch)", UserWarning, stacklevel=2)
        self._epochs_at_start = {}

    def _end_epoch(self, trainer: Trainer, pl_module: LightningModule, *, catch_up: bool) -> None:
        if not catch_up:
            self._check_own_boundaries(trainer)
        metrics: dict[str, float] = {}
        for i, opt in enumerate(trainer.optimizers):
            if isinstance(opt, ActiveOptimizer) and opt.steps_per_epoch is None:
                opt.end_epoch()
            if self.log and isinstance(opt, ActiveOptimizer):
                metrics.update({f"opt{i}/{k}": v for k, v in lrpilot_metrics(opt).items()})
        self._log_epoch(trainer, pl_module, metrics, catch_up=catch_up)

    def state_dict(self) -> dict[str, Any]:
        return self._pending_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._load_pending_state(state_dict)


class PilotCallback(_EpochEndCallback):
    """Log what each :class:`lrpilot.Pilot` optimizer of the trainer applies and decides, to the trainer's loggers.

    * Every ``log_every_n_steps`` optimizer steps (default: the trainer's ``log_every_n_steps``, so at the steps
      where Lightning writes its own step metrics, with the same step number), :func:`lrpilot_metrics` of each
      Pilot: ``lr/group{i}`` (the LR the next step applies: ``d x factor x`` the group's multiplier;
      ``lr_min``/``lr_max`` the same), ``pilot/d``, ``pilot/factor``, ``pilot/drops``, ``pilot/skipped``,
      ``pilot/alignment``;
      written straight to ``trainer.loggers`` (as ``log_dict`` would, values in the default dtype).
    * At the end of every training epoch the same numbers, to ``trainer.callback_metrics`` (``pl_module.log_dict``)
      and to the loggers at the step Lightning gives the epoch's metrics, unless the epoch's last step was a
      logging step, which wrote these very numbers at that step already.
    * Each new :class:`~lrpilot.PilotEvent` (``scale``, ``settled``, ``drop``, ``cooldown``, ``skip``) once, as
      ``pilot/event_<kind>`` = its value, at the step it was taken, whatever the logging interval.
    * With more than one optimizer every name is prefixed ``opt{i}/`` (the optimizer's index).

    Checkpoints: Pilot's whole state is in its own ``state_dict``, which Lightning checkpoints; events restored
    with it by ``trainer.fit(ckpt_path=...)`` were reported by the run that saved the checkpoint and are not
    reported again. The callback's ``state_dict`` holds only whether the checkpointed epoch's end-of-epoch log is
    still pending (a checkpoint saved on an epoch's last batch; see the module docstring), so a resumed run logs
    exactly what the uninterrupted one logs from there.

    Warns when training starts if no optimizer is a Pilot, if ``configure_optimizers`` returns an LR scheduler for
    a Pilot (Pilot ignores it) and if a Pilot's ``total_steps`` is not the trainer's number of optimizer steps.
    Under a ``GradScaler`` (``precision="16-mixed"``) with ``gradient_clip_val``, which Lightning refuses for an
    optimizer that unscales in its step, it switches each Pilot to the scaler's unscaling
    (``unscale_in_step=False``) and warns: the steps the scaler then skips do not count in the budget.
    """

    def __init__(self, log_every_n_steps: int | None = None) -> None:
        super().__init__()
        if log_every_n_steps is not None:
            check_number("log_every_n_steps", log_every_n_steps, low=1, integer=True)
        self.log_every_n_steps = log_every_n_steps
        self._reported: dict[int, int] = {}  # optimizer index -> how many of its events have been reported
        self._global_step = 0  # trainer.global_step at the last batch end: did this batch step?

    @staticmethod
    def _pilots(trainer: Trainer) -> list[tuple[int, str, Pilot]]:
        optimizers = trainer.optimizers
        return [(i, "" if len(optimizers) == 1 else f"opt{i}/", opt) for i, opt in enumerate(optimizers)
                if isinstance(opt, Pilot)]

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pilots = self._pilots(trainer)
        if not pilots:
            names = ", ".join(type(opt).__name__ for opt in trainer.optimizers) or "none"
            warnings.warn(f"PilotCallback: no lrpilot.Pilot among the trainer's optimizers ({names}), so it logs "
                          "nothing; return lrpilot.Pilot(self.parameters()) from configure_optimizers",
                          UserWarning, stacklevel=2)
        for config in trainer.lr_scheduler_configs:
            if isinstance(getattr(config.scheduler, "optimizer", None), Pilot):
                warnings.warn(f"PilotCallback: configure_optimizers returns a {type(config.scheduler).__name__} for a "
                              "Pilot, which ignores it: Pilot decides its LR and schedule itself. Return Pilot alone "
                              "(to give it the budget: Pilot(..., total_steps=N))", UserWarning, stacklevel=2)
        try:
            budget = trainer.estimated_stepping_batches
        except Exception:  # a loader without a length, ...: nothing to compare with
            budget = float("inf")
        for i, _, opt in pilots:
            if opt.total_steps is not None and budget != float("inf") and opt.total_steps != int(budget):
                warnings.warn(f"PilotCallback: optimizer {i} is Pilot(total_steps={opt.total_steps}) but the trainer "
                              f"makes {int(budget)} optimizer steps: Pilot's cooldown is planned for its own budget. "
                              f"Pass total_steps={int(budget)} (trainer.estimated_stepping_batches), or "
                              "total_steps=None for the anytime schedule", UserWarning, stacklevel=2)
        if getattr(trainer.precision_plugin, "scaler", None) is not None and trainer.gradient_clip_val:
            for i, _, opt in pilots:  # Lightning refuses to clip for an optimizer that unscales in its step
                if opt.unscale_in_step:
                    opt.unscale_in_step = False
                    warnings.warn(f"PilotCallback: optimizer {i} is a Pilot that unscales GradScaler's gradients in "
                                  "its step, and Lightning refuses gradient_clip_val for such an optimizer under "
                                  "'16-mixed': switched to the scaler's unscaling (unscale_in_step=False), so steps "
                                  "the scaler skips for an overflow do not count in Pilot's budget. Build it with "
                                  "Pilot(..., unscale_in_step=False) to silence this", UserWarning, stacklevel=2)
        # a resumed (or continued) optimizer's events were reported by the run that took them
        self._reported = {i: len(opt.events) if trainer.global_step > 0 or opt.steps > 0 else 0
                          for i, _, opt in pilots}
        self._global_step = trainer.global_step
        self._complete_pending_epoch(trainer, pl_module)

    def _every(self, trainer: Trainer) -> int:
        if self.log_every_n_steps is not None:
            return self.log_every_n_steps
        return int(getattr(trainer, "log_every_n_steps", 50))  # set by Lightning's logger connector

    def _is_logging_step(self, trainer: Trainer, step: int) -> bool:
        """Whether the optimizer step logged at ``step`` (0-based, Lightning's logging step) writes metrics."""
        every = self._every(trainer)
        return every > 0 and (step + 1) % every == 0

    def _metrics(self, pilots: list[tuple[int, str, Pilot]]) -> dict[str, float]:
        return {f"{prefix}{k}": v for _, prefix, opt in pilots for k, v in lrpilot_metrics(opt).items()}

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        stepped, self._global_step = trainer.global_step != self._global_step, trainer.global_step
        pilots = self._pilots(trainer)
        if not stepped or not pilots:  # an accumulating batch: no step, nothing new
            return
        step = _logging_step(trainer)
        rows = [self._metrics(pilots)] if self._is_logging_step(trainer, step) else []
        for i, prefix, opt in pilots:
            seen = self._reported.get(i, 0)
            if len(opt.events) > seen:
                new = _event_rows(opt.events[seen:], prefix)
                self._reported[i] = len(opt.events)
                if rows and not set(rows[0]) & set(new[0]):
                    rows[0].update(new.pop(0))
                rows.extend(new)
        for row in rows:
            self._log_to_loggers(trainer, trainer.current_epoch, row)

    def _end_epoch(self, trainer: Trainer, pl_module: LightningModule, *, catch_up: bool) -> None:
        pilots = self._pilots(trainer)
        if not pilots:
            return
        metrics = self._metrics(pilots)
        if not catch_up:  # callback_metrics; the loggers are written below (same arguments every epoch)
            pl_module.log_dict(metrics, on_step=False, on_epoch=True, logger=False)
        # the step of the epoch's last batch, where Lightning logs the epoch's metrics (in on_train_epoch_end it
        # has advanced past it already); that batch wrote these very numbers if it was a logging step
        last = _logging_step(trainer) - (0 if catch_up else 1)
        if not self._is_logging_step(trainer, last):
            self._log_to_loggers(trainer, trainer.current_epoch - int(catch_up), metrics, step=last)

    def state_dict(self) -> dict[str, Any]:
        return self._pending_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._load_pending_state(state_dict)
