"""The README's main job (examples/autodrop_mnist1d.py) runs end to end and prints what it promises."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "autodrop_mnist1d.py"


def load_example():
    spec = importlib.util.spec_from_file_location("autodrop_mnist1d", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("task", ["mnist1d-cnn", "digits-mlp"])
def test_example_trains_and_prints_lr_omega_and_accuracy(task, capsys):
    records = load_example().main(["--epochs", "4", "--task", task])
    out = capsys.readouterr().out
    assert "AutoDrop(mode='trend')" in out and "drops at epochs" in out
    assert len(records) == 4
    assert records[1]["omega"] is None and 0 <= records[2]["omega"] <= 180  # first angle at epoch 3
    assert records[-1]["test_metric"] > records[0]["test_metric"] - 0.05
    assert records[-1]["test_metric"] > 0.3  # learning, not chance (10%)
