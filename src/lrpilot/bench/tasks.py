"""The benchmark's tasks: real data that is generated, bundled with a package or shipped with lrpilot, and a
model, so that ``lrpilot bench`` runs offline on a CPU.

A :class:`Task` gives the runner everything it needs: the model, one epoch of ``(inputs, targets)`` batches,
the loss, and an evaluation ``(test loss, test metric)``; its budget (epochs of the full suite), its metric
(``accuracy``, higher is better, or ``val_loss``, lower is better) and the target for time-to-target.

* ``mnist1d-cnn``: MNIST-1D (Greydanus 2020; ``mnist1d.data.make_dataset``, generated locally, never
  downloaded), 4000 train / 1000 test sequences of length 40, the small 1-D CNN of the MNIST-1D paper.
* ``mnist1d-bncnn``: the same data, a BatchNorm CNN (bias-free convs, BN, ReLU) for the exponential-LR demo.
* ``mnist1d-resnet-bn``: the same data, a small pre-activation-free ResNet (3 residual blocks, BatchNorm after
  every conv, global average pooling): the setting of Li & Arora and of AutoDrop's CIFAR runs at CPU scale.
* ``digits-mlp``: scikit-learn's bundled 8x8 digits (1437 train / 360 test, stratified), a 2-hidden-layer MLP.
* ``mnist1d-cnn-noisy`` / ``digits-mlp-noisy``: the same tasks with 25% / 30% of the training labels flipped to
  another class (fixed, seed 0; test labels clean). Clean MNIST-1D and digits barely tell schedules apart (every
  method within the seeds' spread); with noisy labels a constant LR ends far below a decayed one (docs/bench.md
  gives the measured margins), so these are the suite's discriminating classification tasks.
* ``shakespeare-char``: character-level language modelling on tiny Shakespeare (shipped with lrpilot, 1.1 MB,
  first 90% train, last 10% validation as nanoGPT splits it), a 4-layer, 4-head, 128-dim GPT with block 64
  and batch 12; an "epoch" is 50 random batches (an evaluation window), 20 of them in the full suite (1000
  steps; nanoGPT's reference for this model is 2000 steps), the metric is the validation loss on 256 fixed
  windows (16,384 characters) of the validation split.
* ``cifar10-resnet`` (optional, not in the suites): CIFAR-10 from a local copy of the python batches
  (``LRPILOT_CIFAR10`` or ``lrpilot bench --cifar10 PATH``), ResNet-20 (He et al. 2016). Nothing is downloaded;
  a missing or incomplete directory raises ``FileNotFoundError`` naming what is missing.

This module holds the task classes and the registry :data:`TASKS`; the data loaders are in
:mod:`lrpilot.bench.datasets` and the models in :mod:`lrpilot.bench.models`. Both are re-exported here, so
``from lrpilot.bench.tasks import mnist1d_data, char_gpt`` keeps working.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .datasets import (
    CIFAR10_ENV,
    SHAKESPEARE_PATH,
    Data,
    cifar10_data,
    digits_data,
    digits_noisy_data,
    flip_labels,
    mnist1d_data,
    mnist1d_noisy_data,
    shakespeare_text,
)
from .models import (
    CharGPT,
    char_gpt,
    cifar_resnet20,
    digits_mlp,
    mnist1d_bn_cnn,
    mnist1d_cnn,
    mnist1d_resnet_bn,
)

# The loaders and models are re-exported (imported from here before they had modules of their own).
__all__ = ["CIFAR10_ENV", "SHAKESPEARE_PATH", "TASKS", "CharGPT", "ClassificationTask", "LanguageModelTask", "Task",
           "char_gpt", "cifar10_data", "cifar_resnet20", "digits_data", "digits_mlp", "digits_noisy_data",
           "evaluate_classifier", "flip_labels", "mnist1d_bn_cnn", "mnist1d_cnn", "mnist1d_data", "mnist1d_noisy_data",
           "mnist1d_resnet_bn", "shakespeare_text"]

Batch = tuple[Tensor, Tensor]


class Task(ABC):
    """A benchmark task. Subclasses set the attributes and implement the methods below.

    Attributes:
        name: registry key (``lrpilot bench --tasks``).
        model: a factory: ``model()`` is a freshly initialised model (seed before calling).
        epochs: the full suite's budget in epochs.
        target: the test metric whose first attainment time-to-target measures.
        metric: ``"accuracy"`` or ``"val_loss"``.
        higher_is_better: whether a larger metric is better.
        in_full_suite: False for tasks that need data the user provides (``cifar10-resnet``).
    """

    name: str
    model: Callable[[], nn.Module]
    epochs: int
    target: float
    metric: str
    higher_is_better: bool
    in_full_suite: bool

    @abstractmethod
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch."""

    @abstractmethod
    def epoch_batches(self, generator: torch.Generator, device: torch.device) -> Iterator[Batch]:
        """One epoch of ``(inputs, targets)`` on ``device``; the order depends only on ``generator``."""

    @abstractmethod
    def evaluate(self, model: nn.Module, device: torch.device) -> tuple[float, float]:
        """``(test loss, test metric)`` of ``model`` in eval mode (left in train mode afterwards)."""

    def check_available(self) -> None:
        """Raise (``FileNotFoundError``, ``ImportError``) naming what is missing if the task cannot load its data;
        tasks whose data is generated or shipped have nothing to check."""
        return None

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean cross-entropy (over every position for sequence outputs)."""
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    def reached(self, value: float) -> bool:
        """Whether ``value`` of the metric meets the target."""
        return value >= self.target if self.higher_is_better else value <= self.target


@torch.no_grad()
def evaluate_classifier(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``(x, y)`` in eval mode (left in train mode afterwards)."""
    model.eval()
    logits = model(x)
    model.train()
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


