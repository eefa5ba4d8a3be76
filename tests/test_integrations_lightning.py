"""Specification of the Lightning integration: AutoDrop and ActiveLR inside lightning.Trainer, with resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


# ---------------------------------------------------------------- resume in a new process, every kind of checkpoint

WORKER = Path(__file__).with_name("lightning_resume_worker.py")
# scenario of tests/lightning_resume_worker.py -> first epoch (0-based) whose end-of-epoch metrics the resumed
# run logs: the checkpointed epoch itself when its end was still pending, else the next one
RESUME_SCENARIOS = {"steps_last": 4, "steps_final": 9, "steps_mid": 4, "epochs": 5, "last": 4, "val_last": 4,
                    "val_epoch": 5, "accum_last": 4, "bf16_last": 4}


@pytest.fixture(scope="module")
def lightning_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("lightning_resume")
    for phase in ("full", "resume"):
        subprocess.run([sys.executable, str(WORKER), str(out), phase, ",".join(RESUME_SCENARIOS)],
                       check=True, capture_output=True, timeout=300)
    return out


@pytest.mark.parametrize("scenario", list(RESUME_SCENARIOS))
def test_resume_in_a_new_process_from_any_lightning_checkpoint_is_bitwise_the_uninterrupted_run(
        lightning_runs, scenario):
    """`trainer.fit(model, ckpt_path=...)` in a new process, from every kind of checkpoint Lightning writes
    (every_n_train_steps on an epoch's last batch, at the end of training and mid-epoch; every_n_epochs;
    save_last of a preempted job; after a step-based validation on the last batch and after the end-of-epoch
    validation; with accumulate_grad_batches=2; with precision="bf16-mixed"), ends bitwise where the
    uninterrupted run ends: parameters, AutoDrop's drop epochs, omega history and clock, the ActiveLR
    multipliers and epoch counter; and the loggers receive the same lrpilot metrics at the same steps. A
    checkpoint saved on an epoch's last batch precedes on_train_epoch_end; Lightning resumes it at the next epoch
    without that hook, so each callback completes the pending epoch end once, in on_train_start."""
    from lightning_resume_worker import SCENARIOS

    ref = torch.load(lightning_runs / f"{SCENARIOS[scenario][0]}.ref.pt", weights_only=False)
    res = torch.load(lightning_runs / f"{scenario}.resume.pt", weights_only=False)
    assert ref["drops"], "the scenario must drop after the checkpoint"
    assert all(torch.equal(a, b) for a, b in zip(ref["params"], res["params"], strict=True))
    assert res["drops"] == ref["drops"] and res["omega"] == ref["omega"] and res["lr"] == ref["lr"]
    assert res["autodrop_epoch"] == ref["autodrop_epoch"] == 10
    assert res["active_epoch"] == ref["active_epoch"] == 10
    assert all(torch.equal(a, b) for a, b in zip(ref["multipliers"], res["multipliers"], strict=True))
    assert (res["epoch"], res["step"]) == (ref["epoch"], ref["step"])
    first = RESUME_SCENARIOS[scenario]
    assert res["logged"] == ref["logged"][first:] and res["logged"][0]["epoch"] == str(first)


# ---------------------------------------------------------------- misuse that would silently change the LR

class WithScheduler(Tiny):
    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.1)}


def test_autodrop_callback_refuses_an_lr_scheduler_returned_for_the_same_optimizer():
    """configure_optimizers returning a scheduler for the driven optimizer would compound the two schedules
    (as the Hugging Face callback refuses a non-constant Trainer schedule): ValueError before the first step,
    naming the scheduler and the fixes."""
    model = WithScheduler()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"StepLR.*compound.*without the StepLR.*SequentialLR"):
        trainer(3, [AutoDropCallback()]).fit(model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_two_autodrop_callbacks_on_one_optimizer_are_refused_and_on_two_optimizers_allowed():
    """Two AutoDropCallbacks on the same optimizer would each drop the LR (compounding): Lightning refuses two
    stateful callbacks with one state key. Callbacks on different optimizers have different keys, so both are
    checkpointed; optimizer 0 keeps the plain class-name key of earlier checkpoints."""
    with pytest.raises(RuntimeError, match="more than one stateful callback of type `AutoDropCallback`"):
        trainer(2, [AutoDropCallback(), AutoDropCallback()]).fit(Tiny())
    assert AutoDropCallback().state_key == "AutoDropCallback"
    assert AutoDropCallback(optimizer_index=1).state_key != AutoDropCallback().state_key


def test_fit_called_again_on_the_same_trainer_continues_the_autodrop_schedule():
    """A second `fit` on the same Trainer (more epochs) gets a new optimizer from configure_optimizers, at its
    initial LR; the callback carries AutoDrop's schedule over: the dropped LR, the drops and the epoch clock."""
    cb = AutoDropCallback(**FAST_DROP)
    model = Tiny()
    t = trainer(EPOCHS, [cb])
    t.fit(model)
    drops, lr = list(cb.scheduler.drop_epochs), t.optimizers[0].param_groups[0]["lr"]
    assert drops and lr < 0.2
    t.fit_loop.max_epochs = EPOCHS + 3
    t.fit(model)
    assert cb.scheduler.drop_epochs[:len(drops)] == drops
    assert t.optimizers[0].param_groups[0]["lr"] <= lr
    assert cb.scheduler.last_epoch == t.current_epoch == EPOCHS + 3


