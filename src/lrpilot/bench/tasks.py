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
* ``shakespeare-char``: character-level language modelling on tiny Shakespeare (shipped with lrpilot, 1.1 MB,
  first 90% train, last 10% validation as nanoGPT splits it), a 4-layer, 4-head, 128-dim GPT with block 64
  and batch 12; an "epoch" is 50 random batches (an evaluation window), 20 of them in the full suite (1000
  steps; nanoGPT's reference for this model is 2000 steps), the metric is the validation loss on 256 fixed
  windows (16,384 characters) of the validation split.
* ``cifar10-resnet`` (optional, not in the suites): CIFAR-10 from a local copy of the python batches
  (``LRPILOT_CIFAR10`` or ``lrpilot bench --cifar10 PATH``), ResNet-20 (He et al. 2016). Nothing is downloaded;
  a missing or incomplete directory raises ``FileNotFoundError`` naming what is missing.
"""

from __future__ import annotations

import os
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CIFAR10_ENV", "TASKS", "ClassificationTask", "LanguageModelTask", "Task", "char_gpt", "cifar10_data",
           "cifar_resnet20", "digits_data", "digits_mlp", "evaluate_classifier", "mnist1d_bn_cnn", "mnist1d_cnn",
           "mnist1d_data", "mnist1d_resnet_bn", "shakespeare_text"]

Data = tuple[Tensor, Tensor, Tensor, Tensor]
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

    @abstractmethod
    def example_batch(self) -> Batch:
        """One training batch (CPU), for step-time measurements."""

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

    def example_batch(self) -> Batch:
        x, y, _, _ = self.data()
        return x[: self.batch_size], y[: self.batch_size]


# ------------------------------------------------------------------------------------------------ MNIST-1D
@lru_cache(maxsize=1)
def mnist1d_data() -> Data:
    """MNIST-1D with its default arguments (seed 42): generated in ~2 s, no download."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the mnist1d task needs the 'mnist1d' package: pip install 'lrpilot[bench]'") from err
    d = make_dataset(get_dataset_args())
    as_x = lambda a: torch.tensor(a, dtype=torch.float32).unsqueeze(1)  # noqa: E731
    return as_x(d["x"]), torch.tensor(d["y"]), as_x(d["x_test"]), torch.tensor(d["y_test"])


