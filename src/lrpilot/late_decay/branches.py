"""Decay branches: from checkpoints of one large-LR run, decay the LR at different epochs and compare.

The protocol of the authors' code (Ren, Ma & Ying, yinuoren/landscape; spec section 2.2): train once at a
large constant LR, saving checkpoints; from the checkpoint at epoch E, continue with the LR multiplied by
``factor`` (0.1 presumed) for a fixed number of epochs; compare the branches' final metrics as a function of E.
Late decay generalises better when the final test metric improves with E at equal train fit.

Usage::

    checkpoints = {}
    for epoch in range(1, 301):
        train_one_epoch(model, optimizer)
        if epoch in (25, 50, 100, 200, 300):
            checkpoints[epoch] = snapshot(model, optimizer)
    branches = decay_branches(checkpoints, build, train_one_epoch, evaluate, epochs=100)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from .._validation import check_number

__all__ = ["Branch", "decay_branches", "snapshot"]


def snapshot(model: nn.Module, optimizer: Optimizer) -> dict[str, Any]:
    """A deep copy of ``model`` and ``optimizer`` state (tensors moved to the CPU): a checkpoint to branch from."""
    def to_cpu(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return obj.detach().to("cpu", copy=True)
        if isinstance(obj, dict):
            return {k: to_cpu(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(to_cpu(v) for v in obj)
        return copy.deepcopy(obj)

    return {"model": to_cpu(model.state_dict()), "optimizer": to_cpu(optimizer.state_dict())}


@dataclass
class Branch:
    """One decayed continuation: where it branched, its per-epoch metrics, and where it ended."""

    decay_epoch: int
    history: list[dict[str, float]]
    weight_norm: float
    final_parameters: torch.Tensor | None = field(default=None, repr=False)  # flattened, CPU, if kept

    @property
    def final(self) -> dict[str, float]:
        """The metrics after the last branch epoch."""
        return self.history[-1]


def decay_branches(checkpoints: Mapping[int, Mapping[str, Any]],
                   build: Callable[[], tuple[nn.Module, Optimizer]],
                   train_epoch: Callable[[nn.Module, Optimizer, int], Any],
                   evaluate: Callable[[nn.Module], Mapping[str, float]],
                   epochs: int, factor: float = 0.1, evaluate_every: int = 0,
                   keep_parameters: bool = False) -> list[Branch]:
    """Branch off each checkpoint with every group's LR multiplied by ``factor`` and train ``epochs`` epochs.

    Args:
        checkpoints: ``{epoch: snapshot(model, optimizer)}`` of the large-LR run.
        build: returns a fresh ``(model, optimizer)`` of the same architecture and optimizer type; its
            state is replaced by the checkpoint's.
        train_epoch: ``train_epoch(model, optimizer, epoch_index)`` trains one epoch (``epoch_index`` counts
            from 0 within the branch, e.g. for seeding the batch order).
        evaluate: returns the metrics of a model (e.g. ``{"train_loss", "test_loss", "test_acc"}``).
        epochs: epochs per branch (the same for every branch).
        factor: LR multiplier at the decay, in (0, 1].
        evaluate_every: also evaluate every this many epochs (0: only at the end).
        keep_parameters: store each branch's final flattened parameters (for drawing on a PCA plane).

    Returns:
        one :class:`Branch` per checkpoint, in increasing decay epoch; the checkpoints are not modified.
    """
    if not checkpoints:
        raise ValueError("checkpoints is empty: save at least one snapshot(model, optimizer) of the large-LR run")
    check_number("epochs", epochs, low=1, integer=True)
    check_number("factor", factor, low=0, low_open=True, high=1)
    check_number("evaluate_every", evaluate_every, low=0, integer=True)
    for epoch, ckpt in checkpoints.items():
        if not isinstance(ckpt, Mapping) or not {"model", "optimizer"} <= set(ckpt):
            raise ValueError(f"checkpoint {epoch!r} must be snapshot(model, optimizer) with 'model' and 'optimizer'")
    branches = []
    for epoch in sorted(checkpoints):
        model, optimizer = build()
        model.load_state_dict(copy.deepcopy(checkpoints[epoch]["model"]))
        optimizer.load_state_dict(copy.deepcopy(checkpoints[epoch]["optimizer"]))
        for group in optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].mul_(factor)
            else:
                group["lr"] *= factor
        history = []
        for i in range(epochs):
            train_epoch(model, optimizer, i)
            if (evaluate_every and (i + 1) % evaluate_every == 0) or i == epochs - 1:
                metrics = {k: float(v) for k, v in evaluate(model).items()}
                history.append({"epoch": float(epoch + i + 1), **metrics})
        with torch.no_grad():
            params = [p.detach() for p in model.parameters() if p.requires_grad]
            norm = math.sqrt(sum(float(p.double().pow(2).sum()) for p in params))
            flat = torch.cat([p.reshape(-1).to("cpu", torch.float32) for p in params]) if keep_parameters else None
        branches.append(Branch(int(epoch), history, norm, flat))
    return branches
