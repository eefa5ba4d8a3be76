"""Specification: Pilot inside the Hugging Face Trainer and inside Lightning, with no callback and no scheduler of its
own -- it trains, ignores the schedule the framework builds, and resumes from the framework's checkpoints exactly;
and with each framework's ``PilotCallback`` -- the framework's loggers receive the LR Pilot applies, its
measurements and each of its decisions once, resume included.

Hugging Face: the tiny BERT of tests/hf_helpers.py (built from a config, no download), 16 examples, batches of 8.
Lightning: a 6-12-3 MLP on 32 examples, batches of 8.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from lrpilot import Pilot

MULTIPLIER_WARNING = "Pilot: a param group's 'lr' changed"
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this file runs on one torch thread (tests/conftest.py)."""


def pilot_warnings(record) -> list[str]:
    return [str(w.message) for w in record if MULTIPLIER_WARNING in str(w.message)]


def outcome(model: torch.nn.Module, opt: Pilot) -> dict:
    return {"params": [p.detach().clone() for p in model.parameters()], "d": opt.d, "factor": opt.factor,
            "events": [(e.step, e.kind, e.value) for e in opt.events], "steps": opt.steps}


def assert_same(a: dict, b: dict) -> None:
    assert (a["d"], a["factor"], a["events"], a["steps"]) == (b["d"], b["factor"], b["events"], b["steps"])
    assert all(torch.equal(x, y) for x, y in zip(a["params"], b["params"], strict=True)), "parameters differ"


# ----------------------------------------------------------------------------------------------- Hugging Face
@pytest.fixture(scope="module")
def hf():
    pytest.importorskip("transformers")
    import hf_helpers

    return hf_helpers


def hf_fit(hf, output_dir, callbacks=(), resume=None, **kw):
    """A fresh tiny model and ``Pilot(model.parameters())`` passed as ``optimizers=(pilot, None)``."""
    model = hf.tiny_model()
    opt = Pilot(model.parameters())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer = hf.fit(output_dir, list(callbacks), resume=resume, model=model, optimizers=(opt, None), **kw)
    assert getattr(trainer.optimizer, "optimizer", trainer.optimizer) is opt  # (accelerate may wrap it)
    return trainer, opt, outcome(trainer.model, opt), pilot_warnings(record)


