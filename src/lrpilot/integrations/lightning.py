"""Lightning callbacks: AutoDrop on the optimizer ``configure_optimizers`` returned, and the ActiveLR epoch boundary.

    trainer = lightning.Trainer(max_epochs=60, callbacks=[AutoDropCallback(), ActiveLRCallback()])

* :class:`AutoDropCallback` builds :class:`lrpilot.AutoDrop` on ``trainer.optimizers[optimizer_index]`` when
  training starts, steps it at the end of every training epoch, logs :func:`~lrpilot.integrations.logging.
  lrpilot_metrics` through ``pl_module.log_dict``, and saves its whole state in Lightning checkpoints
  (``state_dict``/``load_state_dict`` of the callback), so ``trainer.fit(model, ckpt_path=...)`` resumes it.
  It refuses an LR scheduler that ``configure_optimizers`` returns for the same optimizer.
* :class:`ActiveLRCallback` calls ``end_epoch()`` at the end of every training epoch on each ActiveLR optimizer
  that was built without ``steps_per_epoch`` (with it, the optimizer handles its own boundary). The
  multipliers and the epoch clock live in the optimizer's ``state_dict``, which Lightning checkpoints.

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
from ..telemetry import set_lr
from .logging import lrpilot_metrics

__all__ = ["ActiveLRCallback", "AutoDropCallback"]

_PENDING = "epoch_end_pending"  # state_dict key: the 0-based epoch whose end is still to be done, or None


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
    def _log_to_loggers(trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        """Send a caught-up epoch's metrics to the loggers directly (``pl_module.log_dict`` here would average
        them into the next epoch's values), as Lightning would have at that epoch's end: same step, values
        rounded to the default dtype as ``log_dict`` does."""
        if not metrics or not trainer.loggers:
            return
        # the checkpoint was saved in on_train_batch_end, before Lightning advanced its logging step past that
        # batch; it advances it when the epoch loop restarts, after on_train_start: the restored value is the
        # step of the checkpointed epoch's end-of-epoch metrics
        step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", max(trainer.global_step - 1, 0))
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
