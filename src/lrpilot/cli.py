"""The ``lrpilot`` command line.

    lrpilot late-decay [--toy-only] [--quick] [--seeds 3] [--lrs 0.6 0.1] [--jobs 2] [--out DIR] [--figures DIR]
    lrpilot bench [--suite quick|full] [--tasks T ...] [--methods M ...] [--seeds N] [--epochs N] [--lr-sweep]
                  [--jobs 2] [--device cpu] [--out DIR] [--list]

``bench`` trains every selected method on every selected task side by side (see ``lrpilot bench --help``).

``late-decay`` runs the reproduction of Ren, Ma & Ying's late-decay toy model (spec configs A and B with
their controls and pass criteria; about a minute on 2 cores) and the real-network study on MNIST-1D (decay
branches and the PCA landscape; a few minutes per LR on 2 cores, cached per run in the JSON so an interrupted
study resumes). It writes JSON results, a markdown report and PNG figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def late_decay(args: argparse.Namespace) -> int:
    """The ``late-decay`` subcommand: the study :func:`lrpilot.bench.studies.late_decay.run_study`."""
    from .bench.studies.late_decay import run_study

    return run_study(args.out, args.figures, toy_only=args.toy_only, quick=args.quick, seeds=args.seeds,
                     lrs=args.lrs, jobs=args.jobs)


BENCH_HELP = """Benchmark lrpilot's methods against the LR schedules and LR-free optimizers in common use.

