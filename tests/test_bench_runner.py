"""Specification of ``lrpilot bench``: the method registry, the cached runner, the report and the CLI, on a tiny
task that trains in milliseconds (every test runs in-process, ``workers=1``)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import re
import sys

import pytest
import torch
from torch import nn

from lrpilot.bench import runner
from lrpilot.bench.loop import RECORD_FIELDS, train, upgrade_record, write_json
from lrpilot.bench.methods import METHODS, Built, get_method
from lrpilot.bench.overhead import measure_overheads
from lrpilot.bench.report import write_report
from lrpilot.bench.runner import Job, load_results, make_jobs, result_path, run_job, run_jobs
from lrpilot.bench.tasks import TASKS, ClassificationTask
from lrpilot.cli import main
from lrpilot.telemetry import effective_lrs


def _tiny_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(3, 8, generator=g)
    y = torch.randint(0, 3, (240,), generator=g)
    x = centers[y] + torch.randn(240, 8, generator=g)
    return x[:160], y[:160], x[160:], y[160:]


def _tiny_bn_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (120,), generator=g)
    x = torch.randn(120, 1, 40, generator=g) + y.view(-1, 1, 1) / 5
    return x[:80], y[:80], x[80:], y[80:]


def _tiny_bn_model() -> nn.Module:
    return nn.Sequential(nn.Conv1d(1, 8, 5, stride=2, padding=1, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 19, 10))


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> str:
    """A 3-class Gaussian-blob task (160 train / 80 test, 8 features, a small MLP) registered as ``tiny``."""
    task = ClassificationTask("tiny", _tiny_data, lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)),
                              32)
    monkeypatch.setitem(TASKS, "tiny", task)
    return "tiny"


def _quiet(line: str) -> None:
    pass


def _available(method: str) -> bool:
    req = METHODS[method].requires
    return req is None or importlib.util.find_spec(req) is not None


@pytest.mark.parametrize("name", [m for m in METHODS if METHODS[m].tasks is None])
def test_every_method_trains_the_tiny_task_and_records_each_epoch(tiny: str, name: str) -> None:
    if not _available(name):
        pytest.skip(f"{METHODS[name].requires} not installed")
    result = run_job(Job(tiny, name, METHODS[name].default_lr, 0, 4))
    assert [r["epoch"] for r in result["records"]] == [1, 2, 3, 4]
    for rec in result["records"]:
        assert tuple(rec) == RECORD_FIELDS
        assert rec["effective_lr"] >= 0  # cosine reaches 0 at the end
    assert result["records"][0]["effective_lr"] > 0
    losses = [r["train_loss"] for r in result["records"]]
    assert all(math.isfinite(v) for v in losses) and not result["diverged"]
    assert result["steps"] == 4 * 5 and result["step_seconds_mean"] > 0
    if name.startswith("autodrop"):
        assert "drop_epochs" in result and len(result["omega_history"]) >= 2
        assert any(rec["omega"] is not None for rec in result["records"])


def test_schedules_follow_their_definition(tiny: str) -> None:
    """MultiStepLR drops at 50% and 75% of the epochs; cosine ends near 0; ActiveSGD's effective LR moves."""
    lrs = [r["lr"] for r in run_job(Job(tiny, "multistep", 0.1, 0, 8))["records"]]
    assert lrs == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)
    assert run_job(Job(tiny, "cosine", 0.1, 0, 4))["records"][-1]["lr"] < 1e-3
    effective = [r["effective_lr"] for r in run_job(Job(tiny, "active-sgd", 0.1, 0, 4))["records"]]
    assert len(set(effective)) > 1


def test_texp_runs_on_a_scale_invariant_bn_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TASKS, "mnist1d-bncnn", ClassificationTask("mnist1d-bncnn", _tiny_bn_data, _tiny_bn_model, 20))
    assert not get_method("texp").applies_to("digits-mlp")
    result = run_job(Job("mnist1d-bncnn", "texp", 0.1, 0, 4))
    assert len(result["records"]) == 4 and not result["diverged"]
    assert result["records"][-1]["train_loss"] < result["records"][0]["train_loss"]


