"""Hugging Face ``Trainer`` integration: AutoDrop as a ``TrainerCallback``; Active optimizers via ``optimizers=``.

    args = TrainingArguments(..., lr_scheduler_type="constant")
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[AutoDropCallback()])            # per epoch
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[AutoDropCallback(window_steps=500)])
    trainer = Trainer(model, args, train_dataset=ds, optimizers=(ActiveAdamW(...), None),
                      callbacks=[ActiveLRCallback()])
    trainer = Trainer(model, args, train_dataset=ds, optimizers=(Pilot(model.parameters()), None),
                      callbacks=[PilotCallback()])

* The Trainer owns an LR scheduler of its own; AutoDrop needs it to be ``"constant"`` (checked when training
  begins: ``lr_scheduler_type``, and a scheduler passed in ``optimizers=`` must not change the LR; a warmup is
  refused too, it would scale the dropped LR). After each drop the callback moves that scheduler's ``base_lrs``
  (and its last LR, which the Trainer logs as ``learning_rate``) to the dropped LRs, so the Trainer's per-step
  ``lr_scheduler.step()`` keeps the drop.
* An "epoch" for AutoDrop is a Trainer epoch, measured at the epoch's last optimizer step (before the Trainer
  saves a checkpoint at that step), or, with ``window_steps``, every ``window_steps`` optimizer steps
  (``state.global_step``, so gradient accumulation counts once per optimizer step).
* Checkpoints: the callback's state travels inside the Trainer's own ``optimizer.pt`` (an entry of the first
  param group of ``optimizer.state_dict()``), so whatever checkpoint ``trainer.train(resume_from_checkpoint=...)``
  loads -- ``True``, a path inside ``output_dir`` or a directory anywhere else -- the matching AutoDrop state comes
  with it. Resuming a run whose checkpoint holds no AutoDrop state warns.
* Logging: lrpilot's numbers (:func:`~lrpilot.integrations.logging.lrpilot_metrics`) go through ``Trainer.log``,
  so ``state.log_history`` and every ``report_to`` integration (TensorBoard, W&B, MLflow, ...) receive them,
  whatever the callbacks' order (callbacks are not given the Trainer: it is found on the call stack, once per
  ``train()``).
* ActiveLR: pass ``optimizers=(ActiveAdamW(...), None)`` with ``lr_scheduler_type="constant"`` and add
  :class:`ActiveLRCallback`, which ends each ActiveLR epoch with the Trainer's epoch (when the optimizer has no
  ``steps_per_epoch``) and logs the effective LR: the Trainer's own ``learning_rate`` is the base LR only.
* Pilot: pass ``optimizers=(Pilot(model.parameters()), None)`` with ``lr_scheduler_type="constant"`` and add
  :class:`PilotCallback`, which logs the LR Pilot applies and its measurements at the Trainer's logging steps,
  each of Pilot's decisions once at the step it was taken, and makes the Trainer's ``learning_rate`` the LR
  Pilot applied (the group ``lr`` is Pilot's multiplier, 1.0).
"""

from __future__ import annotations

import math
import sys
import warnings
from types import FrameType
from typing import Any

import torch

try:
    from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("lrpilot.integrations.huggingface needs 'transformers': pip install transformers") from err

from .._validation import check_number
from ..autodrop import AutoDrop
from ..pilot import Pilot
from ..telemetry import lr_value
from .logging import event_rows as _event_rows
from .logging import lrpilot_metrics

__all__ = ["STATE_KEY", "ActiveLRCallback", "AutoDropCallback", "PilotCallback"]

#: Key of the callback's state in the first param group of the Trainer's ``optimizer.state_dict()``.
STATE_KEY = "lrpilot_autodrop"
_FORMAT = 1


