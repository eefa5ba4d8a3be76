"""The one training loop: ``lrpilot bench``, the studies under ``benchmarks/`` and the examples all train with it.

:func:`train` runs a :class:`~lrpilot.bench.methods.Built` (optimizer, scheduler, when the scheduler steps) on a
task for a number of epochs and returns a result dict with one record per epoch (:data:`RECORD_FIELDS`):

* ``train_loss`` (mean over the epoch's batches), ``test_loss`` and ``test_metric`` (the task's metric:
  accuracy, or validation loss for language modelling), ``lr`` (first param group) and ``effective_lr``
  (:func:`lrpilot.telemetry.effective_lrs`, first group's mean), both read after the epoch's optimizer steps and
  before the per-epoch scheduler step;
* ``omega``: the angular velocity the scheduler measured this epoch
  (:func:`lrpilot.telemetry.scheduler_metrics`' ``autodrop/omega``), None when it measured none;
* ``seconds`` since the start and ``step_seconds``: the cumulated time of :func:`timed_step`.

The helpers the runner, the overhead measurement and the studies share live here too: :func:`timed_step` (one
optimizer step plus the per-step scheduler step, timed), :func:`one_thread` (pin torch to one thread, as the
worker processes are) and :func:`write_json` (atomic: temp file + ``os.replace``). :func:`upgrade_record`
reads a record of the studies' former format (``test_acc``, ``omega`` NaN when not measured).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from lrpilot.telemetry import effective_lrs, lr_value, scheduler_metrics

from .methods import Built
from .tasks import Task

__all__ = ["RECORD_FIELDS", "Run", "one_thread", "sync_device", "timed_step", "train", "upgrade_record", "write_json"]

#: The keys of one per-epoch record.
RECORD_FIELDS = ("epoch", "train_loss", "test_loss", "test_metric", "lr", "effective_lr", "omega", "seconds",
                 "step_seconds")


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a timing counts it where it belongs."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(built: Built, device: torch.device) -> float:
    """Seconds of ``built.optimizer.step()`` plus, for a per-step schedule, ``built.scheduler.step()`` (the device
    synchronised before and after, so that a GPU's queued work is counted where it belongs)."""
    sync_device(device)
    t0 = time.perf_counter()
    built.optimizer.step()
    if built.interval == "step":
        built.scheduler.step()
    sync_device(device)
    return time.perf_counter() - t0


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(1)`` (as in the worker processes: comparable timings, no
    oversubscription), restoring the previous thread count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write_json(path: Path, obj: Any, **dumps: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a temp file then ``os.replace``): an interrupted write never
    leaves a half file behind, and a reader never sees one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, **dumps))
    os.replace(tmp, path)


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """A per-epoch record in this module's format: the studies' former records (``bench/train.py``: ``test_acc``,
    ``omega`` NaN when not measured) are converted (``test_metric``, ``omega`` None); others are returned as is."""
    if "test_metric" in record or "test_acc" not in record:
        return record
    out = {("test_metric" if k == "test_acc" else k): v for k, v in record.items()}
    omega = out.get("omega")
    if isinstance(omega, float) and math.isnan(omega):
        out["omega"] = None
    return out


@dataclass
class Run:
    """What :func:`train` returns: the ``result`` dict (module docstring), and the trained ``model`` and ``built``
    (a study reads its scheduler's own attributes, e.g. AutoDrop's ``saturation_epochs``)."""

    result: dict[str, Any]
    model: nn.Module
    built: Built


def train(task: Task, build: Callable[[nn.Module], Built], epochs: int, seed: int = 0, *, device: str = "cpu",
          model: Callable[[], nn.Module] | None = None, stop_on_divergence: bool = True,
          on_epoch: Callable[[dict[str, Any], Built], None] | None = None) -> Run:
    """Train ``task``'s model (or ``model()``), built into an optimizer and scheduler by ``build``, for ``epochs``
    epochs; reproducible on CPU: the initial weights and the batch order depend only on ``seed``.

    The scheduler steps per ``built.interval``: after every optimizer step, after every epoch, or after every epoch
    with the train loss (``"plateau"``); a schedule-free optimizer is switched to ``train()``/``eval()`` around
    evaluation. A non-finite train loss marks the run ``diverged``; with ``stop_on_divergence`` it stops there
    (that epoch's scheduler step skipped), otherwise it goes on. ``on_epoch(record, built)`` may add keys to each
    record as it is made. The result: ``metric, device, records, diverged, seconds, steps, step_seconds_mean,
    params``, and for AutoDrop ``drop_epochs`` and ``omega_history``.
    """
    dev = torch.device(device)
    torch.manual_seed(seed)
    net = (model or task.model)().to(dev)
    built = build(net)
    opt, sched = built.optimizer, built.scheduler
    order = torch.Generator().manual_seed(seed)
    records: list[dict[str, Any]] = []
    step_seconds, steps, diverged = 0.0, 0, False
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        net.train()
        if built.schedule_free:
            cast(Any, opt).train()  # schedule-free optimizers switch their weights
        total = torch.zeros((), device=dev)
        batches = 0
        for inputs, targets in task.epoch_batches(order, dev):
            loss = task.loss(net(inputs), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            step_seconds += timed_step(built, dev)
            steps += 1
            total += loss.detach()
            batches += 1
        train_loss = float(total) / batches
        lr = lr_value(opt.param_groups[0]["lr"])
        eff = effective_lrs(opt)[0].mean
        stepped = built.interval in ("epoch", "plateau")
        if not math.isfinite(train_loss):
            diverged = True
            stepped = stepped and not stop_on_divergence
        if stepped and built.interval == "plateau":
            sched.step(train_loss)
        elif stepped:
            sched.step()
        if built.schedule_free:
            cast(Any, opt).eval()
        test_loss, test_metric = task.evaluate(net, dev)
        omega = scheduler_metrics(sched).get("autodrop/omega") if stepped else None
        record = {"epoch": epoch, "train_loss": train_loss, "test_loss": test_loss, "test_metric": test_metric,
                  "lr": lr, "effective_lr": eff, "omega": omega, "seconds": time.perf_counter() - start,
                  "step_seconds": step_seconds}
        if on_epoch is not None:
            on_epoch(record, built)
        records.append(record)
        if diverged and stop_on_divergence:
            break
    result: dict[str, Any] = {"metric": task.metric, "device": str(dev), "records": records, "diverged": diverged,
                              "seconds": time.perf_counter() - start, "steps": steps,
                              "step_seconds_mean": step_seconds / max(1, steps),
                              "params": sum(p.numel() for p in net.parameters())}
    if hasattr(sched, "drop_epochs"):
        result["drop_epochs"] = list(sched.drop_epochs)
        result["omega_history"] = [list(h) for h in sched.omega_history]
    return Run(result, net, built)
