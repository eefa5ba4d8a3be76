"""The benchmark's data sets, all available offline: generated, bundled with a package, shipped with lrpilot, or
read from a local copy the user provides. Each loader is cached, returns CPU tensors and never downloads.

* :func:`mnist1d_data`: MNIST-1D (Greydanus 2020; ``mnist1d.data.make_dataset``, generated locally), 4000 train /
  1000 test sequences of length 40.
* :func:`digits_data`: scikit-learn's bundled 8x8 digits, 1437 train / 360 test (stratified), standardised.
* :func:`mnist1d_noisy_data`, :func:`digits_noisy_data`: the same data with a fixed fraction of the *training*
  labels replaced by another class (:func:`flip_labels`; 25% and 30%), the test labels clean: the noisy-label
  setting in which the LR schedule matters most (Li, Wei & Ma, "Towards explaining the regularization effect of
  initial large learning rate", NeurIPS 2019), and a common one in practice (web-scraped labels).
* :func:`cifar10_data`: CIFAR-10 from a local copy of the python batches (``$LRPILOT_CIFAR10``); a missing or
  incomplete directory raises ``FileNotFoundError`` naming what is missing.
* :func:`shakespeare_text`: tiny Shakespeare (shipped in ``bench/data/``), tokenised per character, split 90/10
  as nanoGPT splits it.

The models are in :mod:`lrpilot.bench.models`, the tasks pairing them in :mod:`lrpilot.bench.tasks`.
"""

from __future__ import annotations

import os
import pickle
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["CIFAR10_ENV", "SHAKESPEARE_PATH", "Data", "cifar10_data", "digits_data", "digits_noisy_data",
           "flip_labels", "mnist1d_data", "mnist1d_noisy_data", "shakespeare_text"]

#: ``(x_train, y_train, x_test, y_test)``.
Data = tuple[Tensor, Tensor, Tensor, Tensor]


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


# ------------------------------------------------------------------------------------------------- digits
@lru_cache(maxsize=1)
def digits_data() -> Data:
    """scikit-learn's digits, standardised per feature with train statistics, 80/20 stratified split. A pixel
    constant over the training split (four are 0 in every training image) is centred and given scale 1, as
    scikit-learn's ``StandardScaler`` does: dividing by its zero spread (plus 1e-6, as before 2026-12-02) made
    the two test images inked there inputs near 1e6."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the digits task needs scikit-learn: pip install 'lrpilot[bench]'") from err
    d = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(d.data, d.target, test_size=0.2, random_state=0, stratify=d.target)
    mean, std = x_tr.mean(0), x_tr.std(0)
    std[std == 0] = 1.0
    as_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return as_x(x_tr), torch.tensor(y_tr), as_x(x_te), torch.tensor(y_te)


# ------------------------------------------------------------------------------------------- label noise
def flip_labels(labels: Tensor, fraction: float, classes: int, seed: int = 0) -> Tensor:
    """A copy of ``labels`` in which each label, independently with probability ``fraction``, is replaced by one
    of the ``classes - 1`` *other* classes uniformly at random (symmetric label noise); the same ``seed`` gives
    the same flips. ``fraction`` must lie in [0, 1) and ``labels`` in ``0..classes-1``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    if classes < 2:
        raise ValueError(f"classes must be >= 2, got {classes!r}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(f"labels must lie in 0..{classes - 1}, got {int(labels.min())}..{int(labels.max())}")
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(labels.shape, generator=g) < fraction
    shift = torch.randint(1, classes, labels.shape, generator=g)
    return torch.where(flip, (labels + shift) % classes, labels)


#: The fractions of flipped training labels of the noisy tasks (measured to separate decayed schedules from a
#: constant LR by several times the seeds' spread; docs/bench.md).
MNIST1D_LABEL_NOISE = 0.25
DIGITS_LABEL_NOISE = 0.3


@lru_cache(maxsize=1)
def mnist1d_noisy_data() -> Data:
    """:func:`mnist1d_data` with 25% of the training labels flipped to another class (seed 0); test labels clean."""
    x, y, x_test, y_test = mnist1d_data()
    return x, flip_labels(y, MNIST1D_LABEL_NOISE, 10), x_test, y_test


@lru_cache(maxsize=1)
def digits_noisy_data() -> Data:
    """:func:`digits_data` with 30% of the training labels flipped to another class (seed 0); test labels clean."""
    x, y, x_test, y_test = digits_data()
    return x, flip_labels(y, DIGITS_LABEL_NOISE, 10), x_test, y_test


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
