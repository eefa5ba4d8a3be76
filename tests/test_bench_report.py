"""Specification of ``lrpilot bench``'s report: the verdict, the statistics (95% intervals, paired win/tie/loss),
the ordering and coverage rules of the summary, the robustness column and the figures, on synthetic results
tables (no training: each run is a made-up result dict in the runner's format)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from lrpilot.bench.methods import METHODS
from lrpilot.bench.report import format_seconds, write_report
from lrpilot.bench.stats import mean_interval, paired_comparison, t_quantile_975
from lrpilot.bench.tasks import TASKS, ClassificationTask

# ------------------------------------------------------------------------------------------------ statistics


def test_t_quantiles_are_students() -> None:
    assert t_quantile_975(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile_975(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile_975(30) == pytest.approx(2.042, abs=1e-3)
    assert t_quantile_975(60) == pytest.approx(2.000, abs=2e-3)  # beyond the table: Cornish-Fisher
    assert t_quantile_975(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_the_interval_is_the_95_percent_student_t_interval_and_absent_for_one_seed() -> None:
    interval = mean_interval([1.0, 2.0, 3.0])  # sd 1
    half = 4.303 / math.sqrt(3)
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.low == pytest.approx(2 - half, abs=1e-3) and interval.high == pytest.approx(2 + half, abs=1e-3)
    assert interval.format(1) == "2.0 [-0.5, 4.5]"
    single = mean_interval([95.25])
    assert single.low is None and single.high is None and single.format(1) == "95.2"
    assert mean_interval([math.nan, 3.0]).n == 1  # a diverged seed has no value
    assert mean_interval([]).format(1) == "n/a"


def test_paired_comparison_is_a_paired_t_test_at_five_percent() -> None:
    base = {0: 90.0, 1: 95.0, 2: 85.0}  # large seed-to-seed spread
    # the method is 1 point better in every seed: the spread cancels in the pairs, a win
    better = paired_comparison({s: v + 1.0 + 0.1 * s for s, v in base.items()}, base)
    assert better.outcome == "win" and better.diff == pytest.approx(1.1) and better.n == 3
    assert better.interval is not None and better.interval[0] > 0
    worse = paired_comparison({s: v - 2.0 + 0.1 * s for s, v in base.items()}, base)
    assert worse.outcome == "loss" and worse.interval is not None and worse.interval[1] < 0
    noisy = paired_comparison({0: 91.0, 1: 94.0, 2: 86.0}, base)  # +1, -1, +1
    assert noisy.outcome == "tie"
    identical = paired_comparison(dict(base), base)
    assert identical.outcome == "tie" and identical.diff == 0.0


def test_paired_comparison_pairs_by_seed_follows_the_metric_direction_and_needs_two_seeds() -> None:
    # lower is better: a lower loss in every seed is a win
    loss = paired_comparison({0: 1.9, 1: 2.0, 2: 2.1}, {0: 2.0, 1: 2.12, 2: 2.2}, higher_is_better=False)
    assert loss.outcome == "win" and loss.diff > 0
    # only seed 1 is common: untested, whatever the difference
    one = paired_comparison({0: 99.0, 1: 99.0}, {1: 50.0, 2: 50.0})
    assert one.outcome == "untested" and one.n == 1 and one.diff == 49.0
    assert paired_comparison({0: 1.0}, {1: 1.0}).n == 0


def test_a_divergence_the_baseline_did_not_have_is_a_loss() -> None:
    c = paired_comparison({0: 99.0, 1: math.nan, 2: 99.0}, {0: 90.0, 1: 90.0, 2: 90.0})
    assert c.outcome == "loss" and c.reason == "diverged"
    assert paired_comparison({0: 90.0, 1: 90.0}, {0: 99.0, 1: math.inf}, higher_is_better=False).outcome == "win"


def test_seconds_are_never_printed_as_zero() -> None:
    assert format_seconds(0.04) == "<0.1" and format_seconds(0.0) == "<0.1"
    assert format_seconds(0.1) == "0.1" and format_seconds(12.34) == "12.3" and format_seconds(250.4) == "250"


# ------------------------------------------------------------------------------------------- the report
def _task(name: str) -> ClassificationTask:
    data = (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    return ClassificationTask(name, lambda: data, lambda: nn.Linear(2, 2), 4, epochs=3, target=0.9)


@pytest.fixture
def two_tasks(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    for name in ("ta", "tb"):
        monkeypatch.setitem(TASKS, name, _task(name))
    return "ta", "tb"


def _run(task: str, method: str, seed: int, final: float, *, factor: float = 1.0, epochs: int = 3,
         seconds: float = 0.03) -> dict[str, Any]:
    """A result dict as the runner writes it: the metric rises linearly to ``final``."""
    lr = float(f"{METHODS[method].default_lr * factor:.6g}")
    records = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.0 - final * e / epochs,
                "test_metric": final * e / epochs, "lr": lr, "effective_lr": lr / e, "omega": None,
                "seconds": seconds * e / epochs, "step_seconds": 0.001 * e} for e in range(1, epochs + 1)]
    return {"task": task, "method": method, "lr": lr, "seed": seed, "epochs": epochs, "metric": "accuracy",
            "device": "cpu", "records": records, "diverged": False, "seconds": seconds, "steps": 10 * epochs,
            "step_seconds_mean": 0.001, "params": 6}


# final accuracy per task, method and seed. On ta: texp (lrpilot's, run on ta only) is the best; cosine is the best
# baseline and autodrop-sgd beats it in every seed. On tb: cosine is the best and autodrop-sgd loses to it.
FINALS = {
    "ta": {"cosine": (0.90, 0.91, 0.92), "adamw": (0.85, 0.86, 0.87), "autodrop-sgd": (0.932, 0.941, 0.953),
           "prodigy": (0.50, 0.52, 0.48), "texp": (1.0, 1.0, 1.0)},
    "tb": {"cosine": (0.95, 0.96, 0.97), "adamw": (0.90, 0.91, 0.92), "autodrop-sgd": (0.80, 0.82, 0.81),
           "prodigy": (0.50, 0.49, 0.51)},
}


def _results(seeds: int = 3) -> list[dict[str, Any]]:
    results = [_run(t, m, s, v[s]) for t, ms in FINALS.items() for m, v in ms.items() for s in range(seeds)]
    # adamw's LR sweep on ta (one seed; its x1 run is the default-LR run above)
    results += [_run("ta", "adamw", 0, v, factor=f) for f, v in ((0.1, 0.5), (0.3, 0.7), (3.0, 0.8), (10.0, 0.3))]
    return results


def _rows(report: str, heading: str) -> list[list[str]]:
    """The table rows (cells) under the first heading that starts with ``heading``."""
    start = report.index(f"### {heading}")
    table = report[start:].split("\n\n")[1:]
    body = next(block for block in table if block.startswith("|"))
    return [[c.strip() for c in line.strip("|").split("|")] for line in body.splitlines()[2:]]


def test_the_verdict_opens_the_report_and_is_derived_from_the_table(two_tasks, tmp_path: Path) -> None:
    report = write_report(_results(), tmp_path, figures=False).read_text()
    head = report.splitlines()[2:5]
    assert head[0].startswith("**Best method overall:** `cosine`")  # texp's mean is over 1 task: not ranked first
    assert "over all 2 tasks" in head[0] and "worst 9.0 on ta" in head[0]
    assert head[1].startswith("**Best method that needs no budget**") and "`adamw`" in head[1]  # cosine needs one
    assert head[2].startswith("**lrpilot's methods against the best other method of each task**")
    assert "`autodrop-sgd` wins on ta; loses on tb" in head[2] and "`texp` wins on ta" in head[2]
    verdict = json.loads((tmp_path / "summary.json").read_text())["verdict"]
    assert [line.rstrip() for line in head] == verdict


def test_the_verdict_follows_the_registry_classification(two_tasks, tmp_path: Path, monkeypatch) -> None:
    """Told that cosine needs no budget, the verdict names it in the second line too (nothing is hard-coded)."""
    from dataclasses import replace

    monkeypatch.setitem(METHODS, "cosine", replace(METHODS["cosine"], needs_budget=False))
    report = write_report(_results(), tmp_path, figures=False).read_text()
    assert "**Best method that needs no budget** (not told the training length): the same, `cosine`" in report


def test_task_tables_show_the_95_percent_interval_and_the_paired_outcome(two_tasks, tmp_path: Path) -> None:
    report = write_report(_results(), tmp_path, figures=False).read_text()
    rows = {r[0].strip("*"): r for r in _rows(report, "ta ")}
    assert [r[0].strip("*") for r in _rows(report, "ta ")] == ["texp", "autodrop-sgd", "cosine", "adamw", "prodigy"]
    half = 4.303 * 1.0 / math.sqrt(3)  # cosine on ta: 90, 91, 92
    assert rows["cosine"][2] == f"91.0 [{91 - half:.1f}, {91 + half:.1f}]"
    assert rows["cosine"][4] == "best baseline"
    assert rows["autodrop-sgd"][4].startswith("win +3.2 [")  # 94.2 - 91.0
    assert rows["adamw"][4].startswith("loss -5.0 [")
    assert "±" not in report
    tb = {r[0].strip("*"): r for r in _rows(report, "tb ")}
    assert tb["autodrop-sgd"][4].startswith("loss ")
    assert "paired t-test" in report and "two-sided" in report


def test_with_one_seed_there_is_no_interval_no_sd_and_no_test(two_tasks, tmp_path: Path) -> None:
    report = write_report(_results(seeds=1), tmp_path, figures=False).read_text()
    rows = {r[0].strip("*"): r for r in _rows(report, "ta ")}
    assert rows["cosine"][2] == "90.0" and rows["cosine"][3] == "90.0"
    assert rows["autodrop-sgd"][4] == "untested (1 seed): +3.2"
    assert "±" not in report
    assert "`autodrop-sgd` ahead (1 seed, untested) on ta; behind (1 seed, untested) on tb" in report


def test_summary_puts_full_coverage_first_and_the_rank_is_the_row_position(two_tasks, tmp_path: Path) -> None:
    report = write_report(_results(), tmp_path, figures=False).read_text()
    rows = _rows(report, "Summary over tasks")
    assert [r[1].strip("*") for r in rows] == ["cosine", "adamw", "autodrop-sgd", "prodigy", "texp"]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    texp = rows[-1]
    assert texp[2:4] == ["0.0", "-"] and texp[4] == "0.0" and texp[6] == "1/2"  # best mean gap, but 1 task
    assert float(rows[3][4]) > 40  # prodigy: far behind, still above texp
    assert "never ranked above a method that ran everywhere" in report and "**Rank** is the row position" in report
    wtl = {r[1].strip("*"): r[7] for r in rows}
    assert wtl["autodrop-sgd"] == "1/0/1" and wtl["cosine"].endswith("(best baseline on 2)")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["order"] == [r[1].strip("*") for r in rows]
    assert [summary["summary"][m]["rank"] for m in summary["order"]] == [1, 2, 3, 4, 5]


def test_a_method_run_on_fewer_tasks_is_compared_with_the_first_row_on_its_own_tasks(two_tasks, tmp_path: Path
                                                                                      ) -> None:
    """Its mean and worst gap are over other tasks than the first row's, so the summary and the verdict also give
    the first row's gaps over the tasks that method ran (texp ran on ta only: 0.0 there, cosine 9.0)."""
    report = write_report(_results(), tmp_path, figures=False).read_text()
    said = "`texp` (ta): mean gap 0.0, worst 0.0; `cosine` there: mean 9.0, worst 9.0"
    assert f"**On the same tasks.** A method run on fewer tasks, against the first row (`cosine`) over the tasks " \
           f"it ran: {said}." in report
    verdict = report.splitlines()[2].rstrip()
    assert verdict.endswith(f"against the methods run on fewer tasks, over their tasks: {said}.")
    summary = json.loads((tmp_path / "summary.json").read_text())["summary"]
    assert summary["texp"]["first_row_on_its_tasks"] == {"method": "cosine", "tasks": ["ta"],
                                                         "mean_gap": pytest.approx(9.0),
                                                         "worst_gap": pytest.approx(9.0)}
    assert not any("first_row_on_its_tasks" in summary[m] for m in ("cosine", "adamw", "autodrop-sgd", "prodigy"))