def mnist1d_cnn() -> nn.Module:
    """The MNIST-1D paper's small CNN: three stride-2 conv layers of 25 channels and a linear head (5,935 params)."""
    return nn.Sequential(
        nn.Conv1d(1, 25, 5, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(125, 10),
    )


def mnist1d_bn_cnn(eps: float = 1e-5, width: int = 64, head_gain: float = 1.0) -> nn.Module:
    """A BatchNorm CNN for MNIST-1D: three stride-2 bias-free convs of ``width`` channels, each followed by
    BatchNorm (``eps``) and ReLU, and a linear head whose initial weights are multiplied by ``head_gain``
    (28,490 params at width 64, 24,896 in the convs). With :func:`lrpilot.make_scale_invariant` (BN affine
    and head frozen) the loss is invariant to scaling each conv, as the exponential-LR equivalence needs;
    the frozen head's scale then sets the logits' temperature, hence ``head_gain``."""
    model = nn.Sequential(
        nn.Conv1d(1, width, 5, stride=2, padding=1, bias=False), nn.BatchNorm1d(width, eps=eps), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm1d(width, eps=eps), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm1d(width, eps=eps), nn.ReLU(),
        nn.Flatten(), nn.Linear(5 * width, 10),
    )
    with torch.no_grad():
        model[-1].weight.mul_(head_gain)
    return model


class _BasicBlock(nn.Module):
    """He et al.'s basic residual block: conv-BN-ReLU-conv-BN plus the (1x1 conv-BN when the shape changes)
    shortcut, then ReLU. Every conv is bias-free and followed by BatchNorm, so each is scale-invariant."""

    def __init__(self, cin: int, cout: int, stride: int, conv: type[nn.Conv1d] | type[nn.Conv2d],
                 norm: type[nn.BatchNorm1d] | type[nn.BatchNorm2d]) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv(cin, cout, 3, stride, 1, bias=False), norm(cout)
        self.conv2, self.bn2 = conv(cout, cout, 3, 1, 1, bias=False), norm(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride, bias=False), norm(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def mnist1d_resnet_bn(width: int = 16) -> nn.Module:
    """A small ResNet for MNIST-1D: a conv-BN-ReLU stem of ``width`` channels, three basic blocks (``width``,
    then ``2 width`` at stride 2 twice), global average pooling and a linear head (14,682 params at width 16)."""
    w = width
    return nn.Sequential(
        nn.Conv1d(1, w, 3, 1, 1, bias=False), nn.BatchNorm1d(w), nn.ReLU(),
        _BasicBlock(w, w, 1, nn.Conv1d, nn.BatchNorm1d),
        _BasicBlock(w, 2 * w, 2, nn.Conv1d, nn.BatchNorm1d),
        _BasicBlock(2 * w, 2 * w, 2, nn.Conv1d, nn.BatchNorm1d),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(2 * w, 10),
    )


# ------------------------------------------------------------------------------------------------- digits
@lru_cache(maxsize=1)
def digits_data() -> Data:
    """scikit-learn's digits, standardised per feature with train statistics, 80/20 stratified split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the digits task needs scikit-learn: pip install 'lrpilot[bench]'") from err
    d = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(d.data, d.target, test_size=0.2, random_state=0, stratify=d.target)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    as_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return as_x(x_tr), torch.tensor(y_tr), as_x(x_te), torch.tensor(y_te)


def digits_mlp() -> nn.Module:
    """A 64-128-128-10 ReLU MLP."""
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


# ------------------------------------------------------------------------------------------------ CIFAR-10
#: The environment variable holding the directory of CIFAR-10's python batches (``cifar-10-batches-py``).
CIFAR10_ENV = "LRPILOT_CIFAR10"
_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def cifar10_data(path: str | os.PathLike[str] | None = None) -> Data:
    """CIFAR-10 from the python batches under ``path`` (default: ``$LRPILOT_CIFAR10``), normalised per channel;
    50000 train / 10000 test images as float32 ``N x 3 x 32 x 32``. Never downloads: a missing directory or
    batch raises ``FileNotFoundError`` saying which and where to get them."""
    where = path if path is not None else os.environ.get(CIFAR10_ENV)
    if not where:
        raise FileNotFoundError(
            f"cifar10-resnet needs a local copy of CIFAR-10's python batches: set {CIFAR10_ENV}=/path/to/"
            "cifar-10-batches-py or pass `lrpilot bench --cifar10 PATH` (the directory extracted from "
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz; lrpilot never downloads it)")
    return _cifar10_cached(str(Path(where).expanduser().resolve()))


@lru_cache(maxsize=1)
def _cifar10_cached(where: str) -> Data:
    root = Path(where)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    missing = [name for name in _CIFAR_FILES if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 directory {root} is missing {', '.join(missing)} (expected the python "
                                f"batches {', '.join(_CIFAR_FILES)} of cifar-10-python.tar.gz)")

    def load(names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        xs, ys = [], []
        for name in names:
            with (root / name).open("rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            try:
                xs.append(torch.as_tensor(batch[b"data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
                ys.append(torch.as_tensor(batch[b"labels"], dtype=torch.long))
            except (KeyError, RuntimeError, TypeError) as err:
                raise ValueError(f"{root / name} is not a CIFAR-10 python batch (needs b'data' N x 3072 uint8 and "
                                 f"b'labels'): {err}") from err
        x = torch.cat(xs).float().div_(255)
        mean, std = torch.tensor(_CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(_CIFAR_STD).view(1, 3, 1, 1)
        return (x - mean) / std, torch.cat(ys)

    x_train, y_train = load(_CIFAR_FILES[:5])
    x_test, y_test = load(_CIFAR_FILES[5:])
    return x_train, y_train, x_test, y_test


def cifar_resnet20() -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2016, section 4.2): 3 stages of 3 basic blocks with 16/32/64 channels,
    1x1-conv projection shortcuts, global average pooling (0.27 M params)."""
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(_BasicBlock(cin, cout, stride if i == 0 else 1, nn.Conv2d, nn.BatchNorm2d))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------------- tiny Shakespeare
#: Tiny Shakespeare (Karpathy's char-rnn corpus, 1,115,394 characters), shipped inside the package.
SHAKESPEARE_PATH = Path(__file__).with_name("data") / "tinyshakespeare.txt"


@lru_cache(maxsize=1)
def shakespeare_text() -> tuple[Tensor, Tensor, str]:
    """(train tokens, validation tokens, vocabulary): characters sorted into a 65-symbol vocabulary, the first
    90% of the text for training and the rest for validation (nanoGPT's ``shakespeare_char`` split)."""
    if not SHAKESPEARE_PATH.is_file():
        raise FileNotFoundError(f"tiny Shakespeare is missing from the installation ({SHAKESPEARE_PATH}); "
                                "reinstall lrpilot")
    text = SHAKESPEARE_PATH.read_text(encoding="utf-8")
    vocab = "".join(sorted(set(text)))
    lookup = {ch: i for i, ch in enumerate(vocab)}
    tokens = torch.tensor([lookup[ch] for ch in text], dtype=torch.long)
    n = int(0.9 * len(tokens))
    return tokens[:n], tokens[n:], vocab


class _GPTBlock(nn.Module):
    """Pre-LayerNorm transformer block: causal multi-head self-attention and a 4x GELU MLP, bias-free."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim, bias=False), nn.LayerNorm(dim, bias=False)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.fc, self.out = nn.Linear(dim, 4 * dim, bias=False), nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in self.qkv(self.ln1(x)).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class CharGPT(nn.Module):
    """A GPT in nanoGPT's shape: token + learned position embeddings, ``layers`` pre-LN blocks, a final
    LayerNorm and a head tied to the token embedding; no dropout, no biases. Weights initialised as nanoGPT
    does (normal 0.02, residual projections 0.02 / sqrt(2 layers))."""

    def __init__(self, vocab: int, block: int = 64, dim: int = 128, layers: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(block, dim)
        self.blocks = nn.ModuleList(_GPTBlock(dim, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(dim, bias=False)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.tok.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / (2 * layers) ** 0.5 if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: Tensor) -> Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def char_gpt() -> nn.Module:
    """The shakespeare-char model: 4 layers, 4 heads, 128 dims, block 64, 65-symbol vocabulary (0.80 M params)."""
    return CharGPT(len(shakespeare_text()[2]), block=64, dim=128, layers=4, heads=4)


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

    def example_batch(self) -> Batch:
        train = self.text()[0]
        return self._windows(train, torch.arange(self.batch_size) * self.block)


@lru_cache(maxsize=4)
def _tokens_on(text: Callable[[], tuple[Tensor, Tensor, str]], device: str) -> tuple[Tensor, Tensor]:
    train, val, _ = text()
    return train.to(device), val.to(device)


TASKS: dict[str, Task] = {
    "mnist1d-cnn": ClassificationTask("mnist1d-cnn", mnist1d_data, mnist1d_cnn, batch_size=100),
    "mnist1d-bncnn": ClassificationTask("mnist1d-bncnn", mnist1d_data, mnist1d_bn_cnn, batch_size=100),
    "mnist1d-resnet-bn": ClassificationTask("mnist1d-resnet-bn", mnist1d_data, mnist1d_resnet_bn, batch_size=100),
    "digits-mlp": ClassificationTask("digits-mlp", digits_data, digits_mlp, batch_size=64, target=0.95),
    "shakespeare-char": LanguageModelTask("shakespeare-char", shakespeare_text, char_gpt),
    "cifar10-resnet": ClassificationTask("cifar10-resnet", cifar10_data, cifar_resnet20, batch_size=128, epochs=100,
                                         target=0.9, in_full_suite=False, local_data=True),
}
