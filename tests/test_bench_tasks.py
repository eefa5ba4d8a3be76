"""Specification of the benchmark's task registry: what each task trains on, that it needs nothing from the
network, and that the runner and report handle a lower-is-better metric (language modelling) as they handle
accuracy."""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrpilot import check_scale_invariance, make_scale_invariant
from lrpilot.bench.datasets import digits_noisy_data, flip_labels, mnist1d_noisy_data
from lrpilot.bench.methods import get_method
from lrpilot.bench.report import write_report
from lrpilot.bench.runner import SUITES, Job, load_results, make_jobs, run_job, run_jobs
from lrpilot.bench.tasks import (
    CIFAR10_ENV,
    SHAKESPEARE_PATH,
    TASKS,
    CharGPT,
    LanguageModelTask,
    char_gpt,
    cifar10_data,
    cifar_resnet20,
    digits_data,
    mnist1d_data,
    mnist1d_resnet_bn,
    shakespeare_text,
)
from lrpilot.cli import main

CPU = torch.device("cpu")


def test_tasks_re_exports_the_loaders_and_models_from_their_own_modules() -> None:
    """Data loaders live in lrpilot.bench.datasets, models in lrpilot.bench.models, tasks and the registry in
    lrpilot.bench.tasks; every name importable from tasks before the split still is, as the same object."""
    from lrpilot.bench import datasets, models, tasks

    for module in (datasets, models):
        for name in module.__all__:
            if name != "Data":
                assert getattr(tasks, name) is getattr(module, name), name
    assert TASKS["mnist1d-cnn"].data is datasets.mnist1d_data and TASKS["shakespeare-char"].model is models.char_gpt


def test_tiny_shakespeare_ships_with_the_package_and_splits_as_nanogpt() -> None:
    assert SHAKESPEARE_PATH.is_file() and SHAKESPEARE_PATH.stat().st_size == 1_115_394
    train, val, vocab = shakespeare_text()
    assert len(vocab) == 65 and vocab == "".join(sorted(vocab))
    assert (len(train), len(val)) == (1_003_854, 111_540)
    text = SHAKESPEARE_PATH.read_text(encoding="utf-8")
    assert "".join(vocab[i] for i in train[:14]) == text[:14] == "First Citizen:"


def test_char_gpt_has_the_issue_shape_and_a_tied_head() -> None:
    model = char_gpt()
    assert isinstance(model, CharGPT) and len(model.blocks) == 4 and model.blocks[0].heads == 4
    assert model.tok.weight.shape == (65, 128) and model.pos.weight.shape == (64, 128)
    assert model.head.weight is model.tok.weight
    assert sum(p.numel() for p in model.parameters()) == 804_096
    logits = model(torch.randint(0, 65, (2, 64)))
    assert logits.shape == (2, 64, 65)


def test_char_gpt_is_causal() -> None:
    """Changing a later token never changes the logits at earlier positions."""
    torch.manual_seed(0)
    model = char_gpt().eval()
    x = torch.randint(0, 65, (1, 64))
    y = x.clone()
    y[0, 40:] = (y[0, 40:] + 1) % 65
    with torch.no_grad():
        assert torch.allclose(model(x)[0, :40], model(y)[0, :40], atol=1e-6)
        assert not torch.allclose(model(x)[0, 40:], model(y)[0, 40:])


def test_language_model_batches_are_shifted_windows_and_reproducible() -> None:
    task = TASKS["shakespeare-char"]
    assert isinstance(task, LanguageModelTask) and task.metric == "val_loss" and not task.higher_is_better
    assert task.steps_per_epoch() == 50 and task.epochs * task.steps_per_epoch() == 1000
    first = list(task.epoch_batches(torch.Generator().manual_seed(3), CPU))
    again = list(task.epoch_batches(torch.Generator().manual_seed(3), CPU))
    assert len(first) == 50
    for (x, y), (x2, y2) in zip(first, again):
        assert x.shape == y.shape == (12, 64)
        assert torch.equal(x[:, 1:], y[:, :-1])  # the target is the next character
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_language_model_validation_starts_at_chance_and_uses_fixed_windows() -> None:
    task = TASKS["shakespeare-char"]
    torch.manual_seed(0)
    model = char_gpt()
    loss, metric = task.evaluate(model, CPU)
    assert loss == metric and abs(loss - math.log(65)) < 0.1  # uniform prediction over 65 characters
    assert task.evaluate(model, CPU) == (loss, metric)  # same windows every time
    assert model.training  # left in train mode


