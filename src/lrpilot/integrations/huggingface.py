"""Hugging Face ``Trainer`` integration: AutoDrop as a ``TrainerCallback``; Active optimizers via ``optimizers=``.

    args = TrainingArguments(..., lr_scheduler_type="constant")
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[AutoDropCallback()])            # per epoch
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[AutoDropCallback(window_steps=500)])

* The Trainer owns an LR scheduler of its own; AutoDrop needs it to be ``"constant"`` (checked when training
  begins). After each drop the callback moves that scheduler's ``base_lrs`` to the dropped LRs, so the
  Trainer's per-step ``lr_scheduler.step()`` keeps the drop instead of restoring the old LR.
* An "epoch" for AutoDrop is a Trainer epoch, or, for step-based training (``max_steps``), every
  ``window_steps`` optimizer steps: the user decides what window one angular-velocity measurement covers.
* Checkpoints: on every save the callback writes its state to ``<checkpoint dir>/lrpilot_autodrop.pt``;
  ``trainer.train(resume_from_checkpoint=...)`` reloads it (found from the restored global step).
* ActiveLR: build the optimizer yourself with ``steps_per_epoch`` (optimizer steps per epoch, after gradient
  accumulation) and pass ``optimizers=(ActiveAdamW(...), None)`` with ``lr_scheduler_type="constant"``; the
  Trainer never calls ``end_epoch()``, ``steps_per_epoch`` makes that unnecessary.
"""

from __future__ import annotations

import os
from typing import Any

import torch

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("lrpilot.integrations.huggingface needs 'transformers': pip install transformers") from err

from .._validation import check_number
from ..autodrop import AutoDrop
from .logging import lrpilot_metrics

__all__ = ["STATE_FILE", "AutoDropCallback"]

#: File name of the callback's state inside each Trainer checkpoint directory.
STATE_FILE = "lrpilot_autodrop.pt"


class AutoDropCallback(TrainerCallback):
    """Run :class:`lrpilot.AutoDrop` inside ``transformers.Trainer``.

    Args:
        mode: AutoDrop's mode. window_steps: measure every this many optimizer steps instead of every epoch.
        **options: AutoDrop options (validated here, before training).
    """

    def __init__(self, mode: str = "trend", *, window_steps: int | None = None, **options: Any) -> None:
        if window_steps is not None:
            check_number("window_steps", window_steps, low=1, integer=True)
        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        AutoDrop(probe, mode, **options).remove_hook()  # fails now on a bad mode or option
        self.mode, self.options, self.window_steps = mode, options, window_steps
        self.scheduler: AutoDrop | None = None
        self._lr_scheduler: Any = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       optimizer: torch.optim.Optimizer | None = None, lr_scheduler: Any = None,
                       **kwargs: Any) -> None:
        if optimizer is None:
            raise ValueError("AutoDropCallback: the Trainer passed no optimizer to on_train_begin")
        kind = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
        if kind != "constant":
            raise ValueError(f"AutoDropCallback needs TrainingArguments(lr_scheduler_type='constant'), got {kind!r}: "
                             "the Trainer's own schedule would fight AutoDrop's drops")
        if self.scheduler is not None:
            self.scheduler.remove_hook()
        # The Trainer hands over accelerate's AcceleratedOptimizer, a wrapper that skips torch's Optimizer
        # __init__ (no step hooks); AutoDrop goes on the optimizer inside it (same param_groups).
        while not hasattr(optimizer, "_optimizer_step_post_hooks") and hasattr(optimizer, "optimizer"):
            optimizer = optimizer.optimizer
        self.scheduler = AutoDrop(optimizer, self.mode, **self.options)
        self._lr_scheduler = lr_scheduler
        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_FILE)
        if state.global_step > 0 and os.path.exists(path):  # resumed from that checkpoint
            self.scheduler.load_state_dict(torch.load(path, weights_only=False))
            self._sync_trainer_scheduler()

    def _measure(self, state: TrainerState) -> None:
        assert self.scheduler is not None
        drops = len(self.scheduler.drops)
        self.scheduler.step()
        if len(self.scheduler.drops) != drops:
            self._sync_trainer_scheduler()
        state.log_history.append({"step": state.global_step,
                                  **lrpilot_metrics(self.scheduler.optimizer, self.scheduler)})

    def _sync_trainer_scheduler(self) -> None:
        sched, opt = self._lr_scheduler, self.scheduler.optimizer if self.scheduler else None
        if sched is not None and opt is not None and hasattr(sched, "base_lrs"):
            sched.base_lrs = [float(g["lr"]) for g in opt.param_groups]

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self.scheduler is not None and self.window_steps is None:
            self._measure(state)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.scheduler is not None and self.window_steps is not None and state.global_step % self.window_steps == 0:
            self._measure(state)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.scheduler is not None:
            directory = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            os.makedirs(directory, exist_ok=True)
            torch.save(self.scheduler.state_dict(), os.path.join(directory, STATE_FILE))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self.scheduler is not None:
            self.scheduler.remove_hook()