@lru_cache(maxsize=8)
def _to_device(data: Callable[[], Data], device: str) -> Data:
    return tuple(t.to(device) for t in data())  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class ClassificationTask(Task):
    """Classification of an in-memory data set: ``data()`` -> (x_train, y_train, x_test, y_test), ``model()``
    a factory, ``batch_size``; an epoch is one pass in a random order; the metric is test accuracy.
    ``local_data``: the data comes from a path the user provides (checked by :meth:`check_available`)."""

    name: str
    data: Callable[[], Data]
    model: Callable[[], nn.Module]
    batch_size: int
    epochs: int = 40
    target: float = 0.9
    in_full_suite: bool = True
    local_data: bool = False
    metric: str = field(default="accuracy", init=False)
    higher_is_better: bool = field(default=True, init=False)

    def check_available(self) -> None:
        if self.local_data:
            self.data()

    def steps_per_epoch(self) -> int:
        return -(-len(self.data()[0]) // self.batch_size)

    def epoch_batches(self, generator: torch.Generator, device: torch.device) -> Iterator[Batch]:
        x, y, _, _ = _to_device(self.data, str(device))
        for idx in torch.randperm(len(x), generator=generator).split(self.batch_size):
            idx = idx.to(device)
            yield x[idx], y[idx]

    def evaluate(self, model: nn.Module, device: torch.device) -> tuple[float, float]:
        _, _, x, y = _to_device(self.data, str(device))
        return evaluate_classifier(model, x, y)


@dataclass(frozen=True, eq=False)
class LanguageModelTask(Task):
    """Next-token prediction on a token stream: each step a batch of ``batch_size`` random windows of
    ``block`` tokens; an epoch is ``steps`` steps; the metric is the mean cross-entropy on ``eval_windows``
    evenly spaced, non-overlapping windows of the validation split (the same ones for every run)."""

    name: str
    text: Callable[[], tuple[Tensor, Tensor, str]]
    model: Callable[[], nn.Module]
    block: int = 64
    batch_size: int = 12
    steps: int = 50
    eval_windows: int = 256
    epochs: int = 20
    target: float = 2.0
    in_full_suite: bool = True
    metric: str = field(default="val_loss", init=False)
    higher_is_better: bool = field(default=False, init=False)

    def steps_per_epoch(self) -> int:
        return self.steps

    def _windows(self, tokens: Tensor, starts: Tensor) -> Batch:
        chunk = tokens[starts.unsqueeze(1) + torch.arange(self.block + 1, device=tokens.device)]
        return chunk[:, :-1], chunk[:, 1:]

    def epoch_batches(self, generator: torch.Generator, device: torch.device) -> Iterator[Batch]:
        train = _tokens_on(self.text, str(device))[0]
        for _ in range(self.steps):
            starts = torch.randint(len(train) - self.block, (self.batch_size,), generator=generator)
            yield self._windows(train, starts.to(device))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> tuple[float, float]:
        val = _tokens_on(self.text, str(device))[1]
        count = min(self.eval_windows, (len(val) - 1) // self.block)
        stride = (len(val) - 1 - self.block) // max(1, count - 1)
        starts = torch.arange(count, device=device) * stride
        model.eval()
        total = 0.0
        for part in starts.split(64):
            x, y = self._windows(val, part)
            total += float(self.loss(model(x), y)) * len(part)
        model.train()
        loss = total / count
        return loss, loss


@lru_cache(maxsize=4)
def _tokens_on(text: Callable[[], tuple[Tensor, Tensor, str]], device: str) -> tuple[Tensor, Tensor]:
    train, val, _ = text()
    return train.to(device), val.to(device)


TASKS: dict[str, Task] = {
    "mnist1d-cnn": ClassificationTask("mnist1d-cnn", mnist1d_data, mnist1d_cnn, batch_size=100),
    "mnist1d-bncnn": ClassificationTask("mnist1d-bncnn", mnist1d_data, mnist1d_bn_cnn, batch_size=100),
    "mnist1d-resnet-bn": ClassificationTask("mnist1d-resnet-bn", mnist1d_data, mnist1d_resnet_bn, batch_size=100),
    "digits-mlp": ClassificationTask("digits-mlp", digits_data, digits_mlp, batch_size=64, target=0.95),
    "mnist1d-cnn-noisy": ClassificationTask("mnist1d-cnn-noisy", mnist1d_noisy_data, mnist1d_cnn, batch_size=100,
                                            target=0.8),
    "digits-mlp-noisy": ClassificationTask("digits-mlp-noisy", digits_noisy_data, digits_mlp, batch_size=64,
                                           target=0.9),
    "shakespeare-char": LanguageModelTask("shakespeare-char", shakespeare_text, char_gpt),
    "cifar10-resnet": ClassificationTask("cifar10-resnet", cifar10_data, cifar_resnet20, batch_size=128, epochs=100,
                                         target=0.9, in_full_suite=False, local_data=True),
}
