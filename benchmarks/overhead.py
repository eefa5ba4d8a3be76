"""Overhead micro-benchmark: step time and extra memory of lrpilot's methods relative to the plain optimizer.

    python benchmarks/overhead.py [--sizes 1e5 1e6 1e7] [--steps-per-epoch 100] [--device cpu] [--out DIR]

For MLPs (256 -> w -> w -> 10, ReLU; w chosen for about 1e5, 1e6, 1e7 parameters; batch 64) it measures, in one
process with 1 thread, each of AutoDrop on SGD and on AdamW, ActiveSGD, ActiveAdamW and Pilot (with and without a
budget) against the plain optimizer it builds on (:func:`lrpilot.bench.overhead.step_time_ratio`: the two stepped
alternately on the same batch, medians over blocks of steps, AutoDrop's per-epoch test amortised over
``--steps-per-epoch`` steps), and the extra memory: bytes of the tensors the optimizer state and the scheduler
hold beyond the plain optimizer's, as a multiple of the parameters' bytes. Then the training-step time (forward
+ backward + step) of Pilot against AdamW on the bench tasks' own models (:data:`TASK_PAIRS`). Writes
``overhead.md`` and ``overhead.json``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrpilot.bench.loop import one_thread, write_json
from lrpilot.bench.methods import get_method
from lrpilot.bench.overhead import BLOCK, step_time_ratio

PAIRS = (("autodrop-sgd", "constant"), ("active-sgd", "constant"), ("autodrop-adamw", "adamw"),
         ("active-adamw", "adamw"), ("pilot", "adamw"), ("pilot-anytime", "adamw"))


def mlp(params: float) -> nn.Module:
    """256 -> w -> w -> 10 ReLU MLP with w such that it has about ``params`` parameters."""
    w = round((-268 + math.sqrt(268**2 + 4 * (params - 10))) / 2)
    return nn.Sequential(nn.Linear(256, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 10))


def held_tensor_bytes(*roots: Any, exclude: set[int] = frozenset(), depth: int = 6) -> int:
    """Bytes of the distinct tensors reachable from ``roots`` through dicts, sequences and object attributes
    (``depth`` levels), not counting the storages in ``exclude`` (data pointers, e.g. the parameters')."""
    seen: set[int] = set(exclude)
    visited: set[int] = set()
    total = 0

    def walk(obj: Any, level: int) -> None:
        nonlocal total
        if isinstance(obj, torch.Tensor):
            ptr = obj.untyped_storage().data_ptr()
            if ptr not in seen and obj.numel():
                seen.add(ptr)
                total += obj.untyped_storage().nbytes()
            return
        if level <= 0 or id(obj) in visited or isinstance(obj, str | bytes | int | float | bool | type(None)):
            return
        visited.add(id(obj))
        if isinstance(obj, dict):
            for value in obj.values():
                walk(value, level - 1)
        elif isinstance(obj, list | tuple | set):
            for value in obj:
                walk(value, level - 1)
        elif hasattr(obj, "__dict__") and not isinstance(obj, nn.Module):
            for value in vars(obj).values():
                walk(value, level - 1)

    for root in roots:
        walk(root, depth)
    return total


def extra_memory(model: nn.Module, method: str, reference: str, batch: tuple[torch.Tensor, torch.Tensor],
                 steps_per_epoch: int) -> dict[str, float]:
    """State bytes of ``method`` and ``reference`` after two epochs' worth of steps, relative to the parameters."""
    import copy

    import torch.nn.functional as F

    out = {}
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    for name in (method, reference):
        m = copy.deepcopy(model)
        spec = get_method(name)
        built = spec.build(m, spec.default_lr, steps_per_epoch, 10_000)
        for step in range(1, 2 * steps_per_epoch + 1):
            loss = F.cross_entropy(m(batch[0]), batch[1])
            built.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            built.optimizer.step()
            if built.interval == "epoch" and step % steps_per_epoch == 0:
                built.scheduler.step()
        params = {p.untyped_storage().data_ptr() for p in m.parameters()}
        grads = {p.grad.untyped_storage().data_ptr() for p in m.parameters() if p.grad is not None}
        out[name] = held_tensor_bytes(built.optimizer.state, built.scheduler, exclude=params | grads) / param_bytes
    return {"state_x_params": out[method], "reference_state_x_params": out[reference],
            "extra_x_params": out[method] - out[reference]}


#: the bench tasks on whose own models and batches the training-step time of Pilot is measured against AdamW
TASK_PAIRS = (("mnist1d-cnn", "pilot"), ("mnist1d-cnn", "pilot-anytime"), ("mnist1d-resnet-bn", "pilot"),
              ("shakespeare-char", "pilot"), ("shakespeare-char", "pilot-anytime"))


#: training steps timed per method on each task (20 blocks of :data:`~lrpilot.bench.overhead.BLOCK`)
TASK_STEPS = 160


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    with one_thread():
        rows, seconds = measure(args.sizes, args.steps_per_epoch, args.device)
        task_rows = measure_tasks(args.device)
    write_report(rows, seconds, args.steps_per_epoch, args.device, args.out, task_rows)


def measure_tasks(device: str) -> list[dict[str, Any]]:
    """One row per :data:`TASK_PAIRS` entry: optimizer-step and training-step ratios on the task's model."""
    rows = []
    for task, method in TASK_PAIRS:
        reference = get_method(method).reference
        timing = step_time_ratio(task, method, str(reference), steps=TASK_STEPS, device=device)
        rows.append({"task": task, "method": method, "reference": reference, **timing})
        print(f"{task} {method}: train step x{timing['train_ratio']:.3f}, optimizer step x{timing['ratio']:.2f}",
              flush=True)
    return rows


def measure(sizes: list[float], steps_per_epoch: int, device: str) -> tuple[list[dict[str, Any]], float]:
    """One row per (size, pair): step-time ratio and extra memory; and the seconds it took."""
    t0 = time.perf_counter()
    rows = []
    for size in sizes:
        torch.manual_seed(0)
        model = mlp(size)
        n = sum(p.numel() for p in model.parameters())
        batch = (torch.randn(64, 256), torch.randint(0, 10, (64,)))
        for method, reference in PAIRS:
            timing = step_time_ratio("", method, reference, model=model, batch=batch,
                                     steps_per_epoch=steps_per_epoch, device=device)
            memory = extra_memory(model, method, reference, batch, min(steps_per_epoch, 20))
            rows.append({"params": n, "method": method, "reference": reference, **timing, **memory})
            print(f"{n:>10,d} params {method:15s} step x{timing['ratio']:.2f} "
                  f"({1e3 * timing['method_seconds']:.2f} vs {1e3 * timing['reference_seconds']:.2f} ms), "
                  f"state {memory['state_x_params']:.2f} vs {memory['reference_state_x_params']:.2f} x params",
                  flush=True)
    return rows, time.perf_counter() - t0


def write_report(rows: list[dict[str, Any]], seconds: float, steps_per_epoch: int, device: str, out: Path,
                 task_rows: list[dict[str, Any]] | None = None) -> None:
    """``overhead.json`` (the rows) and ``overhead.md`` (their tables) under ``out``."""
    write_json(out / "overhead.json", rows if task_rows is None else {"mlp": rows, "tasks": task_rows}, indent=1)
    lines = [f"# Overhead of lrpilot's methods vs the plain optimizer (measured by benchmarks/overhead.py, "
             f"{seconds:.0f} s, device {device}, 1 thread; per-epoch work amortised over "
             f"{steps_per_epoch} steps)\n",
             f"Step = `optimizer.step()` + scheduler; both stepped alternately on one batch of 64; per-step time = "
             f"median over blocks of {BLOCK} consecutive steps of their mean (work done every k-th step counted). "
             "State = "
             "bytes of tensors held by the optimizer state and the scheduler, as a multiple of the parameters' "
             "bytes (gradients and parameters excluded).\n",
             "| params | method | vs | step time ratio | step ms (method / plain) | state x params (method / plain) "
             "| extra memory x params |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['params']:,d} | {r['method']} | {r['reference']} | {r['ratio']:.2f} | "
                     f"{1e3 * r['method_seconds']:.3f} / {1e3 * r['reference_seconds']:.3f} | "
                     f"{r['state_x_params']:.2f} / {r['reference_state_x_params']:.2f} | {r['extra_x_params']:.2f} |")
    if task_rows:
        lines += ["", "## Training-step time on the bench tasks' models", "",
                  "Training step = forward + backward + `zero_grad` + `optimizer.step()`, timed together, both "
                  "optimizers alternately in one process on the task's training batches in the training loop's "
                  f"order (the same batch for both at each step), {TASK_STEPS} steps each "
                  f"(after 5 warm-up steps), median over blocks of {BLOCK} consecutive steps of their mean.", "",
                  "| task | method | vs | training-step ratio | training step ms (method / plain) | "
                  "optimizer-step ratio |", "|---|---|---|---|---|---|"]
        for r in task_rows:
            lines.append(f"| {r['task']} | {r['method']} | {r['reference']} | {r['train_ratio']:.3f} | "
                         f"{1e3 * r['train_method_seconds']:.2f} / {1e3 * r['train_reference_seconds']:.2f} | "
                         f"{r['ratio']:.2f} |")
    (out / "overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