def test_the_robustness_column_comes_from_cached_sweep_runs(two_tasks, tmp_path: Path) -> None:
    """Filled where the results hold the method's complete sweep (adamw on ta: worst 30.0, at x10), '-' where
    they do not, 'LR-free' for a method that takes no LR; the report says where the values come from."""
    report = write_report(_results(), tmp_path, figures=False).read_text()
    ta = {r[0].strip("*"): r for r in _rows(report, "ta ")}
    assert ta["adamw"][5] == "30.0 (1 seed)"
    assert ta["cosine"][5] == "-" and ta["prodigy"][5] == "LR-free"
    assert {r[0].strip("*"): r[5] for r in _rows(report, "tb ")}["adamw"] == "-"
    summary = {r[1].strip("*"): r[8] for r in _rows(report, "Summary over tasks")}
    assert summary["adamw"] == "70.0 (1/2 tasks)" and summary["cosine"] == "-"  # 100 (texp) - 30
    assert "`--lr-sweep` runs cached in this results directory" in " ".join(report.split())
    assert "LR sweep, ta" in report


def test_seconds_to_target_of_a_fast_task_read_under_a_tenth(two_tasks, tmp_path: Path) -> None:
    report = write_report(_results(), tmp_path, figures=False).read_text()
    cells = [r[7] for r in _rows(report, "ta ")]
    assert "<0.1" in cells and "0.0" not in cells


