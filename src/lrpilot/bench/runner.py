"""Run benchmark jobs, one JSON file per (task, method, lr, seed, epochs), so an interrupted run resumes.

A :class:`Job` is one training run. :func:`run_job` trains it with the project's one training loop,
:func:`lrpilot.bench.loop.train` (the scheduler stepped per step, per epoch or on the train loss, as its
:class:`~lrpilot.bench.methods.Built` says; schedule-free optimizers switched to ``train()``/``eval()`` around
evaluation) and returns a result dict: the job's fields, then per epoch the train loss, test loss and the
task's test metric (``test_metric``: accuracy, or validation loss for language modelling), the LR of the first
param group and the effective LR (:func:`lrpilot.telemetry.effective_lrs`), wall seconds since the start and
the seconds spent in ``optimizer.step()`` + the per-step scheduler step; AutoDrop runs also the angular
velocity ω per epoch (None when not measured), the ω history and the drop epochs. :func:`run_jobs` runs
what is missing from a results directory, in up to ``jobs`` processes (1 thread each), and prints a progress
line with an ETA. The ETA comes from measured run times (:class:`Eta`): before the first run ends, from the runs
already cached in the results directory (a first ETA at the start); then from every run that ends too, per task
and method, so that a suite whose tasks differ twentyfold in cost (digits vs the GPT) is not extrapolated from
its fastest runs.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .loop import one_thread, train, write_json
from .methods import METHODS, get_method
from .tasks import TASKS, Task

__all__ = ["SUITES", "BenchError", "Eta", "Job", "Suite", "cached_sweep_jobs", "load_results", "lr_at", "make_jobs",
           "result_path", "run_job", "run_jobs"]

LR_SWEEP_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass(frozen=True)
class Suite:
    """A named selection: tasks, methods, seeds, and epochs per task (None: the task's full budget);
    ``sweep_tasks``: the tasks on which the suite also runs every method that takes an LR at the other
    :data:`LR_SWEEP_FACTORS` (seeds ``0..sweep_seeds-1``), for the report's robustness column."""

    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: int
    epochs: dict[str, int] | None = None
    sweep_tasks: tuple[str, ...] = ()
    sweep_seeds: int = 1


SUITES: dict[str, Suite] = {
    # Under 5 minutes on 2 cores, with one task that tells schedules apart (mnist1d-cnn-noisy).
    "quick": Suite(
        tasks=("mnist1d-cnn", "mnist1d-cnn-noisy", "digits-mlp", "digits-mlp-noisy"),
        methods=tuple(m for m in METHODS if METHODS[m].tasks is None),
        seeds=1,
        epochs={"mnist1d-cnn": 40, "mnist1d-cnn-noisy": 40, "digits-mlp": 30, "digits-mlp-noisy": 30},
    ),
    # The LR sweep (1 seed) runs on every task but the GPT: there its 64 extra runs (~90 s each) would add about
    # 50 minutes on 2 cores, half the suite again, so its robustness column stays empty unless `--lr-sweep` fills it.
    "full": Suite(tasks=tuple(name for name, task in TASKS.items() if task.in_full_suite), methods=tuple(METHODS),
                  seeds=3, sweep_tasks=("mnist1d-cnn", "mnist1d-cnn-noisy", "mnist1d-bncnn", "mnist1d-resnet-bn",
                                        "digits-mlp", "digits-mlp-noisy")),
}


@dataclass(frozen=True)
class Job:
    """One training run."""

    task: str
    method: str
    lr: float
    seed: int
    epochs: int

    @property
    def key(self) -> str:
        """The cache file's stem: every field, filesystem-safe."""
        stem = f"{self.task}__{self.method}__lr{self.lr:g}__s{self.seed}__e{self.epochs}"
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", stem)


class BenchError(RuntimeError):
    """Some runs failed (each reported by the progress callback); the others were run and cached."""

    def __init__(self, failed: Sequence[Job]) -> None:
        self.failed = list(failed)
        names = ", ".join(f"{j.task}/{j.method}/lr{j.lr:g}/seed{j.seed}" for j in self.failed[:5])
        super().__init__(f"{len(self.failed)} run(s) failed: {names}{' ...' if len(self.failed) > 5 else ''}")


def result_path(out: Path, job: Job) -> Path:
    """Where ``job``'s result is cached under the results directory ``out``."""
    return Path(out) / "runs" / f"{job.key}.json"


def target_of(task: str) -> float:
    """The test metric whose first attainment time-to-target measures."""
    return TASKS[task].target


def lr_at(default_lr: float, factor: float) -> float:
    """The LR of a run at ``factor`` x ``default_lr``, rounded to 6 significant digits (the cache key's LR)."""
    return float(f"{default_lr * factor:.6g}")


def make_jobs(tasks: Sequence[str], methods: Sequence[str], seeds: int, *, epochs: dict[str, int] | int | None = None,
              lr_sweep: bool = False, sweep_tasks: Sequence[str] = (), sweep_seeds: int = 1) -> list[Job]:
    """The jobs of a benchmark: every applicable (task, method) at its default LR (or, with ``lr_sweep``, at
    each of :data:`LR_SWEEP_FACTORS` x its default LR) for seeds ``0..seeds-1``; then, for the selected tasks in
    ``sweep_tasks`` (a suite's), every method that takes an LR at the other factors for seeds
    ``0..sweep_seeds-1``. Unknown names raise ``KeyError``/``ValueError`` naming them."""
    unknown_tasks = [t for t in tasks if t not in TASKS]
    if unknown_tasks:
        raise KeyError(f"unknown task(s) {', '.join(map(repr, unknown_tasks))}; known: {', '.join(TASKS)}")
    for m in methods:
        get_method(m)
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if sweep_seeds < 1:
        raise ValueError(f"sweep_seeds must be >= 1, got {sweep_seeds}")
    jobs: list[Job] = []
    for task in tasks:
        default = TASKS[task].epochs
        n = epochs if isinstance(epochs, int) else (epochs or {}).get(task, default)
        for name in methods:
            method = METHODS[name]
            if not method.applies_to(task):
                continue
            factors = LR_SWEEP_FACTORS if lr_sweep else (1.0,)
            for factor in factors:
                jobs.extend(Job(task, name, lr_at(method.default_lr, factor), seed, n) for seed in range(seeds))
            if task in sweep_tasks and method.takes_lr and not lr_sweep:
                for factor in LR_SWEEP_FACTORS:
                    if factor != 1.0:
                        jobs.extend(Job(task, name, lr_at(method.default_lr, factor), seed, n)
                                    for seed in range(sweep_seeds))
    return jobs


def run_job(job: Job, device: str = "cpu", task: Task | None = None) -> dict[str, Any]:
    """Train ``job`` with :func:`lrpilot.bench.loop.train` and return its result: the job's fields, then the
    loop's (see the module docstring). A run whose train loss becomes non-finite stops there and is marked
    ``diverged``. Reproducible on CPU for a given seed. ``task``: the task to train in place of the registered
    ``TASKS[job.task]`` (a variant of it, as ``benchmarks/perturbation.py``'s perturbed copies); the run is built
    as for the registered one."""
    task = TASKS[job.task] if task is None else task
    method = get_method(job.method)
    spe = task.steps_per_epoch()
    run = train(task, lambda model: method.build(model, job.lr, spe, job.epochs), job.epochs, job.seed,
                device=device)
    return {**asdict(job), **run.result}


def _worker(args: tuple[Job, str]) -> dict[str, Any]:
    torch.set_num_threads(1)
    return run_job(*args)


def load_results(out: Path, jobs: Iterable[Job] | None = None) -> list[dict[str, Any]]:
    """The cached results under ``out``: those of ``jobs`` that exist, or (None) every cached run."""
    if jobs is None:
        paths = sorted((Path(out) / "runs").glob("*.json"))
    else:
        paths = [p for p in dict.fromkeys(result_path(out, j) for j in jobs) if p.exists()]
    return [json.loads(p.read_text()) for p in paths]


def cached_sweep_jobs(out: Path, jobs: Iterable[Job]) -> list[Job]:
    """The LR-sweep runs cached under ``out`` for the (task, method, epochs) of ``jobs``: the jobs at each of
    :data:`LR_SWEEP_FACTORS` other than 1 x the default LR, any seed, whose result file exists. The report reads
    them for its robustness column without running a sweep."""
    found: list[Job] = []
    for task, name, epochs in dict.fromkeys((j.task, j.method, j.epochs) for j in jobs):
        default = METHODS[name].default_lr
        for factor in LR_SWEEP_FACTORS:
            if factor == 1.0:
                continue
            lr = lr_at(default, factor)
            probe = Job(task, name, lr, 0, epochs)
            pattern = probe.key.replace("__s0__", "__s*__") + ".json"
            for path in sorted((Path(out) / "runs").glob(pattern)):
                seed = re.search(r"__s(\d+)__e\d+\.json$", path.name)
                if seed is not None:
                    found.append(Job(task, name, lr, int(seed.group(1)), epochs))
    return found


def _fmt_seconds(s: float) -> str:
    if s >= 3600:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.0f}s"


