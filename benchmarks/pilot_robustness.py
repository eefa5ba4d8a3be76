"""Pilot's robustness to its one optional guess: ``lr=`` from 0.01x to 100x its default, side by side.

    python benchmarks/pilot_robustness.py [--methods pilot pilot-anytime] [--out benchmarks/results] [--jobs 2]

Runs ``pilot`` (and any other registered method given) on the MNIST-1D CNN (40 epochs) and the character GPT
(20 windows of 50 steps) with seed 0 at 0.01x, 0.1x, 1x, 10x and 100x its default LR (for Pilot: the start of
its estimate, default 1e-6), through the bench's runner (each run cached under ``--out/pilot_robustness/runs``),
and writes ``pilot_robustness.md`` and ``pilot_robustness.json``: per task and method, the final metric at each
guess, the spread between the best and the worst guess, and whether it is within the issue's bound (2 points
of accuracy; 5% of the validation loss).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lrpilot.bench.loop import write_json
from lrpilot.bench.methods import get_method
from lrpilot.bench.runner import Job, load_results, run_jobs
from lrpilot.bench.tasks import TASKS

FACTORS = (0.01, 0.1, 1.0, 10.0, 100.0)
TASK_NAMES = ("mnist1d-cnn", "shakespeare-char")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["pilot"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    cache = args.out / "pilot_robustness"
    jobs = [Job(task, method, get_method(method).default_lr * factor, 0, TASKS[task].epochs)
            for task in TASK_NAMES for method in args.methods for factor in FACTORS]
    start = time.perf_counter()
    run_jobs(jobs, cache, workers=args.jobs, progress=print)
    seconds = time.perf_counter() - start
    results = {(r["task"], r["method"], r["lr"]): r for r in load_results(cache, jobs)}
    rows = []
    lines = ["# Pilot: robustness to the LR guess (measured by benchmarks/pilot_robustness.py)", "",
             f"{len(jobs)} runs, seed 0, {seconds:.0f} s wall for the runs computed by the last invocation "
             f"({args.jobs} processes, 1 thread each). Final test metric at each guess of `lr=` "
             "(x the method's default); spread = worst - best (accuracy points, or % of the best loss).", "",
             "| task | method | " + " | ".join(f"{f:g}x" for f in FACTORS) + " | spread | within bound |",
             "|---|---|" + "---|" * (len(FACTORS) + 2)]
    for task in TASK_NAMES:
        lower = not TASKS[task].higher_is_better
        for method in args.methods:
            default = get_method(method).default_lr
            finals = [results[(task, method, default * f)]["records"][-1]["test_metric"] for f in FACTORS]
            best, worst = (min(finals), max(finals)) if lower else (max(finals), min(finals))
            spread = 100 * (worst - best) / best if lower else 100 * (best - worst)
            ok = spread <= (5.0 if lower else 2.0)
            shown = [f"{v:.3f}" if lower else f"{100 * v:.1f}" for v in finals]
            lines.append(f"| {task} | {method} | " + " | ".join(shown) + f" | {spread:.2f}{'%' if lower else ''} | "
                         f"{'yes' if ok else 'no'} |")
            rows.append({"task": task, "method": method, "factors": list(FACTORS), "finals": finals,
                         "spread": spread, "within_bound": ok})
    (args.out / "pilot_robustness.md").write_text("\n".join(lines) + "\n")
    write_json(args.out / "pilot_robustness.json", {"rows": rows, "seconds": seconds})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