def _unwrap(optimizer: Any) -> Any:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` (a wrapper that skips torch's Optimizer
    ``__init__``: no step or state-dict hooks of its own; same ``param_groups``)."""
    while not hasattr(optimizer, "_optimizer_step_post_hooks") and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def _scheduler_kind(args: TrainingArguments) -> str:
    return str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))


def _is_constant(lr_scheduler: Any) -> bool:
    """False for a torch LR scheduler that would change the LR: anything but a ``LambdaLR`` whose factors are 1
    (the Trainer's ``"constant"``); schedulers torch does not know (DeepSpeed's, ...) are not judged."""
    if isinstance(lr_scheduler, torch.optim.lr_scheduler.LambdaLR):
        try:
            return all(f(step) == 1.0 for f in lr_scheduler.lr_lambdas for step in (0, 1, 10, 1000, 10**6))
        except Exception:  # a factor that cannot be probed is not known to be constant
            return False
    return not isinstance(lr_scheduler, (torch.optim.lr_scheduler.LRScheduler,
                                         torch.optim.lr_scheduler.ReduceLROnPlateau))


def _find_trainer(callback: TrainerCallback) -> Trainer | None:
    """The Trainer whose callback handler is calling ``callback`` (found on the call stack: callbacks are not
    given the Trainer). None when the callback is driven by something else."""
    frame: FrameType | None = sys._getframe(1)
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, Trainer) and any(cb is callback for cb in owner.callback_handler.callbacks):
                return owner
            frame = frame.f_back
    finally:
        del frame
    return None


def _updates_per_epoch(train_dataloader: Any, args: TrainingArguments) -> int | None:
    """Optimizer steps per Trainer epoch, by the Trainer's own formula (None for a loader without a length)."""
    try:
        batches = len(train_dataloader)
    except TypeError:
        return None
    accumulation = args.gradient_accumulation_steps
    return max(batches // accumulation + int(batches % accumulation > 0), 1)


class _LrpilotCallback(TrainerCallback):
    """What both callbacks share: the Trainer (for ``Trainer.log``) and the Trainer-epoch clock."""

    _trainer: Trainer | None = None
    _epochs_closed = 0
    _warned_no_trainer = False

    def _begin(self, state: TrainerState) -> None:
        self._trainer = _find_trainer(self)
        # An epoch is closed at its last optimizer step, before the Trainer saves a checkpoint there, so a
        # checkpoint's (and a resumed run's) closed-epoch count is the integer part of its epoch.
        self._epochs_closed = math.floor(state.epoch or 0)

    def _closes_epoch(self, state: TrainerState) -> bool:
        """True (once) at the last optimizer step of a Trainer epoch (``state.epoch`` reaches a whole number); the
        epoch then counts as closed."""
        closes = (state.epoch is not None and float(state.epoch).is_integer()
                  and int(state.epoch) > self._epochs_closed)
        if closes:
            self._epochs_closed = int(state.epoch)
        return closes

    def _unclosed_epoch_end(self, state: TrainerState, control: TrainerControl) -> bool:
        """At ``on_epoch_end``: an epoch that ended without reaching a whole ``state.epoch`` (a loader of unknown
        length), which then counts as closed. A partial epoch cut by ``max_steps`` or a stop is not closed: the
        run may be resumed from there."""
        unclosed = (state.epoch is not None and state.epoch > self._epochs_closed and not control.should_training_stop
                    and not (state.max_steps and state.global_step >= state.max_steps))
        if unclosed:
            self._epochs_closed = math.ceil(state.epoch)
        return bool(unclosed)

    def _log(self, state: TrainerState, metrics: dict[str, float]) -> None:
        trainer = self._trainer
        if trainer is not None:
            # log_history and every report_to integration (on_log). The handler's on_log clears
            # control.should_log: keep the Trainer's own pending log of this step (loss, learning_rate).
            pending = trainer.control.should_log
            trainer.log(dict(metrics))
            trainer.control.should_log = pending
            return
        if not self._warned_no_trainer:
            self._warned_no_trainer = True
            warnings.warn(f"{type(self).__name__}: no transformers.Trainer found calling this callback; lrpilot's "
                          "metrics go to state.log_history only, no report_to integration receives them",
                          UserWarning, stacklevel=3)
        state.log_history.append({**metrics, "step": state.global_step})


class AutoDropCallback(_LrpilotCallback):
    """Run :class:`lrpilot.AutoDrop` inside ``transformers.Trainer``.

    Args:
        mode: AutoDrop's mode. window_steps: measure every this many optimizer steps instead of every epoch.
        log: send :func:`lrpilot_metrics` (LR, omega, drops, threshold) through ``Trainer.log`` at every
            measurement.
        **options: AutoDrop options (validated here, before training).
    """

    def __init__(self, mode: str = "trend", *, window_steps: int | None = None, log: bool = True,
                 **options: Any) -> None:
        if window_steps is not None:
            check_number("window_steps", window_steps, low=1, integer=True)
        if not isinstance(log, bool):
            raise TypeError(f"log must be a bool, got {log!r}")
        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        AutoDrop(probe, mode, **options).remove_hook()  # fails now on a bad mode or option
        self.mode, self.options, self.window_steps, self.log = mode, options, window_steps, log
        self.scheduler: AutoDrop | None = None
        self._lr_scheduler: Any = None
        self._state: TrainerState | None = None
        self._save_hook: Any = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       optimizer: torch.optim.Optimizer | None = None, lr_scheduler: Any = None,
                       **kwargs: Any) -> None:
        if optimizer is None:
            raise ValueError("AutoDropCallback: the Trainer passed no optimizer to on_train_begin")
        kind = _scheduler_kind(args)
        if kind != "constant":
            raise ValueError(
                f"AutoDropCallback needs TrainingArguments(lr_scheduler_type='constant'), got {kind!r}: AutoDrop is "
                "the whole schedule, and the Trainer's schedule would scale or undo its drops (a warmup included: "
                "'constant_with_warmup' multiplies the dropped LR by the warmup factor). Pass "
                "lr_scheduler_type='constant'")
        if not _is_constant(lr_scheduler):
            raise ValueError(
                f"AutoDropCallback: the Trainer's LR scheduler is a {type(lr_scheduler).__name__} that changes the LR "
                "(one passed in Trainer(optimizers=(optimizer, scheduler))?): it would scale or undo AutoDrop's "
                "drops. Pass optimizers=(optimizer, None) and lr_scheduler_type='constant'")
        self._teardown()
        self._begin(state)
        inner = _unwrap(optimizer)
        saved = None
        for group in inner.param_groups:  # put there by the Trainer loading optimizer.pt (see _save_state)
            entry = group.pop(STATE_KEY, None)
            saved = entry if saved is None else saved
        self.scheduler = AutoDrop(inner, self.mode, **self.options)
        self._lr_scheduler, self._state = lr_scheduler, state
        self._save_hook = inner.register_state_dict_post_hook(self._save_state)
        if saved is not None and saved.get("global_step") != state.global_step:
            warnings.warn(
                f"AutoDropCallback: the checkpoint of step {state.global_step} carries AutoDrop state of step "
                f"{saved.get('global_step')} (a run without AutoDropCallback resumed from an AutoDrop checkpoint and "
                "saved this one): that stale state is ignored, AutoDrop starts afresh from the checkpoint's LR",
                UserWarning, stacklevel=2)
        elif saved is not None:
            self.scheduler.load_state_dict(saved["autodrop"])
            self._sync_trainer_scheduler()
        elif state.global_step > 0:
            warnings.warn(
                f"AutoDropCallback: training resumes at step {state.global_step} from a checkpoint that holds no "
                "AutoDrop state (saved without AutoDropCallback, or without the optimizer: save_only_model=True). "
                "AutoDrop starts afresh from the checkpoint's LR: its past angles and drops are lost, and its first "
                "angle comes three epochs (or windows) from now", UserWarning, stacklevel=2)

    def _save_state(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        """``optimizer.state_dict()`` post-hook: the Trainer's ``optimizer.pt`` carries AutoDrop's state, so the
        checkpoint the Trainer resumes from (wherever it is) restores the matching AutoDrop state."""
        if self.scheduler is not None and state_dict.get("param_groups"):
            step = self._state.global_step if self._state is not None else None
            state_dict["param_groups"][0][STATE_KEY] = {"format": _FORMAT, "global_step": step,
                                                        "autodrop": self.scheduler.state_dict()}
        return state_dict

    def _measure(self, state: TrainerState) -> None:
        assert self.scheduler is not None
        drops = len(self.scheduler.drops)
        self.scheduler.step()
        if len(self.scheduler.drops) != drops:
            self._sync_trainer_scheduler()
        if self.log:
            self._log(state, lrpilot_metrics(self.scheduler.optimizer, self.scheduler))

    def _sync_trainer_scheduler(self) -> None:
        sched, opt = self._lr_scheduler, self.scheduler.optimizer if self.scheduler else None
        if sched is not None and opt is not None and hasattr(sched, "base_lrs"):
            lrs = [lr_value(g["lr"]) for g in opt.param_groups]
            sched.base_lrs = list(lrs)
            if hasattr(sched, "_last_lr"):  # what the Trainer logs as learning_rate
                sched._last_lr = list(lrs)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.scheduler is None:
            return
        if self.window_steps is not None:
            if state.global_step % self.window_steps == 0:
                self._measure(state)
        elif self._closes_epoch(state):
            self._measure(state)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self.scheduler is not None and self.window_steps is None and self._unclosed_epoch_end(state, control):
            self._measure(state)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self._teardown()

    def _teardown(self) -> None:
        if self.scheduler is not None:
            self.scheduler.remove_hook()
        if self._save_hook is not None:
            self._save_hook.remove()
            self._save_hook = None
        self._trainer = None


class ActiveLRCallback(_LrpilotCallback):
    """Run an lrpilot Active optimizer (``optimizers=(ActiveAdamW(...), None)``) inside ``transformers.Trainer``.

    * An optimizer built without ``steps_per_epoch`` gets ``end_epoch()`` at the last optimizer step of every
      Trainer epoch (before a checkpoint saved at that step). One built with ``steps_per_epoch`` that differs
      from the Trainer's optimizer steps per epoch (e.g. batches, not batches / ``gradient_accumulation_steps``)
      warns when training begins.
    * ``log``: at every ActiveLR epoch boundary (where the multipliers change) the effective LR
      (``lr/group{i}`` = lr x mean multiplier, ``lr_min/group{i}``, ``lr_max/group{i}``) goes through
      ``Trainer.log`` to ``state.log_history`` and every ``report_to`` integration. The Trainer's own
      ``learning_rate`` is the base LR, not the LR applied.
    """

    def __init__(self, *, log: bool = True) -> None:
        if not isinstance(log, bool):
            raise TypeError(f"log must be a bool, got {log!r}")
        self.log = log
        self.optimizer: Any = None
        self._epoch_seen = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       optimizer: torch.optim.Optimizer | None = None, train_dataloader: Any = None,
                       **kwargs: Any) -> None:
        inner = _unwrap(optimizer)
        if not (callable(getattr(inner, "effective_lr", None)) and hasattr(inner, "end_epoch")):
            raise ValueError(
                f"ActiveLRCallback needs an lrpilot Active optimizer, the Trainer's optimizer is "
                f"{type(inner).__name__}: pass optimizers=(lrpilot.ActiveAdamW(model.parameters(), ...), None)")
        kind = _scheduler_kind(args)
        if kind != "constant":
            warnings.warn(f"ActiveLRCallback: the Trainer's lr_scheduler_type={kind!r} scales the base LR under the "
                          "ActiveLR multipliers; ActiveLR adapts the LR itself: pass lr_scheduler_type='constant'",
                          UserWarning, stacklevel=2)
        per_epoch = _updates_per_epoch(train_dataloader, args) if train_dataloader is not None else None
        spe = getattr(inner, "steps_per_epoch", None)
        if spe is not None and per_epoch is not None and spe != per_epoch:
            warnings.warn(
                f"ActiveLRCallback: {type(inner).__name__}(steps_per_epoch={spe}) but the Trainer makes {per_epoch} "
                f"optimizer steps per epoch (gradient_accumulation_steps={args.gradient_accumulation_steps}): the "
                f"multipliers change every {spe} optimizer steps, not once per Trainer epoch. Pass "
                f"steps_per_epoch={per_epoch}, or leave it out and this callback ends each Trainer epoch",
                UserWarning, stacklevel=2)
        self._begin(state)
        self.optimizer = inner
        self._epoch_seen = inner.epoch

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.optimizer is None:
            return
        if self._closes_epoch(state):
            self._end_trainer_epoch(state)
        self._maybe_log(state)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self.optimizer is not None and self._unclosed_epoch_end(state, control):
            self._end_trainer_epoch(state)
            self._maybe_log(state)

    def _end_trainer_epoch(self, state: TrainerState) -> None:
        if self.optimizer.steps_per_epoch is None:
            self.optimizer.end_epoch()

    def _maybe_log(self, state: TrainerState) -> None:
        if self.optimizer.epoch != self._epoch_seen:
            self._epoch_seen = self.optimizer.epoch
            if self.log:
                self._log(state, lrpilot_metrics(self.optimizer))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self.optimizer, self._trainer = None, None


def _last_lr_holder(lr_scheduler: Any) -> Any:
    """The torch LR scheduler whose ``get_last_lr()`` the Trainer logs (inside accelerate's wrapper), or None."""
    while lr_scheduler is not None and not isinstance(getattr(lr_scheduler, "_last_lr", None), list):
        lr_scheduler = getattr(lr_scheduler, "scheduler", None)
    return lr_scheduler


class PilotCallback(_LrpilotCallback):
    """Report :class:`lrpilot.Pilot`'s LR and decisions to the Trainer's loggers
    (``optimizers=(Pilot(model.parameters()), None)``).

    * At each of the Trainer's logging steps (its ``logging_strategy``, ``logging_steps``,
      ``logging_first_step``), or every ``log_every`` optimizer steps when given, :func:`lrpilot_metrics` of Pilot
      go through ``Trainer.log`` to ``state.log_history`` and every ``report_to`` integration: ``lr/group{i}`` (the
      LR the next step applies: ``d x factor x`` the group's multiplier; ``lr_min``/``lr_max`` the same),
      ``pilot/d``, ``pilot/factor``, ``pilot/drops``, ``pilot/skipped`` and ``pilot/alignment``.
    * Each new :class:`~lrpilot.PilotEvent` (``scale``, ``settled``, ``drop``, ``cooldown``, ``skip``) is logged
      once, as ``pilot/event_<kind>`` = its value, at the optimizer step it was taken, whatever the logging
      steps. Events restored with the optimizer by ``resume_from_checkpoint`` were reported by the run that
      saved the checkpoint and are not reported again; nothing else needs checkpointing (Pilot's own state is in
      the Trainer's ``optimizer.pt``).
    * The Trainer's own ``learning_rate`` log is its scheduler's last LR, Pilot's group multiplier (1.0): before
      each optimizer step whose logs the Trainer may write, the callback sets that scheduler's last LR to the LR
      Pilot applies at the step, so ``learning_rate`` shows it (transformers 5.x, which reads it right after the
      optimizer step; the group ``lr`` Pilot reads is not touched).

    Refuses (``ValueError`` when training begins) a Trainer whose optimizer is not a Pilot; warns when
    ``lr_scheduler_type`` is not ``"constant"`` (Pilot ignores the Trainer's schedule), when Pilot's
    ``total_steps`` is not the Trainer's number of optimizer steps, and when nothing would be logged
    (``logging_strategy="no"`` without ``log_every``).

    Args:
        log_every: log every this many optimizer steps (``state.global_step``: gradient accumulation counts once
            per optimizer step) instead of at the Trainer's logging steps.
    """

    def __init__(self, log_every: int | None = None) -> None:
        if log_every is not None:
            check_number("log_every", log_every, low=1, integer=True)
        self.log_every = log_every
        self.optimizer: Pilot | None = None
        self._lr_scheduler: Any = None
        self._reported = 0  # how many of the optimizer's events have been reported
        self._logged_step: int | None = None  # the global step of the last metrics logged

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       optimizer: torch.optim.Optimizer | None = None, lr_scheduler: Any = None,
                       **kwargs: Any) -> None:
        inner = _unwrap(optimizer)
        if not isinstance(inner, Pilot):
            raise ValueError(
                f"PilotCallback needs lrpilot.Pilot as the Trainer's optimizer, the Trainer's optimizer is "
                f"{type(inner).__name__}: pass optimizers=(lrpilot.Pilot(model.parameters()), None) with "
                "lr_scheduler_type='constant'")
        kind = _scheduler_kind(args)
        if kind != "constant":
            warnings.warn(
                f"PilotCallback: the Trainer's lr_scheduler_type={kind!r} builds a schedule that Pilot ignores: Pilot "
                "decides its LR and schedule itself (it warns once when the schedule changes a group's lr). Pass "
                "lr_scheduler_type='constant'; to give Pilot the budget, Pilot(..., total_steps=max_steps)",
                UserWarning, stacklevel=2)
        elif not _is_constant(lr_scheduler):
            warnings.warn(
                f"PilotCallback: the Trainer's LR scheduler is a {type(lr_scheduler).__name__} that changes the LR "
                "(one passed in Trainer(optimizers=(optimizer, scheduler))?): Pilot ignores it. Pass "
                "optimizers=(pilot, None)", UserWarning, stacklevel=2)
        if inner.total_steps is not None and state.max_steps and inner.total_steps != state.max_steps:
            warnings.warn(
                f"PilotCallback: Pilot(total_steps={inner.total_steps}) but the Trainer makes {state.max_steps} "
                "optimizer steps: Pilot's cooldown is planned for its own budget. Pass "
                f"Pilot(..., total_steps={state.max_steps}), or total_steps=None for the anytime schedule",
                UserWarning, stacklevel=2)
        if self.log_every is None and str(getattr(args.logging_strategy, "value", args.logging_strategy)) == "no":
            warnings.warn("PilotCallback: logging_strategy='no', so only Pilot's events are logged; pass "
                          "logging_strategy='steps' or PilotCallback(log_every=N) for its LR and measurements",
                          UserWarning, stacklevel=2)
        self._begin(state)
        self.optimizer, self._lr_scheduler = inner, lr_scheduler
        # a resumed (or continued) optimizer's events were reported by the run that took them
        self._reported = len(inner.events) if state.global_step > 0 or inner.steps > 0 else 0
        self._logged_step = None

    def _trainer_may_log(self, args: TrainingArguments, state: TrainerState, step: int) -> bool:
        """Whether the Trainer may log its ``learning_rate`` after optimizer step ``step`` (DefaultFlowCallback's
        rule; with ``logging_strategy="epoch"`` any step may end an epoch)."""
        strategy = str(getattr(args.logging_strategy, "value", args.logging_strategy))
        if strategy == "steps":
            every = state.logging_steps or args.logging_steps
            return (bool(every) and step % int(every) == 0) or (step == 1 and bool(args.logging_first_step))
        return strategy != "no"

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                              **kwargs: Any) -> None:
        if self.optimizer is None or not self._trainer_may_log(args, state, state.global_step + 1):
            return
        holder = _last_lr_holder(self._lr_scheduler)
        lrs = [eff.mean for eff in self.optimizer.effective_lr()]  # what this step applies
        if holder is not None and len(holder._last_lr) == len(lrs):
            holder._last_lr = lrs

    def _report(self, state: TrainerState, *, metrics: bool) -> None:
        assert self.optimizer is not None
        rows: list[dict[str, float]] = []
        if metrics and state.global_step != self._logged_step:
            self._logged_step = state.global_step
            rows.append(lrpilot_metrics(self.optimizer))
        events = self.optimizer.events
        if len(events) > self._reported:
            new = _event_rows(events[self._reported:])
            self._reported = len(events)
            if rows:
                rows[0].update(new.pop(0))
            rows.extend(new)
        for row in rows:
            self._log(state, row)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.optimizer is None:
            return
        due = state.global_step % self.log_every == 0 if self.log_every is not None else control.should_log
        self._report(state, metrics=due)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self.optimizer is not None and self.log_every is None and control.should_log:  # logging_strategy="epoch"
            self._report(state, metrics=True)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self.optimizer, self._lr_scheduler, self._trainer = None, None, None