def test_hf_trainer_a_non_finite_step_counts_in_pilots_budget_so_its_cooldown_ends_with_the_trainers_steps(
        hf, tmp_path):
    """Pilot(total_steps=20) in a Trainer of 20 optimizer steps (fp16=True, which on a CPU autocasts without a
    scaler), an inf written into a gradient before the 6th optimizer step: Pilot skips that step and counts it, so
    after the Trainer's 20 steps Pilot has taken 19 and skipped 1 and its factor is 0, as in the run without the
    inf (before skips counted, the factor ended at 1/4, one of the 4 cooldown steps short)."""
    import transformers

    class Overflow(transformers.TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step == 5:
                next(model.parameters()).grad.view(-1)[0] = float("inf")

    model = hf.tiny_model()
    opt = Pilot(model.parameters(), total_steps=20)
    trainer = hf.fit(tmp_path, [Overflow()], model=model, optimizers=(opt, None), fp16=True, num_train_epochs=10)
    assert trainer.state.global_step == 20 and (opt.steps, opt.skipped) == (19, 1) and opt.factor == 0.0
    assert [e.step for e in opt.events if e.kind == "skip"] == [5]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_hf_trainer_with_pilot_ignores_the_linear_schedule_it_builds_and_warns_once(hf, tmp_path):
    """optimizers=(Pilot(model.parameters()), None) with the Trainer's default lr_scheduler_type='linear': the
    Trainer builds a LambdaLR that decays group['lr'] to 0; Pilot warns once and trains exactly (bitwise) like the
    same run with lr_scheduler_type='constant' (no warning there); the loss falls."""
    trainer, opt, linear, linear_warnings = hf_fit(hf, tmp_path / "linear", lr_scheduler_type="linear", max_steps=12,
                                                   logging_strategy="steps", logging_steps=1)
    _, _, constant, constant_warnings = hf_fit(hf, tmp_path / "constant", lr_scheduler_type="constant", max_steps=12)
    assert len(linear_warnings) == 1 and constant_warnings == []
    assert trainer.lr_scheduler.get_last_lr()[0] < 0.5  # the Trainer's schedule did decay the group lr ...
    assert_same(linear, constant)  # ... and Pilot ignored it
    assert opt.steps == 12 and opt.d > 1e-6 * 100
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert min(losses[-3:]) < losses[0]


def test_hf_resume_from_a_mid_run_checkpoint_ends_like_the_uninterrupted_run(hf, tmp_path):
    """Interrupted after step 41 (checkpoint-41: in the middle of a Trainer epoch of 2 steps and of Pilot's
    measurement window 40..42), a new Trainer with a new model and a new Pilot resumes with resume_from_checkpoint:
    bitwise the parameters, d, factor and events of the uninterrupted 48-step run (the Trainer's default linear
    schedule in both)."""
    kw = {"lr_scheduler_type": "linear", "max_steps": 48}
    _, _, full, _ = hf_fit(hf, tmp_path / "full", **kw)
    hf_fit(hf, tmp_path / "part", [hf.StopAt(41)], save_strategy="steps", save_steps=41, **kw)
    _, opt, resumed, _ = hf_fit(hf, tmp_path / "resumed", resume=str(tmp_path / "part" / "checkpoint-41"), **kw)
    assert opt.steps == 48
    assert_same(resumed, full)


# ----------------------------------------------------------------------------------------------- Lightning
@pytest.fixture(scope="module")
def pl():
    return pytest.importorskip("lightning.pytorch")


def lightning_module(pl, **pilot_options):
    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))
            self.losses: list[float] = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.losses.append(loss.item())
            self.log("loss", loss)  # Lightning's own step metrics, to compare the callback's steps with
            return loss

        def configure_optimizers(self):
            return Pilot(self.parameters(), **pilot_options)

        def train_dataloader(self):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(32, 6, generator=g)
            data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())
            return torch.utils.data.DataLoader(data, batch_size=8, shuffle=False)

    return Tiny()


def lightning_fit(pl, max_epochs, checkpoint_dir=None, ckpt_path=None):
    callbacks = [pl.callbacks.ModelCheckpoint(dirpath=checkpoint_dir, save_last=True, every_n_epochs=1)] \
        if checkpoint_dir else []
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, accelerator="cpu", logger=False,
                         enable_checkpointing=bool(checkpoint_dir), enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    module = lightning_module(pl)
    trainer.fit(module, ckpt_path=ckpt_path)
    opt = trainer.optimizers[0]
    assert isinstance(opt, Pilot)
    return module, opt


