"""Lightning callbacks: AutoDrop on the optimizer ``configure_optimizers`` returned, and the ActiveLR epoch boundary.

    trainer = lightning.Trainer(max_epochs=60, callbacks=[AutoDropCallback(), ActiveLRCallback()])

* :class:`AutoDropCallback` builds :class:`lrpilot.AutoDrop` on ``trainer.optimizers[optimizer_index]`` when
  training starts, steps it at the end of every training epoch, logs :func:`~lrpilot.integrations.logging.
  lrpilot_metrics` through ``pl_module.log_dict``, and saves its whole state in Lightning checkpoints
  (``state_dict``/``load_state_dict`` of the callback), so ``trainer.fit(model, ckpt_path=...)`` resumes it.
* :class:`ActiveLRCallback` calls ``end_epoch()`` at the end of every training epoch on each ActiveLR optimizer
  that was built without ``steps_per_epoch`` (with it, the optimizer handles its own boundary). The
  multipliers and the epoch clock live in the optimizer's ``state_dict``, which Lightning checkpoints.

Both run before ``ModelCheckpoint`` (Lightning always runs checkpoint callbacks last), so an end-of-epoch
checkpoint contains the epoch's decision.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("lrpilot.integrations.lightning needs the 'lightning' package: pip install lightning") from err

from .._validation import check_number
from ..active._base import ActiveOptimizer
from ..autodrop import AutoDrop
from .logging import lrpilot_metrics

__all__ = ["ActiveLRCallback", "AutoDropCallback"]


class AutoDropCallback(Callback):
    """Run :class:`lrpilot.AutoDrop` inside ``lightning.Trainer``; no change to the LightningModule.

    Args:
        mode: AutoDrop's mode (``"trend"`` default, ``"code"``, ``"uai"``).
        optimizer_index: which of ``trainer.optimizers`` to drive.
        log: log the effective LR, omega and the drop count with ``pl_module.log_dict`` every epoch.
        **options: any AutoDrop option (``rho``, ``threshold``, ``min_lr``, ...), validated at construction.

    Do not also return an LR scheduler for the same optimizer from ``configure_optimizers``.
    """

    def __init__(self, mode: str = "trend", *, optimizer_index: int = 0, log: bool = True, **options: Any) -> None:
        check_number("optimizer_index", optimizer_index, low=0, integer=True)
        # validate mode and options now, on a throwaway optimizer, so a typo fails before training starts
        import torch

        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        AutoDrop(probe, mode, **options).remove_hook()
        self.mode = mode
        self.options = options
        self.optimizer_index = optimizer_index
        self.log = log
        self.scheduler: AutoDrop | None = None
        self._pending_state: dict[str, Any] | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.optimizer_index >= len(trainer.optimizers):
            raise ValueError(f"optimizer_index {self.optimizer_index} but the trainer has "
                             f"{len(trainer.optimizers)} optimizer(s)")
        if self.scheduler is not None:
            self.scheduler.remove_hook()
        self.scheduler = AutoDrop(trainer.optimizers[self.optimizer_index], self.mode, **self.options)
        if self._pending_state is not None:
            self.scheduler.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.scheduler is None:
            return
        self.scheduler.step()
        if self.log:
            metrics = lrpilot_metrics(trainer.optimizers[self.optimizer_index], self.scheduler)
            pl_module.log_dict(metrics, on_step=False, on_epoch=True)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.scheduler is not None:
            self.scheduler.remove_hook()

    def state_dict(self) -> dict[str, Any]:
        return {"autodrop": self.scheduler.state_dict()} if self.scheduler is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks before on_train_start builds the scheduler: keep it until then
        self._pending_state = state_dict.get("autodrop")


class ActiveLRCallback(Callback):
    """Close the ActiveLR epoch (``optimizer.end_epoch()``) at the end of every training epoch, for each ActiveLR
    optimizer of the trainer that has no ``steps_per_epoch``; log their effective LRs if ``log``."""

    def __init__(self, *, log: bool = True) -> None:
        self.log = log

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for i, opt in enumerate(trainer.optimizers):
            if isinstance(opt, ActiveOptimizer) and opt.steps_per_epoch is None:
                opt.end_epoch()
            if self.log and isinstance(opt, ActiveOptimizer):
                metrics = {f"opt{i}/{k}": v for k, v in lrpilot_metrics(opt).items()}
                pl_module.log_dict(metrics, on_step=False, on_epoch=True)