def test_divergence_is_recorded_and_stops_the_run(tiny: str) -> None:
    result = run_job(Job(tiny, "constant", 1e9, 0, 5))
    assert result["diverged"] and len(result["records"]) < 5
    assert not math.isfinite(result["records"][-1]["train_loss"])


def test_the_recorded_effective_lr_is_the_telemetry_reading_of_each_optimizer_family() -> None:
    """The bench reads the effective LR through :func:`lrpilot.telemetry.effective_lrs` (first group's mean)."""
    model = nn.Linear(3, 2)
    assert effective_lrs(torch.optim.SGD(model.parameters(), lr=0.3))[0].mean == pytest.approx(0.3)
    built = get_method("active-adamw").build(model, 0.01, 5, 2)
    assert isinstance(built, Built) and effective_lrs(built.optimizer)[0].mean == pytest.approx(0.01)


def test_without_stop_on_divergence_the_loop_trains_every_epoch_and_marks_the_run(tiny: str) -> None:
    """The studies keep training a diverged run (their tables count it); the run is still marked ``diverged``."""
    run = train(TASKS[tiny], lambda m: Built(torch.optim.SGD(m.parameters(), lr=1e9)), 5, stop_on_divergence=False)
    assert run.result["diverged"] and len(run.result["records"]) == 5


def test_the_loop_measures_omega_only_in_the_epochs_autodrop_measured_one(tiny: str) -> None:
    """``omega`` is the scheduler's ``autodrop/omega`` of this epoch, None before AutoDrop's first angle."""
    def build(model: nn.Module) -> Built:
        from lrpilot import AutoDrop

        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return Built(opt, AutoDrop(opt), "epoch")

    run = train(TASKS[tiny], build, 4)
    omegas = [r["omega"] for r in run.result["records"]]
    assert omegas[:2] == [None, None] and all(0 <= w <= 180 for w in omegas[2:])
    assert [w for _, w in run.result["omega_history"]] == omegas[2:]


def test_former_study_records_are_read_in_the_bench_format() -> None:
    """``bench/train.py``'s records (``test_acc``, omega NaN when not measured) become ``test_metric``/None."""
    old = {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "test_loss": 1.1, "test_acc": 0.5, "seconds": 1.0,
           "omega": math.nan}
    new = upgrade_record(old)
    assert new["test_metric"] == 0.5 and "test_acc" not in new and new["omega"] is None
    assert upgrade_record(dict(new)) == new
    assert upgrade_record({**old, "omega": 3.0})["omega"] == 3.0


def test_json_is_written_atomically_and_leaves_no_temp_file(tmp_path) -> None:
    """``write_json`` replaces the file in one step (temp file + ``os.replace``), creating the directory."""
    path = tmp_path / "a" / "b.json"
    write_json(path, {"x": 1})
    write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_runs_are_cached_resumed_and_deterministic(tiny: str, tmp_path) -> None:
    jobs = make_jobs([tiny], ["constant", "autodrop-sgd"], seeds=2, epochs=3)
    assert len(jobs) == 4
    assert run_jobs(jobs, tmp_path, workers=1, progress=_quiet) == jobs
    assert all(result_path(tmp_path, j).exists() for j in jobs)
    first = {r["method"] + str(r["seed"]): r for r in load_results(tmp_path)}
    # a second run computes nothing
    assert run_jobs(jobs, tmp_path, workers=1, progress=_quiet) == []
    # deleting one result recomputes only it, with the same numbers
    result_path(tmp_path, jobs[1]).unlink()
    assert run_jobs(jobs, tmp_path, workers=1, progress=_quiet) == [jobs[1]]
    again = {r["method"] + str(r["seed"]): r for r in load_results(tmp_path, jobs)}
    for key, res in first.items():
        assert [r["test_metric"] for r in res["records"]] == [r["test_metric"] for r in again[key]["records"]]
    # a different budget is a different key
    assert run_jobs(make_jobs([tiny], ["constant"], 1, epochs=4), tmp_path, workers=1, progress=_quiet)


