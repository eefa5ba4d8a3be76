"""The figures of ``lrpilot bench``'s report: one per task, a summary heat map, AutoDrop's ω, the LR sweep.

Rules every figure follows, so that a reader can look rather than read:

* no method is clipped off an axis: the test metric is drawn on a log scale (test *error* for accuracy, so that
  90% and 99% are as far apart as 9% and 90% error; the loss itself for a loss), with a zoomed panel on the last
  epochs for the methods near the best; the effective LR on a log scale down to the smallest positive value;
* the legend sits outside the data, on the right of the figure;
* lrpilot's methods (``Method.lrpilot``) are thick solid lines in strong colours, the peers thinner dashed lines
  (four dash patterns, twenty colours), each method's style the same in every figure;
* the target is a labelled line, and every axis says what it shows.

``curves_<task>.png`` (four panels: the test metric over all epochs, the zoom, the train loss, the effective LR),
``summary_gaps.png`` (the gap of each method to the best of each task, as a heat map, rows in the summary
table's order), ``autodrop_omega.png`` and ``lr_sweep.png`` (with an LR sweep). matplotlib is imported only here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .methods import METHODS

__all__ = ["method_style", "plot_all"]

Result = dict[str, Any]

# lrpilot's methods: strong, well-separated colours (the first ones by name, the rest in registry order)
_OURS = {"autodrop-sgd": "#d62728", "autodrop-adamw": "#ff7f0e", "active-sgd": "#1f77b4", "active-adamw": "#17becf",
         "texp": "#9467bd", "pilot": "#2ca02c", "pilot-anytime": "#8c564b"}
_OURS_MORE = ("#e377c2", "#bcbd22", "#7f7f7f", "#000000")
_DASHES = ((0, (5, 2)), (0, (2, 1.5)), (0, (6, 2, 1.5, 2)), (0, (9, 3)))


def _is_ours(method: str) -> bool:
    return method in METHODS and METHODS[method].lrpilot


def method_style(method: str) -> dict[str, Any]:
    """The line style of ``method`` in every figure: solid and thick for lrpilot's methods, dashed and thinner for
    the peers; colours fixed by the method's place in the registry, so a method looks the same everywhere."""
    from matplotlib import colormaps

    names = list(METHODS)
    if _is_ours(method):
        ours = [m for m in names if _is_ours(m) and m not in _OURS]
        color = _OURS.get(method) or _OURS_MORE[ours.index(method) % len(_OURS_MORE)]
        return {"color": color, "lw": 2.4, "ls": "-", "zorder": 3}
    peers = [m for m in names if not _is_ours(m)]
    i = peers.index(method) if method in peers else len(peers)
    # tab20b's muted hues (navy, olive, ochre, maroon, plum; four shades each), away from lrpilot's pure colours:
    # the darkest shade of each hue first, so that neighbours in the registry differ most
    shade = 4 * (i % 5) + (i // 5) % 4
    return {"color": colormaps["tab20b"](shade), "lw": 1.5, "ls": _DASHES[i % len(_DASHES)], "zorder": 2}


def _order(methods: Sequence[str]) -> list[str]:
    """lrpilot's methods first, then the peers, each in registry order (the legend's order)."""
    rank = {m: i for i, m in enumerate(METHODS)}
    return sorted(methods, key=lambda m: (not _is_ours(m), rank.get(m, len(rank)), m))


def _legend(fig: Any, axes: Sequence[Any], methods: Sequence[str]) -> None:
    """One legend for the figure, outside the axes on the right: lrpilot's methods (bold) first."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], **{k: v for k, v in method_style(m).items() if k != "zorder"}) for m in methods]
    legend = fig.legend(handles, methods, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False,
                        title="lrpilot (solid)\npeers (dashed)", title_fontsize=8, handlelength=3.2)
    for text, m in zip(legend.get_texts(), methods):
        if _is_ours(m):
            text.set_fontweight("bold")


def _mean_curve(runs: Sequence[Result], key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    n = min(len(r["records"]) for r in runs)
    values = []
    for i in range(n):
        vals = [scale * r["records"][i][key] for r in runs if math.isfinite(r["records"][i][key])]
        values.append(statistics.fmean(vals) if vals else math.nan)
    return list(range(1, n + 1)), values


def _task_figure(task: str, by_method: Mapping[str, Sequence[Result]], higher_is_better: bool, target: float,
                 name: str, out: Path) -> None:
    import matplotlib.pyplot as plt

    methods = _order(list(by_method))
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.4))
    (ax_full, ax_zoom), (ax_loss, ax_lr) = axes
    first = next(iter(by_method.values()))[0]
    spe = round(first["steps"] / max(1, len(first["records"])))
    xlabel = f"epoch ({spe} steps)" if higher_is_better else f"evaluation window ({spe} steps)"
    # the metric as drawn: test error % (log) for an accuracy, the loss (log) otherwise
    drawn: dict[str, tuple[list[int], list[float]]] = {}
    for m in methods:
        ep, vals = _mean_curve(by_method[m], "test_metric", 100.0 if higher_is_better else 1.0)
        drawn[m] = (ep, [100.0 - v for v in vals] if higher_is_better else vals)
    goal = 100.0 * (1 - target) if higher_is_better else target
    label = "test error %" if higher_is_better else name
    # a log axis has no 0: an error of 0 (every test example right) is drawn at half the smallest positive value
    positive = [v for _, vals in drawn.values() for v in vals if math.isfinite(v) and v > 0]
    floor = 0.5 * min(positive) if positive else 0.1
    zeros = any(v <= 0 for _, vals in drawn.values() for v in vals if math.isfinite(v))
    if zeros:
        drawn = {m: (ep, [max(v, floor) if math.isfinite(v) else v for v in vals]) for m, (ep, vals) in drawn.items()}
    for m in methods:
        ep, vals = drawn[m]
        ax_full.plot(ep, vals, label=m, **method_style(m))
    ax_full.set_yscale("log")
    ax_full.axhline(goal, color="k", lw=0.8, ls=":")
    ax_full.annotate(f"target {_target_text(target, higher_is_better)}", (0.99, goal),
                     xycoords=("axes fraction", "data"), fontsize=8, va="center", ha="right", zorder=5,
                     bbox={"fc": "white", "ec": "0.6", "lw": 0.5, "pad": 1.5})
    ax_full.set(title=f"{label} (log scale: every method), mean over seeds"
                      + (f"\n(0 drawn at {floor:.2g})" if zeros else ""), xlabel=xlabel, ylabel=f"{label} (log)")
    _plain_log_ticks(ax_full)
    # zoom: the last 40% of the epochs, the methods whose final value is near the best one
    finals = {m: drawn[m][1][-1] for m in methods if drawn[m][1] and math.isfinite(drawn[m][1][-1])}
    if finals:
        best = min(finals.values())
        # the methods that end within twice the best error (at least 1 point more), or 10% of the best loss
        band = max(1.0, best) if higher_is_better else 0.1 * best
        near = [m for m in methods if m in finals and finals[m] <= best + band]
        start = max(1, math.floor(0.6 * max(len(drawn[m][0]) for m in methods)))
        shown: list[float] = []
        for m in near:
            ep, vals = drawn[m]
            ax_zoom.plot(ep[start - 1:], vals[start - 1:], label=m, **method_style(m))
            shown += [v for v in vals[start - 1:] if math.isfinite(v)]
        if shown:  # the zoom may cut a spike of a near method (the left panel shows it whole)
            low, high = min(shown), min(max(shown), best + 2 * band)
            pad = 0.05 * (high - low or 1.0)
            ax_zoom.set_ylim(low - pad, high + pad)
            if low - pad <= goal <= high + pad:
                ax_zoom.axhline(goal, color="k", lw=0.8, ls=":")
                ax_zoom.annotate(f"target {_target_text(target, higher_is_better)}", (0.99, goal),
                                 xycoords=("axes fraction", "data"), fontsize=8, va="center", ha="right", zorder=5,
                                 bbox={"fc": "white", "ec": "0.6", "lw": 0.5, "pad": 1.5})
        hidden = len(finals) - len(near)
        what = f"ending within {band:.2g} point{'' if band == 1 else 's'} of the best error" if higher_is_better else \
            "ending within 10% of the best loss"
        ax_zoom.set(title=f"zoom: last 40% of epochs, the {len(near)} methods {what}"
                          + (f"\n({hidden} others: left panel)" if hidden else ""),
                    xlabel=xlabel, ylabel=f"{label} (linear)")
    for m in methods:
        ep, vals = _mean_curve(by_method[m], "train_loss")
        ax_loss.plot(ep, vals, label=m, **method_style(m))
    ax_loss.set_yscale("log")
    _plain_log_ticks(ax_loss)
    ax_loss.set(title="train loss (log), mean over the epoch's batches and the seeds", xlabel=xlabel,
                ylabel="train loss (log)")
    lrs: list[float] = []
    for m in methods:
        r = min(by_method[m], key=lambda r: r["seed"])
        eff = [x["effective_lr"] if x["effective_lr"] > 0 else math.nan for x in r["records"]]
        lrs += [v for v in eff if math.isfinite(v)]
        ax_lr.plot([x["epoch"] for x in r["records"]], eff, label=m, **method_style(m))
    ax_lr.set_yscale("log")
    if lrs:
        ax_lr.set_ylim(0.5 * min(lrs), 2 * max(lrs))
    ax_lr.set(title="effective LR (log) at the end of each epoch, first seed (0 not drawn)", xlabel=xlabel,
              ylabel="effective LR (log)")
    from matplotlib.ticker import MaxNLocator

    for ax in axes.ravel():
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    seeds = sorted({len(runs) for runs in by_method.values()})
    fig.suptitle(f"{task}: every method at its default LR, {'/'.join(map(str, seeds))} seed(s)", fontsize=12)
    fig.tight_layout()
    _legend(fig, axes.ravel(), methods)
    fig.savefig(out / f"curves_{task}.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def _target_text(target: float, higher_is_better: bool) -> str:
    return f"{100 * target:g}% accuracy" if higher_is_better else f"{target:g}"


def _plain_log_ticks(ax: Any) -> None:
    """Tick labels as plain numbers (2, 5, 10, 20) on a log axis, not powers of ten."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullLocator

    low, high = ax.get_ylim()
    decades = math.log10(high / max(low, 1e-300))
    if decades < 1:  # under a decade: evenly spaced plain values (2.2, 2.4, ...)
        ticks = [v for v in MaxNLocator(nbins=8).tick_values(low, high) if low <= v <= high]
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_minor_locator(NullLocator())
    else:  # 1, 2, 3, 5 per decade over a few decades; powers of ten alone over many
        subs = (1.0, 2.0, 3.0, 5.0) if decades <= 2.5 else (1.0, 3.0) if decades <= 4 else (1.0,)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(float(k) for k in range(2, 10) if k not in subs)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _summary_figure(order: Sequence[str], tasks: Sequence[str], gaps: Mapping[str, Mapping[str, float]],
                    out: Path, cap: float = 10.0) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    columns = [*tasks, "mean gap\n(tasks it ran)"]
    grid = np.full((len(order), len(columns)), np.nan)
    for i, m in enumerate(order):
        for j, t in enumerate(tasks):
            if t in gaps[m]:
                grid[i, j] = min(gaps[m][t], 1e9)
        grid[i, -1] = min(statistics.fmean(gaps[m].values()), 1e9) if gaps[m] else np.nan
    fig, ax = plt.subplots(figsize=(1.5 * len(columns) + 4.0, 0.36 * len(order) + 1.8))
    ax.set_facecolor("#e6e6e6")  # not run on that task
    image = ax.imshow(np.minimum(grid, cap), cmap="YlOrRd", vmin=0, vmax=cap, aspect="auto")
    ax.axvline(len(tasks) - 0.5, color="k", lw=2)  # the tasks | their mean (over the tasks each method ran)
    for i in range(len(order)):
        for j in range(len(columns)):
            value = grid[i, j]
            text = "-" if np.isnan(value) else ("inf" if value >= 1e9 else f"{value:.1f}")
            dark = not np.isnan(value) and value > 0.6 * cap
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=20, ha="right", fontsize=8)
    labels = [m if len(gaps[m]) == len(tasks) else f"{m} ({len(gaps[m])}/{len(tasks)} tasks)" for m in order]
    ax.set_yticks(range(len(order)), labels, fontsize=8)
    for label, m in zip(ax.get_yticklabels(), order):
        if _is_ours(m):
            label.set_fontweight("bold")
    ax.set(title="gap to the best method of each task (points of accuracy, % of the best validation loss)\n"
                 "rows in the summary table's order; lrpilot's methods in bold; '-': not run on that task",
           xlabel="task")
    ax.title.set_fontsize(9)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label(f"gap (colour capped at {cap:g}; the numbers are exact)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "summary_gaps.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def _omega_figure(autodrop: Sequence[tuple[str, str, Result]], out: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(autodrop), 1, figsize=(8, 2.6 * len(autodrop)), squeeze=False)
    for ax, (task, method, r) in zip(axes[:, 0], autodrop):
        hist = r["omega_history"]
        ax.plot([h[0] for h in hist], [h[1] for h in hist], ".-", color="C0", label="ω")
        for k, e in enumerate(r["drop_epochs"]):
            ax.axvline(e, color="C3", ls="--", lw=1, label="LR drop" if k == 0 else None)
        ax.set(title=f"{task}, {method} (lr {r['lr']:g}, seed {r['seed']})", ylabel="ω (degrees)", xlabel="epoch")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(out / "autodrop_omega.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def _sweep_figure(sweep: Mapping[str, Mapping[str, Mapping[float, list[float]]]], higher: Mapping[str, bool],
                  out: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sweep), figsize=(6.5 * len(sweep), 4.8), squeeze=False)
    methods = _order(list({m for ms in sweep.values() for m in ms}))
    for ax, (task, per_method) in zip(axes[0], sweep.items()):
        for method in _order(list(per_method)):
            fs = per_method[method]
            xs = sorted(fs)
            scale = 100.0 if higher[task] else 1.0
            ax.plot(xs, [scale * statistics.fmean(fs[x]) for x in xs], marker="o", label=method,
                    **method_style(method))
        ax.set_xscale("log")
        ax.axvline(1.0, color="k", lw=0.7, ls=":")
        ax.annotate("default LR", (1.0, 0.02), xycoords=("data", "axes fraction"), fontsize=8, ha="left")
        ax.set(title=f"{task}: final metric against LR misspecification", xlabel="LR / method's default LR (log)",
               ylabel="final test accuracy %" if higher[task] else "final validation loss")
    fig.tight_layout()
    _legend(fig, axes[0], methods)
    fig.savefig(out / "lr_sweep.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_all(default_runs: Mapping[str, Mapping[str, Sequence[Result]]], targets: Mapping[str, float],
             higher: Mapping[str, bool], metric_names: Mapping[str, str], order: Sequence[str],
             gaps: Mapping[str, Mapping[str, float]], sweep: Mapping[str, Mapping[str, Mapping[float, list[float]]]],
             out: Path) -> list[str]:
    """Write the figures into ``out`` and return their file names.

    ``default_runs``: task -> method -> the runs at its default LR; ``targets``/``higher``/``metric_names``: per
    task; ``order``/``gaps``: the summary table's rows and gaps (method -> task -> gap); ``sweep``: task -> method
    -> LR factor -> final values (only complete sweeps drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    written = []
    for task, by_method in default_runs.items():
        _task_figure(task, by_method, higher[task], targets[task], metric_names[task], out)
        written.append(f"curves_{task}.png")
    if len(default_runs) and order:
        _summary_figure(order, list(default_runs), gaps, out)
        written.append("summary_gaps.png")
    autodrop = [(t, m, min(runs, key=lambda r: r["seed"])) for t, ms in default_runs.items() for m, runs in ms.items()
                if runs and "omega_history" in runs[0]]
    if autodrop:
        _omega_figure(autodrop, out)
        written.append("autodrop_omega.png")
    sweep = {t: ms for t, ms in sweep.items() if ms}
    if sweep:
        _sweep_figure(sweep, higher, out)
        written.append("lr_sweep.png")
    return written