def amp_fit(pl, unscale_in_step: bool, clip: float | None = None, callbacks=(), overflow_at: int | None = 5):
    """Lightning's ``16-mixed`` with a GradScaler on CPU (the plugin given explicitly: ``precision="16-mixed"``
    alone becomes ``bf16-mixed``, without a scaler, on a CPU): 4 epochs of 4 steps with a budget of 16, an inf
    written into one scaled gradient after the backward pass of ``overflow_at`` (an overflow)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    module = lightning_module(pl, total_steps=16, unscale_in_step=unscale_in_step)

    def on_after_backward():
        if module.trainer.global_step == overflow_at:
            module.net[0].weight.grad[0, 0] = float("inf")

    module.on_after_backward = on_after_backward
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         plugins=[MixedPrecision("16-mixed", "cpu", scaler)], gradient_clip_val=clip,
                         callbacks=list(callbacks))
    trainer.fit(module)
    return trainer, trainer.optimizers[0], scaler


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lightning_16_mixed_an_overflowing_step_counts_in_pilots_budget(pl):
    """Under Lightning's ``16-mixed`` (GradScaler) Pilot unscales in its step, so the overflowing step reaches it:
    skipped and counted (a 'skip' event naming the scaler), the scale halved, and the cooldown ends at factor 0
    on the 16th of the trainer's 16 optimizer steps. With ``unscale_in_step=False`` the scaler skips the call and
    the budget misses it: the factor ends at 1/3 (one of the 3 cooldown steps short)."""
    trainer, opt, scaler = amp_fit(pl, unscale_in_step=True)
    assert trainer.global_step == 16 and (opt.steps, opt.skipped) == (15, 1) and opt.factor == 0.0
    skips = [e for e in opt.events if e.kind == "skip"]
    assert len(skips) == 1 and skips[0].step == 5 and "GradScaler" in skips[0].why
    assert scaler.get_scale() == 2.0 ** 11
    trainer, opt, _ = amp_fit(pl, unscale_in_step=False)
    assert trainer.global_step == 16 and (opt.steps, opt.skipped) == (15, 0)
    assert opt.factor == pytest.approx(1 / 3)


def test_lightning_16_mixed_gradient_clipping_with_pilot_callback_switches_pilot_to_the_scalers_unscaling(pl):
    """Lightning refuses ``gradient_clip_val`` under ``16-mixed`` for an optimizer that unscales in its step (its
    RuntimeError); PilotCallback, at train start, switches each Pilot to the scaler's unscaling with a warning that
    names the consequence, and the run trains and clips as with any optimizer; with ``unscale_in_step=False``
    from the start, no warning."""
    from lrpilot.integrations.lightning import PilotCallback

    with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
        amp_fit(pl, unscale_in_step=True, clip=1.0, overflow_at=None)
    with pytest.warns(UserWarning, match=r"unscale_in_step=False.*do not count in Pilot's budget"):
        trainer, opt, _ = amp_fit(pl, unscale_in_step=True, clip=1.0, callbacks=[PilotCallback()], overflow_at=None)
    assert not opt.unscale_in_step and opt.steps == trainer.global_step == 16 and opt.factor == 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        amp_fit(pl, unscale_in_step=False, clip=1.0, callbacks=[PilotCallback()], overflow_at=None)
    assert not [w for w in caught if "unscale_in_step" in str(w.message)]


def test_lightning_module_returning_pilot_alone_trains(pl):
    """configure_optimizers returns Pilot(self.parameters()) and nothing else: 12 epochs of 4 steps, the loss of the
    last epoch is below half the first epoch's."""
    module, opt = lightning_fit(pl, 12)
    assert opt.steps == 48
    first, last = sum(module.losses[:4]) / 4, sum(module.losses[-4:]) / 4
    assert last < first / 2, (first, last)


def test_lightning_resume_from_a_checkpoint_is_bitwise_the_uninterrupted_run(pl, tmp_path):
    """fit(ckpt_path=last.ckpt) from the end of epoch 6 to epoch 12, in a new Trainer with a new module: bitwise
    the parameters, d, factor and events of the uninterrupted 12-epoch run."""
    full_module, full_opt = lightning_fit(pl, 12)
    lightning_fit(pl, 6, checkpoint_dir=tmp_path)
    module, opt = lightning_fit(pl, 12, checkpoint_dir=tmp_path / "again", ckpt_path=str(tmp_path / "last.ckpt"))
    assert opt.steps == 48
    assert_same(outcome(module, opt), outcome(full_module, full_opt))


# ------------------------------------------------------------------------ PilotCallback: Hugging Face Trainer
class AppliedLR:
    """A Trainer callback recording, per optimizer step, the LR Pilot applies at it (read before the step) and the
    LR it will apply next (read after it: what lrpilot_metrics report)."""

    def __new__(cls, opt: Pilot):
        import transformers

        class Record(transformers.TrainerCallback):
            def __init__(self) -> None:
                self.applied: dict[int, float] = {}
                self.after: dict[int, float] = {}

            def on_pre_optimizer_step(self, args, state, control, **kwargs):
                self.applied[state.global_step + 1] = opt.effective_lr()[0].mean

            def on_step_end(self, args, state, control, **kwargs):
                self.after[state.global_step] = opt.effective_lr()[0].mean

        return Record()


def event_rows(log_history: list[dict]) -> list[tuple[int, str, float]]:
    """(step, kind, value) of every pilot/event_* entry of a Trainer's log history, in order."""
    return [(row["step"], key.removeprefix("pilot/event_"), value) for row in log_history
            for key, value in row.items() if key.startswith("pilot/event_")]


def pilot_rows(log_history: list[dict]) -> list[dict]:
    """The log-history rows PilotCallback wrote (the timing entries of the Trainer's own rows left out)."""
    return [row for row in log_history if any(key.startswith(("pilot/", "lr/")) for key in row)]