def test_progress_lines_carry_an_eta(tiny: str, tmp_path) -> None:
    lines: list[str] = []
    run_jobs(make_jobs([tiny], ["constant", "cosine"], 1, epochs=2), tmp_path, workers=1, progress=lines.append)
    assert "2 of 2 runs to compute" in lines[0] and "first ETA unknown until a run ends" in lines[0]
    assert lines[-1].startswith("[2/2]") and "ETA 0s" in lines[-1]
    assert re.search(r"^\[1/2\] .*, ETA \d+s$", lines[1])  # cosine's time from constant's, same task


def test_the_first_eta_comes_from_the_measured_times_of_cached_runs(tiny: str, tmp_path) -> None:
    run_jobs(make_jobs([tiny], ["constant", "cosine"], 1, epochs=2), tmp_path, workers=1, progress=_quiet)
    lines: list[str] = []
    run_jobs(make_jobs([tiny], ["constant", "cosine"], 3, epochs=4), tmp_path, workers=1, progress=lines.append)
    assert re.search(r"6 of 6 runs to compute .*; first ETA \d+s \(from the measured times of 2 cached runs\)$",
                     lines[0])


def test_the_eta_sums_the_measured_seconds_per_epoch_of_each_task_and_method() -> None:
    eta = runner.Eta(workers=2)
    assert eta.text([Job("a", "constant", 0.1, 0, 10)]) == "ETA unknown until a run ends"
    eta.measure({"task": "a", "method": "constant", "seconds": 8.0, "records": [{}] * 4})  # 2 s per epoch
    eta.measure({"task": "a", "method": "cosine", "seconds": 16.0, "records": [{}] * 4})  # 4 s per epoch
    eta.measure({"task": "b", "method": "constant", "seconds": 40.0, "records": [{}] * 2})  # 20 s per epoch
    assert eta.expected(Job("a", "constant", 0.1, 1, 10)) == 20.0
    assert eta.expected(Job("a", "adamw", 0.001, 0, 10)) == 30.0  # the task's mean over its measured methods
    assert eta.expected(Job("c", "constant", 0.1, 0, 10)) is None
    jobs = [Job("a", "constant", 0.1, s, 10) for s in range(3)] + [Job("b", "constant", 0.1, 0, 3)]
    assert eta.remaining(jobs) == ((3 * 20.0 + 60.0) / 2, 0)
    assert eta.text(jobs) == "ETA 1m00s"
    assert eta.remaining([Job("b", "constant", 0.1, 0, 30)]) == (600.0, 0)  # one run: no faster than itself
    assert eta.text([*jobs, Job("c", "constant", 0.1, 0, 10)]).endswith("(1 runs of unmeasured tasks)")


def test_the_report_reads_cached_sweep_runs_without_running_a_sweep(tiny: str, tmp_path, capsys) -> None:
    """A sweep run earlier (``--lr-sweep``) fills the robustness column of a later plain run; a method whose sweep
    is not cached shows ``-``, and nothing is run for it."""
    pytest.importorskip("matplotlib")
    common = ["--tasks", tiny, "--epochs", "2", "--jobs", "1", "--out", str(tmp_path)]
    assert main(["bench", "--methods", "constant", "--lr-sweep", *common]) == 0
    capsys.readouterr()
    assert main(["bench", "--methods", "constant", "cosine", *common]) == 0
    assert "1 of 2 runs to compute" in capsys.readouterr().err
    report = (tmp_path / "report.md").read_text()
    table = report[report.index(f"### {tiny} "):report.index("### Summary")]
    rows = {line.split("|")[1].strip(): line.split("|") for line in table.splitlines() if line.startswith("| ")}
    assert re.fullmatch(r" \d+\.\d \(1 seed\) ", rows["constant"][6]) and rows["cosine"][6] == " - "
    assert "LR sweep, tiny" in report
    assert len(list((tmp_path / "runs").glob("*cosine*"))) == 1


