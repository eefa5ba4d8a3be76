"""Pilot from 23 to 100k optimizer steps: do its windows and decisions scale with the run?

    python benchmarks/pilot_horizons.py [--epochs 1 9 87 870 4348] [--out benchmarks/results] [--jobs 2]

Pilot's measurement windows are ``max(1, t // 20)`` steps, its anytime drops wait for the estimate to settle
(not before step 100) and for ``hold`` (4) times the step of the last decision, and its budget's warmup and
cooldown are fractions of ``total_steps``: every rule is stated in ratios of the step count, so that one rule
serves 20 and 100k steps (issue 16). This trains the digits MLP (23 optimizer steps an epoch) for 1, 9, 87, 870
and 4348 epochs -- 23, 207, 2,001, 20,010 and 100,004 steps -- with ``pilot`` (told the budget),
``pilot-anytime`` and two AdamW references at 1e-3 (constant, and cosine told the budget), seed 0, through the
bench's own loop, and writes ``pilot_horizons.md`` and ``pilot_horizons.json``: per run the final and best test
accuracy, the training loss at the end, Pilot's events as fractions of the run (settled, drops, cooldown), its
final estimate ``d`` and factor, the number of measurement windows it closed, and the optimizer step's mean time
against AdamW's at the same horizon (parallel processes on a shared CPU: rough).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from lrpilot.bench.loop import one_thread, train
from lrpilot.bench.methods import get_method
from lrpilot.bench.tasks import TASKS
from lrpilot.pilot import next_window_end

TASK = "digits-mlp"
METHODS = ("pilot", "pilot-anytime", "adamw", "adamw-cosine")
EPOCHS = (1, 9, 87, 870, 4348)


def windows_closed(steps: int) -> int:
    """How many measurement windows Pilot closes in ``steps`` steps (the first ends at step 1, each next one at
    :func:`lrpilot.pilot.next_window_end` of the last)."""
    count, end = 0, 1
    while end <= steps:
        count += 1
        end = next_window_end(end)
    return count


def run(method: str, epochs: int, flush_denormal: bool = False) -> dict[str, Any]:
    """One run of ``method`` on the digits MLP for ``epochs`` epochs, seed 0, with Pilot's decisions;
    ``flush_denormal``: with ``torch.set_flush_denormal(True)`` (subnormal floats read as 0 on this CPU)."""
    torch.set_flush_denormal(flush_denormal)
    with one_thread():
        task = TASKS[TASK]
        spec = get_method(method)
        spe = task.steps_per_epoch()
        out = train(task, lambda model: spec.build(model, spec.default_lr, spe, epochs), epochs, seed=0)
    result = out.result
    records = result["records"]
    steps = result["steps"]
    row: dict[str, Any] = {"method": method, "epochs": epochs, "steps": steps, "flush_denormal": flush_denormal,
                           "final": records[-1]["test_metric"], "best": max(r["test_metric"] for r in records),
                           "train_loss": records[-1]["train_loss"], "seconds": result["seconds"],
                           "step_seconds_mean": result["step_seconds_mean"]}
    opt = out.built.optimizer
    if hasattr(opt, "events"):
        row["events"] = [{"kind": e.kind, "step": e.step, "fraction": e.step / steps, "value": e.value}
                         for e in opt.events if e.kind in ("settled", "drop", "cooldown", "skip")]
        row["d"], row["factor"], row["windows"] = opt.d, opt.factor, windows_closed(steps)
    return row


def _events(row: dict[str, Any], kind: str) -> str:
    found = [f"{e['step']} ({e['fraction']:.2f})" for e in row.get("events", []) if e["kind"] == kind]
    return ", ".join(found) if found else "-"


def report(rows: list[dict[str, Any]], seconds: float, jobs: int, flush_denormal: bool = False) -> str:
    by = {(r["method"], r["epochs"]): r for r in rows}
    epochs = sorted({r["epochs"] for r in rows})
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    lines = ["# Pilot from 23 to 100k steps (measured by benchmarks/pilot_horizons.py)", "",
             f"The digits MLP ({TASKS[TASK].steps_per_epoch()} optimizer steps an epoch), seed 0, each method at its "
             f"bench default, {len(rows)} runs in {seconds:.0f} s wall ({jobs} processes, 1 thread each"
             f"{'; torch.set_flush_denormal(True)' if flush_denormal else ''}). Final test "
             "accuracy % (best epoch's in brackets):", "",
             "| steps | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for ep in epochs:
        steps = next(r["steps"] for r in rows if r["epochs"] == ep)
        cells = [f"{100 * by[(m, ep)]['final']:.1f} ({100 * by[(m, ep)]['best']:.1f})" if (m, ep) in by else "-"
                 for m in methods]
        lines.append(f"| {steps:,} | " + " | ".join(cells) + " |")
    lines += ["", "Pilot's decisions: the step of each event (its fraction of the run in brackets), the estimate "
              "`d` and the factor at the end, the measurement windows closed, and the optimizer step's mean time "
              "against AdamW's (constant) at the same horizon:", "",
              "| method | steps | settled | drops | cooldown | final d | final factor | windows | step time vs AdamW |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m in ("pilot", "pilot-anytime"):
        for ep in epochs:
            r = by.get((m, ep))
            if r is None:
                continue
            base = by.get(("adamw", ep))
            ratio = f"{r['step_seconds_mean'] / base['step_seconds_mean']:.2f}x" if base else "-"
            lines.append(f"| {m} | {r['steps']:,} | {_events(r, 'settled')} | {_events(r, 'drop')} | "
                         f"{_events(r, 'cooldown')} | {r['d']:.3g} | {r['factor']:.3g} | {r['windows']} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", nargs="+", type=int, default=list(EPOCHS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--flush-denormal", action="store_true",
                        help="train with torch.set_flush_denormal(True); writes pilot_horizons_flush.{md,json}")
    args = parser.parse_args()
    todo = sorted(((m, e) for m in args.methods for e in args.epochs), key=lambda me: -me[1])  # longest first
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run, *zip(*todo, strict=True), [args.flush_denormal] * len(todo)))
    seconds = time.perf_counter() - start
    rows.sort(key=lambda r: (METHODS.index(r["method"]) if r["method"] in METHODS else 99, r["epochs"]))
    args.out.mkdir(parents=True, exist_ok=True)
    name = "pilot_horizons_flush" if args.flush_denormal else "pilot_horizons"
    (args.out / f"{name}.json").write_text(json.dumps({"task": TASK, "seconds": seconds, "runs": rows}, indent=1))
    text = report(rows, seconds, args.jobs, args.flush_denormal)
    (args.out / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
