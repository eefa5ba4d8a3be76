"""Rebuild a bench results directory's run cache from its committed curves.csv and summary.json.

    python benchmarks/restore_runs.py benchmarks/results/bench_full --out /tmp/bench_full
        [--exclude-methods pilot pilot-anytime] [--origin TEXT]

``lrpilot bench`` caches one JSON per training run under ``DIR/runs/<key>.json``; only the report made from them
(``report.md``, ``curves.csv``, ``summary.json``, the figures) is committed. To re-train a few methods and
re-report the whole suite, rebuild the cache of the other runs first, then run the same bench command into it:

    python benchmarks/restore_runs.py benchmarks/results/bench_full --out /tmp/bench_full \\
        --exclude-methods pilot pilot-anytime
    lrpilot bench --suite full --out /tmp/bench_full --jobs 2   # trains pilot and pilot-anytime only

The script writes ``OUT/runs/<key>.json`` (the key of :class:`lrpilot.bench.runner.Job`, its budget from the
report's per-task statistics) for every run in ``curves.csv`` whose method is not excluded, and
``OUT/overhead/<task>__<method>__<device>.json`` for every step-time ratio of ``summary.json`` (so that the bench
does not re-measure them; an excluded method's ratios are left to be measured again). It never overwrites a file
that exists (a re-trained run wins), and prints how many files it wrote and kept. Every restored file carries
``"restored_from"``: the origin (``--origin``; default ``<results dir> at commit <git short hash of HEAD>``, with
``+dirty`` when the results directory differs from HEAD), which the report counts and names in its notes. An
excluded method that is not in ``curves.csv`` is an error (a misspelt name would restore the runs meant to be
re-trained, and the bench would then train nothing).

What each restored run holds, and where from:

* ``task, method, lr, seed``, ``metric`` and every per-epoch record (``epoch, train_loss, test_loss, test_metric,
  lr, effective_lr, omega, seconds, step_seconds``): ``curves.csv``, exact (Python's float repr round-trips);
* ``epochs`` (the budget, not the records: a diverged run stops early): the budget of the method's default-LR runs
  in ``summary.json``'s ``per_task`` (the sweep runs of a suite share it);
* ``diverged``: a non-finite train loss in the records (the loop stops there), checked against the statistics;
* ``seconds``, ``step_seconds_mean`` and AutoDrop's ``drop_epochs``: ``per_task`` for the runs it covers (the
  default-LR runs); for the others (the LR sweep) ``seconds`` is the last record's (within milliseconds of the
  run's own) and ``step_seconds_mean`` the last record's cumulated step time over ``steps``;
* ``steps``: the epochs run x the task's steps per epoch, found from its default-LR runs (cumulated step time /
  mean step time / epochs);
* ``device``: ``--device`` of the command in the provenance (``cpu`` without one);
* ``omega_history`` of the default-LR AutoDrop runs: the records' finite ``omega``, as (epoch, omega); it is the
  scheduler's whole history when AutoDrop measures once per epoch, as in the bench (a non-finite angle, or a
  measurement within an epoch that a later one replaced, is not in the records).

Not recoverable, left out: ``params`` (not in the committed files; the report does not read it), and the LR-sweep
runs' ``drop_epochs`` and ``omega_history`` (not in ``summary.json``; LR changes miss a drop at the last epoch).
The report reads neither: it takes drop epochs and the ω figure from the default-LR runs only. A restored
overhead file holds ``task, method, reference, device, ratio`` (the bench reads ``ratio``), not the per-step
times of the measurement.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrpilot.bench.loop import write_json
from lrpilot.bench.methods import METHODS
from lrpilot.bench.overhead import overhead_path
from lrpilot.bench.runner import Job, result_path

Result = dict[str, Any]


class RestoreError(ValueError):
    """The results directory cannot be restored as asked (missing or inconsistent files, unknown excluded
    method)."""


def default_origin(results: Path) -> str:
    """``<results dir> at commit <short hash>``: the directory relative to its git work tree and HEAD's short hash,
    ``+dirty`` when the directory differs from HEAD; without git, the directory alone."""
    results = Path(results).resolve()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(results), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel"))
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.CalledProcessError):
        return str(results)
    try:
        shown = str(results.relative_to(top.resolve()))
    except ValueError:
        shown = str(results)
    return f"{shown} at commit {commit}{'+dirty' if dirty else ''}"


def _device(summary: dict[str, Any]) -> str:
    """The ``--device`` of the bench command recorded in the provenance, else ``cpu``."""
    words = shlex.split(str((summary.get("provenance") or {}).get("command", "")))
    for i, word in enumerate(words):
        if word == "--device" and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--device="):
            return word.split("=", 1)[1]
    return "cpu"


def _read_curves(path: Path) -> dict[tuple[str, str, float, int], tuple[str, list[dict[str, Any]]]]:
    """(task, method, lr, seed) -> (metric, records in epoch order), from a report's ``curves.csv``."""
    runs: dict[tuple[str, str, float, int], tuple[str, list[dict[str, Any]]]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            key = (row["task"], row["method"], float(row["lr"]), int(row["seed"]))
            record = {"epoch": int(row["epoch"]), "train_loss": float(row["train_loss"]),
                      "test_loss": float(row["test_loss"]), "test_metric": float(row["test_metric"]),
                      "lr": float(row["lr_group0"]), "effective_lr": float(row["effective_lr"]),
                      "omega": float(row["omega"]) if row["omega"] != "" else None,
                      "seconds": float(row["seconds"]), "step_seconds": float(row["step_seconds"])}
            _, records = runs.setdefault(key, (row["metric"], []))
            records.append(record)
    for key, (_, records) in runs.items():
        records.sort(key=lambda r: r["epoch"])
        if [r["epoch"] for r in records] != list(range(1, len(records) + 1)):
            raise RestoreError(f"{path}: the epochs of {key} are not 1..{len(records)}")
    return runs


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def rebuild_runs(results: Path) -> tuple[list[Result], dict[tuple[str, str], float], str]:
    """The run dicts (runner format, without ``restored_from``) and the step-time ratios ((task, method) ->
    ratio) of the results directory ``results``, and the device they were measured on (module docstring)."""
    results = Path(results)
    for name in ("curves.csv", "summary.json"):
        if not (results / name).is_file():
            raise RestoreError(f"{results / name} not found: is {results} a bench results directory?")
    summary = json.loads((results / "summary.json").read_text())
    per_task: dict[str, dict[str, dict[str, Any]]] = summary.get("per_task") or {}
    curves = _read_curves(results / "curves.csv")
    device = _device(summary)

    # What per_task holds for a run (its default-LR runs), found by (task, method, lr, seed).
    known: dict[tuple[str, str, float, int], tuple[dict[str, Any], int]] = {}
    for task, by_method in per_task.items():
        for method, s in by_method.items():
            for i, seed in enumerate(s["seed_ids"]):
                known[(task, method, float(s["lr"]), int(seed))] = (s, i)
    # Steps per epoch of each task, from the runs whose mean step time is known.
    spe: dict[str, Counter[int]] = defaultdict(Counter)
    for key, (s, i) in known.items():
        if key in curves and s["step_seconds"][i] > 0:
            records = curves[key][1]
            spe[key[0]][round(records[-1]["step_seconds"] / s["step_seconds"][i] / len(records))] += 1
    steps_per_epoch = {task: counts.most_common(1)[0][0] for task, counts in spe.items()}

    runs: list[Result] = []
    for key, (metric, records) in curves.items():
        task, method, lr, seed = key
        stats = per_task.get(task, {})
        budgets = Counter(s["epochs"] for s in stats.values())
        if method in stats:
            epochs = stats[method]["epochs"]
        elif budgets:
            epochs = budgets.most_common(1)[0][0]
        else:
            raise RestoreError(f"summary.json has no budget for task {task!r} (run {key})")
        if len(records) > epochs:
            raise RestoreError(f"run {key} has {len(records)} epochs in curves.csv, more than its budget {epochs}")
        diverged = any(not math.isfinite(r["train_loss"]) for r in records)
        spe_task = steps_per_epoch.get(task)
        steps = None if spe_task is None else spe_task * len(records)
        run: Result = {"task": task, "method": method, "lr": lr, "seed": seed, "epochs": epochs, "metric": metric,
                       "device": device, "records": records, "diverged": diverged}
        if key in known:
            s, i = known[key]
            final = math.nan if diverged else records[-1]["test_metric"]
            if not _same(final, s["final"][i]):
                raise RestoreError(f"run {key}: final {final} in curves.csv, {s['final'][i]} in summary.json: the "
                                   "two files are not of one report")
            run["seconds"] = s["seconds"][i]
            if steps is not None:
                run["steps"] = steps
            run["step_seconds_mean"] = s["step_seconds"][i]
            drops = s["drop_epochs"][i]
            if drops is not None:
                run["drop_epochs"] = list(drops)
                run["omega_history"] = [[r["epoch"], r["omega"]] for r in records
                                        if r["omega"] is not None and math.isfinite(r["omega"])]
        else:
            run["seconds"] = records[-1]["seconds"]
            if steps is not None:
                run["steps"] = steps
                run["step_seconds_mean"] = records[-1]["step_seconds"] / max(1, steps)
            else:
                run["step_seconds_mean"] = math.nan
        runs.append(run)
    for task, by_method in per_task.items():  # every default-LR run of the statistics is in curves.csv
        for method, s in by_method.items():
            n_diverged = sum(r["diverged"] for r in runs if r["task"] == task and r["method"] == method
                             and r["lr"] == float(s["lr"]) and r["seed"] in s["seed_ids"])
            if n_diverged != s["diverged"]:
                raise RestoreError(f"{task}/{method}: {n_diverged} diverged runs in curves.csv, {s['diverged']} in "
                                   "summary.json")
    overhead: dict[tuple[str, str], float] = {}
    for pair, ratio in (summary.get("overhead") or {}).items():
        task, method = pair.split("/", 1)
        overhead[(task, method)] = ratio
    return runs, overhead, device


@dataclass
class Restored:
    """What :func:`restore` did: files written, files kept (they existed), runs of excluded methods not
    restored; the same for the overhead files."""

    written: int = 0
    kept: int = 0
    excluded: int = 0
    overhead_written: int = 0
    overhead_kept: int = 0
    overhead_excluded: int = 0


def restore(results: Path, out: Path, *, exclude: Sequence[str] = (), origin: str | None = None) -> Restored:
    """Write the run cache of ``results`` (a committed bench results directory) under ``out``: ``runs/`` and
    ``overhead/`` files, each with ``restored_from`` = ``origin`` (default :func:`default_origin`), except those
    of the methods in ``exclude``; files that exist are kept. Raises :class:`RestoreError` for an excluded method
    that ``results`` does not hold."""
    results, out = Path(results), Path(out)
    runs, overhead, device = rebuild_runs(results)
    present = {r["method"] for r in runs}
    unknown = [m for m in exclude if m not in present]
    if unknown:
        raise RestoreError(f"excluded method(s) {', '.join(map(repr, unknown))} not in {results / 'curves.csv'} "
                           f"(its methods: {', '.join(sorted(present))})")
    origin = default_origin(results) if origin is None else origin
    done = Restored()
    for run in runs:
        if run["method"] in exclude:
            done.excluded += 1
            continue
        path = result_path(out, Job(run["task"], run["method"], run["lr"], run["seed"], run["epochs"]))
        if path.exists():
            done.kept += 1
            continue
        write_json(path, {**run, "restored_from": origin})
        done.written += 1
    for (task, method), ratio in sorted(overhead.items()):
        if method in exclude:
            done.overhead_excluded += 1
            continue
        path = overhead_path(out, task, method, device)
        if path.exists():
            done.overhead_kept += 1
            continue
        reference = METHODS[method].reference if method in METHODS else None
        write_json(path, {"task": task, "method": method, "reference": reference, "device": device, "ratio": ratio,
                          "restored_from": origin})
        done.overhead_written += 1
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a bench results directory (curves.csv + summary.json)")
    parser.add_argument("--out", type=Path, required=True, help="the results directory to fill (its runs/ and "
                        "overhead/)")
    parser.add_argument("--exclude-methods", nargs="+", default=[], metavar="METHOD",
                        help="methods not to restore (the ones to re-train)")
    parser.add_argument("--origin", help="the restored files' restored_from (default: '<results dir> at commit "
                        "<git short hash>')")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        done = restore(args.results, args.out, exclude=args.exclude_methods, origin=args.origin)
    except RestoreError as err:
        print(f"restore_runs: {err}", file=sys.stderr)
        return 2
    excluded = f", {done.excluded} of the excluded methods not restored" if args.exclude_methods else ""
    print(f"restore_runs: {done.written} run files written to {args.out / 'runs'}, {done.kept} skipped (already "
          f"there){excluded}; {done.overhead_written} overhead files written, {done.overhead_kept} skipped"
          f"{f', {done.overhead_excluded} excluded' if args.exclude_methods else ''} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
