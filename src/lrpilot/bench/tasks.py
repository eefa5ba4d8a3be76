"""Small real tasks that run offline on a CPU: data (generated or shipped by a package) and a model.

* ``mnist1d-cnn``: MNIST-1D (Greydanus 2020; ``mnist1d.data.make_dataset``, generated locally, never
  downloaded), 4000 train / 1000 test sequences of length 40, the small 1-D CNN of the MNIST-1D paper.
* ``mnist1d-bncnn``: the same data, a BatchNorm CNN (bias-free convs, BN, ReLU) for the exponential-LR demo.
* ``digits-mlp``: scikit-learn's bundled 8x8 digits (1437 train / 360 test, stratified), a 2-hidden-layer MLP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

__all__ = ["TASKS", "Task", "digits_data", "digits_mlp", "mnist1d_bn_cnn", "mnist1d_cnn", "mnist1d_data"]

Data = tuple[Tensor, Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class Task:
    """A classification task: ``data()`` -> (x_train, y_train, x_test, y_test), a model factory, a batch size."""

    name: str
    data: Callable[[], Data]
    model: Callable[[], nn.Module]
    batch_size: int


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


TASKS: dict[str, Task] = {
    "mnist1d-cnn": Task("mnist1d-cnn", mnist1d_data, mnist1d_cnn, batch_size=100),
    "mnist1d-bncnn": Task("mnist1d-bncnn", mnist1d_data, mnist1d_bn_cnn, batch_size=100),
    "digits-mlp": Task("digits-mlp", digits_data, digits_mlp, batch_size=64),
}
