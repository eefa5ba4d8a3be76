"""Turn cached benchmark results into ``report.md``, ``curves.csv``, ``summary.json`` and PNG figures.

``report.md`` opens with a **verdict** of three lines derived from the tables (:func:`verdict_lines`): the best
method overall, the best method that needs no budget (``Method.needs_budget``), and where each of lrpilot's
methods (``Method.lrpilot``) wins, ties and loses against the best other method of each task. Then:

* per task, at each method's default LR: the final and best test metric (accuracy, or validation loss for
  language modelling) as the mean over seeds with its 95% Student-t interval (the mean alone for one seed); the
  comparison with the task's best baseline (the best method that is not lrpilot's) by the paired t-test of
  :mod:`lrpilot.bench.stats`; the worst final over LR misspecification (the ``--lr-sweep`` factors, filled from
  the cached sweep runs of that method and task, ``-`` where the cache holds none; only for methods that take an
  LR, ``Method.takes_lr``); epochs and wall seconds to the task's target; seconds per run; the optimizer-step time
  relative to the plain optimizer the method extends (``Method.reference``);
* a summary over tasks (:func:`summarize`): the gap of each method to the best method of each task, its mean
  and worst, its coverage, its wins/ties/losses, its worst gap over the LR sweep; rows ordered with the methods
  that ran on every task first (a mean over fewer tasks is not comparable), then by mean gap; the rank is the
  row position;
* whether each task tells schedules apart (:func:`discrimination`): the best method's margin over the better of
  the constant-LR baselines against twice the seeds' spread;
* with sweep runs, final metric per LR factor and the worst of them;
* the methods, the figures (:mod:`lrpilot.bench.plots`) and the provenance.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .methods import METHODS
from .provenance import provenance_lines
from .runner import LR_SWEEP_FACTORS, lr_at, target_of
from .stats import Comparison, Interval, mean_interval, paired_comparison

__all__ = ["CONSTANT_BASELINES", "Discrimination", "TaskView", "analyse_task", "discrimination", "format_seconds",
           "method_stats", "summarize", "verdict_lines", "write_report"]

Result = dict[str, Any]
CURVE_FIELDS = ("task", "method", "lr", "seed", "epoch", "train_loss", "test_loss", "metric", "test_metric",
                "lr_group0", "effective_lr", "omega", "seconds", "step_seconds")


@dataclass(frozen=True)
class _Metric:
    """How a task's test metric reads: its label, direction, display scale and digits."""

    name: str
    higher_is_better: bool
    scale: float
    digits: int
    unit: str

    def best(self, values: Sequence[float]) -> float:
        return max(values) if self.higher_is_better else min(values)

    def reached(self, value: float, target: float) -> bool:
        return value >= target if self.higher_is_better else value <= target

    def failed(self) -> float:
        """The value a diverged run counts as: 0 accuracy, infinite loss."""
        return 0.0 if self.higher_is_better else math.inf

    def gap(self, value: float, best: float) -> float:
        """Distance behind the best: points of accuracy, or % above the best loss."""
        if self.higher_is_better:
            return 100 * (best - value)
        return 100 * (value / best - 1) if math.isfinite(value) else math.inf

    def worst(self, values: Sequence[float]) -> float:
        return min(values) if self.higher_is_better else max(values)


_METRICS = {"accuracy": _Metric("test accuracy", True, 100.0, 1, "%"),
            "val_loss": _Metric("validation loss", False, 1.0, 3, "")}


def _metric_of(result: Result) -> _Metric:
    return _METRICS[result.get("metric", "accuracy")]


def _task_metric(by_method: Mapping[str, Mapping[str, Any]]) -> _Metric:
    """The metric of a task, from its :func:`method_stats` entry (every method of a task has the task's metric)."""
    return _METRICS[next(iter(by_method.values()))["metric"]]


def _default_lr(method: str) -> float | None:
    m = METHODS.get(method)
    return lr_at(m.default_lr, 1.0) if m else None


def _is_ours(method: str) -> bool:
    return method in METHODS and METHODS[method].lrpilot


def _to_target(result: Result, target: float) -> tuple[int, float] | None:
    metric = _metric_of(result)
    for rec in result["records"]:
        if metric.reached(rec["test_metric"], target):
            return rec["epoch"], rec["seconds"]
    return None


def format_seconds(seconds: float) -> str:
    """Wall seconds as the report prints them: ``<0.1`` below a tenth (timer noise there, never ``0.0``), one
    decimal below 100, whole seconds above."""
    if seconds < 0.1:
        return "<0.1"
    return f"{seconds:.1f}" if seconds < 100 else f"{seconds:.0f}"


