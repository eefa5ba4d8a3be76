"""Specification of the Hugging Face Trainer integration (a tiny BERT built from a config, no download)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_helpers import (  # noqa: E402
    FAST_DROP,
    KINDS,
    Data,
    StopAt,
    assert_same,
    autodrop_callback,
    fit,
    summary,
    tiny_model,
    training_args,
)
from lrpilot import ActiveAdamW  # noqa: E402
from lrpilot.integrations.huggingface import ActiveLRCallback, AutoDropCallback  # noqa: E402

args = training_args


def test_autodrop_drops_per_epoch_and_the_trainer_keeps_the_dropped_lr(tmp_path):
    cb = AutoDropCallback(**FAST_DROP)
    trainer = transformers.Trainer(tiny_model(), args(tmp_path, num_train_epochs=10), train_dataset=Data(),
                                   callbacks=[cb])
    trainer.train()
    assert cb.scheduler.drop_epochs, "the scenario needs a drop"
    assert cb.scheduler.omega_history[0][0] == 3  # one angle per Trainer epoch once three snapshots exist
    # the Trainer's constant scheduler did not undo the drop
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(cb.scheduler.get_last_lr()[0])
    assert trainer.optimizer.param_groups[0]["lr"] < 0.05
    assert any("autodrop/omega" in row for row in trainer.state.log_history)


def interrupted_and_full(tmp_path, kind):
    """The uninterrupted run of ``kind`` and a run interrupted at its checkpoint step (under tmp_path/part)."""
    spec = KINDS[kind]
    full_cb = autodrop_callback(kind)
    full = summary(fit(tmp_path / "full", [full_cb], **spec["args"]), full_cb)
    fit(tmp_path / "part", [autodrop_callback(kind), StopAt(spec["stop"])], **spec["args"])
    return full, tmp_path / "part" / f"checkpoint-{spec['stop']}"


def resume(output_dir, kind, checkpoint):
    spec = KINDS[kind]
    cb = autodrop_callback(kind)
    trainer = fit(output_dir, [cb], resume=checkpoint, **spec["args"])
    return summary(trainer, cb)


@pytest.mark.parametrize("where", ["outside output_dir", "resume_from_checkpoint=True", "inside output_dir"])
def test_resume_is_bitwise_identical_wherever_the_checkpoint_is(tmp_path, where):
    """Whichever checkpoint the Trainer resumes from -- a directory outside the new run's output_dir, the last one
    in output_dir (True), or a path inside it -- AutoDrop continues from that checkpoint's state: same angles,
    drops, LR and bitwise the same weights as the uninterrupted run (window_steps=2, interrupted mid-window)."""
    full, checkpoint = interrupted_and_full(tmp_path, "window-mid")
    assert full["drops"] and max(full["drops"]) > 6, "the scenario needs a drop after the checkpoint"
    if where == "outside output_dir":
        moved = tmp_path / "elsewhere" / "my-checkpoint"
        shutil.copytree(checkpoint, moved)
        resumed = resume(tmp_path / "new-run", "window-mid", str(moved))
    elif where == "resume_from_checkpoint=True":
        resumed = resume(tmp_path / "part", "window-mid", True)
    else:
        resumed = resume(tmp_path / "part", "window-mid", str(checkpoint))
    assert_same(full, resumed)


def test_a_stale_checkpoint_of_the_same_step_in_output_dir_is_not_used(tmp_path):
    """Resuming from a checkpoint elsewhere into an output_dir that holds a different run's checkpoint of the same
    step restores the checkpoint that was asked for, not the stale one."""
    full, checkpoint = interrupted_and_full(tmp_path, "window-mid")
    other = AutoDropCallback(window_steps=2, threshold=10.0, rise_threshold=-10.0, window=8)
    fit(tmp_path / "other", [other, StopAt(11)], learning_rate=0.02, **KINDS["window-mid"]["args"])
    shutil.copytree(checkpoint, tmp_path / "elsewhere")
    assert_same(full, resume(tmp_path / "other", "window-mid", str(tmp_path / "elsewhere")))


@pytest.mark.parametrize("kind", ["epoch-last-step", "epoch-save-strategy", "epoch-mid", "accumulation-last-step"])
def test_per_epoch_autodrop_resumes_bitwise_from_any_checkpoint_in_the_epoch(tmp_path, kind):
    """Per-epoch AutoDrop measures each Trainer epoch exactly once across a resume: from a checkpoint saved at the
    epoch's last optimizer step (save_steps = steps per epoch, saved before on_epoch_end), from
    save_strategy='epoch', from the middle of an epoch, and with gradient accumulation (epochs of 2 optimizer
    steps over 4 batches): the same angles, drops, LR and weights as the uninterrupted run."""
    full, checkpoint = interrupted_and_full(tmp_path, kind)
    assert full["drops"] == [8], "the scenario needs a drop after the checkpoint"
    assert_same(full, resume(tmp_path / "part", kind, str(checkpoint)))


def test_each_kind_of_checkpoint_resumes_bitwise_in_a_new_process(tmp_path):
    """A new Python process resuming a mid-window checkpoint, one saved at an epoch's last step, and one from
    save_strategy='epoch' ends exactly like the uninterrupted run in this process."""
    kinds = ["window-mid", "epoch-last-step", "epoch-save-strategy"]
    fulls = {}
    for kind in kinds:
        fulls[kind], _ = interrupted_and_full(tmp_path / kind, kind)
    worker = Path(__file__).with_name("hf_resume_worker.py")
    subprocess.run([sys.executable, str(worker), str(tmp_path), ",".join(kinds), str(torch.get_num_threads())],
                   check=True, capture_output=True, timeout=300)
    for kind in kinds:
        assert_same(fulls[kind], torch.load(tmp_path / kind / "resumed.pt", weights_only=False))


def test_resuming_a_checkpoint_without_autodrop_state_warns(tmp_path):
    """A resumed run whose checkpoint holds no AutoDrop state (saved by a run without the callback) says so:
    AutoDrop starts afresh from the checkpoint's LR instead of silently pretending to continue."""
    fit(tmp_path, [StopAt(4)], num_train_epochs=10, save_strategy="steps", save_steps=4)
    cb = AutoDropCallback(**FAST_DROP)
    with pytest.warns(UserWarning, match="resumes at step 4 from a checkpoint that holds no AutoDrop state"):
        fit(tmp_path, [cb], resume=str(tmp_path / "checkpoint-4"), num_train_epochs=10)
    assert cb.scheduler.omega_history[0][0] == 3  # counted from the resume: three new snapshots


