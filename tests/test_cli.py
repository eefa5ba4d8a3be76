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


def test_late_decay_hands_its_options_to_the_study(monkeypatch):
    """The command only parses: the study (lrpilot.bench.studies.late_decay.run_study) gets every option and
    its return value is the exit code."""
    from lrpilot.bench.studies import late_decay as study

    calls = []
    monkeypatch.setattr(study, "run_study", lambda *args, **kwargs: calls.append((args, kwargs)) or 7)
    argv = ["late-decay", "--toy-only", "--seeds", "2", "--lrs", "0.6", "0.1", "--jobs", "1", "--out", "o",
            "--figures", "f"]
    assert main(argv) == 7
    assert calls == [(("o", "f"), {"toy_only": True, "quick": False, "seeds": 2, "lrs": [0.6, 0.1], "jobs": 1})]


@pytest.mark.parametrize("argv", [
    ["late-decay", "--seeds", "0"], ["late-decay", "--jobs", "0"], ["late-decay", "--lrs", "0.6", "-1"],
    ["late-decay", "--lrs", "nan"], ["bench", "--epochs", "0"], ["bench", "--epochs", "-2"],
    ["bench", "--jobs", "0"], ["bench", "--jobs", "-3"], ["bench", "--seeds", "0"], ["bench", "--seeds", "two"],
])
def test_bad_arguments_stop_before_any_run_with_a_message_naming_the_option(argv, capsys, tmp_path, monkeypatch):
    """A count that cannot be (0 epochs, 0 or negative jobs, 0 seeds, a non-positive LR) stops the command at
    parsing, exit code 2, with the option and the value in the message; nothing is trained, nothing cached."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert argv[1] in err and argv[-1] in err
    assert not any(tmp_path.iterdir()), "nothing may be written before the arguments are checked"


def test_an_unknown_command_exits_with_usage(capsys):
    assert main(["no-such-command"]) == 2
    assert "usage" in capsys.readouterr().err
