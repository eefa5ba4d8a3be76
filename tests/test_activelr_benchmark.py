"""benchmarks/activelr_robustness.py runs (2 epochs) and what it records is what the study reports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "activelr_robustness.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("activelr_robustness", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    yield module
    torch.set_num_threads(threads)  # run_one sets one thread, as in the study


@pytest.mark.slow
def test_active_adamw_trains_exactly_like_adamw_until_its_first_multiplier_update(bench):
    """Multipliers are 1 during epochs 1-2 (the first update happens after the last step of epoch 2), so the
    two runs are identical up to there; the effective LR recorded for epoch 2 already shows the update."""
    _, active = bench.run_one(("ActiveAdamW", 1e-3, 0, 2))
    _, plain = bench.run_one(("AdamW", 1e-3, 0, 2))
    for a, p in zip(active["records"], plain["records"]):
        assert a["test_metric"] == p["test_metric"] and a["train_loss"] == p["train_loss"]
    first, second = active["records"]
    assert first["effective_lr"] == first["eff_lr_min"] == first["eff_lr_max"] == 1e-3
    assert second["eff_lr_min"] < 1e-3 < second["eff_lr_max"]
    results = {"a": active, "p": plain}
    table = bench.summarize(results, epochs=2, seeds=1)
    row = next(line for line in table.splitlines() if line.startswith("| ActiveAdamW |"))
    assert f"{100 * active['records'][-1]['test_metric']:.1f} ± 0.0" in row


def test_the_committed_results_in_the_former_record_format_still_make_the_table(bench):
    """``benchmarks/results/activelr_robustness.json`` (records of ``bench/train.py``) is read in the bench's
    record format and regenerates the committed table."""
    root = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    results = bench.load_cache(root / "activelr_robustness.json")
    runs = {k: v for k, v in results.items() if k != "timing" and v["epochs"] == 40}
    table = bench.summarize(runs, 40, 3)
    assert table.strip() in (root / "activelr_robustness.md").read_text()