def hf_pilot_fit(hf, output_dir, callbacks=(), resume=None, pilot_options=None, **kw):
    """hf_fit with a PilotCallback (first) and an AppliedLR recorder; warnings recorded, returned."""
    from lrpilot.integrations.huggingface import PilotCallback

    model = hf.tiny_model()
    opt = Pilot(model.parameters(), **(pilot_options or {}))
    record = AppliedLR(opt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = hf.fit(output_dir, [PilotCallback(), record, *callbacks], resume=resume, model=model,
                         optimizers=(opt, None), **kw)
    return trainer, opt, record, [str(w.message) for w in caught]


def test_hf_pilot_callback_sends_the_applied_lr_pilot_metrics_and_each_event_to_tensorboard(hf, tmp_path,
                                                                                              monkeypatch):
    """report_to=['tensorboard'], logging every 4 steps, Pilot(total_steps=24): TensorBoard's event files (read back
    with its own reader) hold train/lr/group0 and train/pilot/d at the Trainer's logging steps, equal to the LR
    Pilot applies next; the Trainer's train/learning_rate is the LR Pilot applied at that step (not the group's
    multiplier, 1.0); every Pilot event (the estimate's doublings, the cooldown's start) once, at its step."""
    pytest.importorskip("tensorboard")
    from test_integrations_huggingface import tensorboard_scalars

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    trainer, opt, record, caught = hf_pilot_fit(hf, tmp_path / "out", pilot_options={"total_steps": 24},
                                                max_steps=24, report_to=["tensorboard"], logging_strategy="steps",
                                                logging_steps=4)
    assert not [m for m in caught if "PilotCallback" in m or MULTIPLIER_WARNING in m], caught
    scalars = tensorboard_scalars(tmp_path / "tb")
    steps = [4, 8, 12, 16, 20, 24]
    assert scalars["train/lr/group0"] == [(s, pytest.approx(record.after[s], rel=1e-6)) for s in steps]
    assert [s for s, _ in scalars["train/pilot/d"]] == steps and scalars["train/pilot/factor"][-1] == (24, 0.0)
    assert scalars["train/learning_rate"] == [(s, pytest.approx(record.applied[s], rel=1e-6)) for s in steps]
    assert record.applied[20] > 100 * 1e-6, "the scenario needs an LR that grew"
    kinds = {e.kind for e in opt.events}
    assert {"scale", "cooldown"} <= kinds
    logged = sorted((s, kind, v) for kind in kinds for s, v in scalars[f"train/pilot/event_{kind}"])
    assert logged == sorted((e.step, e.kind, pytest.approx(e.value, rel=1e-6)) for e in opt.events)
    assert event_rows(trainer.state.log_history) == [(e.step, e.kind, e.value) for e in opt.events]


def test_hf_pilot_callback_counts_optimizer_steps_under_gradient_accumulation(hf, tmp_path):
    """gradient_accumulation_steps=2 (batches of 4, 2 optimizer steps per epoch): the metrics are logged at the
    Trainer's logging steps in optimizer steps (logging_steps=3), learning_rate is the LR each of those steps
    applied, each event once at its optimizer step; PilotCallback(log_every=5) logs every 5 optimizer steps."""
    ga = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "max_steps": 12}
    trainer, opt, record, _ = hf_pilot_fit(hf, tmp_path / "a", logging_strategy="steps", logging_steps=3, **ga)
    history = trainer.state.log_history
    assert opt.steps == 12
    assert [row["step"] for row in history if "lr/group0" in row] == [3, 6, 9, 12]
    assert all(row["lr/group0"] == record.after[row["step"]] for row in history if "lr/group0" in row)
    assert {row["step"]: row["learning_rate"] for row in history if "learning_rate" in row} == \
        {s: record.applied[s] for s in (3, 6, 9, 12)}
    assert opt.events and event_rows(history) == [(e.step, e.kind, e.value) for e in opt.events]

    from lrpilot.integrations.huggingface import PilotCallback

    model = hf.tiny_model()
    every = hf.fit(tmp_path / "b", [PilotCallback(log_every=5)], model=model,
                   optimizers=(Pilot(model.parameters()), None), logging_strategy="steps", logging_steps=100, **ga)
    assert [row["step"] for row in every.state.log_history if "pilot/d" in row] == [5, 10]