With no arguments, runs the `quick` suite (MNIST-1D CNN 40 epochs and digits MLP 30 epochs, each with clean
and with noisy training labels; every method at its default LR, 1 seed; a few minutes on 2 CPU cores).
`--suite full` runs every task (MNIST-1D CNN, BN CNN and BN ResNet, digits MLP, the noisy-label CNN and MLP,
a character GPT on tiny Shakespeare) and method for the tasks' full budgets with 3 seeds, plus an LR sweep
(1 seed) of the methods that take an LR on every task but the GPT. `--tasks cifar10-resnet --cifar10 PATH` adds
CIFAR-10 from a local copy. Each run is cached as runs/<task>__<method>__lr<lr>__s<seed>__e<epochs>.json
under --out, so an interrupted benchmark resumes and a repeated one computes only what is missing. Writes
report.md, curves.csv, summary.json and PNG figures to --out and prints the report's three verdict lines and
its path; the first ETA comes from the measured times of the runs already cached there.
"""


def bench(args: argparse.Namespace) -> int:
    """The ``bench`` subcommand: resolve the selection, run what is not cached, write the report."""
    from .bench.overhead import measure_overheads
    from .bench.provenance import provenance
    from .bench.report import write_report
    from .bench.runner import SUITES, BenchError, cached_sweep_jobs, load_results, make_jobs, result_path, run_jobs
    from .bench.tasks import CIFAR10_ENV, TASKS

    if args.cifar10 is not None:
        os.environ[CIFAR10_ENV] = str(args.cifar10)  # read by the task in this process and the workers
    if args.list:
        print(_listing())
        return 0
    suite = SUITES[args.suite]
    tasks = args.tasks or list(suite.tasks)
    methods = args.methods or list(suite.methods)
    seeds = args.seeds if args.seeds is not None else suite.seeds
    epochs = args.epochs if args.epochs is not None else suite.epochs
    try:
        jobs = make_jobs(tasks, methods, seeds, epochs=epochs, lr_sweep=args.lr_sweep,
                         sweep_tasks=() if args.no_sweep else suite.sweep_tasks, sweep_seeds=suite.sweep_seeds)
    except (KeyError, ValueError) as err:
        print(f"lrpilot bench: {err.args[0]}", file=sys.stderr)
        return 2
    if not jobs:
        print("lrpilot bench: no method applies to the selected tasks", file=sys.stderr)
        return 2
    for task in dict.fromkeys(j.task for j in jobs):
        try:
            TASKS[task].check_available()
        except (OSError, ImportError, ValueError) as err:
            print(f"lrpilot bench: task {task!r} cannot run: {err}", file=sys.stderr)
            return 2
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("lrpilot bench: --device cuda but torch sees no CUDA device", file=sys.stderr)
            return 2
    out = Path(args.out)
    t0 = time.perf_counter()
    failed: list = []
    missing = {j for j in jobs if not result_path(out, j).exists()}
    try:
        computed = run_jobs(jobs, out, workers=args.jobs, device=args.device)
    except BenchError as err:
        print(f"lrpilot bench: {err} (not cached; the report covers the others)", file=sys.stderr)
        failed = err.failed
        computed = [j for j in dict.fromkeys(jobs) if j not in failed and j in missing]
    wall = time.perf_counter() - t0
    results = load_results(out, jobs)
    if not results:
        return 1
    if not args.lr_sweep:  # the robustness column: sweep runs already in the cache are read, never run (each once:
        selected = set(jobs)  # a suite's own sweep runs are among the jobs already)
        results += load_results(out, [j for j in cached_sweep_jobs(out, jobs) if j not in selected])
    overhead = measure_overheads(sorted({(r["task"], r["method"]) for r in results}), out, args.device)
    train_seconds = sum(r["seconds"] for r in results)
    notes = [f"Measured by `lrpilot bench {' '.join(args.argv)}`".rstrip() + f": {len(jobs)} runs "
             f"({len(computed)} computed this invocation in {wall:.0f} s wall with {args.jobs} process(es), "
             f"the rest cached), {train_seconds:.0f} s of training in all, device {args.device}."]
    custom = args.tasks or args.methods or args.lr_sweep
    title = f"lrpilot bench: {args.suite} suite" + (" (custom selection)" if custom else "")
    record = provenance(["bench", *args.argv], threads=1)  # the runner pins every run to one thread
    path = write_report(results, out, title=title, notes=notes, overhead=overhead, provenance=record)
    verdict = json.loads((out / "summary.json").read_text())["verdict"]
    print("\n".join(line.replace("**", "").replace("`", "") for line in verdict))
    print(f"report: {path}")
    print(f"lrpilot bench: wrote {path}, summary.json, curves.csv and the figures in {out} "
          f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 1 if failed else 0


def _listing() -> str:
    """``lrpilot bench --list``: what each suite runs (tasks with their budgets, methods, seeds, how many runs),
    then every task and every method with what the report needs to know about it."""
    from .bench.methods import METHODS, PIP_PACKAGES
    from .bench.runner import SUITES, make_jobs
    from .bench.tasks import TASKS

    lines = ["suites (lrpilot bench --suite NAME):"]
    for name, suite in SUITES.items():
        epochs = suite.epochs or {}
        budgets = ", ".join(f"{t} {epochs.get(t, TASKS[t].epochs)} epochs" for t in suite.tasks)
        runs = len(make_jobs(list(suite.tasks), list(suite.methods), suite.seeds, epochs=suite.epochs))
        swept = len(make_jobs(list(suite.tasks), list(suite.methods), suite.seeds, epochs=suite.epochs,
                              sweep_tasks=suite.sweep_tasks, sweep_seeds=suite.sweep_seeds)) - runs
        restricted = [m for m in suite.methods if METHODS[m].tasks is not None]
        lines += [f"  {name}: {len(suite.tasks)} tasks x {len(suite.methods)} methods x {suite.seeds} seed(s) = "
                  f"{runs} runs" + (f" ({', '.join(restricted)}: only on some tasks)" if restricted else ""),
                  f"    tasks: {budgets}",
                  f"    methods: {', '.join(suite.methods)}"]
        if swept:
            lines.append(f"    LR sweep ({suite.sweep_seeds} seed, x0.1 x0.3 x3 x10 of each method that takes an LR; "
                         f"--no-sweep skips it): {', '.join(suite.sweep_tasks)} = {swept} more runs")
    lines.append("tasks:")
    for name, task in TASKS.items():
        where = "" if task.in_full_suite else " (optional, not in the suites: needs local data)"
        lines.append(f"  {name:18s} {task.epochs} epochs, {task.metric}, target {task.target:g}{where}")
    lines.append("methods (lrpilot: one of lrpilot's; budget: told the training length; LR-free: takes no LR):")
    for m in METHODS.values():
        flags = [f for f, on in (("lrpilot", m.lrpilot), ("budget", m.needs_budget), ("LR-free", not m.takes_lr))
                 if on]
        if m.tasks is not None:
            flags.append("only " + ", ".join(m.tasks))
        if m.requires is not None and importlib.util.find_spec(m.requires) is None:
            flags.append(f"needs pip install {PIP_PACKAGES.get(m.requires, m.requires)}")
        lines.append(f"  {m.name:15s} lr {m.default_lr:<7g} {m.description}" + (f" [{'; '.join(flags)}]" if flags
                                                                                 else ""))
    return "\n".join(lines)


def _at_least(low: int) -> Any:
    """An argparse ``type`` for an integer >= ``low``: a bad value stops the command before any run starts."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrpilot", description="lrpilot: learning-rate schedules from signals.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("late-decay", help="reproduce late learning-rate decay (toy model + MNIST-1D study)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--toy-only", action="store_true", help="only the toy-model reproduction (about a minute)")
    p.add_argument("--quick", action="store_true", help="a smoke-test-sized run (seconds)")
    p.add_argument("--seeds", type=_at_least(1), default=3, help="seeds of the real-network study")
    p.add_argument("--lrs", type=_positive_float, nargs="+", default=[0.6], help="large LRs of the real-network study")
    p.add_argument("--jobs", type=_at_least(1), default=2, help="parallel processes for the real-network runs")
    p.add_argument("--out", default="lrpilot-results", help="directory for JSON and markdown results")
    p.add_argument("--figures", default="lrpilot-results", help="directory for PNG figures")
    p.set_defaults(func=late_decay)

    b = sub.add_parser("bench", help="benchmark lrpilot's methods against common schedules and LR-free optimizers",
                       description=BENCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--suite", choices=["quick", "full"], default="quick", help="default selection (quick)")
    b.add_argument("--tasks", nargs="+", metavar="TASK", help="tasks (default: the suite's)")
    b.add_argument("--methods", nargs="+", metavar="METHOD", help="methods (default: the suite's)")
    b.add_argument("--seeds", type=_at_least(1), help="seeds 0..N-1 (default: the suite's, 1 quick / 3 full)")
    b.add_argument("--epochs", type=_at_least(1), help="epochs of every task (default: the suite's budget per task)")
    b.add_argument("--lr-sweep", action="store_true", help="each method at 0.1x, 0.3x, 1x, 3x, 10x its default LR")
    b.add_argument("--no-sweep", action="store_true",
                   help="skip the suite's own LR sweep (the full suite sweeps every task but the GPT with 1 seed, "
                        "for the robustness column)")
    b.add_argument("--jobs", type=_at_least(1), default=2,
                   help="parallel processes, 1 thread each (default 2; 1: in-process)")
    b.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    b.add_argument("--out", default="lrpilot-bench", help="results directory (default ./lrpilot-bench)")
    b.add_argument("--cifar10", metavar="PATH", help="directory of CIFAR-10's python batches (cifar-10-batches-py) "
                   "for the optional cifar10-resnet task; never downloaded (default: $LRPILOT_CIFAR10)")
    b.add_argument("--list", action="store_true",
                   help="list what each suite runs (tasks, budgets, methods, seeds, runs), the tasks and the methods")
    b.set_defaults(func=bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # argparse's usage error (2, message on stderr) or --help (0)
        return stop.code if isinstance(stop.code, int) else 2
    args.argv = argv[1:]
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