class Eta:
    """The time left for a set of jobs, from measured run times.

    A job's expected seconds are ``epochs`` x the measured seconds per epoch of its (task, method), else the mean
    over the measured methods of its task, else unknown. :meth:`measure` adds a finished (or cached) run;
    :meth:`remaining` sums the expected seconds of the jobs not yet finished and divides by the processes (a job
    of a task with no measured run yet counts as the mean expected job, and the estimate says so; the runs in
    flight count whole, so the estimate errs long by at most one run per process)."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self.per_epoch: dict[tuple[str, str], list[float]] = {}
        self.measured = 0

    def measure(self, result: dict[str, Any]) -> None:
        """Add the wall seconds per epoch of one run (a result dict)."""
        epochs = len(result.get("records") or ())
        if epochs and result.get("seconds", 0) > 0:
            self.per_epoch.setdefault((result["task"], result["method"]), []).append(result["seconds"] / epochs)
            self.measured += 1

    def expected(self, job: Job) -> float | None:
        """The expected wall seconds of ``job``, or None when nothing of its task was measured."""
        own = self.per_epoch.get((job.task, job.method))
        if own:
            return job.epochs * statistics.fmean(own)
        task = [statistics.fmean(v) for (t, _), v in self.per_epoch.items() if t == job.task]
        return job.epochs * statistics.fmean(task) if task else None

    def remaining(self, jobs: Iterable[Job]) -> tuple[float, int] | None:
        """(seconds left for ``jobs`` with :attr:`workers` processes, how many of them had no measurement of their
        task), or None when none of them has one."""
        expected = [self.expected(j) for j in jobs]
        known = [e for e in expected if e is not None]
        if not known:
            return None
        unknown = len(expected) - len(known)
        total = sum(known) + unknown * statistics.fmean(known)
        return max(total / self.workers, max(known)), unknown  # no faster than its longest run

    def text(self, jobs: Sequence[Job]) -> str:
        """``ETA 3m10s``, ``ETA ~3m10s (2 runs of unmeasured tasks)`` or ``ETA unknown``."""
        if not jobs:
            return "ETA 0s"
        left = self.remaining(jobs)
        if left is None:
            return "ETA unknown until a run ends"
        seconds, unknown = left
        return f"ETA {_fmt_seconds(seconds)}" if not unknown else \
            f"ETA ~{_fmt_seconds(seconds)} ({unknown} runs of unmeasured tasks)"


def run_jobs(jobs: Sequence[Job], out: Path, *, workers: int = 2, device: str = "cpu",
             progress: Callable[[str], None] | None = None) -> list[Job]:
    """Run the jobs whose result is not cached under ``out`` and cache each as it finishes; return the jobs
    that were computed (``BenchError`` after the others if some failed). ``workers`` <= 1 runs in this process
    (no pool). ``progress`` receives one line per finished job (default: :class:`_ProgressBar`, a tqdm bar with
    an ETA above which the lines are printed on a terminal, the lines alone to stderr otherwise)."""
    jobs = list(dict.fromkeys(jobs))  # a job listed twice runs once
    todo = [j for j in jobs if not result_path(out, j).exists()]
    bar = _ProgressBar(len(todo)) if progress is None else None
    if bar is not None:
        progress = bar.line
    assert progress is not None
    if not todo:
        progress(f"bench: all {len(jobs)} runs cached in {out}")
        return []
    eta = Eta(workers)
    for cached in load_results(out):  # every cached run, of this selection or not: measured times
        eta.measure(cached)
    first = eta.text(todo)
    source = f"from the measured times of {eta.measured} cached runs" if eta.measured else "no run measured yet"
    progress(f"bench: {len(todo)} of {len(jobs)} runs to compute ({len(jobs) - len(todo)} cached), "
             f"{max(1, workers)} process(es); first {first} ({source})")
    start = time.perf_counter()
    left = set(todo)

    failed: list[Job] = []

    def settle(done: int, job: Job, compute: Callable[[], dict[str, Any]]) -> None:
        """Cache and report one finished job; a job that raised is reported and left uncached (the others go on)."""
        try:
            result = compute()
        except Exception as err:
            failed.append(job)
            progress(f"[{done}/{len(todo)}] {job.task} {job.method} lr {job.lr:g} seed {job.seed}: "
                     f"FAILED: {type(err).__name__}: {err}")
            return
        write_json(result_path(out, job), result)
        eta.measure(result)
        elapsed = time.perf_counter() - start
        final = result["records"][-1]["test_metric"] if result["records"] else math.nan
        shown = f"acc {100 * final:.1f}%" if result["metric"] == "accuracy" else f"{result['metric']} {final:.3f}"
        flag = " DIVERGED" if result["diverged"] else ""
        progress(f"[{done}/{len(todo)}] {job.task} {job.method} lr {job.lr:g} seed {job.seed}: "
                 f"{shown}{flag} ({result['seconds']:.1f}s) | elapsed {_fmt_seconds(elapsed)}, "
                 f"{eta.text(sorted(left, key=lambda j: j.key))}")

    def finish(done: int, job: Job, compute: Callable[[], dict[str, Any]]) -> None:
        left.discard(job)
        settle(done, job, compute)
        if bar is not None:
            bar.advance(eta.text(sorted(left, key=lambda j: j.key)))

    try:
        _run_all(todo, workers, device, finish)
    finally:
        if bar is not None:
            bar.close()
    if failed:
        raise BenchError(failed)
    return todo


def _run_all(todo: Sequence[Job], workers: int, device: str,
             finish: Callable[[int, Job, Callable[[], dict[str, Any]]], None]) -> None:
    """Run ``todo`` in this process (``workers`` <= 1) or in a pool, calling ``finish`` as each one ends."""
    if workers <= 1:
        with one_thread():  # as in the worker processes
            for done, job in enumerate(todo, 1):
                finish(done, job, functools.partial(run_job, job, device))
    else:
        # CUDA cannot be used in forked children of a process that touched it: spawn fresh workers for a GPU.
        context = multiprocessing.get_context("spawn") if device.startswith("cuda") else None
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            pending = {pool.submit(_worker, (job, device)): job for job in todo}
            done = 0
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    done += 1
                    finish(done, pending.pop(fut), fut.result)


class _ProgressBar:
    """``lrpilot bench``'s progress: on a terminal, a tqdm bar (runs done, elapsed, ETA) with each finished run's
    line printed above it; without a terminal or without tqdm, the lines alone on stderr (they carry the ETA)."""

    def __init__(self, total: int) -> None:
        self.bar: Any = None
        if total and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm comes with the bench extra
                tqdm = None
            if tqdm is not None:  # tqdm's own remaining time extrapolates the rate: ours is in the postfix
                self.bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True, desc="bench",
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                           "[{elapsed}, {rate_fmt}{postfix}]")

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def advance(self, eta: str = "") -> None:
        if self.bar is not None:
            if eta:
                self.bar.set_postfix_str(eta, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