@pytest.mark.parametrize("variant", ["plain", "accumulation", "bf16"])
def test_hf_pilot_callback_resume_is_bitwise_and_reports_each_event_once(hf, tmp_path, variant):
    """Interrupted after step 13 (mid-epoch; Pilot(total_steps=48): doublings of the estimate before and after,
    the cooldown at 38), resumed with resume_from_checkpoint by a new Trainer, model, Pilot and PilotCallback: the
    parameters, d, factor and events are bitwise those of the uninterrupted run, and the resumed log history (the
    checkpoint's, then the new rows) holds the same PilotCallback rows: no event before the checkpoint reported
    again, none after it missed. Plain, with gradient_accumulation_steps=2, and with bf16=True on CPU."""
    kw = {"max_steps": 48, "logging_strategy": "steps", "logging_steps": 5}
    kw.update({"plain": {}, "accumulation": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2},
               "bf16": {"bf16": True}}[variant])
    options = {"total_steps": 48}
    full, full_opt, _, _ = hf_pilot_fit(hf, tmp_path / "full", pilot_options=options, **kw)
    hf_pilot_fit(hf, tmp_path / "part", [hf.StopAt(13)], pilot_options=options, save_strategy="steps",
                 save_steps=13, **kw)
    resumed, opt, _, _ = hf_pilot_fit(hf, tmp_path / "resumed", pilot_options=options,
                                      resume=str(tmp_path / "part" / "checkpoint-13"), **kw)
    assert_same(outcome(resumed.model, opt), outcome(full.model, full_opt))
    events = [(e.step, e.kind, e.value) for e in full_opt.events]
    assert any(s <= 13 for s, _, _ in events) and any(s > 13 for s, _, _ in events) and events[-1][1] == "cooldown"
    assert event_rows(resumed.state.log_history) == event_rows(full.state.log_history) == events
    assert pilot_rows(resumed.state.log_history) == pilot_rows(full.state.log_history)


def test_hf_pilot_callback_refuses_another_optimizer_and_warns_on_misuse(hf, tmp_path):
    """The Trainer's own optimizer (SGD here): ValueError naming PilotCallback and the fix. With Pilot: warnings
    for the Trainer's linear schedule (Pilot ignores it), for a total_steps that is not the Trainer's max_steps,
    and for logging_strategy='no' (nothing but events would be logged)."""
    from lrpilot.integrations.huggingface import PilotCallback

    with pytest.raises(ValueError, match=r"PilotCallback needs lrpilot.Pilot .* SGD: pass optimizers=\(lrpilot.Pilot"):
        hf.fit(tmp_path / "sgd", [PilotCallback()], max_steps=2)
    _, _, _, caught = hf_pilot_fit(hf, tmp_path / "misuse", pilot_options={"total_steps": 10}, max_steps=2,
                                   lr_scheduler_type="linear")
    ours = [m for m in caught if m.startswith("PilotCallback")]
    assert len(ours) == 3, ours
    assert "lr_scheduler_type='linear' builds a schedule that Pilot ignores" in ours[0]
    assert "Pilot(total_steps=10) but the Trainer makes 2 optimizer steps" in ours[1]
    assert "logging_strategy='no'" in ours[2]
    _, _, _, caught = hf_pilot_fit(hf, tmp_path / "right", pilot_options={"total_steps": 2}, max_steps=2,
                                   logging_strategy="steps", logging_steps=1)
    assert not [m for m in caught if "PilotCallback" in m or MULTIPLIER_WARNING in m], caught
    with pytest.raises(ValueError, match="log_every"):
        PilotCallback(log_every=0)


