"""Shared by the Hugging Face Trainer tests and their new-process worker (tests/hf_resume_worker.py): a tiny
BERT built from a config (no download), 16 examples, CPU TrainingArguments, and a run summary to compare."""

from __future__ import annotations

from typing import Any

import torch
import transformers

#: AutoDrop options that make the tiny model drop within a few epochs.
FAST_DROP = {"threshold": 10.0, "rise_threshold": -10.0, "window": 6}


def tiny_model() -> transformers.BertForSequenceClassification:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    return transformers.BertForSequenceClassification(config)


class Data(torch.utils.data.Dataset):
    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 40, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] % 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def training_args(output_dir: Any, **kw: Any) -> transformers.TrainingArguments:
    base = dict(output_dir=str(output_dir), per_device_train_batch_size=8, learning_rate=0.05, optim="sgd",
                lr_scheduler_type="constant", report_to=[], save_strategy="no", logging_strategy="no",
                use_cpu=True, seed=0, data_seed=0, disable_tqdm=True, dataloader_num_workers=0)
    base.update(kw)
    return transformers.TrainingArguments(**base)


def fit(output_dir: Any, callbacks: list, *, resume: Any = None, model: Any = None, optimizers: Any = None,
        **kw: Any) -> transformers.Trainer:
    """Train the tiny model (a fresh one unless ``model``); ``resume`` goes to ``resume_from_checkpoint``."""
    trainer = transformers.Trainer(model if model is not None else tiny_model(), training_args(output_dir, **kw),
                                   train_dataset=Data(), callbacks=callbacks,
                                   optimizers=optimizers if optimizers is not None else (None, None))
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def summary(trainer: transformers.Trainer, callback: Any) -> dict[str, Any]:
    """What an uninterrupted and a resumed run must share, exactly."""
    scheduler = callback.scheduler
    return {"params": [p.detach().clone() for p in trainer.model.parameters()],
            "omega": [tuple(x) for x in scheduler.omega_history], "drops": list(scheduler.drop_epochs),
            "lr": [float(g["lr"]) for g in trainer.optimizer.param_groups], "step": trainer.state.global_step}


def assert_same(full: dict[str, Any], resumed: dict[str, Any]) -> None:
    assert resumed["omega"] == full["omega"]
    assert resumed["drops"] == full["drops"]
    assert resumed["lr"] == full["lr"] and resumed["step"] == full["step"]
    assert all(torch.equal(a, b) for a, b in zip(full["params"], resumed["params"])), "parameters differ"


class StopAt(transformers.TrainerCallback):
    """Interrupt training after optimizer step ``step`` (a crash, or a job's time running out)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


#: Each kind of checkpoint a resumed run may start from: the callback's options, the TrainingArguments, the
#: step at which the first run is interrupted (and its checkpoint taken).
KINDS: dict[str, dict[str, Any]] = {
    # every 2 optimizer steps; interrupted in the middle of a window and of an epoch
    "window-mid": {"callback": {"window_steps": 2}, "args": {"max_steps": 24, "save_strategy": "steps",
                                                             "save_steps": 11}, "stop": 11},
    # per epoch (2 optimizer steps); the checkpoint is saved at the epoch's last step, before on_epoch_end
    "epoch-last-step": {"callback": {}, "args": {"num_train_epochs": 10, "save_strategy": "steps", "save_steps": 2},
                        "stop": 8},
    "epoch-save-strategy": {"callback": {}, "args": {"num_train_epochs": 10, "save_strategy": "epoch"}, "stop": 8},
    "epoch-mid": {"callback": {}, "args": {"num_train_epochs": 10, "save_strategy": "steps", "save_steps": 7},
                  "stop": 7},
    # gradient accumulation: 4 batches of 4 per epoch, 2 optimizer steps
    "accumulation-last-step": {"callback": {}, "args": {"num_train_epochs": 10, "per_device_train_batch_size": 4,
                                                        "gradient_accumulation_steps": 2, "save_strategy": "steps",
                                                        "save_steps": 2}, "stop": 8},
}


def autodrop_callback(kind: str) -> Any:
    from lrpilot.integrations.huggingface import AutoDropCallback

    return AutoDropCallback(**KINDS[kind]["callback"], **FAST_DROP)
