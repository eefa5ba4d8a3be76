"""The benchmark's models: small networks that train on a CPU in minutes, each a factory that builds a freshly
initialised model from the global torch seed (seed before calling).

* :func:`mnist1d_cnn`: the MNIST-1D paper's small CNN. :func:`mnist1d_bn_cnn`: a BatchNorm CNN (bias-free
  convs, BN, ReLU) for the exponential-LR demo. :func:`mnist1d_resnet_bn`: a small ResNet with BatchNorm after
  every conv (the setting of Li & Arora and of AutoDrop's CIFAR runs at CPU scale).
* :func:`digits_mlp`: a 2-hidden-layer MLP for scikit-learn's digits.
* :func:`cifar_resnet20`: ResNet-20 (He et al. 2016) for CIFAR-10.
* :class:`CharGPT` / :func:`char_gpt`: a 4-layer, 4-head, 128-dim GPT in nanoGPT's shape for tiny Shakespeare.

The data sets are in :mod:`lrpilot.bench.datasets`, the tasks pairing them in :mod:`lrpilot.bench.tasks`.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .datasets import shakespeare_text

__all__ = ["CharGPT", "char_gpt", "cifar_resnet20", "digits_mlp", "mnist1d_bn_cnn", "mnist1d_cnn",
           "mnist1d_resnet_bn"]


# ------------------------------------------------------------------------------------------------ MNIST-1D
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
        cast(nn.Linear, model[-1]).weight.mul_(head_gain)
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
def digits_mlp() -> nn.Module:
    """A 64-128-128-10 ReLU MLP."""
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


# ------------------------------------------------------------------------------------------------ CIFAR-10
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
        out: Tensor = x + self.out(F.gelu(self.fc(self.ln2(x))))
        return out


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
        logits: Tensor = self.head(self.ln(x))
        return logits


def char_gpt() -> nn.Module:
    """The shakespeare-char model: 4 layers, 4 heads, 128 dims, block 64, 65-symbol vocabulary (0.80 M params)."""
    return CharGPT(len(shakespeare_text()[2]), block=64, dim=128, layers=4, heads=4)
