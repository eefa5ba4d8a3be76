"""benchmarks/restore_runs.py rebuilds a bench run cache from a report's curves.csv + summary.json: the runs load
as the runner wrote them, declare their origin, never replace a file that exists, and skip the excluded methods."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _scripts import loaded_script
from lrpilot.bench.methods import METHODS
from lrpilot.bench.report import write_report
from lrpilot.bench.runner import Job, load_results, result_path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "restore_runs.py"
TASK = "digits-mlp"


@pytest.fixture(scope="module")
def restore_runs() -> Iterator[Any]:
    with loaded_script(SCRIPT) as module:
        yield module


def _run(method: str, final: float, *, diverge_at: int | None = None, epochs: int = 3) -> dict[str, Any]:
    """A result dict as the runner writes it (10 steps per epoch, 1 ms a step); ``diverge_at``: the epoch whose
    train loss is infinite, where the run stops."""
    lr = METHODS[method].default_lr
    ran = epochs if diverge_at is None else diverge_at
    records = [{"epoch": e, "train_loss": math.inf if e == diverge_at else 1.0 / e,
                "test_loss": 1.0 - final * e / epochs, "test_metric": final * e / epochs, "lr": lr,
                "effective_lr": lr / e, "omega": None,
                "seconds": 0.01 * e, "step_seconds": 0.01 * e} for e in range(1, ran + 1)]
    return {"task": TASK, "method": method, "lr": lr, "seed": 0, "epochs": epochs, "metric": "accuracy",
            "device": "cpu", "records": records, "diverged": diverge_at is not None, "seconds": 0.01 * ran + 0.0004,
            "steps": 10 * ran, "step_seconds_mean": 0.001, "params": 6}


@pytest.fixture
def committed(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A results directory as ``lrpilot bench`` commits it (report, curves.csv, summary.json; no runs/) from two
    runs: constant SGD, and cosine, which diverges at its second epoch."""
    runs = [_run("constant", 0.9), _run("cosine", 0.95, diverge_at=2)]
    write_report(runs, tmp_path / "committed", figures=False, overhead={(TASK, "cosine"): 1.05})
    return tmp_path / "committed", runs


def _job(run: dict[str, Any]) -> Job:
    return Job(run["task"], run["method"], run["lr"], run["seed"], run["epochs"])


def test_restored_runs_load_as_the_runner_wrote_them_and_name_their_origin(restore_runs, committed, tmp_path,
                                                                           capsys) -> None:
    """Every run of curves.csv is cached under its runner key and loads with ``load_results`` equal to the run it
    came from (budget, divergence, times, records; ``params`` aside), with ``restored_from``; the step-time ratio
    is cached for the bench too; and a report made from the restored cache has the committed curves and summary."""
    results, runs = committed
    out = tmp_path / "out"
    assert restore_runs.main([str(results), "--out", str(out), "--origin", "the fake suite"]) == 0
    assert "2 run files written" in capsys.readouterr().out
    loaded = load_results(out, [_job(r) for r in runs])
    assert len(loaded) == 2
    for original, restored in zip(runs, loaded):
        assert restored.pop("restored_from") == "the fake suite"
        assert restored == {k: v for k, v in original.items() if k != "params"}
    overhead = json.loads((out / "overhead" / f"{TASK}__cosine__cpu.json").read_text())
    assert overhead["ratio"] == 1.05 and overhead["restored_from"] == "the fake suite"
    report = write_report(load_results(out), tmp_path / "again", figures=False, overhead={(TASK, "cosine"): 1.05})
    assert (tmp_path / "again" / "curves.csv").read_text() == (results / "curves.csv").read_text()
    assert (tmp_path / "again" / "summary.json").read_text() == (results / "summary.json").read_text()
    assert "2 of these runs were not trained by this invocation: restored from the fake suite." in report.read_text()


def test_a_run_file_that_exists_is_kept(restore_runs, committed, tmp_path, capsys) -> None:
    """A file already in ``runs/`` (a re-trained run) is neither overwritten nor counted as written."""
    results, runs = committed
    out = tmp_path / "out"
    kept = result_path(out, _job(runs[0]))
    kept.parent.mkdir(parents=True)
    kept.write_text('{"retrained": true}')
    assert restore_runs.main([str(results), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 run files written" in printed and "1 skipped (already there)" in printed
    assert kept.read_text() == '{"retrained": true}'
    assert "restored_from" in json.loads(result_path(out, _job(runs[1])).read_text())
    assert restore_runs.restore(results, out).kept == 2  # a second restore writes nothing


def test_excluded_methods_are_left_to_be_retrained(restore_runs, committed, tmp_path, capsys) -> None:
    """``--exclude-methods`` restores neither the method's runs nor its step-time ratio; naming a method that the
    results do not hold is an error that restores nothing (a misspelt name would hide the runs to re-train)."""
    results, runs = committed
    out = tmp_path / "out"
    assert restore_runs.main([str(results), "--out", str(out), "--exclude-methods", "cosine"]) == 0
    assert result_path(out, _job(runs[0])).exists() and not result_path(out, _job(runs[1])).exists()
    assert not (out / "overhead").exists()
    other = tmp_path / "other"
    assert restore_runs.main([str(results), "--out", str(other), "--exclude-methods", "cosin"]) == 2
    assert "'cosin' not in" in capsys.readouterr().err and not other.exists()