# --------------------------------------------------------------------------------- PilotCallback: Lightning
def csv_rows(log_dir) -> list[dict[str, str]]:
    import csv

    with open(log_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def pilot_csv_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [row for row in rows if any(k.startswith(("pilot/", "lr/")) for k in row)]


def csv_events(rows: list[dict[str, str]]) -> list[tuple[int, str, float]]:
    """(Lightning step, kind, value) of every pilot/event_* cell, in order."""
    return [(int(row["step"]), k.removeprefix("pilot/event_"), float(v)) for row in rows for k, v in row.items()
            if k.startswith("pilot/event_")]


def lightning_pilot_fit(pl, tmp_path, version, max_epochs, *, checkpoint=None, ckpt_path=None, pilot_options=None,
                        killed_at=None, **trainer_kw):
    """A fit with PilotCallback, a CSVLogger (tmp_path/log/version_<version>) and a recorder of the LR Pilot applies
    next after each optimizer step (keyed by trainer.global_step). ``killed_at=(hook, epoch)``: the job dies there
    (an exception raised before PilotCallback's own hook runs), as a preempted job would."""
    from lrpilot.integrations.lightning import PilotCallback

    after: dict[int, float] = {}

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            after[trainer.global_step] = trainer.optimizers[0].effective_lr()[0].mean

    class Kill(pl.Callback):
        def _maybe(self, trainer, hook):
            if killed_at == (hook, trainer.current_epoch):
                raise InterruptedError("preempted")

        def on_train_epoch_start(self, trainer, pl_module):
            self._maybe(trainer, "epoch_start")

        def on_train_epoch_end(self, trainer, pl_module):
            self._maybe(trainer, "epoch_end")

    callbacks = [Kill(), PilotCallback(), Record()]
    if checkpoint is not None:
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, **checkpoint))
    logger = pl.loggers.CSVLogger(tmp_path, name="log", version=version)
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, accelerator="cpu", logger=logger,
                         enable_checkpointing=checkpoint is not None, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, **trainer_kw)
    module = lightning_module(pl, **(pilot_options or {}))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The number of training batches")  # log_every_n_steps > 4
        warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")  # no checkpoints again
        if killed_at is None:
            trainer.fit(module, ckpt_path=ckpt_path)
        else:
            with pytest.raises(InterruptedError):
                trainer.fit(module, ckpt_path=ckpt_path)
    return trainer, module, trainer.optimizers[0], after, csv_rows(tmp_path / "log" / f"version_{version}")


@pytest.mark.parametrize("accumulate", [1, 2])
def test_lightning_pilot_callback_writes_the_applied_lr_and_each_event_to_the_csv_logger(pl, tmp_path, accumulate):
    """CSVLogger, log_every_n_steps=3, 6 epochs (4 batches each; accumulate_grad_batches=2: 2 optimizer steps):
    the callback's rows are at the steps of Lightning's own step metrics (the module's loss), lr/group0 is the LR
    Pilot applies next, pilot/d is its estimate; an epoch whose last step was not a logging step gets an
    end-of-epoch row; every event once, at its step; trainer.callback_metrics holds the last values."""
    trainer, _, opt, after, rows = lightning_pilot_fit(pl, tmp_path, 0, 6, log_every_n_steps=3,
                                                       accumulate_grad_batches=accumulate)
    per_epoch = 4 // accumulate
    assert opt.steps == 6 * per_epoch
    loss_steps = [int(r["step"]) for r in rows if "loss" in r]
    ours = [r for r in pilot_csv_rows(rows) if "lr/group0" in r]
    step_rows = [int(r["step"]) for r in ours if (int(r["step"]) + 1) % 3 == 0]
    assert step_rows == loss_steps == list(range(2, 6 * per_epoch, 3))
    ends = [int(r["step"]) for r in ours if (int(r["step"]) + 1) % 3 != 0]
    assert ends == [e * per_epoch - 1 for e in range(1, 7) if (e * per_epoch) % 3 != 0]
    dtype = torch.get_default_dtype()
    for r in ours:  # Lightning step s logs optimizer step s + 1
        assert float(r["lr/group0"]) == torch.tensor(after[int(r["step"]) + 1], dtype=dtype).item()
        assert float(r["pilot/d"]) == float(r["lr/group0"])
    assert opt.events
    assert csv_events(rows) == [(e.step - 1, e.kind, torch.tensor(e.value, dtype=dtype).item()) for e in opt.events]
    assert float(trainer.callback_metrics["pilot/d"]) == pytest.approx(opt.d)


