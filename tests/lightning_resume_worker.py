"""Helper process for tests/test_integrations_lightning.py: Lightning runs that write checkpoints, and their resumes.

    python tests/lightning_resume_worker.py DIR PHASE SCENARIO[,SCENARIO...]

PHASE "full": for each SCENARIO, an uninterrupted run of its training config (DIR/CONFIG.ref.pt), then a run
with the scenario's checkpointing that writes DIR/SCENARIO/*.ckpt (stopped by an exception where the scenario
says so, as a preempted job would be). PHASE "resume": in this new process, ``trainer.fit(ckpt_path=...)`` from
the scenario's checkpoint to the end, writing DIR/SCENARIO.resume.pt. Every run drives one ActiveAdamW (no
``steps_per_epoch``) with both ``AutoDropCallback`` and ``ActiveLRCallback``. One process handles every scenario
so that the test pays Lightning's import twice, not once per scenario.
"""

from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lrpilot import ActiveAdamW
from lrpilot.integrations.lightning import ActiveLRCallback, AutoDropCallback

EPOCHS = 10
BATCHES = 4  # per epoch
FAST_DROP = {"threshold": 10.0, "rise_threshold": -10.0, "window": 6}

CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "accum": {"accumulate_grad_batches": 2},  # 2 optimizer steps per epoch
    "bf16": {"precision": "bf16-mixed"},
}

# name: (training config, ModelCheckpoint kwargs, extra Trainer kwargs, checkpoint to resume from, stop at epoch)
SCENARIOS: dict[str, tuple[str, dict[str, Any], dict[str, Any], str, int | None]] = {
    # on the last batch of epoch 5 (index 4), saved before on_train_epoch_end: the reported case
    "steps_last": ("plain", {"every_n_train_steps": 20}, {}, "epoch=4-step=20.ckpt", None),
    # the same at the end of training: the resumed fit has no epoch left to run
    "steps_final": ("plain", {"every_n_train_steps": 40}, {}, "epoch=9-step=40.ckpt", None),
    # in the middle of epoch 5 (2 of its 4 batches done)
    "steps_mid": ("plain", {"every_n_train_steps": 18}, {}, "epoch=4-step=18.ckpt", None),
    # at the end of every epoch (on_train_epoch_end, after our callbacks)
    "epochs": ("plain", {"every_n_epochs": 1}, {}, "epoch=4-step=20.ckpt", None),
    # save_last of a job preempted at the start of epoch 6
    "last": ("plain", {"every_n_train_steps": 20, "save_last": True, "save_top_k": 0}, {}, "last.ckpt", 5),
    # after a step-based validation that falls on the last batch of epoch 5
    "val_last": ("plain", {"monitor": "val_loss"}, {"val_check_interval": 20, "check_val_every_n_epoch": None},
                 "epoch=4-step=20.ckpt", None),
    # after the usual end-of-epoch validation
    "val_epoch": ("plain", {"monitor": "val_loss"}, {}, "epoch=4-step=20.ckpt", None),
    "accum_last": ("accum", {"every_n_train_steps": 10}, {}, "epoch=4-step=10.ckpt", None),
    "bf16_last": ("bf16", {"every_n_train_steps": 20}, {}, "epoch=4-step=20.ckpt", None),
}


def data() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    dataset = torch.utils.data.TensorDataset(torch.randn(8 * BATCHES, 6, generator=g),
                                             torch.randint(0, 3, (8 * BATCHES,), generator=g))
    return torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False)


class Resumable:
    """The batches of :func:`data`, resumable in the middle of an epoch: Lightning saves and restores it with
    ``state_dict``/``load_state_dict``. (A plain DataLoader restarts a resumed epoch at its first batch, so a
    mid-epoch resume cannot match an uninterrupted run whatever the callbacks do.)"""

    def __init__(self) -> None:
        self.batches = list(data())
        self._skip = self._served = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        start, self._skip = self._skip, 0
        self._served = start
        for batch in self.batches[start:]:
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        # a sized iterable is not pre-fetched: every batch served is in training or done
        return {"position": self._served % len(self.batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = state["position"]


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return ActiveAdamW(self.parameters(), lr=1e-2, weight_decay=0.0)


class StopAt(pl.Callback):
    """Raise at the start of epoch ``epoch`` (0-based): a job killed there."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise InterruptedError("preempted")


def logged(log_dir: Path) -> list[dict[str, str]]:
    """lrpilot's metrics that reached the CSVLogger, as written, merged per (epoch, step) row."""
    path = log_dir / "log" / "version_0" / "metrics.csv"
    if not path.exists():  # nothing was logged
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    merged: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        ours = {k: v for k, v in row.items() if v and k.startswith(("lr", "autodrop/", "opt0/"))}
        if ours:
            merged.setdefault((row["epoch"], row["step"]), {"epoch": row["epoch"], "step": row["step"]}).update(ours)
    return list(merged.values())


def fit(config: str, callbacks: list[pl.Callback], log_dir: Path, ckpt_path: str | None = None,
        validate: bool = False, **trainer_kwargs: Any) -> dict[str, Any]:
    autodrop, active = AutoDropCallback(**FAST_DROP), ActiveLRCallback()
    model = Tiny()
    logger = pl.loggers.CSVLogger(log_dir, name="log", version=0)
    trainer = pl.Trainer(max_epochs=EPOCHS, callbacks=[autodrop, active, *callbacks], accelerator="cpu",
                         logger=logger, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, enable_checkpointing=any(
                             isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
                         **CONFIGS[config], **trainer_kwargs)
    try:
        trainer.fit(model, train_dataloaders=Resumable(), val_dataloaders=data() if validate else None,
                    ckpt_path=ckpt_path)
    except InterruptedError:
        return {}
    opt = trainer.optimizers[0]
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "drops": autodrop.scheduler.drop_epochs,
        "omega": autodrop.scheduler.omega_history,
        "lr": [g["lr"] for g in opt.param_groups],
        "multipliers": [opt.state[p]["multiplier"].clone() for p in model.parameters()],
        "active_epoch": opt.epoch,
        "autodrop_epoch": autodrop.scheduler.last_epoch,
        "epoch": trainer.current_epoch,
        "step": trainer.global_step,
        "logged": logged(log_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("phase", choices=["full", "resume"])
    parser.add_argument("scenarios")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    done: set[str] = set()
    for name in args.scenarios.split(","):
        config, ckpt_kwargs, trainer_kwargs, resume_from, stop_at = SCENARIOS[name]
        directory = args.out / name
        if args.phase == "full":
            if config not in done:
                torch.save(fit(config, [], args.out / f"{config}.ref"), args.out / f"{config}.ref.pt")
                done.add(config)
            checkpoint = pl.callbacks.ModelCheckpoint(dirpath=directory, filename="{epoch}-{step}",
                                                      **{"save_top_k": -1, **ckpt_kwargs})
            stop = [StopAt(stop_at)] if stop_at is not None else []
            fit(config, [checkpoint, *stop], directory, validate="monitor" in ckpt_kwargs, **trainer_kwargs)
        else:
            checkpoint = pl.callbacks.ModelCheckpoint(dirpath=directory / "again", **ckpt_kwargs)
            result = fit(config, [checkpoint], directory / "again", ckpt_path=str(directory / resume_from),
                         validate="monitor" in ckpt_kwargs, **trainer_kwargs)
            torch.save(result, args.out / f"{name}.resume.pt")


if __name__ == "__main__":
    main()