def test_a_suites_own_sweep_runs_count_once_in_the_report(tiny: str, tmp_path, monkeypatch, capsys) -> None:
    """A suite with ``sweep_tasks`` runs the sweep itself; the report reads each of those runs once: the robustness
    column says 1 seed (not 2) and curves.csv holds each sweep run's epochs once."""
    pytest.importorskip("matplotlib")
    monkeypatch.setitem(runner.SUITES, "quick", runner.Suite(tasks=(tiny,), methods=("constant", "prodigy"), seeds=2,
                                                             epochs={tiny: 2}, sweep_tasks=(tiny,)))
    assert main(["bench", "--jobs", "1", "--out", str(tmp_path)]) == 0
    assert "8 of 8 runs to compute" in capsys.readouterr().err  # 2 x 2 seeds + constant's 4 other factors
    report = (tmp_path / "report.md").read_text()
    table = report[report.index(f"### {tiny} "):report.index("### Summary")]
    rows = {line.split("|")[1].strip(): line.split("|") for line in table.splitlines() if line.startswith("| ")}
    assert re.fullmatch(r" \d+\.\d \(1 seed\) ", rows["constant"][6]), rows["constant"][6]
    curves = (tmp_path / "curves.csv").read_text().splitlines()
    assert len(curves) == len(set(curves)) == 1 + 8 * 2


