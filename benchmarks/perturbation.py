"""How much of a task's result is float-level chaos: the same runs with the training inputs perturbed by 1e-6.

    python benchmarks/perturbation.py [--task digits-mlp-noisy] [--methods pilot pilot-anytime ...]
        [--seeds 3] [--perturbations 5] [--scale 1e-6] [--epochs N] [--out benchmarks/results] [--jobs 2]

Trains each method (at its default LR, the bench's build) on a classification task with seeds ``0..seeds-1``, once
on the task's own data (perturbation 0: the bench's run, bit for bit on the same CPU) and once for each of
``perturbations - 1`` copies of it whose training inputs are multiplied elementwise by ``1 + scale * N(0, 1)`` (a
fixed generator per perturbation; labels and test set untouched). A relative change of 1e-6 is below anything a
user would call a different data set, about what a different CPU, thread count or kernel does to the same
computation over a run, so the spread of a method's 3-seed mean over the perturbations is the part of a suite's
figure that no re-run with the same seeds can pin down. Writes ``perturbation_<task>.md`` and ``.json`` under
``--out``: per method the 3-seed mean at each perturbation, their mean, range and standard deviation, and the gap
to the best method at the same perturbation (mean and range). Runs in ``--jobs`` processes of 1 thread each, as the
bench.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from functools import lru_cache
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import torch

from lrpilot.bench.datasets import Data
from lrpilot.bench.loop import one_thread, write_json
from lrpilot.bench.methods import get_method
from lrpilot.bench.runner import Job, run_job
from lrpilot.bench.tasks import TASKS, ClassificationTask

METHODS = ("pilot", "pilot-anytime", "active-adamw", "prodigy", "dog", "adamw-cosine")


@dataclasses.dataclass(frozen=True)
class PerturbedData:
    """``data()`` with the training inputs multiplied by ``1 + scale * N(0, 1)`` (generator seeded with
    ``perturbation``); perturbation 0 is ``data()`` itself. Hashable, so the task's device cache keys on it."""

    data: Any
    perturbation: int
    scale: float

    def __call__(self) -> Data:
        return _perturbed(self.data, self.perturbation, self.scale)


@lru_cache(maxsize=16)
def _perturbed(data: Any, perturbation: int, scale: float) -> Data:
    x, y, x_test, y_test = data()
    if perturbation == 0:
        return x, y, x_test, y_test
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(perturbation), dtype=x.dtype)
    return x * (1 + scale * noise), y, x_test, y_test


def perturbed_task(name: str, perturbation: int, scale: float) -> ClassificationTask:
    """The bench task ``name`` with :class:`PerturbedData`; only classification tasks hold inputs to perturb."""
    task = TASKS.get(name)
    if not isinstance(task, ClassificationTask):
        kinds = sorted(n for n, t in TASKS.items() if isinstance(t, ClassificationTask))
        raise ValueError(f"--task must be a classification task of the bench ({', '.join(kinds)}), got {name!r}")
    return dataclasses.replace(task, data=PerturbedData(task.data, perturbation, scale))


def final_metric(args: tuple[str, str, int, int, float, int]) -> float:
    """The final test metric of one run: (task, method, perturbation, seed, scale, epochs)."""
    name, method, perturbation, seed, scale, epochs = args
    job = Job(name, method, get_method(method).default_lr, seed, epochs)
    with one_thread():
        result = run_job(job, task=perturbed_task(name, perturbation, scale))
    return float(result["records"][-1]["test_metric"])


def summarise(means: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Per method: its per-perturbation means, their mean / min / max / sd, and its gap (points) to the best
    method at each perturbation (mean, min, max)."""
    count = len(next(iter(means.values())))
    best = [max(m[k] for m in means.values()) for k in range(count)]
    out = {}
    for method, values in means.items():
        gaps = [100 * (b - v) for b, v in zip(best, values)]
        out[method] = {"means": values, "mean": statistics.mean(values), "min": min(values), "max": max(values),
                       "sd": statistics.stdev(values) if count > 1 else 0.0, "gaps": gaps,
                       "gap_mean": statistics.mean(gaps), "gap_min": min(gaps), "gap_max": max(gaps)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="digits-mlp-noisy")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--perturbations", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1e-6)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if args.seeds < 1 or args.perturbations < 1:
        parser.error(f"--seeds and --perturbations must be >= 1, got {args.seeds} and {args.perturbations}")
    for method in args.methods:
        get_method(method)  # an unknown name fails here, not in a worker
    epochs = args.epochs or perturbed_task(args.task, 0, args.scale).epochs
    runs = [(args.task, m, k, s, args.scale, epochs) for m in args.methods for k in range(args.perturbations)
            for s in range(args.seeds)]
    start = time.perf_counter()
    if args.jobs > 1:
        with Pool(args.jobs) as pool:
            finals = pool.map(final_metric, runs)
    else:
        finals = [final_metric(r) for r in runs]
    seconds = time.perf_counter() - start
    per_run = dict(zip(runs, finals))
    means = {m: [statistics.mean(per_run[(args.task, m, k, s, args.scale, epochs)] for s in range(args.seeds))
                 for k in range(args.perturbations)] for m in args.methods}
    summary = summarise(means)
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = [f"# Float-level chaos on {args.task} (measured by benchmarks/perturbation.py)", "",
             f"{len(runs)} runs ({epochs} epochs, seeds 0-{args.seeds - 1}), {seconds:.0f} s wall on {args.jobs} "
             f"process(es) of 1 thread. Final test accuracy %, mean over the seeds, with the training inputs "
             f"multiplied by 1 + {args.scale:g} N(0, 1) (perturbation 0: the task's own data, the bench's run on "
             "the same CPU); "
             "gap: points behind the best method at the same perturbation.", "",
             "| method | " + " | ".join(f"p{k}" for k in range(args.perturbations))
             + " | mean | range | sd | gap mean | gap range |",
             "|---|" + "---|" * (args.perturbations + 5)]
    for method, row in sorted(summary.items(), key=lambda item: item[1]["gap_mean"]):
        lines.append(f"| {method} | " + " | ".join(pct(v) for v in row["means"])
                     + f" | {pct(row['mean'])} | {pct(row['min'])}-{pct(row['max'])} | {100 * row['sd']:.1f} | "
                     f"{row['gap_mean']:.1f} | {row['gap_min']:.1f}-{row['gap_max']:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"perturbation_{args.task}.md").write_text("\n".join(lines) + "\n")
    write_json(args.out / f"perturbation_{args.task}.json",
               {"task": args.task, "epochs": epochs, "seeds": args.seeds, "scale": args.scale, "seconds": seconds,
                "finals": [[*r, f] for r, f in per_run.items()], "summary": summary})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