def method_stats(results: Sequence[Result]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task, per method, statistics of its runs at its default LR (a method with no default-LR run falls
    back to its only LR), in seed order: seeds (``seed_ids``), final/best test metric (final NaN for a diverged
    run), epochs/seconds to target, seconds, step seconds, AutoDrop's drop epochs."""
    groups: dict[tuple[str, str], dict[float, list[Result]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        groups[(r["task"], r["method"])][r["lr"]].append(r)
    stats: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (task, method), by_lr in groups.items():
        lr = _default_lr(method)
        runs = by_lr.get(lr) if lr in by_lr else (next(iter(by_lr.values())) if len(by_lr) == 1 else None)
        if runs is None:
            continue
        runs = sorted(runs, key=lambda r: r["seed"])
        target = target_of(task)
        metric = _metric_of(runs[0])
        hits = [_to_target(r, target) for r in runs]
        reached = [h for h in hits if h is not None]
        stats[task][method] = {
            "lr": runs[0]["lr"], "seeds": len(runs), "seed_ids": [r["seed"] for r in runs],
            "epochs": runs[0]["epochs"], "metric": runs[0].get("metric", "accuracy"),
            "final": [r["records"][-1]["test_metric"] if not r["diverged"] else math.nan for r in runs],
            "best": [metric.best([x["test_metric"] for x in r["records"]]) for r in runs],
            "epochs_to_target": [h[0] for h in reached], "seconds_to_target": [h[1] for h in reached],
            "target": target, "seconds": [r["seconds"] for r in runs],
            "step_seconds": [r["step_seconds_mean"] for r in runs],
            "drop_epochs": [r.get("drop_epochs") for r in runs], "diverged": sum(r["diverged"] for r in runs),
        }
    return stats


# ------------------------------------------------------------------------------------------------ per task
@dataclass(frozen=True)
class TaskView:
    """What the report says about one task.

    Attributes:
        order: the methods, best mean final first (the table's row order); all-diverged methods last.
        final: per method, its mean final metric over seeds with the 95% interval, in display units (% or loss).
        best: the same for the best epoch's metric.
        best_baseline: the best method that is not lrpilot's (by mean final), or None.
        versus: per method other than ``best_baseline``, its paired comparison with it (display units).
        sweep_worst: per method with a complete LR sweep in the results, (worst mean final over the factors, the
            number of seeds per factor); methods without one are absent.
    """

    task: str
    higher_is_better: bool
    order: list[str]
    final: dict[str, Interval]
    best: dict[str, Interval]
    best_baseline: str | None
    versus: dict[str, Comparison]
    sweep_worst: dict[str, tuple[float, int]]


def analyse_task(task: str, by_method: Mapping[str, Mapping[str, Any]],
                 sweep: Mapping[str, Mapping[float, Sequence[float]]] | None = None) -> TaskView:
    """The :class:`TaskView` of ``task`` from its :func:`method_stats` entry and its sweep (method -> LR factor ->
    finals, as ``_sweep`` gives them; a sweep counts when it has every one of the runner's ``LR_SWEEP_FACTORS``)."""
    metric = _task_metric(by_method)
    scale = metric.scale
    final = {m: mean_interval([scale * v for v in s["final"]]) for m, s in by_method.items()}
    best = {m: mean_interval([scale * v for v in s["best"]]) for m, s in by_method.items()}

    def key(m: str) -> tuple[bool, float, str]:
        mean = final[m].mean
        if math.isnan(mean):
            return True, 0.0, m
        return False, -mean if metric.higher_is_better else mean, m

    order = sorted(by_method, key=key)
    baselines = [m for m in order if not _is_ours(m) and not math.isnan(final[m].mean)]
    best_baseline = baselines[0] if baselines else None
    versus: dict[str, Comparison] = {}
    if best_baseline is not None:
        ref = by_method[best_baseline]
        theirs = {s: scale * v for s, v in zip(ref["seed_ids"], ref["final"])}
        for m in order:
            if m != best_baseline:
                ours = {s: scale * v for s, v in zip(by_method[m]["seed_ids"], by_method[m]["final"])}
                versus[m] = paired_comparison(ours, theirs, higher_is_better=metric.higher_is_better)
    worst: dict[str, tuple[float, int]] = {}
    for m, factors in (sweep or {}).items():
        if m in by_method and all(f in factors for f in LR_SWEEP_FACTORS):
            means = [scale * statistics.fmean(factors[f]) for f in LR_SWEEP_FACTORS]
            worst[m] = (metric.worst(means), min(len(factors[f]) for f in LR_SWEEP_FACTORS))
    return TaskView(task, metric.higher_is_better, order, final, best, best_baseline, versus, worst)


# ------------------------------------------------------------------------------------------ discrimination
#: The constant-LR methods every schedule is measured against: the ``reference`` of the other methods (SGD and
#: AdamW at their default LR, no schedule).
CONSTANT_BASELINES = tuple(dict.fromkeys(m.reference for m in METHODS.values() if m.reference is not None))


@dataclass(frozen=True)
class Discrimination:
    """Whether a task tells schedules apart: the best method (``best``, by mean final) against the better of the
    constant-LR baselines (``constant``), in display units (points of accuracy, or loss). ``margin``: how much
    better ``best`` is; ``spread``: the larger of the two methods' standard deviations over seeds (None with one
    seed); ``discriminates``: ``margin > 2 * spread`` (None when the spread is unknown)."""

    task: str
    best: str
    best_mean: float
    constant: str
    constant_mean: float
    margin: float
    spread: float | None
    discriminates: bool | None


def discrimination(task: str, by_method: Mapping[str, Mapping[str, Any]], view: TaskView) -> Discrimination | None:
    """The :class:`Discrimination` of ``task`` from its :func:`method_stats` entry and :class:`TaskView`; None when
    the task has no constant baseline or no other method with a finite mean."""
    metric = _task_metric(by_method)
    finite = [m for m in view.order if math.isfinite(view.final[m].mean)]
    constants = [m for m in finite if m in CONSTANT_BASELINES]
    others = [m for m in finite if m not in CONSTANT_BASELINES]
    if not constants or not others:
        return None
    best, constant = others[0], constants[0]
    sign = 1.0 if metric.higher_is_better else -1.0
    margin = sign * (view.final[best].mean - view.final[constant].mean)
    spreads = [statistics.stdev([metric.scale * v for v in by_method[m]["final"]]) for m in (best, constant)
               if len(by_method[m]["final"]) > 1]
    spread = max(spreads) if len(spreads) == 2 else None
    return Discrimination(task, best, view.final[best].mean, constant, view.final[constant].mean, margin, spread,
                          None if spread is None else margin > 2 * spread)


def _discrimination_table(rows: Sequence[Discrimination], metrics: Mapping[str, _Metric]) -> list[str]:
    lines = ["\n### Does each task tell schedules apart?\n",
             "The best method (by mean final) against the better constant-LR baseline "
             f"({', '.join(f'`{m}`' for m in CONSTANT_BASELINES)}): the task discriminates when the margin exceeds "
             "twice the seeds' spread (the larger standard deviation over seeds of the two); with one seed the "
             "spread is unknown.\n",
             "| task | best method | mean | best constant LR | mean | margin | 2 x spread | discriminates |",
             "|---|---|---|---|---|---|---|---|"]
    for d in rows:
        digits = metrics[d.task].digits + (1 if metrics[d.task].higher_is_better else 0)
        spread = "-" if d.spread is None else f"{2 * d.spread:.{digits}f}"
        verdict = "- (one seed)" if d.discriminates is None else ("**yes**" if d.discriminates else "no")
        lines.append(f"| {d.task} | {d.best} | {d.best_mean:.{digits}f} | {d.constant} | {d.constant_mean:.{digits}f} "
                     f"| {d.margin:.{digits}f} | {spread} | {verdict} |")
    return lines


def _signed(value: float, digits: int) -> str:
    """``+0.8``, ``-1.2``; a value that rounds to zero is ``0.0`` (no ``-0.0``)."""
    text = f"{value:+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def _versus_cell(view: TaskView, method: str, digits: int) -> str:
    if method == view.best_baseline:
        return "best baseline"
    c = view.versus.get(method)
    if c is None:
        return "-"
    if c.reason == "diverged":
        return f"{c.outcome} (diverged)"
    if c.outcome == "untested":
        return f"untested (1 seed): {_signed(c.diff, digits)}" if c.n else "untested (no common seed)"
    assert c.interval is not None
    low, high = c.interval
    return f"{c.outcome} {_signed(c.diff, digits)} [{_signed(low, digits)}, {_signed(high, digits)}]"


def _sweep_cell(view: TaskView, method: str, digits: int) -> str:
    if method in METHODS and not METHODS[method].takes_lr:
        return "LR-free"
    if method not in view.sweep_worst:
        return "-"
    value, seeds = view.sweep_worst[method]
    return f"{value:.{digits}f} ({seeds} seed{'s' if seeds != 1 else ''})"


def _task_table(task: str, stats: dict[str, dict[str, Any]], view: TaskView,
                overhead: dict[tuple[str, str], float] | None) -> list[str]:
    first = next(iter(stats.values()))
    target = first["target"]
    metric = _task_metric(stats)
    seeds = sorted({s["seeds"] for s in stats.values()})
    lines = [f"\n### {task} ({first['epochs']} epochs, {'/'.join(map(str, seeds))} seed(s); {metric.name}"
             f"{' ' + metric.unit if metric.unit else ''}, {'higher' if metric.higher_is_better else 'lower'} is "
             f"better, target {metric.scale * target:g}{metric.unit})\n",
             "| method | lr | final [95% CI] | best [95% CI] | vs best baseline (paired t-test) | "
             "worst final over LR ×0.1–×10 | epochs to target | seconds to target | s/run | opt-step time vs plain | "
             "notes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for method in view.order:
        s = stats[method]
        n = s["seeds"]
        reached = len(s["epochs_to_target"])
        ett = f"{statistics.mean(s['epochs_to_target']):.1f} ({reached}/{n})" if reached else f"never (0/{n})"
        stt = format_seconds(statistics.mean(s["seconds_to_target"])) if reached else "-"
        ref = METHODS[method].reference if method in METHODS else None
        ratio = "1 (plain)" if ref is None else "n/a"
        if overhead is not None and (task, method) in overhead:
            ratio = f"{overhead[(task, method)]:.2f}"
        elif ref is not None and ref in stats:  # from the training runs themselves: noisier
            ratio = f"≈{statistics.mean(s['step_seconds']) / statistics.mean(stats[ref]['step_seconds']):.2f}"
        notes = []
        if s["diverged"]:
            notes.append(f"diverged in {s['diverged']}/{n}")
        if any(d is not None for d in s["drop_epochs"]):
            drops = ["none" if not d else ",".join(map(str, d)) for d in s["drop_epochs"]]
            notes.append("drop epochs: " + "; ".join(drops))
        bold = "**" if _is_ours(method) else ""
        final, best = view.final[method].format(metric.digits), view.best[method].format(metric.digits)
        lines.append(f"| {bold}{method}{bold} | {s['lr']:g} | {final} | {best} | "
                     f"{_versus_cell(view, method, metric.digits)} | {_sweep_cell(view, method, metric.digits)} | "
                     f"{ett} | {stt} | {format_seconds(statistics.mean(s['seconds']))} | {ratio} | "
                     f"{', '.join(notes)} |")
    return lines


# ------------------------------------------------------------------------------------------- over tasks
def summarize(stats: Mapping[str, Mapping[str, Mapping[str, Any]]], views: Mapping[str, TaskView]
              ) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The summary over tasks: the row order and, per method, its gaps to the best method of each task (points of
    accuracy or % above the best loss; a diverged mean counts as 0 accuracy / infinite loss), mean and worst gap,
    coverage (tasks run), rank, the outcome against each task's best baseline, its worst gap over the LR sweep.

    Order: the methods that ran on every task of ``stats`` first, by mean gap then worst gap; then the others by
    coverage (more tasks first), then mean gap over the tasks they ran. A mean over fewer tasks is not comparable
    with a mean over all of them, so a method with less coverage is never placed above one with full coverage.
    ``rank`` is the row position (1 = first row); ``mean_task_rank`` the mean of the per-task ranks (summary.json
    only: it can disagree with the order, which is by gap). A method run on fewer tasks also gets
    ``first_row_on_its_tasks``: the first row's mean and worst gap over the tasks that method ran, the like-for-like
    comparison its own mean and worst gap cannot give."""
    gaps: dict[str, dict[str, float]] = defaultdict(dict)
    task_ranks: dict[str, list[int]] = defaultdict(list)
    sweep_gaps: dict[str, dict[str, float]] = defaultdict(dict)
    for task, by_method in stats.items():
        metric = _task_metric(by_method)
        finals = {m: statistics.fmean(v for v in s["final"] if math.isfinite(v))
                  if any(math.isfinite(v) for v in s["final"]) else metric.failed() for m, s in by_method.items()}
        best = metric.best(list(finals.values()))
        for m, value in finals.items():
            gaps[m][task] = metric.gap(value, best)
        for m in by_method:  # ties share the better rank
            task_ranks[m].append(1 + sum(g < gaps[m][task] for g in (gaps[o][task] for o in by_method)))
        for m, (worst, _) in views[task].sweep_worst.items():
            sweep_gaps[m][task] = metric.gap(worst / metric.scale, best)
    n_tasks = len(stats)

    def key(m: str) -> tuple[int, float, float, str]:
        values = list(gaps[m].values())
        return -len(values), statistics.fmean(values), max(values), m

    order = sorted(gaps, key=key)
    summary: dict[str, dict[str, Any]] = {}
    for rank, m in enumerate(order, 1):
        values = gaps[m]
        worst_task = max(values, key=lambda t: values[t])
        outcomes: dict[str, str] = {}
        for task, view in views.items():
            if m == view.best_baseline:
                outcomes[task] = "best baseline"
            elif m in view.versus:
                outcomes[task] = view.versus[m].outcome
        summary[m] = {"gaps": dict(values), "mean_gap": statistics.fmean(values.values()),
                      "worst_gap": values[worst_task], "worst_task": worst_task, "coverage": len(values),
                      "tasks": n_tasks, "rank": rank, "mean_task_rank": statistics.fmean(task_ranks[m]),
                      "vs_best_baseline": outcomes,
                      "sweep_worst_gap": max(sweep_gaps[m].values()) if sweep_gaps.get(m) else None,
                      "sweep_tasks": sorted(sweep_gaps.get(m, {})),
                      "needs_budget": METHODS[m].needs_budget if m in METHODS else None, "lrpilot": _is_ours(m)}
    first = order[0] if order else None
    for m in order:  # a method run on fewer tasks, against the first row over the same tasks
        ran = summary[m]["gaps"]
        if first is None or m == first or len(ran) == n_tasks or not set(ran) <= set(gaps[first]):
            continue
        theirs = [gaps[first][t] for t in ran]
        summary[m]["first_row_on_its_tasks"] = {"method": first, "tasks": sorted(ran),
                                                "mean_gap": statistics.fmean(theirs), "worst_gap": max(theirs)}
    return order, summary


def _gap(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.1f}"


def _summary_table(order: Sequence[str], summary: Mapping[str, Mapping[str, Any]], tasks: Sequence[str]) -> list[str]:
    lines = ["\n### Summary over tasks\n",
             "How far each method's final metric (mean over seeds, at its default LR) is behind the best method of "
             "each task: points of accuracy, or % above the best validation loss; lower is better; inf: diverged. "
             "**Order:** the methods run on every task first, by mean gap (then worst gap); then the methods run on "
             "fewer tasks (column *tasks*), by number of tasks and then mean gap over *their* tasks: a mean over "
             "fewer tasks is not comparable with one over all of them, so such a method is never ranked above a "
             "method that ran everywhere. **Rank** is the row position. *W/T/L* counts the tasks where the method "
             "wins, ties or loses against the task's best baseline (paired t-test, see *How to read*). *Worst gap "
             "over LR sweep*: the gap of its worst final over the LR factors ×0.1–×10 to the task's best default-LR "
             "final, worst over the tasks whose sweep is in the cache.\n",
             "| rank | method | " + " | ".join(tasks) + " | mean gap | worst gap | tasks | vs best baseline W/T/L | "
             "worst gap over LR sweep |",
             "|---|---|" + "---|" * (len(tasks) + 5)]
    for m in order:
        s = summary[m]
        row = [_gap(s["gaps"][t]) if t in s["gaps"] else "-" for t in tasks]
        outcomes = list(s["vs_best_baseline"].values())
        counts = "/".join(str(outcomes.count(o)) for o in ("win", "tie", "loss"))
        extra = []
        if outcomes.count("best baseline"):
            extra.append(f"best baseline on {outcomes.count('best baseline')}")
        if outcomes.count("untested"):
            extra.append(f"{outcomes.count('untested')} untested")
        wtl = counts + (f" ({', '.join(extra)})" if extra else "")
        if m in METHODS and not METHODS[m].takes_lr:
            sweep = "LR-free"
        elif s["sweep_worst_gap"] is None:
            sweep = "-"
        else:
            swept = len(s["sweep_tasks"])
            sweep = _gap(s["sweep_worst_gap"]) + (f" ({swept}/{s['coverage']} tasks)" if swept < s["coverage"] else "")
        bold = "**" if _is_ours(m) else ""
        coverage = f"{s['coverage']}/{s['tasks']}"
        lines.append(f"| {s['rank']} | {bold}{m}{bold} | " + " | ".join(row) + f" | {_gap(s['mean_gap'])} | "
                     f"{_gap(s['worst_gap'])} | {coverage} | {wtl} | {sweep} |")
    same = [_on_its_tasks(m, summary[m]) for m in order if "first_row_on_its_tasks" in summary[m]]
    if same:
        lines.append(f"\n**On the same tasks.** A method run on fewer tasks, against the first row (`{order[0]}`) "
                     "over the tasks it ran: " + "; ".join(same) + ".")
    return lines


def _on_its_tasks(m: str, s: Mapping[str, Any]) -> str:
    """``m``'s mean / worst gap over its tasks and the first row's over the same ones (:func:`summarize`)."""
    first = s["first_row_on_its_tasks"]
    return (f"`{m}` ({_join(first['tasks'])}): mean gap {_gap(s['mean_gap'])}, worst {_gap(s['worst_gap'])}; "
            f"`{first['method']}` there: mean {_gap(first['mean_gap'])}, worst {_gap(first['worst_gap'])}")


def _describe(m: str, s: Mapping[str, Any]) -> str:
    if s["tasks"] == 1:
        return f"`{m}`: gap {_gap(s['mean_gap'])} to the best method of the one task ({s['worst_task']})"
    over = f"all {s['tasks']} tasks" if s["coverage"] == s["tasks"] else f"the {s['coverage']} of {s['tasks']} " \
        "tasks it ran"
    worst = f"worst {_gap(s['worst_gap'])} on {s['worst_task']}" if s["coverage"] > 1 else ""
    return f"`{m}`: mean gap {_gap(s['mean_gap'])} to the best method of each task over {over}" + \
        (f" ({worst})" if worst else "")


def _join(names: Sequence[str]) -> str:
    return ", ".join(names)


def verdict_lines(order: Sequence[str], summary: Mapping[str, Mapping[str, Any]],
                  views: Mapping[str, TaskView]) -> list[str]:
    """The report's first three lines, derived from the summary (:func:`summarize`) and the per-task comparisons:
    the best method overall (the summary's first row), the best method that needs no budget (the first row with
    ``Method.needs_budget`` False), and, for each of lrpilot's methods, the tasks where it wins, ties and loses
    against the task's best baseline (paired t-test at 5%; with one seed, ahead/behind, untested)."""
    if not order:
        return ["**Best method overall:** no results.", "**Best method that needs no budget:** no results.",
                "**lrpilot's methods:** no results."]
    lines = [f"**Best method overall:** {_describe(order[0], summary[order[0]])}."]
    fewer = [m for m in order if "first_row_on_its_tasks" in summary[m]]
    if fewer:  # the methods its mean and worst gap are not comparable with, compared on their own tasks
        lines[0] = lines[0][:-1] + "; against the methods run on fewer tasks, over their tasks: " + "; ".join(
            _on_its_tasks(m, summary[m]) for m in fewer) + "."
    free = [m for m in order if summary[m]["needs_budget"] is False]
    if free:
        same = "the same, " if free[0] == order[0] else ""
        lines.append(f"**Best method that needs no budget** (not told the training length): {same}"
                     f"{_describe(free[0], summary[free[0]])}.")
    else:
        lines.append("**Best method that needs no budget:** none in this selection (every method here is told the "
                     "training length).")
    parts = []
    for m in [m for m in order if _is_ours(m)]:
        by_outcome: dict[str, list[str]] = defaultdict(list)
        for task, view in views.items():
            if m == view.best_baseline or m not in view.versus:
                continue
            c = view.versus[m]
            if c.outcome != "untested":
                outcome: str = c.outcome
            else:
                outcome = "ahead" if c.diff > 0 else "behind" if c.diff < 0 else "level"
            by_outcome[outcome].append(task)
        said = [f"{word} on {_join(by_outcome[o])}" for o, word in
                (("win", "wins"), ("tie", "ties"), ("loss", "loses"), ("ahead", "ahead (1 seed, untested)"),
                 ("level", "level (1 seed)"), ("behind", "behind (1 seed, untested)")) if by_outcome[o]]
        parts.append(f"`{m}` {'; '.join(said) if said else 'has no baseline to compare with'}")
    if parts:
        lines.append("**lrpilot's methods against the best other method of each task** (paired t-test over seeds, "
                     "5%): " + "; ".join(parts) + ".")
    else:
        lines.append("**lrpilot's methods:** none in this selection.")
    return lines


_HOW_TO_READ = """
### How to read this report

- **Paired seeds.** Every method trains from the same seeds, and a seed fixes both the initial weights and the
  batch order, so run *s* of one method and run *s* of another differ only by the method.
- **final / best**: the test metric at the last epoch / at the best epoch, mean over seeds and its 95% Student-t
  interval `[low, high]` (the mean minus and plus t(0.975, n−1)·sd/√n); with one seed the mean alone (no
  interval, no standard deviation of one value).
- **vs best baseline**: the task's best baseline is the best method by mean final that is not lrpilot's (chosen
  after the fact, which favours the baseline). Each other method is compared with it by the two-sided paired
  t-test at 5% on the per-seed differences of the final metric: *win* if the 95% interval of the mean difference
  is above 0, *loss* if below, *tie* if it contains 0; shown with the mean difference (positive: better; points of
  accuracy, or loss units) and its interval. With one seed the difference is *untested*. A seed where the method
  diverged and the baseline did not is a loss (and the reverse a win).
- **worst final over LR ×0.1–×10** (robustness to LR misspecification): the worst final metric (mean over the
  seeds at each factor; a diverged run counts as 0 accuracy, or an infinite loss) over the runs at ×0.1, ×0.3,
  ×1, ×3 and ×10 the method's default LR. The values come from the `--lr-sweep` runs cached in this results
  directory (`runs/`, same budget): `-` where the cache holds no complete sweep of that method on that task
  (`lrpilot bench --lr-sweep --tasks T --methods M --out DIR` fills it); *LR-free* for the methods that take no
  LR (their factor is a multiplier or a guess they correct).
- **Rows** of a task table: best mean final first. **epochs/seconds to target**: the first epoch whose metric
  reaches the target (mean over the seeds that reach it, and how many do), wall seconds from the start of training
  including evaluation (`<0.1`: under a tenth of a second). **opt-step time vs plain**: time of `optimizer.step()`
  + its scheduler (per-epoch steps amortised) relative to the plain optimizer the method builds on (SGD or AdamW),
  both stepped alternately on the task's model in one process, medians over at least 60 steps (≈: from the
  training runs, parallel processes on a shared CPU, rough). lrpilot's methods in bold.
- **Verdict**: derived from these tables: the summary's first row (and, for each method run on fewer tasks, whose
  mean and worst gap are over other tasks, both its gaps and the first row's over the tasks it ran); its first row
  among the methods that are not told the training length (methods told it: {budget}); and the outcomes of
  lrpilot's methods ({ours}) in the *vs best baseline* columns."""


def _sweep(results: Sequence[Result], stats: Mapping[str, Mapping[str, Mapping[str, Any]]]
           ) -> dict[str, dict[str, dict[float, list[float]]]]:
    """task -> method -> lr factor -> final test metrics (diverged runs count as 0 accuracy, infinite loss), for
    the methods run at more than one LR; runs at another budget than the method's default-LR runs are left out."""
    out: dict[str, dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in results:
        default = _default_lr(r["method"])
        if default is None:
            continue
        epochs = stats.get(r["task"], {}).get(r["method"], {}).get("epochs")
        if epochs is not None and r["epochs"] != epochs:
            continue
        factor = float(f"{r['lr'] / default:.3g}")
        value = _metric_of(r).failed() if r["diverged"] else r["records"][-1]["test_metric"]
        out[r["task"]][r["method"]][factor].append(value)
    return {t: {m: dict(f) for m, f in ms.items() if len(f) > 1} for t, ms in out.items()}


def _sweep_tables(sweep: dict[str, dict[str, dict[float, list[float]]]], metrics: dict[str, _Metric]) -> list[str]:
    lines = []
    for task, by_method in sweep.items():
        if not by_method:
            continue
        metric = metrics[task]
        factors = sorted({f for fs in by_method.values() for f in fs})
        lines += [f"\n### LR sweep, {task} (final {metric.name}{' ' + metric.unit if metric.unit else ''}, mean over "
                  f"seeds, at factor x the method's default LR; diverged = {metric.failed():g}; from the runs "
                  "cached in runs/)\n",
                  "| method | " + " | ".join(f"x{f:g}" for f in factors) + " | worst | mean | seeds |",
                  "|---|" + "---|" * (len(factors) + 3)]
        rows = []
        for m, fs in by_method.items():
            means = {f: metric.scale * statistics.mean(v) for f, v in fs.items()}
            rows.append((metric.worst(list(means.values())), m, means, min(len(v) for v in fs.values())))
        for worst, m, means, seeds in sorted(rows, key=lambda r: -r[0] if metric.higher_is_better else r[0]):
            cells = [f"{means[f]:.{metric.digits}f}" if f in means else "-" for f in factors]
            mean = statistics.mean(means.values())
            lines.append(f"| {m} | " + " | ".join(cells) + f" | **{worst:.{metric.digits}f}** | "
                         f"{mean:.{metric.digits}f} | {seeds} |")
    return lines


def _write_curves(results: Sequence[Result], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CURVE_FIELDS)
        for r in sorted(results, key=lambda r: (r["task"], r["method"], r["lr"], r["seed"])):
            for rec in r["records"]:
                writer.writerow([r["task"], r["method"], r["lr"], r["seed"], rec["epoch"], rec["train_loss"],
                                 rec["test_loss"], r.get("metric", "accuracy"),
                                 rec["test_metric"], rec["lr"], rec["effective_lr"],
                                 "" if rec["omega"] is None else rec["omega"], rec["seconds"], rec["step_seconds"]])


def _view_json(view: TaskView) -> dict[str, Any]:
    return {"order": view.order, "best_baseline": view.best_baseline,
            "final": {m: asdict(i) for m, i in view.final.items()},
            "vs_best_baseline": {m: asdict(c) for m, c in view.versus.items()},
            "sweep_worst": {m: {"worst": w, "seeds": n} for m, (w, n) in view.sweep_worst.items()}}


def write_report(results: Sequence[Result], out: Path, *, title: str = "lrpilot bench", notes: Sequence[str] = (),
                 figures: bool = True, overhead: dict[tuple[str, str], float] | None = None,
                 provenance: dict[str, Any] | None = None) -> Path:
    """Write ``report.md``, ``curves.csv``, ``summary.json`` and (``figures``) the PNGs into ``out`` from
    ``results`` (as :func:`~lrpilot.bench.runner.load_results` returns them: the default-LR runs, and any sweep runs
    at other LRs, which fill the robustness column and the sweep tables) and the step-time ratios ``overhead``
    ((task, method) -> ratio, :func:`~lrpilot.bench.overhead.measure_overheads`; without them the ratios come from
    the training runs, marked ≈) and the run's ``provenance`` (:func:`~lrpilot.bench.provenance.provenance`),
    written into both the report and ``summary.json``; return the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not results:
        raise ValueError("no results to report")
    stats = method_stats(results)
    sweep = _sweep(results, stats)
    metrics = {r["task"]: _metric_of(r) for r in results}
    views = {task: analyse_task(task, by_method, sweep.get(task)) for task, by_method in stats.items()}
    order, summary = summarize(stats, views)
    verdict = verdict_lines(order, summary, views)
    carried = Counter(r["restored_from"] for r in results if r.get("restored_from"))
    notes = [*notes, *(f"{n} of these runs were not trained by this invocation: restored from {origin}."
                       for origin, n in carried.items())]
    lines = [f"# {title}\n", *(line + "  " for line in verdict[:-1]), verdict[-1], "", *notes]
    present = {m for by_method in stats.values() for m in by_method}
    budget = [m for m in METHODS if METHODS[m].needs_budget and m in present] or ["none here"]
    ours = [m for m in METHODS if METHODS[m].lrpilot and m in present] or ["none here"]
    lines.append(_HOW_TO_READ.format(budget=", ".join(f"`{m}`" for m in budget),
                                     ours=", ".join(f"`{m}`" for m in ours)))
    for task, by_method in stats.items():
        lines += _task_table(task, by_method, views[task], overhead)
    lines += _summary_table(order, summary, list(stats))
    separation = [d for t, by_method in stats.items() if (d := discrimination(t, by_method, views[t])) is not None]
    lines += _discrimination_table(separation, metrics)
    lines += _sweep_tables(sweep, metrics)
    lines.append("\n### Methods\n")
    lines += [f"- `{m.name}` (default lr {m.default_lr:g}{'' if m.takes_lr else ', LR-free'}"
              f"{', told the budget' if m.needs_budget else ''}): {m.description}" for m in METHODS.values()
              if m.name in present]
    written: list[str] = []
    if figures:
        from .plots import plot_all

        default_runs: dict[str, dict[str, list[Result]]] = defaultdict(lambda: defaultdict(list))
        for r in results:
            s = stats.get(r["task"], {}).get(r["method"])
            if s is not None and r["lr"] == s["lr"] and r["epochs"] == s["epochs"]:
                default_runs[r["task"]][r["method"]].append(r)
        written = plot_all(default_runs, {t: target_of(t) for t in stats},
                           {t: metrics[t].higher_is_better for t in stats}, {t: metrics[t].name for t in stats},
                           order, {m: summary[m]["gaps"] for m in order}, sweep, out)
    if written:
        lines.append("\n### Figures\n")
        lines += [f"![{name}]({name})" for name in written]
    if provenance is not None:
        lines += provenance_lines(provenance)
    _write_curves(results, out / "curves.csv")
    (out / "summary.json").write_text(json.dumps({
        "provenance": provenance, "verdict": verdict, "order": order, "per_task": stats, "summary": summary,
        "analysis": {t: _view_json(v) for t, v in views.items()},
        "discrimination": {d.task: asdict(d) for d in separation},
        "overhead": {f"{t}/{m}": r for (t, m), r in (overhead or {}).items()},
        "sweep": {t: {m: {str(f): v for f, v in fs.items()} for m, fs in ms.items()} for t, ms in sweep.items()}},
        indent=1))
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