def test_reached_follows_the_metric_direction() -> None:
    assert TASKS["mnist1d-cnn"].reached(0.91) and not TASKS["mnist1d-cnn"].reached(0.89)
    assert TASKS["shakespeare-char"].reached(1.99) and not TASKS["shakespeare-char"].reached(2.01)


def _tiny_text() -> tuple[torch.Tensor, torch.Tensor, str]:
    """A short periodic text: learnable in a few steps."""
    text = "abcdefgh" * 400
    vocab = "abcdefgh"
    tokens = torch.tensor([vocab.index(c) for c in text])
    return tokens[:2800], tokens[2800:], vocab


def _tiny_lm() -> torch.nn.Module:
    return CharGPT(8, block=16, dim=16, layers=1, heads=2)


@pytest.fixture
def tiny_lm(monkeypatch: pytest.MonkeyPatch) -> str:
    task = LanguageModelTask("tiny-lm", _tiny_text, _tiny_lm, block=16, batch_size=8, steps=10, eval_windows=16,
                             epochs=3, target=1.0)
    monkeypatch.setitem(TASKS, "tiny-lm", task)
    return "tiny-lm"


def test_runner_trains_a_language_model_and_records_validation_loss(tiny_lm: str) -> None:
    result = run_job(Job(tiny_lm, "adamw", 1e-2, 0, 3))
    assert result["metric"] == "val_loss" and result["steps"] == 30
    losses = [r["test_metric"] for r in result["records"]]
    assert losses[-1] < losses[0] < math.log(8) + 0.2  # learns the periodic text
    assert [r["test_loss"] for r in result["records"]] == losses


