"""benchmarks/perturbation.py: the runs it compares differ only by a 1e-6 relative change of the training inputs."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from _scripts import loaded_script
from lrpilot.bench.loop import one_thread
from lrpilot.bench.runner import Job, run_job
from lrpilot.bench.tasks import TASKS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "perturbation.py"


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    with loaded_script(SCRIPT) as module:
        yield module


def test_perturbation_zero_is_the_task_itself_and_the_others_change_only_training_inputs(script: ModuleType) -> None:
    """Perturbation 0 returns the task's own tensors; perturbation k > 0 multiplies the training inputs by
    1 + scale N(0, 1) with a generator fixed by k (the same k gives the same inputs), and leaves the training
    labels and the whole test set as they are."""
    x, y, xt, yt = TASKS["digits-mlp"].data()
    same = script.perturbed_task("digits-mlp", 0, 1e-6).data()
    assert all(a is b for a, b in zip(same, (x, y, xt, yt)))
    one = script.perturbed_task("digits-mlp", 1, 1e-6).data()
    again = script.perturbed_task("digits-mlp", 1, 1e-6).data()
    two = script.perturbed_task("digits-mlp", 2, 1e-6).data()
    assert torch.equal(one[0], again[0]) and not torch.equal(one[0], two[0])
    assert not torch.equal(one[0], x)
    relative = ((one[0] - x).abs() / x.abs().clamp_min(1e-12))[x != 0]
    assert float(relative.max()) < 1e-5  # 1e-6 x a normal draw (and float32 rounding)
    assert torch.equal(one[1], y) and torch.equal(one[2], xt) and torch.equal(one[3], yt)


def test_unperturbed_run_equals_the_bench_run_of_the_same_job(script: ModuleType) -> None:
    """The script's run at perturbation 0 is the bench's own run of that (task, method, seed, epochs): the same
    final metric, bit for bit, so its perturbation-0 column reproduces the suite's figure."""
    job = Job("digits-mlp", "adamw", 1e-3, 1, 2)
    with one_thread():  # as the bench's workers
        bench = run_job(job)["records"][-1]["test_metric"]
    assert script.final_metric(("digits-mlp", "adamw", 0, 1, 1e-6, 2)) == bench


def test_summary_gaps_are_to_the_best_method_at_each_perturbation(script: ModuleType) -> None:
    """Each method's gap at perturbation k is 100 x (best mean at k - its mean at k); mean, range and sd over k."""
    summary = script.summarise({"a": [0.9, 0.8], "b": [0.85, 0.82]})
    assert summary["a"]["gaps"] == pytest.approx([0.0, 2.0]) and summary["b"]["gaps"] == pytest.approx([5.0, 0.0])
    assert summary["b"]["gap_mean"] == pytest.approx(2.5) and summary["a"]["gap_max"] == pytest.approx(2.0)
    assert summary["a"]["sd"] == pytest.approx(0.0707107, rel=1e-5)


def test_a_task_without_inputs_to_perturb_is_named(script: ModuleType) -> None:
    """The character GPT's data is text: the script refuses it with a ValueError naming the task."""
    with pytest.raises(ValueError, match="shakespeare-char"):
        script.perturbed_task("shakespeare-char", 1, 1e-6)


def test_the_script_writes_its_table(script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end, one process: one method, 2 perturbations, 1 seed, 1 epoch -> the .md table with both columns
    and the .json with every run."""
    monkeypatch.setattr(sys, "argv", ["perturbation.py", "--task", "digits-mlp", "--methods", "adamw",
                                      "--seeds", "1", "--perturbations", "2", "--epochs", "1", "--jobs", "1",
                                      "--out", str(tmp_path)])
    script.main()
    table = (tmp_path / "perturbation_digits-mlp.md").read_text()
    assert "| method | p0 | p1 | mean |" in table and "| adamw |" in table
    saved = json.loads((tmp_path / "perturbation_digits-mlp.json").read_text())
    assert len(saved["finals"]) == 2 and saved["summary"]["adamw"]["gap_mean"] == 0.0
