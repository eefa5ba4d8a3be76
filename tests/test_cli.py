"""Specification of the ``lrpilot`` command line."""

from __future__ import annotations

import json

import pytest

from lrpilot.cli import main


def test_late_decay_quick_writes_results_figures_and_passes_its_criteria(tmp_path, capsys):
    """`lrpilot late-decay --quick` runs the toy reproduction and a tiny MNIST-1D branch study, writes the JSON,
    the markdown report and the PNG figures, and exits 0 because every checked criterion passed."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("mnist1d")
    code = main(["late-decay", "--quick", "--out", str(tmp_path), "--figures", str(tmp_path)])
    assert code == 0
    toy = json.loads((tmp_path / "late_decay_toy.json").read_text())
    assert all(c["passed"] for c in toy["A"]["criteria"].values())
    real = json.loads((tmp_path / "late_decay_real.json").read_text())
    run = real[json.dumps([0.6, 0])]
    assert [b["decay_epoch"] for b in run["branches"]] == [5, 20]
    assert len(run["landscape"]["train_loss"]) == 5 and len(run["landscape"]["trajectory"]) >= 10
    for name in ("late_decay_toy.png", "late_decay_landscape.png", "late_decay_branches.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    report = (tmp_path / "late_decay.md").read_text()
    assert "P6 gradient-flow endpoint predicts the landing | yes" in report
    # a second invocation reuses the cached real-network runs
    main(["late-decay", "--quick", "--out", str(tmp_path), "--figures", str(tmp_path)])
    assert "real lr" not in capsys.readouterr().out.split("toy config A")[-1]


def test_bad_arguments_exit_with_a_message(capsys):
    assert main(["late-decay", "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["no-such-command"])