def test_stale_autodrop_state_carried_by_a_run_without_the_callback_warns(tmp_path):
    """A run without AutoDropCallback resumed from an AutoDrop checkpoint (step 4) carries that state, unchanged,
    into its own checkpoints (step 8); resuming from those with the callback warns and ignores the stale state
    instead of restoring angles measured four steps before the weights."""
    fit(tmp_path / "a", [AutoDropCallback(**FAST_DROP), StopAt(4)], num_train_epochs=10, save_strategy="steps",
        save_steps=4)
    fit(tmp_path / "b", [StopAt(8)], resume=str(tmp_path / "a" / "checkpoint-4"), num_train_epochs=10,
        save_strategy="steps", save_steps=4)
    cb = AutoDropCallback(**FAST_DROP)
    with pytest.warns(UserWarning, match="checkpoint of step 8 carries AutoDrop state of step 4"):
        fit(tmp_path / "c", [cb], resume=str(tmp_path / "b" / "checkpoint-8"), num_train_epochs=10)
    assert cb.scheduler.omega_history[0][0] == 3


def tensorboard_scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_report_to_tensorboard_receives_omega_drops_and_the_lr(tmp_path, monkeypatch):
    """Through the Trainer's own logging path: the real TensorBoardCallback (report_to=['tensorboard']) writes
    one omega per measured epoch at that epoch's last step, the drop count and the LR after the drop, read back
    from the event files with TensorBoard's reader; the same rows are in state.log_history."""
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    cb = AutoDropCallback(**FAST_DROP)
    trainer = fit(tmp_path / "out", [cb], num_train_epochs=10, report_to=["tensorboard"], logging_strategy="steps",
                  logging_steps=1)
    scalars = tensorboard_scalars(tmp_path / "tb")
    assert cb.scheduler.drops, "the scenario needs a drop"
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, 21))  # the Trainer's own logs are all there
    # epoch e (1-based) ends at optimizer step 2e; its angle is omega_history's entry for epoch e
    assert scalars["train/autodrop/omega"] == [(2 * e, pytest.approx(w)) for e, w in cb.scheduler.omega_history]
    assert scalars["train/autodrop/drops"][-1] == (20, len(cb.scheduler.drops))
    assert scalars["train/lr/group0"][-1] == (20, pytest.approx(cb.scheduler.get_last_lr()[0]))
    logged = [(row["step"], row["autodrop/omega"]) for row in trainer.state.log_history if "autodrop/omega" in row]
    assert logged == [(2 * e, w) for e, w in cb.scheduler.omega_history]