# -------------------------------------------------------------------------------------------- the figures
@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every figure the report saves, by file name, kept open for inspection."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    saved: dict[str, Any] = {}
    original = Figure.savefig

    def savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        saved[Path(fname).name] = self
        original(self, fname, *args, **kwargs)
        self.test_renderer = self.canvas.get_renderer()  # type: ignore[attr-defined]  # the Agg canvas that drew it

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def test_one_figure_per_task_and_a_summary_heat_map(two_tasks, tmp_path: Path, saved_figures) -> None:
    report = write_report(_results(), tmp_path).read_text()
    for name in ("curves_ta.png", "curves_tb.png", "summary_gaps.png", "lr_sweep.png"):
        assert (tmp_path / name).stat().st_size > 5_000 and f"]({name})" in report
    heat = saved_figures["summary_gaps.png"].axes[0]
    labels = [t.get_text() for t in heat.get_yticklabels()]
    assert labels == ["cosine", "adamw", "autodrop-sgd", "prodigy", "texp (1/2 tasks)"]  # the summary's order
    assert [t.get_text() for t in heat.get_xticklabels()][:2] == ["ta", "tb"]
    cells = {t.get_text() for t in heat.texts}
    assert {"-", "9.0", "15.0"} <= cells  # texp not run on tb; cosine's gap on ta, autodrop-sgd's on tb


