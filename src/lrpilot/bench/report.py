"""Turn cached benchmark results into ``report.md``, ``curves.csv``, ``summary.json`` and PNG figures.

Tables (per task, at each method's default LR, mean ± sd over seeds): final and best test metric (accuracy,
or validation loss for language modelling: each result says which), epochs and wall seconds to the task's
target, seconds per run, and the optimizer-step time relative
to the plain optimizer the method extends (``Method.reference``); a summary over tasks (gap to the best
method per task, rank); with an LR sweep, final accuracy per LR factor and the worst of them. Figures:
learning curves per task, effective-LR traces (log scale), AutoDrop's angular velocity with its drops, the
LR-sweep robustness curves.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .methods import METHODS
from .provenance import provenance_lines
from .runner import target_of

__all__ = ["method_stats", "write_report"]

Result = dict[str, Any]
CURVE_FIELDS = ("task", "method", "lr", "seed", "epoch", "train_loss", "test_loss", "metric", "test_metric",
                "lr_group0", "effective_lr", "omega", "seconds", "step_seconds")
#: lrpilot's own methods: bold in the tables, strong solid lines in the figures.
OURS = {"autodrop-sgd": "#d62728", "autodrop-adamw": "#ff7f0e", "active-sgd": "#1f77b4", "active-adamw": "#17becf",
        "texp": "#9467bd"}


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


_METRICS = {"accuracy": _Metric("test accuracy", True, 100.0, 1, "%"),
            "val_loss": _Metric("validation loss", False, 1.0, 3, "")}


def _metric_of(result: Result) -> _Metric:
    return _METRICS[result.get("metric", "accuracy")]


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def _pm(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    mean, sd = _mean_sd([scale * v for v in values])
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _default_lr(method: str) -> float | None:
    m = METHODS.get(method)
    return float(f"{m.default_lr:.6g}") if m else None


def _to_target(result: Result, target: float) -> tuple[int, float] | None:
    metric = _metric_of(result)
    for rec in result["records"]:
        if metric.reached(rec["test_metric"], target):
            return rec["epoch"], rec["seconds"]
    return None


def method_stats(results: Sequence[Result]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task, per method, statistics of its runs at its default LR (a method with no default-LR run falls
    back to its only LR): seeds, final/best test metric, epochs/seconds to target, seconds, step seconds."""
    groups: dict[tuple[str, str], dict[float, list[Result]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        groups[(r["task"], r["method"])][r["lr"]].append(r)
    stats: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (task, method), by_lr in groups.items():
        lr = _default_lr(method)
        runs = by_lr.get(lr) if lr in by_lr else (next(iter(by_lr.values())) if len(by_lr) == 1 else None)
        if runs is None:
            continue
        target = target_of(task)
        metric = _metric_of(runs[0])
        hits = [_to_target(r, target) for r in runs]
        reached = [h for h in hits if h is not None]
        stats[task][method] = {
            "lr": runs[0]["lr"], "seeds": len(runs), "epochs": runs[0]["epochs"],
            "metric": runs[0].get("metric", "accuracy"),
            "final": [r["records"][-1]["test_metric"] if not r["diverged"] else math.nan for r in runs],
            "best": [metric.best([x["test_metric"] for x in r["records"]]) for r in runs],
            "epochs_to_target": [h[0] for h in reached], "seconds_to_target": [h[1] for h in reached],
            "target": target, "seconds": [r["seconds"] for r in runs],
            "step_seconds": [r["step_seconds_mean"] for r in runs],
            "drop_epochs": [r.get("drop_epochs") for r in runs], "diverged": sum(r["diverged"] for r in runs),
        }
    return stats


def _task_table(task: str, stats: dict[str, dict[str, Any]], overhead: dict[tuple[str, str], float] | None
                ) -> list[str]:
    first = next(iter(stats.values()))
    target = first["target"]
    metric = _METRICS[first["metric"]]
    lines = [f"\n### {task} ({first['epochs']} epochs, {first['seeds']} seed(s); {metric.name}"
             f"{' ' + metric.unit if metric.unit else ''}, {'higher' if metric.higher_is_better else 'lower'} is "
             f"better, target {metric.scale * target:g}{metric.unit})\n",
             "| method | lr | final | best | epochs to target | seconds to target | s/run | "
             "opt-step time vs plain | notes |",
             "|---|---|---|---|---|---|---|---|---|"]

    def rank_key(m: str) -> float:
        mean = _mean_sd(stats[m]["final"])[0]
        if not math.isfinite(mean):
            return math.inf
        return -mean if metric.higher_is_better else mean

    order = sorted(stats, key=rank_key)
    for method in order:
        s = stats[method]
        n = s["seeds"]
        reached = len(s["epochs_to_target"])
        ett = f"{statistics.mean(s['epochs_to_target']):.1f} ({reached}/{n})" if reached else f"never (0/{n})"
        stt = f"{statistics.mean(s['seconds_to_target']):.1f}" if reached else "-"
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
        bold = "**" if method in OURS else ""
        final, best = _pm(s["final"], metric.scale, metric.digits), _pm(s["best"], metric.scale, metric.digits)
        lines.append(f"| {bold}{method}{bold} | {s['lr']:g} | {final} | {best} | {ett} | {stt} | "
                     f"{statistics.mean(s['seconds']):.1f} | {ratio} | {', '.join(notes)} |")
    return lines


def _summary_table(stats: dict[str, dict[str, dict[str, Any]]]) -> tuple[list[str], dict[str, Any]]:
    gaps: dict[str, dict[str, float]] = defaultdict(dict)
    ranks: dict[str, list[int]] = defaultdict(list)
    for task, by_method in stats.items():
        metric = _METRICS[next(iter(by_method.values()))["metric"]]
        finals = {m: _mean_sd(s["final"])[0] for m, s in by_method.items()}
        finals = {m: (v if math.isfinite(v) else metric.failed()) for m, v in finals.items()}
        best = metric.best(list(finals.values()))
        for m, value in finals.items():
            gaps[m][task] = metric.gap(value, best)
            # ties share the better rank
            ranks[m].append(1 + sum(metric.gap(other, best) < gaps[m][task] for other in finals.values()))
    tasks = list(stats)
    lines = ["\n### Summary over tasks (performance profile at default LRs: how far each method's final metric is "
             "behind the best method of each task — points of accuracy, or % above the best validation loss; lower "
             "is better; inf: diverged)\n",
             "| method | " + " | ".join(tasks) + " | mean gap | worst gap | mean rank |",
             "|---|" + "---|" * (len(tasks) + 3)]
    summary = {}
    for m in sorted(gaps, key=lambda k: statistics.mean(gaps[k].values())):
        row = [f"{gaps[m][t]:.1f}" if t in gaps[m] else "-" for t in tasks]
        mean_gap, worst = statistics.mean(gaps[m].values()), max(gaps[m].values())
        summary[m] = {"gaps": gaps[m], "mean_gap": mean_gap, "worst_gap": worst, "mean_rank": statistics.mean(ranks[m])}
        lines.append(f"| {m} | " + " | ".join(row) + f" | {mean_gap:.1f} | {worst:.1f} | "
                     f"{statistics.mean(ranks[m]):.1f} |")
    return lines, summary


def _sweep(results: Sequence[Result]) -> dict[str, dict[str, dict[float, list[float]]]]:
    """task -> method -> lr factor -> final test metrics (diverged runs count as 0 accuracy, infinite loss)."""
    out: dict[str, dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in results:
        default = _default_lr(r["method"])
        if default is None:
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
        worst_of = min if metric.higher_is_better else max
        factors = sorted({f for fs in by_method.values() for f in fs})
        lines += [f"\n### LR sweep, {task} (final {metric.name}{' ' + metric.unit if metric.unit else ''}, mean over "
                  f"seeds, at factor x the method's default LR; diverged = {metric.failed():g})\n",
                  "| method | " + " | ".join(f"x{f:g}" for f in factors) + " | worst | mean |",
                  "|---|" + "---|" * (len(factors) + 2)]
        rows = []
        for m, fs in by_method.items():
            means = {f: metric.scale * statistics.mean(v) for f, v in fs.items()}
            rows.append((worst_of(means.values()), m, means))
        for worst, m, means in sorted(rows, key=lambda r: -r[0] if metric.higher_is_better else r[0]):
            cells = [f"{means[f]:.{metric.digits}f}" if f in means else "-" for f in factors]
            mean = statistics.mean(means.values())
            lines.append(f"| {m} | " + " | ".join(cells) + f" | **{worst:.{metric.digits}f}** | "
                         f"{mean:.{metric.digits}f} |")
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


def _style(method: str, index: int) -> dict[str, Any]:
    """lrpilot's methods: thick solid lines in strong colours; the others: thin dashed lines."""
    import matplotlib.pyplot as plt

    if method in OURS:
        return {"color": OURS[method], "lw": 2.4, "ls": "-"}
    return {"color": plt.get_cmap("tab20b")((3 * index) % 20), "lw": 1.2, "ls": "--"}


def _plot(results: Sequence[Result], stats: dict[str, dict[str, dict[str, Any]]],
          sweep: dict[str, dict[str, dict[float, list[float]]]], metrics: dict[str, _Metric], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    colors = {m: i for i, m in enumerate(METHODS)}
    default_runs: dict[str, dict[str, list[Result]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r["task"] in stats and r["method"] in stats[r["task"]] and r["lr"] == stats[r["task"]][r["method"]]["lr"]:
            default_runs[r["task"]][r["method"]].append(r)
    for task, by_method in default_runs.items():
        # learning curves: test metric and train loss, mean over seeds
        metric = metrics[task]
        fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(13, 4.8))
        for method, runs in sorted(by_method.items()):
            n = min(len(r["records"]) for r in runs)
            ep = list(range(1, n + 1))
            acc = [statistics.mean(metric.scale * r["records"][i]["test_metric"] for r in runs) for i in range(n)]
            loss = [statistics.mean(r["records"][i]["train_loss"] for r in runs) for i in range(n)]
            style = _style(method, colors.get(method, 0))
            ax_acc.plot(ep, acc, label=method, **style)
            ax_loss.semilogy(ep, loss, **style)
        values = [metric.scale * x["test_metric"] for runs in by_method.values() for r in runs for x in r["records"]
                  if math.isfinite(x["test_metric"])]
        if values and metric.higher_is_better:
            top = max(values)
            ax_acc.set_ylim(max(0, top - 25), top + 1)
        elif values:  # a loss: from the best value to 1.0 above it, so that the good runs are told apart
            low = min(values)
            ax_acc.set_ylim(low - 0.05, low + 1.0)
        ax_acc.axhline(metric.scale * target_of(task), color="k", lw=0.7, ls=":")
        ax_acc.set(title=f"{task}: {metric.name} (mean over seeds)", xlabel="epoch", ylabel=metric.unit or metric.name)
        ax_loss.set(title="train loss", xlabel="epoch")
        ax_acc.legend(fontsize=7, ncol=2, loc="lower right" if metric.higher_is_better else "upper right")
        fig.tight_layout()
        name = f"curves_{task}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(name)
        # effective LR traces, seed with the smallest index
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for method, runs in sorted(by_method.items()):
            r = min(runs, key=lambda r: r["seed"])
            eff = [x["effective_lr"] if x["effective_lr"] > 0 else math.nan for x in r["records"]]
            ax.semilogy([x["epoch"] for x in r["records"]], eff, label=method, **_style(method, colors.get(method, 0)))
        top = max(x["effective_lr"] for runs in by_method.values() for r in runs for x in r["records"])
        ax.set_ylim(bottom=max(ax.get_ylim()[0], 1e-5 * top))  # a schedule's last steps to 0 would flatten the rest
        ax.set(title=f"{task}: effective LR at the end of each epoch (log scale)", xlabel="epoch", ylabel="LR")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        name = f"lr_{task}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(name)
    # AutoDrop's angular velocity with drop marks
    autodrop = [(t, m, min(runs, key=lambda r: r["seed"])) for t, ms in default_runs.items() for m, runs in ms.items()
                if runs and "omega_history" in runs[0]]
    if autodrop:
        fig, axes = plt.subplots(len(autodrop), 1, figsize=(8, 2.6 * len(autodrop)), squeeze=False)
        for ax, (task, method, r) in zip(axes[:, 0], autodrop):
            hist = r["omega_history"]
            ax.plot([h[0] for h in hist], [h[1] for h in hist], ".-", color="C0")
            for e in r["drop_epochs"]:
                ax.axvline(e, color="C3", ls="--", lw=1)
            ax.set(title=f"{task}, {method} (lr {r['lr']:g}, seed {r['seed']}): ω, drops in red",
                   ylabel="ω (deg)", xlabel="epoch")
        fig.tight_layout()
        fig.savefig(out / "autodrop_omega.png", dpi=100)
        plt.close(fig)
        written.append("autodrop_omega.png")
    # LR-sweep robustness
    sweep = {t: ms for t, ms in sweep.items() if ms}
    if sweep:
        fig, axes = plt.subplots(1, len(sweep), figsize=(6.5 * len(sweep), 4.8), squeeze=False)
        for ax, (task, per_method) in zip(axes[0], sweep.items()):
            metric = metrics[task]
            for method, fs in sorted(per_method.items()):
                xs = sorted(fs)
                ax.semilogx(xs, [metric.scale * statistics.mean(fs[x]) for x in xs], marker="o", label=method,
                            **_style(method, colors.get(method, 0)))
            ax.set(title=f"{task}: LR-sweep robustness", xlabel="LR / method's default LR",
                   ylabel=f"final {metric.name} {metric.unit}")
            ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / "lr_sweep.png", dpi=100)
        plt.close(fig)
        written.append("lr_sweep.png")
    return written


def write_report(results: Sequence[Result], out: Path, *, title: str = "lrpilot bench", notes: Sequence[str] = (),
                 figures: bool = True, overhead: dict[tuple[str, str], float] | None = None,
                 provenance: dict[str, Any] | None = None) -> Path:
    """Write ``report.md``, ``curves.csv``, ``summary.json`` and (``figures``) the PNGs into ``out`` from
    ``results`` (as :func:`~lrpilot.bench.runner.load_results` returns them) and the step-time ratios
    ``overhead`` ((task, method) -> ratio, :func:`~lrpilot.bench.overhead.measure_overheads`; without them the
    ratios come from the training runs, marked ≈) and the run's ``provenance``
    (:func:`~lrpilot.bench.provenance.provenance`: versions, CPU, threads, commit, command line), written into both
    the report and ``summary.json``; return the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not results:
        raise ValueError("no results to report")
    stats = method_stats(results)
    sweep = _sweep(results)
    metrics = {r["task"]: _metric_of(r) for r in results}
    lines = [f"# {title}\n", *notes]
    lines.append("\nTest metric (accuracy, or validation loss for language modelling) at the last epoch (final) and "
                 "the best epoch, mean ± sd over seeds; epochs/seconds to target = first epoch whose metric reaches "
                 "the target (mean over the seeds that reach it, "
                 "and how many do), wall seconds from the start of training including evaluation; opt-step time vs "
                 "plain = time of `optimizer.step()` + its scheduler (per-epoch steps amortised) relative to the plain "
                 "optimizer the method builds on (SGD or AdamW), both stepped alternately on the task's model in one "
                 "process, medians over at least 60 steps (≈: from the training runs, parallel processes on a "
                 "shared CPU, rough). lrpilot's methods in bold.")
    for task, by_method in stats.items():
        lines += _task_table(task, by_method, overhead)
    summary_lines, summary = _summary_table(stats)
    lines += summary_lines
    lines += _sweep_tables(sweep, metrics)
    lines.append("\n### Methods\n")
    lines += [f"- `{m.name}` (default lr {m.default_lr:g}): {m.description}" for m in METHODS.values()
              if any(m.name in s for s in stats.values())]
    written = _plot(results, stats, sweep, metrics, out) if figures else []
    if written:
        lines.append("\n### Figures\n")
        lines += [f"![{name}]({name})" for name in written]
    if provenance is not None:
        lines += provenance_lines(provenance)
    _write_curves(results, out / "curves.csv")
    (out / "summary.json").write_text(json.dumps({"provenance": provenance, "per_task": stats, "summary": summary,
                                                  "overhead": {
        f"{t}/{m}": r for (t, m), r in (overhead or {}).items()}, "sweep": {
        t: {m: {str(f): v for f, v in fs.items()} for m, fs in ms.items()} for t, ms in sweep.items()}}, indent=1))
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