def test_the_trainers_learning_rate_log_is_the_lr_each_step_applied_across_a_drop(tmp_path):
    """The Trainer (5.x) logs `learning_rate` as the LR its optimizer step used: across a drop every logged value is
    the LR that step applied -- the old LR at the drop's step, the dropped LR from the next one, never the
    Trainer's undropped base LR."""
    applied = {}

    class RecordLR(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            applied[state.global_step + 1] = optimizer.param_groups[0]["lr"]

    cb = AutoDropCallback(window_steps=2, **FAST_DROP)
    trainer = fit(tmp_path, [cb, RecordLR()], max_steps=24, logging_strategy="steps", logging_steps=1)
    assert [d.step for d in cb.scheduler.drops] == [16], "the scenario needs a drop"
    logged = {row["step"]: row["learning_rate"] for row in trainer.state.log_history if "learning_rate" in row}
    assert logged == {s: pytest.approx(applied[s]) for s in range(1, 25)}
    assert logged[16] == pytest.approx(0.05) and logged[17] == pytest.approx(0.005)
    assert trainer.lr_scheduler.get_last_lr() == pytest.approx(cb.scheduler.get_last_lr())


def test_gradient_accumulation_counts_optimizer_steps_not_batches(tmp_path):
    """With gradient_accumulation_steps=2 (4 batches, 2 optimizer steps per epoch), window_steps counts optimizer
    steps and a per-epoch AutoDrop measures once per Trainer epoch, at its last optimizer step."""
    ga = dict(per_device_train_batch_size=4, gradient_accumulation_steps=2)
    window = AutoDropCallback(window_steps=3, **FAST_DROP)
    trainer = fit(tmp_path / "window", [window], max_steps=12, **ga)
    steps = [row["step"] for row in trainer.state.log_history if "autodrop/drops" in row]
    assert steps == [3, 6, 9, 12]
    epochs = AutoDropCallback(**FAST_DROP)
    trainer = fit(tmp_path / "epochs", [epochs], num_train_epochs=5, **ga)
    steps = [row["step"] for row in trainer.state.log_history if "autodrop/drops" in row]
    assert steps == [2, 4, 6, 8, 10]
    assert [e for e, _ in epochs.scheduler.omega_history] == [3, 4, 5]


def test_a_decaying_trainer_schedule_is_refused(tmp_path):
    trainer = transformers.Trainer(tiny_model(), args(tmp_path, num_train_epochs=1, lr_scheduler_type="linear"),
                                   train_dataset=Data(), callbacks=[AutoDropCallback()])
    with pytest.raises(ValueError, match="lr_scheduler_type='constant'"):
        trainer.train()


def test_a_decaying_scheduler_passed_to_the_trainer_is_refused(tmp_path):
    """optimizers=(optimizer, CosineAnnealingLR(...)) makes lr_scheduler_type irrelevant: the scheduler itself is
    checked, and refused with the fix, instead of silently undoing the drops."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    with pytest.raises(ValueError, match=r"CosineAnnealingLR that changes the LR.*optimizers=\(optimizer, None\)"):
        fit(tmp_path, [AutoDropCallback()], model=model, optimizers=(opt, cosine), num_train_epochs=1)


def test_a_trainer_warmup_is_refused_naming_the_value_and_the_fix(tmp_path):
    """lr_scheduler_type='constant_with_warmup' would multiply the dropped LR by the warmup factor: refused when
    training begins, with the value and the fix in the message."""
    with pytest.raises(ValueError, match=r"got 'constant_with_warmup'.*Pass lr_scheduler_type='constant'"):
        fit(tmp_path, [AutoDropCallback()], num_train_epochs=1, lr_scheduler_type="constant_with_warmup",
            warmup_steps=2)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cpu_drops_and_resumes_bitwise(tmp_path, precision):
    """bf16=True or fp16=True (autocast on CPU, fp16 with its grad scaler; fp32 parameters): AutoDrop measures,
    drops, the Trainer keeps the dropped LR, and a resume from an epoch's last step is bitwise identical to the
    uninterrupted run."""
    kind, flag = "epoch-last-step", {precision: True}
    spec = KINDS[kind]
    full_cb = autodrop_callback(kind)
    full = summary(fit(tmp_path / "full", [full_cb], **flag, **spec["args"]), full_cb)
    assert full["drops"] and full["lr"][0] < 0.05
    fit(tmp_path / "part", [autodrop_callback(kind), StopAt(spec["stop"])], **flag, **spec["args"])
    cb = autodrop_callback(kind)
    resumed = fit(tmp_path / "resumed", [cb], resume=str(tmp_path / "part" / "checkpoint-8"), **flag,
                  **spec["args"])
    assert_same(full, summary(resumed, cb))


def test_active_optimizer_passed_to_the_trainer_adapts_by_itself(tmp_path):
    model = tiny_model()
    opt = ActiveAdamW(model.parameters(), lr=1e-3, weight_decay=0.0, steps_per_epoch=2)  # 16 examples / 8
    trainer = transformers.Trainer(model, args(tmp_path, num_train_epochs=4), train_dataset=Data(),
                                   optimizers=(opt, None))
    trainer.train()
    assert opt.epoch == 4
    assert opt.effective_lr()[0].max > 1e-3


@pytest.mark.parametrize("steps_per_epoch", [2, None])
def test_active_lr_callback_reports_the_effective_lr_to_tensorboard(tmp_path, monkeypatch, steps_per_epoch):
    """ActiveLRCallback sends the LR the Active optimizer applies (lr x mean multiplier, with min and max) through
    the Trainer's logging path at every ActiveLR epoch boundary: TensorBoard's event files hold it, while the
    Trainer's own learning_rate is the base LR. Without steps_per_epoch the callback ends each Trainer epoch."""
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    model = tiny_model()
    opt = ActiveAdamW(model.parameters(), lr=3e-3, weight_decay=0.0, steps_per_epoch=steps_per_epoch)
    fit(tmp_path / "out", [ActiveLRCallback()], model=model, optimizers=(opt, None), num_train_epochs=6,
        report_to=["tensorboard"], logging_strategy="steps", logging_steps=2)
    assert opt.epoch == 6
    scalars = tensorboard_scalars(tmp_path / "tb")
    eff = opt.effective_lr()[0]
    assert [s for s, _ in scalars["train/lr/group0"]] == [2, 4, 6, 8, 10, 12]
    assert scalars["train/lr/group0"][-1][1] == pytest.approx(eff.mean)
    assert scalars["train/lr_max/group0"][-1][1] == pytest.approx(eff.max)
    assert eff.mean > 3e-3 * 1.5, "the scenario needs multipliers that grew"
    assert all(v == pytest.approx(3e-3) for _, v in scalars["train/learning_rate"])  # the base LR only


def test_active_steps_per_epoch_counting_batches_under_accumulation_warns(tmp_path):
    """steps_per_epoch=len(loader) (4 batches) with gradient_accumulation_steps=2 (2 optimizer steps per epoch)
    would update the multipliers every second Trainer epoch: ActiveLRCallback warns, naming the right value."""
    model = tiny_model()
    opt = ActiveAdamW(model.parameters(), lr=1e-3, weight_decay=0.0, steps_per_epoch=4)
    with pytest.warns(UserWarning, match=r"steps_per_epoch=4\) but the Trainer makes 2 optimizer steps per epoch"):
        fit(tmp_path, [ActiveLRCallback()], model=model, optimizers=(opt, None), num_train_epochs=2,
            per_device_train_batch_size=4, gradient_accumulation_steps=2)


def test_active_lr_callback_refuses_a_plain_optimizer(tmp_path):
    with pytest.raises(ValueError, match=r"ActiveLRCallback needs an lrpilot Active optimizer, .* SGD"):
        fit(tmp_path, [ActiveLRCallback()], num_train_epochs=1)


def test_active_lr_callback_resumes_bitwise_from_an_epochs_last_step(tmp_path):
    """An Active optimizer without steps_per_epoch, its epochs ended by ActiveLRCallback: a checkpoint saved at an
    epoch's last step (before on_epoch_end) holds that epoch's sign rule; the resumed run's multipliers and
    weights equal the uninterrupted run's."""
    def run(out, *callbacks, resume=None, **kw):
        model = tiny_model()
        opt = ActiveAdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        trainer = fit(out, [ActiveLRCallback(), *callbacks], model=model, optimizers=(opt, None), resume=resume,
                      num_train_epochs=6, **kw)
        return opt, trainer

    full_opt, full = run(tmp_path / "full")
    run(tmp_path / "part", StopAt(6), save_strategy="steps", save_steps=2)
    opt, resumed = run(tmp_path / "resumed", resume=str(tmp_path / "part" / "checkpoint-6"))
    assert opt.epoch == full_opt.epoch == 6
    assert all(torch.equal(a, b) for a, b in zip(full.model.parameters(), resumed.model.parameters()))
    assert all(torch.equal(full_opt.state[a]["multiplier"], opt.state[b]["multiplier"])
               for a, b in zip(full.model.parameters(), resumed.model.parameters()))


def test_driven_without_a_trainer_the_metrics_go_to_log_history_with_a_warning(tmp_path):
    """Called by something other than transformers.Trainer (none on the call stack), the callback still measures
    and keeps its numbers in state.log_history, and says that no report_to integration receives them."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state, control, targs = transformers.TrainerState(), transformers.TrainerControl(), args(tmp_path)
    cb = AutoDropCallback(**FAST_DROP)
    cb.on_train_begin(targs, state, control, optimizer=opt, lr_scheduler=None)
    with pytest.warns(UserWarning, match="no transformers.Trainer found"):
        for epoch in range(1, 4):
            for _ in range(2):
                opt.zero_grad()
                model(torch.randn(8, 4)).pow(2).mean().backward()
                opt.step()
                state.global_step += 1
            state.epoch = float(epoch)
            cb.on_step_end(targs, state, control)
    assert [row["step"] for row in state.log_history] == [2, 4, 6]
    assert "autodrop/omega" in state.log_history[-1]


class NaNFrom(transformers.TrainerCallback):
    """From Trainer epoch ``epoch`` (0-based) on, the model's loss is NaN: a diverging run."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        model.poisoned = state.epoch >= self.epoch


class PoisonableBert(transformers.BertForSequenceClassification):
    poisoned = False

    def forward(self, input_ids=None, labels=None, **inputs):  # named: the Trainer keeps only these columns
        out = super().forward(input_ids=input_ids, labels=labels, **inputs)
        if self.poisoned:
            out.loss = out.loss * float("nan")
        return out


def poisonable_model():
    torch.manual_seed(0)
    return PoisonableBert(tiny_model().config)


def test_a_nan_loss_inside_the_trainer_warns_and_never_collapses_the_lr(tmp_path):
    """Documented behaviour: NaN parameters give a NaN angle; AutoDrop warns and takes no decision on it, so the
    Trainer's LR stays where it was (no silent drop to the floor); an Active optimizer's multipliers stay finite
    while its parameters are NaN."""
    cb = AutoDropCallback(**FAST_DROP)
    trainer = transformers.Trainer(poisonable_model(), args(tmp_path / "autodrop", num_train_epochs=8),
                                   train_dataset=Data(), callbacks=[cb, NaNFrom(epoch=2)])
    with pytest.warns(RuntimeWarning, match="not finite"):
        trainer.train()
    assert not all(torch.isfinite(p).all() for p in trainer.model.parameters()), "the scenario needs NaN weights"
    assert cb.scheduler.drops == []
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)

    model = poisonable_model()
    opt = ActiveAdamW(model.parameters(), lr=1e-3, weight_decay=0.0, steps_per_epoch=2)
    trainer = transformers.Trainer(model, args(tmp_path / "active", num_train_epochs=6), train_dataset=Data(),
                                   optimizers=(opt, None), callbacks=[NaNFrom(epoch=2)])
    trainer.train()
    assert opt.epoch == 6
    assert not all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.isfinite(opt.state[p]["multiplier"]).all() for p in model.parameters() if p in opt.state)