def test_task_figures_show_every_method_unclipped_styled_and_labelled(two_tasks, tmp_path: Path,
                                                                      saved_figures) -> None:
    write_report(_results(), tmp_path)
    fig = saved_figures["curves_ta.png"]
    full, zoom, loss, lr = fig.axes[:4]
    legend = fig.legends[0]
    names = [t.get_text() for t in legend.get_texts()]
    assert names == ["autodrop-sgd", "texp", "cosine", "adamw", "prodigy"]  # lrpilot's first, every method
    # the legend is outside the data: right of every panel
    renderer = fig.test_renderer
    assert legend.get_window_extent(renderer).x0 >= max(ax.get_window_extent(renderer).x1 for ax in fig.axes) - 1
    # every method is drawn in full on the metric panel (log scale, texp's 0% error at a floor, not dropped)
    assert full.get_yscale() == "log"
    low, high = full.get_ylim()
    drawn = {line.get_label(): line for line in full.get_lines() if not line.get_label().startswith("_")}
    assert set(drawn) == set(names)
    for line in drawn.values():
        ys = [y for y in line.get_ydata() if math.isfinite(y)]
        assert len(ys) == 3 and all(low <= y <= high for y in ys)
    # lrpilot's methods solid, the peers dashed
    assert {m: drawn[m].get_linestyle() for m in ("autodrop-sgd", "texp")} == {"autodrop-sgd": "-", "texp": "-"}
    assert all(drawn[m].get_linestyle() not in ("-", "None") for m in ("cosine", "adamw", "prodigy"))
    # the target line is labelled, every axis says what it shows
    assert any(re.match(r"target 90% accuracy", t.get_text()) for t in full.texts)
    for ax in (full, zoom, loss, lr):
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert lr.get_yscale() == "log" and loss.get_yscale() == "log"


