"""Specification of the Lightning integration: AutoDrop and ActiveLR inside lightning.Trainer, with resume."""

from __future__ import annotations

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from lrpilot import ActiveAdamW  # noqa: E402
from lrpilot.integrations.lightning import ActiveLRCallback, AutoDropCallback  # noqa: E402

EPOCHS = 12
FAST_DROP = {"threshold": 10.0, "rise_threshold": -10.0, "window": 6}  # drops within ~8 epochs


class Tiny(pl.LightningModule):
    def __init__(self, active: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))
        self.active = active

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        if self.active:
            return ActiveAdamW(self.parameters(), lr=1e-2, weight_decay=0.0)
        return torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.9)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = torch.utils.data.TensorDataset(torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g))
        return torch.utils.data.DataLoader(data, batch_size=8, shuffle=False)


def trainer(max_epochs, callbacks, tmp_path=None):
    ckpt = [pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_epochs=1)] if tmp_path else []
    return pl.Trainer(max_epochs=max_epochs, callbacks=[*callbacks, *ckpt], accelerator="cpu", logger=False,
                      enable_checkpointing=bool(tmp_path), enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0)


def test_autodrop_callback_drops_and_resumes_from_a_lightning_checkpoint_identically(tmp_path):
    """AutoDrop runs inside the Trainer (drops, logs), and `fit(ckpt_path=...)` from an epoch-6 checkpoint
    ends with the same drops and bitwise the same weights as an uninterrupted 12-epoch run."""
    full_cb = AutoDropCallback(**FAST_DROP)
    full = Tiny()
    full_trainer = trainer(EPOCHS, [full_cb])
    full_trainer.fit(full)
    assert full_cb.scheduler is not None and full_cb.scheduler.drop_epochs
    logged = full_trainer.callback_metrics  # what Lightning's loggers receive through pl_module.log_dict
    assert float(logged["autodrop/drops"]) == len(full_cb.scheduler.drops)
    assert float(logged["lr/group0"]) == pytest.approx(full_cb.scheduler.get_last_lr()[0])
    assert any(e > 6 for e in full_cb.scheduler.drop_epochs)

    first = Tiny()
    trainer(6, [AutoDropCallback(**FAST_DROP)], tmp_path).fit(first)
    resumed_cb = AutoDropCallback(**FAST_DROP)
    resumed = Tiny()
    trainer(EPOCHS, [resumed_cb], tmp_path / "again").fit(resumed, ckpt_path=str(tmp_path / "last.ckpt"))
    assert resumed_cb.scheduler.drop_epochs == full_cb.scheduler.drop_epochs
    assert resumed_cb.scheduler.omega_history == full_cb.scheduler.omega_history
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_active_lr_callback_closes_the_epoch_for_an_optimizer_without_steps_per_epoch():
    model = Tiny(active=True)
    t = trainer(5, [ActiveLRCallback()])
    t.fit(model)
    opt = t.optimizers[0]
    assert opt.epoch == 5
    assert any(not torch.all(opt.state[p]["multiplier"] == 1) for p in model.parameters())
    assert "opt0/lr/group0" in t.callback_metrics


def test_autodrop_callback_rejects_bad_options_before_training():
    with pytest.raises(ValueError, match="rho"):
        AutoDropCallback(rho=2.0)
    with pytest.raises(ValueError, match="optimizer_index"):
        AutoDropCallback(optimizer_index=-1)


class PoisonedAt(Tiny):
    """Its loss becomes NaN from epoch ``epoch`` on (a diverging run)."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.poison_epoch = epoch

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.current_epoch >= self.poison_epoch else loss


def test_a_nan_loss_inside_the_trainer_warns_and_never_collapses_the_lr():
    """Documented behaviour: NaN parameters give a NaN angle; AutoDrop warns and takes no decision on it, so
    the LR stays where it was (no silent drop to the floor); ActiveLR multipliers stay finite."""
    cb = AutoDropCallback(**FAST_DROP)
    with pytest.warns(RuntimeWarning, match="not finite"):
        trainer(EPOCHS, [cb]).fit(PoisonedAt(epoch=2))
    assert cb.scheduler.drops == []
    assert cb.scheduler.get_last_lr() == [0.2]
    active_model = PoisonedAt(epoch=2)
    active_model.active = True
    t = trainer(6, [ActiveLRCallback(log=False)])
    t.fit(active_model)
    opt = t.optimizers[0]
    assert all(torch.isfinite(opt.state[p]["multiplier"]).all() for p in active_model.parameters())