def test_report_ranks_a_loss_metric_lower_is_better(tiny_lm: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    jobs = make_jobs([tiny_lm], ["adamw", "constant"], 1, epochs=3)
    run_jobs(jobs, tmp_path, workers=1, progress=lambda line: None)
    results = load_results(tmp_path, jobs)
    final = {r["method"]: r["records"][-1]["test_metric"] for r in results}
    report = write_report(results, tmp_path).read_text()
    assert "validation loss, lower is better" in report
    table = report[report.index("### tiny-lm"):report.index("Summary")]
    better, worse = sorted(final, key=final.get)
    assert table.index(f"| {better} |") < table.index(f"| {worse} |")
    assert f"{final[better]:.3f}" in table
    summary = json.loads((tmp_path / "summary.json").read_text())["summary"]
    assert summary[better]["gaps"][tiny_lm] == 0.0
    assert summary[worse]["gaps"][tiny_lm] == pytest.approx(100 * (final[worse] / final[better] - 1))
    assert (tmp_path / f"curves_{tiny_lm}.png").stat().st_size > 5_000


def test_resnet_bn_is_residual_and_every_conv_is_scale_invariant() -> None:
    torch.manual_seed(0)
    model = mnist1d_resnet_bn()
    assert sum(p.numel() for p in model.parameters()) == 14_682
    assert model(torch.randn(4, 1, 40)).shape == (4, 10)
    make_scale_invariant(model)
    probe = (torch.randn(8, 1, 40), torch.arange(8) % 10)
    assert check_scale_invariance(model, F.cross_entropy, probe).ok
    assert get_method("texp").applies_to("mnist1d-resnet-bn")


def test_full_suite_has_every_offline_task_and_no_cifar() -> None:
    assert set(SUITES["full"].tasks) == {"mnist1d-cnn", "mnist1d-bncnn", "mnist1d-resnet-bn", "digits-mlp",
                                         "mnist1d-cnn-noisy", "digits-mlp-noisy", "shakespeare-char"}
    assert not TASKS["cifar10-resnet"].in_full_suite


def _fake_cifar(root: Path, n: int = 8, skip: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        if name == skip:
            continue
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        (root / name).write_bytes(pickle.dumps(batch))
    return root


def test_cifar10_without_a_path_says_how_to_provide_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CIFAR10_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=CIFAR10_ENV):
        cifar10_data()


def test_cifar10_names_the_missing_batch(tmp_path: Path) -> None:
    root = _fake_cifar(tmp_path / "cifar-10-batches-py", skip="data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        cifar10_data(root)


def test_cifar10_reads_the_python_batches(tmp_path: Path) -> None:
    _fake_cifar(tmp_path / "cifar-10-batches-py", n=6)
    x, y, x_test, _ = cifar10_data(tmp_path)  # the parent directory works too
    assert x.shape == (30, 3, 32, 32) and x_test.shape == (6, 3, 32, 32) and y.dtype == torch.long
    assert float(x.min()) > -2.5 and float(x.max()) < 2.8  # normalised per channel
    assert cifar_resnet20()(x[:2]).shape == (2, 10)
    assert sum(p.numel() for p in cifar_resnet20().parameters()) == 272_474


def test_cli_refuses_cifar10_without_data_before_running_anything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(CIFAR10_ENV, raising=False)
    assert main(["bench", "--tasks", "cifar10-resnet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cifar10-resnet" in err and CIFAR10_ENV in err
    assert not (tmp_path / "runs").exists()
    assert main(["bench", "--tasks", "cifar10-resnet", "--cifar10", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path)]) == 2
    assert "missing" in capsys.readouterr().err


def test_cli_trains_cifar10_from_a_local_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.delenv(CIFAR10_ENV, raising=False)
    data = _fake_cifar(tmp_path / "data", n=4)
    out = tmp_path / "out"
    assert main(["bench", "--tasks", "cifar10-resnet", "--cifar10", str(data), "--methods", "constant",
                 "--epochs", "1", "--jobs", "1", "--out", str(out)]) == 0
    (result,) = load_results(out)
    assert result["task"] == "cifar10-resnet" and len(result["records"]) == 1


def test_flip_labels_moves_about_the_fraction_always_to_another_class_and_is_reproducible() -> None:
    labels = torch.arange(20000) % 10
    noisy = flip_labels(labels, 0.25, 10, seed=3)
    flipped = noisy != labels
    assert 0.24 < flipped.float().mean().item() < 0.26
    assert bool(((noisy >= 0) & (noisy < 10)).all())
    assert torch.equal(noisy, flip_labels(labels, 0.25, 10, seed=3))
    assert not torch.equal(noisy, flip_labels(labels, 0.25, 10, seed=4))
    assert torch.equal(flip_labels(labels, 0.0, 10), labels)
    # the new class is uniform over the 9 others: each offset (new - old) mod 10 in 1..9 about equally often
    offsets = torch.bincount((noisy - labels)[flipped] % 10, minlength=10)
    assert offsets[0] == 0 and offsets[1:].min() > 0.8 * offsets[1:].float().mean()


@pytest.mark.parametrize(("kwargs", "named"), [({"fraction": 1.0}, "fraction must be in [0, 1), got 1.0"),
                                               ({"fraction": -0.1}, "got -0.1"),
                                               ({"classes": 1}, "classes must be >= 2, got 1"),
                                               ({"classes": 3}, "labels must lie in 0..2, got 0..9")])
def test_flip_labels_names_a_bad_argument(kwargs: dict, named: str) -> None:
    args = {"fraction": 0.25, "classes": 10, **kwargs}
    with pytest.raises(ValueError, match=re.escape(named)):
        flip_labels(torch.arange(10), **args)


def test_the_noisy_tasks_flip_training_labels_only() -> None:
    """mnist1d-cnn-noisy / digits-mlp-noisy: same inputs and test set as the clean tasks, a quarter / 30% of the
    training labels changed."""
    for noisy, clean, fraction in ((mnist1d_noisy_data, mnist1d_data, 0.25), (digits_noisy_data, digits_data, 0.3)):
        x, y, xt, yt = noisy()
        cx, cy, cxt, cyt = clean()
        assert torch.equal(x, cx) and torch.equal(xt, cxt) and torch.equal(yt, cyt)
        assert abs((y != cy).float().mean().item() - fraction) < 0.04
    assert TASKS["mnist1d-cnn-noisy"].data is mnist1d_noisy_data and TASKS["digits-mlp-noisy"].data is digits_noisy_data


def test_digits_standardisation_gives_a_constant_training_pixel_scale_one() -> None:
    """digits_data: each pixel is centred and scaled by its training-split spread, and a pixel constant over the
    training split (0 in every training image) is given scale 1, so no test input explodes (dividing by a zero
    spread plus 1e-6 made two test images' inputs near 1e6)."""
    x, _, x_test, _ = digits_data()
    constant = x.std(0) == 0
    assert int(constant.sum()) > 0 and torch.equal(x[:, constant], torch.zeros_like(x[:, constant]))
    assert torch.allclose(x[:, ~constant].mean(0), torch.zeros(int((~constant).sum())), atol=1e-5)
    assert torch.allclose(x[:, ~constant].std(0, unbiased=False), torch.ones(int((~constant).sum())), atol=1e-4)
    assert float(x_test.abs().max()) < 100  # the raw pixels are 0..16; the smallest nonzero spread is 0.026