def test_the_report_says_which_tasks_tell_schedules_apart(two_tasks, tmp_path: Path) -> None:
    """A task discriminates when the best method beats the better constant-LR baseline by more than twice the
    larger of the two standard deviations over seeds: on ta cosine (92 +- 2) over adamw (90 +- 1) by 2.0 < 4.0,
    no; on tb cosine (96 +- 1) over adamw (91 +- 1) by 5.0 > 2.0, yes."""
    finals = {"ta": {"cosine": (0.90, 0.92, 0.94), "adamw": (0.89, 0.90, 0.91)},
              "tb": {"cosine": (0.95, 0.96, 0.97), "adamw": (0.90, 0.91, 0.92)}}
    results = [_run(t, m, s, v[s]) for t, ms in finals.items() for m, v in ms.items() for s in range(3)]
    report = write_report(results, tmp_path, figures=False).read_text()
    rows = {r[0]: r for r in _rows(report, "Does each task tell schedules apart?")}
    assert rows["ta"][1:] == ["cosine", "92.00", "adamw", "90.00", "2.00", "4.00", "no"]
    assert rows["tb"][1:] == ["cosine", "96.00", "adamw", "91.00", "5.00", "2.00", "**yes**"]
    saved = json.loads((tmp_path / "summary.json").read_text())["discrimination"]
    assert saved["tb"]["discriminates"] is True and saved["ta"]["discriminates"] is False
    assert saved["ta"]["margin"] == pytest.approx(2.0) and saved["ta"]["spread"] == pytest.approx(2.0)


def test_with_one_seed_the_spread_and_so_the_discrimination_are_unknown(two_tasks, tmp_path: Path) -> None:
    report = write_report(_results(seeds=1), tmp_path, figures=False).read_text()
    rows = {r[0]: r for r in _rows(report, "Does each task tell schedules apart?")}
    assert rows["tb"][6:] == ["-", "- (one seed)"]


def test_runs_restored_from_an_earlier_run_are_declared_in_the_report(two_tasks, tmp_path: Path) -> None:
    results = _results()
    for r in results[:4]:
        r["restored_from"] = "an earlier run"
    report = write_report(results, tmp_path, figures=False).read_text()
    assert "4 of these runs were not trained by this invocation: restored from an earlier run." in report
    assert "not trained by this invocation" not in write_report(_results(), tmp_path, figures=False).read_text()
