"""A plain epoch loop shared by the examples and benchmarks: minibatch SGD-style training with a scheduler."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .tasks import ClassificationTask
from .tasks import evaluate_classifier as evaluate

__all__ = ["evaluate", "train"]




def train(
    task: ClassificationTask,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    make_scheduler: Callable[[torch.optim.Optimizer], Any] | None,
    epochs: int,
    seed: int = 0,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``task`` for ``epochs`` epochs and return one record per epoch.

    The scheduler, if any, is stepped once per epoch (``ReduceLROnPlateau`` gets the train loss). Each
    record has ``epoch, lr, train_loss, test_loss, test_acc, seconds`` plus, for AutoDrop, ``omega``.
    Reproducible on CPU: model init and batch order depend only on ``seed``.
    """
    if not isinstance(task, ClassificationTask):
        raise TypeError(f"train() runs classification tasks; {task.name!r} is a {type(task).__name__} "
                        "(lrpilot.bench.runner.run_job trains every task)")
    x, y, x_test, y_test = task.data()
    torch.manual_seed(seed)
    model = task.model()
    optimizer = make_optimizer(model)
    scheduler = make_scheduler(optimizer) if make_scheduler is not None else None
    order = torch.Generator().manual_seed(seed)
    records = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        total, batches = 0.0, 0
        for idx in torch.randperm(len(x), generator=order).split(task.batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            batches += 1
        train_loss = float(total) / batches
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(train_loss)
        elif scheduler is not None:
            scheduler.step()
        test_loss, test_acc = evaluate(model, x_test, y_test)
        record = {"epoch": epoch, "lr": float(lr), "train_loss": train_loss, "test_loss": test_loss,
                  "test_acc": test_acc, "seconds": time.perf_counter() - start}
        omega = getattr(scheduler, "last_omega", None)
        if getattr(scheduler, "omega_history", None) and scheduler.omega_history[-1][0] == epoch:
            record["omega"] = omega
        else:
            record["omega"] = math.nan
        records.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return records
