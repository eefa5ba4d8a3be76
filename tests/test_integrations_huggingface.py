"""Specification of the Hugging Face Trainer integration (a tiny BERT built from a config, no download)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lrpilot import ActiveAdamW  # noqa: E402
from lrpilot.integrations.huggingface import STATE_FILE, AutoDropCallback  # noqa: E402

FAST_DROP = {"threshold": 10.0, "rise_threshold": -10.0, "window": 6}


def tiny_model():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    return transformers.BertForSequenceClassification(config)


class Data(torch.utils.data.Dataset):
    def __init__(self, n=16):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 40, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] % 2).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, learning_rate=0.05, optim="sgd",
                lr_scheduler_type="constant", report_to=[], save_strategy="no", logging_strategy="no",
                use_cpu=True, seed=0, data_seed=0, disable_tqdm=True, dataloader_num_workers=0)
    base.update(kw)
    return transformers.TrainingArguments(**base)


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


def test_step_windows_and_resume_from_a_trainer_checkpoint(tmp_path):
    """window_steps=2 measures every 2 optimizer steps; resuming from the checkpoint at step 12 ends with the
    same drops and weights as the uninterrupted 24-step run."""
    full_cb = AutoDropCallback(window_steps=2, **FAST_DROP)
    full = transformers.Trainer(tiny_model(), args(tmp_path / "full", max_steps=24), train_dataset=Data(),
                                callbacks=[full_cb])
    full.train()
    assert full_cb.scheduler.drop_epochs and max(full_cb.scheduler.drop_epochs) > 6
    part = transformers.Trainer(tiny_model(), args(tmp_path / "part", max_steps=24, save_strategy="steps",
                                                   save_steps=12), train_dataset=Data(),
                                callbacks=[AutoDropCallback(window_steps=2, **FAST_DROP)])
    part.train()
    assert (tmp_path / "part" / "checkpoint-12" / STATE_FILE).exists()
    resumed_cb = AutoDropCallback(window_steps=2, **FAST_DROP)
    resumed = transformers.Trainer(tiny_model(), args(tmp_path / "part", max_steps=24), train_dataset=Data(),
                                   callbacks=[resumed_cb])
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-12"))
    assert resumed_cb.scheduler.drop_epochs == full_cb.scheduler.drop_epochs
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_active_optimizer_passed_to_the_trainer_adapts_by_itself(tmp_path):
    model = tiny_model()
    opt = ActiveAdamW(model.parameters(), lr=1e-3, weight_decay=0.0, steps_per_epoch=2)  # 16 examples / 8
    trainer = transformers.Trainer(model, args(tmp_path, num_train_epochs=4), train_dataset=Data(),
                                   optimizers=(opt, None))
    trainer.train()
    assert opt.epoch == 4
    assert opt.effective_lr()[0].max > 1e-3


def test_a_decaying_trainer_schedule_is_refused(tmp_path):
    trainer = transformers.Trainer(tiny_model(), args(tmp_path, num_train_epochs=1, lr_scheduler_type="linear"),
                                   train_dataset=Data(), callbacks=[AutoDropCallback()])
    with pytest.raises(ValueError, match="lr_scheduler_type='constant'"):
        trainer.train()


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