RESUMES = {  # name: (Trainer options, ModelCheckpoint options, where the job is killed, the checkpoint to resume)
    # saved at the end of epoch 6 (0-based 5); killed as epoch 7 starts
    "epoch-end": ({}, {"every_n_epochs": 1}, ("epoch_start", 6), "epoch=5-step=24.ckpt"),
    # saved on epoch 6's last batch, before on_train_epoch_end, and killed before it: the resumed run logs the end
    "last-batch": ({}, {"every_n_train_steps": 24}, ("epoch_end", 5), "epoch=5-step=24.ckpt"),
    "accumulation": ({"accumulate_grad_batches": 2}, {"every_n_train_steps": 12}, ("epoch_end", 5),
                     "epoch=5-step=12.ckpt"),
}


@pytest.mark.parametrize("kind", list(RESUMES))
def test_lightning_pilot_callback_resume_is_bitwise_and_logs_what_the_uninterrupted_run_logs(pl, tmp_path, kind):
    """A 12-epoch job (Pilot(total_steps) = its optimizer steps: a cooldown after the checkpoint;
    log_every_n_steps=5) killed after its epoch-6 checkpoint, resumed by fit(ckpt_path=...) in a new Trainer with
    a new module: bitwise the parameters, d, factor and events of the uninterrupted run, and the CSV rows of the
    killed run then of the resumed run are the uninterrupted run's rows (each event once); with a checkpoint of
    the epoch's last batch (killed before the epoch's end: its end-of-epoch row is written on resume) and with
    accumulate_grad_batches=2."""
    trainer_kw, checkpoint, killed_at, name = RESUMES[kind]
    trainer_kw = {**trainer_kw, "log_every_n_steps": 5}
    options = {"total_steps": 48 // trainer_kw.get("accumulate_grad_batches", 1)}
    _, full_module, full_opt, _, full_rows = lightning_pilot_fit(pl, tmp_path, 0, 12, pilot_options=options,
                                                                 **trainer_kw)
    _, _, part_opt, _, part_rows = lightning_pilot_fit(pl, tmp_path, 1, 12, checkpoint=checkpoint,
                                                       pilot_options=options, killed_at=killed_at, **trainer_kw)
    _, module, opt, _, rows = lightning_pilot_fit(pl, tmp_path, 2, 12, pilot_options=options,
                                                  ckpt_path=str(tmp_path / "ckpt" / name), **trainer_kw)
    assert_same(outcome(module, opt), outcome(full_module, full_opt))
    assert full_opt.events[-1].kind == "cooldown" and part_opt.events[-1].step < full_opt.events[-1].step
    assert pilot_csv_rows(part_rows) + pilot_csv_rows(rows) == pilot_csv_rows(full_rows)
    assert csv_events(part_rows) + csv_events(rows) == csv_events(full_rows)
    assert len(csv_events(full_rows)) == len(full_opt.events)


def test_lightning_pilot_callback_warns_without_a_pilot_and_on_misuse(pl, tmp_path):
    """No Pilot among the optimizers: one warning when training starts, naming them. A Pilot with an LR scheduler
    returned for it (Pilot ignores it) or a total_steps that is not the trainer's optimizer steps: a warning each;
    a right total_steps: none."""
    from lrpilot.integrations.lightning import PilotCallback

    class WithSGD(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(6, 3)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 6)), batch_size=8)

    class WithScheduler(WithSGD):
        def configure_optimizers(self):
            opt = Pilot(self.parameters(), total_steps=10)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1)}

    class Right(WithSGD):
        def configure_optimizers(self):
            return Pilot(self.parameters(), total_steps=2)

    def fit(module):
        trainer = pl.Trainer(max_epochs=1, callbacks=[PilotCallback()], accelerator="cpu", logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module)
        return [str(w.message) for w in caught if str(w.message).startswith("PilotCallback")]

    assert fit(WithSGD()) == ["PilotCallback: no lrpilot.Pilot among the trainer's optimizers (SGD), so it logs "
                              "nothing; return lrpilot.Pilot(self.parameters()) from configure_optimizers"]
    misuse = fit(WithScheduler())
    assert len(misuse) == 2 and "returns a StepLR for a Pilot, which ignores it" in misuse[0]
    assert "Pilot(total_steps=10) but the trainer makes 2 optimizer steps" in misuse[1]
    assert fit(Right()) == []
    with pytest.raises(ValueError, match="log_every_n_steps"):
        PilotCallback(log_every_n_steps=0)