def test_report_has_tables_curves_sweep_and_figures(tiny: str, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    jobs = make_jobs([tiny], ["constant", "autodrop-sgd", "adamw", "active-adamw"], 2, epochs=3)
    jobs += make_jobs([tiny], ["constant", "active-sgd"], 1, epochs=3, lr_sweep=True)
    run_jobs(jobs, tmp_path, workers=1, progress=_quiet)
    path = write_report(load_results(tmp_path, jobs), tmp_path, overhead={(tiny, "autodrop-sgd"): 1.234})
    report = path.read_text()
    assert "| 1.23 |" in report and "| 1 (plain) |" in report
    assert "≈" in report  # active-adamw's ratio was not measured apart: it comes from the runs, marked
    for method in ("constant", "**autodrop-sgd**", "adamw", "**active-adamw**", "active-sgd"):
        assert f"| {method} |" in report
    assert "### tiny (3 epochs, 1/2 seed(s)" in report and "Summary over tasks" in report  # active-sgd: 1 seed
    assert "LR sweep, tiny" in report and "| x0.1 | x0.3 | x1 | x3 | x10 |" in report
    assert "drop epochs:" in report
    with (tmp_path / "curves.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(len(r["records"]) for r in load_results(tmp_path, jobs))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["per_task"]["tiny"]) == {"constant", "autodrop-sgd", "adamw", "active-adamw", "active-sgd"}
    for name in ("curves_tiny.png", "summary_gaps.png", "autodrop_omega.png", "lr_sweep.png"):
        assert (tmp_path / name).stat().st_size > 5_000
        assert f"]({name})" in report


def test_cli_bench_writes_the_report_prints_its_path_and_verdict_and_reuses_the_cache(tiny: str, tmp_path,
                                                                                     capsys) -> None:
    """The console gets the verdict and the report's path, not the report: its tables are in the file."""
    pytest.importorskip("matplotlib")
    argv = ["bench", "--tasks", tiny, "--methods", "constant", "cosine", "--epochs", "2", "--jobs", "1",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    report = (tmp_path / "report.md").read_text()
    assert f"report: {tmp_path / 'report.md'}" in out.splitlines()
    assert out.splitlines()[0].startswith("Best method overall: ")
    assert "| cosine |" in report and "|" not in out and "###" not in out and len(out.splitlines()) == 4
    assert main(argv) == 0
    assert "all 2 runs cached" in capsys.readouterr().err


def test_the_report_and_summary_say_what_produced_the_numbers(tiny: str, tmp_path, capsys) -> None:
    """Provenance in report.md and summary.json: the command line, lrpilot's version and commit, torch's
    version and build, the CPU and the threads per run, so a result that does not reproduce can be traced."""
    import lrpilot

    pytest.importorskip("matplotlib")
    argv = ["bench", "--tasks", tiny, "--methods", "constant", "--epochs", "1", "--jobs", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    capsys.readouterr()
    record = json.loads((tmp_path / "summary.json").read_text())["provenance"]
    assert record["command"] == "lrpilot " + " ".join(argv)
    assert record["lrpilot"] == lrpilot.__version__
    assert record["packages"]["torch"] in (torch.__version__, torch.__version__.split("+")[0])
    assert record["torch_build"] in ("CPU", f"CUDA {torch.version.cuda}") and record["torch_threads"] == 1
    assert record["cpu"] and record["cpu_count"] >= 1
    report = (tmp_path / "report.md").read_text()
    assert "### Provenance" in report and f"`{record['command']}`" in report and record["cpu"] in report
    if record["git_commit"] is not None:  # an editable install from a checkout
        assert len(record["git_commit"].removesuffix("+dirty")) == 40


@pytest.mark.parametrize(("args", "named"), [(["--tasks", "no-such-task"], "no-such-task"),
                                              (["--methods", "no-such-method"], "no-such-method"),
                                              (["--seeds", "0"], "--seeds")])
def test_cli_bench_rejects_bad_arguments_naming_them(args: list[str], named: str, tmp_path, capsys) -> None:
    assert main(["bench", *args, "--out", str(tmp_path)]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_make_jobs_names_unknown_entries_and_skips_inapplicable_methods() -> None:
    with pytest.raises(KeyError, match="nope"):
        make_jobs(["nope"], ["constant"], 1)
    with pytest.raises(KeyError, match="nope"):
        make_jobs(["digits-mlp"], ["nope"], 1)
    assert make_jobs(["digits-mlp"], ["texp"], 1) == []
    sweep = make_jobs(["digits-mlp"], ["constant"], 1, lr_sweep=True)
    assert [j.lr for j in sweep] == pytest.approx([0.01, 0.03, 0.1, 0.3, 1.0])
    assert {j.epochs for j in make_jobs(["digits-mlp"], ["constant"], 1)} == {TASKS["digits-mlp"].epochs}


def test_a_suite_sweep_adds_the_other_factors_of_methods_that_take_an_lr_on_its_sweep_tasks_only() -> None:
    """``sweep_tasks``: every method that takes an LR also runs at x0.1, x0.3, x3, x10 its default LR (the x1 runs
    are the main ones) for ``sweep_seeds`` seeds, on those tasks only; LR-free methods are not swept."""
    plain = make_jobs(["digits-mlp", "mnist1d-cnn"], ["constant", "prodigy"], 3)
    jobs = make_jobs(["digits-mlp", "mnist1d-cnn"], ["constant", "prodigy"], 3, sweep_tasks=["digits-mlp"],
                     sweep_seeds=2)
    extra = [j for j in jobs if j not in plain]
    assert sorted(set(jobs) - set(extra), key=plain.index) == plain
    assert {(j.task, j.method) for j in extra} == {("digits-mlp", "constant")}
    assert sorted({j.lr for j in extra}) == pytest.approx([0.01, 0.03, 0.3, 1.0])
    assert {j.seed for j in extra} == {0, 1} and len(extra) == 8
    with pytest.raises(ValueError, match="sweep_seeds must be >= 1, got 0"):
        make_jobs(["digits-mlp"], ["constant"], 1, sweep_tasks=["digits-mlp"], sweep_seeds=0)


def test_the_full_suite_sweeps_its_fast_tasks_and_the_quick_suite_holds_a_discriminating_task() -> None:
    full, quick = runner.SUITES["full"], runner.SUITES["quick"]
    assert set(full.sweep_tasks) <= set(full.tasks) and "mnist1d-cnn-noisy" in full.sweep_tasks
    assert "shakespeare-char" not in full.sweep_tasks  # ~90 s a run: 64 more runs would double the suite
    assert {"mnist1d-cnn-noisy", "digits-mlp-noisy"} <= set(full.tasks)
    assert "mnist1d-cnn-noisy" in quick.tasks and not quick.sweep_tasks


def test_cli_list_and_quick_suite_selection(capsys) -> None:
    assert main(["bench", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in METHODS)
    quick = runner.SUITES["quick"]
    assert quick.seeds == 1 and {"autodrop-sgd", "active-sgd", "active-adamw", "cosine"} <= set(quick.methods)


def test_cli_list_shows_what_each_suite_runs(capsys) -> None:
    """``--list`` says, per suite, its tasks with their budgets, its methods, its seeds and how many runs that
    is; then each task and each method with the flags the report reads (lrpilot's, told the budget, LR-free)."""
    assert main(["bench", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    for name, suite in runner.SUITES.items():
        runs = len(make_jobs(list(suite.tasks), list(suite.methods), suite.seeds, epochs=suite.epochs))
        header = next(i for i, line in enumerate(listed) if line.startswith(f"  {name}: "))
        assert f"{len(suite.tasks)} tasks x {len(suite.methods)} methods x {suite.seeds} seed(s) = {runs} runs" \
            in listed[header]
        epochs = suite.epochs or {}
        assert listed[header + 1] == "    tasks: " + ", ".join(
            f"{t} {epochs.get(t, TASKS[t].epochs)} epochs" for t in suite.tasks)
        assert listed[header + 2] == "    methods: " + ", ".join(suite.methods)
    assert "texp: only on some tasks" in next(line for line in listed if line.startswith("  full: "))
    assert "quick: 4 tasks" in "\n".join(listed) and "mnist1d-cnn-noisy 40 epochs" in "\n".join(listed)
    full = runner.SUITES["full"]
    swept = len(make_jobs(list(full.tasks), list(full.methods), 3, sweep_tasks=full.sweep_tasks)) - len(
        make_jobs(list(full.tasks), list(full.methods), 3))
    assert f"{', '.join(full.sweep_tasks)} = {swept} more runs" in "\n".join(listed)
    flags = {line.split()[0]: line for line in listed if line.startswith("  ") and " lr " in line}
    assert "[lrpilot]" in flags["autodrop-sgd"] and "[budget]" in flags["cosine"]
    assert "LR-free" in flags["prodigy"] and "[lrpilot; budget; LR-free]" in flags["pilot"]
    assert "only mnist1d-bncnn, mnist1d-resnet-bn" in flags["texp"]


def test_overhead_ratio_is_measured_against_the_reference_and_cached(tiny: str, tmp_path) -> None:
    ratios = measure_overheads([(tiny, "autodrop-sgd"), (tiny, "constant")], tmp_path)
    assert set(ratios) == {(tiny, "autodrop-sgd")}  # constant is the plain optimizer: no reference
    assert 0.2 < ratios[(tiny, "autodrop-sgd")] < 20
    cached = json.loads((tmp_path / "overhead" / f"{tiny}__autodrop-sgd__cpu.json").read_text())
    assert cached["reference"] == "constant" and cached["steps"] >= 60
    # the whole training step (forward + backward + step) is timed too, and takes longer than the step alone
    assert cached["train_method_seconds"] > cached["method_seconds"] > 0
    assert cached["train_reference_seconds"] > cached["reference_seconds"] > 0
    assert 0.2 < cached["train_ratio"] < 20
    assert measure_overheads([(tiny, "autodrop-sgd")], tmp_path) == ratios  # read back, not re-measured


def test_cli_bench_cuda_without_a_gpu_says_so(tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["bench", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "CUDA" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_default_progress_is_a_tqdm_bar_on_a_terminal_and_plain_lines_otherwise(tiny: str, tmp_path, monkeypatch
                                                                                ) -> None:
    """On a terminal the default progress is a tqdm bar counting runs (with its ETA) and the run lines printed
    above it; without a terminal only the lines, each with its own ETA."""
    pytest.importorskip("tqdm")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run_jobs(make_jobs([tiny], ["constant", "cosine"], 1, epochs=2), tmp_path / "tty", workers=1)
    shown = terminal.getvalue()
    assert "bench: 100%" in shown and "2/2" in shown and ("run/s" in shown or "s/run" in shown)
    assert "[2/2] tiny" in shown and "ETA" in shown
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    run_jobs(make_jobs([tiny], ["constant", "cosine"], 1, epochs=2), tmp_path / "pipe", workers=1)
    lines = pipe.getvalue().splitlines()
    assert lines[-1].startswith("[2/2]") and "ETA" in lines[-1] and "\r" not in pipe.getvalue()