def test_the_callback_reused_with_a_new_trainer_starts_a_fresh_schedule():
    """The same callback object in a new Trainer on a new model does not inherit the previous run's drops."""
    cb = AutoDropCallback(**FAST_DROP)
    trainer(EPOCHS, [cb]).fit(Tiny())
    assert cb.scheduler.drops
    t = trainer(2, [cb])
    t.fit(Tiny())
    assert cb.scheduler.drops == [] and t.optimizers[0].param_groups[0]["lr"] == 0.2


class AccumulatingActive(Tiny):
    def __init__(self, steps_per_epoch: int) -> None:
        super().__init__()
        self.steps_per_epoch = steps_per_epoch

    def configure_optimizers(self):
        return ActiveAdamW(self.parameters(), lr=1e-2, weight_decay=0.0, steps_per_epoch=self.steps_per_epoch)


def test_active_lr_callback_warns_when_steps_per_epoch_does_not_match_the_trainer_epochs():
    """steps_per_epoch=len(loader) with accumulate_grad_batches=2 closes an ActiveLR epoch every two training
    epochs (silently half the adaptation rate): ActiveLRCallback warns at the first such epoch, naming the fix;
    the right count (optimizer steps per epoch) passes silently."""
    kwargs = dict(accumulate_grad_batches=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False)
    with pytest.warns(UserWarning, match=r"steps_per_epoch=4.*len\(train_loader\) // accumulate_grad_batches"):
        pl.Trainer(max_epochs=2, callbacks=[ActiveLRCallback()], **kwargs).fit(AccumulatingActive(4))
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="ActiveLRCallback")
        t = pl.Trainer(max_epochs=3, callbacks=[ActiveLRCallback()], **kwargs)
        t.fit(AccumulatingActive(2))
    assert t.optimizers[0].epoch == 3


def test_active_lr_callback_without_an_active_optimizer_warns():
    """ActiveLRCallback on a plain optimizer does nothing; it says so when training starts."""
    with pytest.warns(UserWarning, match="no ActiveLR optimizer.*SGD"):
        trainer(1, [ActiveLRCallback()]).fit(Tiny())


# ---------------------------------------------------------------- what Lightning's loggers and LR monitor see

def test_loggers_and_learning_rate_monitor_see_the_lr_autodrop_applies(tmp_path):
    """Beside a LearningRateMonitor and a CSVLogger: each epoch's row holds the LR after that epoch's decision
    (the drop count goes up in the drop epoch), and the monitor shows the dropped LR from the next epoch on."""
    import csv

    cb = AutoDropCallback(**FAST_DROP)
    t = pl.Trainer(max_epochs=EPOCHS, callbacks=[cb, pl.callbacks.LearningRateMonitor("epoch")], accelerator="cpu",
                   logger=pl.loggers.CSVLogger(tmp_path, name="log", version=0), enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False)
    t.fit(Tiny())
    (drop,) = cb.scheduler.drop_epochs[:1]
    with open(tmp_path / "log" / "version_0" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ours = {int(r["epoch"]): r for r in rows if r["lr/group0"]}
    monitor = [float(r["lr-SGD"]) for r in rows if r["lr-SGD"]]  # logged at every epoch's start
    assert sorted(ours) == list(range(EPOCHS))
    assert float(ours[drop - 1]["autodrop/drops"]) == 1 and float(ours[drop - 2]["autodrop/drops"]) == 0
    assert float(ours[drop - 1]["lr/group0"]) == pytest.approx(0.02)
    assert monitor[:drop] == [pytest.approx(0.2)] * drop and monitor[drop] == pytest.approx(0.02)
