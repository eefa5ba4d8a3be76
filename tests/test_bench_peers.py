"""Specification of the method registry's classification and of the peers added for users' choices: DoG (with
its iterate averaging), Prodigy + schedule-free, Mechanic on AdamW and AdamW with warmup-stable-decay, each the
published optimizer at its published defaults (the registry-wide training test in ``test_bench_runner.py``
trains every method on a tiny task; here each peer is built and stepped on its own)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from lrpilot.bench.loop import train
from lrpilot.bench.methods import METHODS, Built, get_method
from lrpilot.bench.tasks import TASKS, ClassificationTask
from lrpilot.telemetry import effective_lrs

NEW_PEERS = ("dog", "prodigy-sf", "mechanic-adamw", "adamw-wsd")


def test_the_registry_says_which_methods_need_a_budget_and_which_are_lrpilots() -> None:
    budget = {m for m, method in METHODS.items() if method.needs_budget}
    assert budget == {"multistep", "cosine", "warmup-cosine", "adamw-cosine", "adamw-wsd", "texp", "pilot"}
    ours = {m for m, method in METHODS.items() if method.lrpilot}
    assert ours == {"autodrop-sgd", "autodrop-adamw", "active-sgd", "active-adamw", "texp", "pilot", "pilot-anytime"}
    lr_free = {m for m, method in METHODS.items() if not method.takes_lr}
    assert lr_free == {"prodigy", "dadapt-sgd", "dadapt-adam", "dog", "prodigy-sf", "mechanic-adamw", "pilot",
                       "pilot-anytime"}


def test_the_module_docstring_lists_every_method() -> None:
    import lrpilot.bench.methods as module

    assert module.__doc__ is not None
    missing = [m for m in METHODS if f"``{m}``" not in module.__doc__]
    assert not missing, f"methods not in lrpilot.bench.methods' docstring: {missing}"


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _step(built: Built, model: nn.Module) -> None:
    x, y = torch.randn(16, 6, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 3
    nn.functional.cross_entropy(model(x), y).backward()
    built.optimizer.step()
    built.optimizer.zero_grad()
    if built.interval == "step":
        built.scheduler.step()


def _needs(method: str) -> None:
    module = METHODS[method].requires
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'lrpilot[bench]')")


@pytest.mark.parametrize("name", NEW_PEERS)
def test_each_new_peer_builds_and_takes_a_step(name: str) -> None:
    _needs(name)
    model = _mlp()
    before = [p.detach().clone() for p in model.parameters()]
    built = get_method(name).build(model, METHODS[name].default_lr, 5, 4)
    if built.schedule_free:
        built.optimizer.train()
    _step(built, model)
    if built.schedule_free:
        built.optimizer.eval()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert effective_lrs(built.optimizer)[0].mean > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_dog_is_the_packages_dog_at_its_defaults_with_the_batchnorm_rule() -> None:
    dog = pytest.importorskip("dog")
    built = get_method("dog").build(_mlp(), 1.0, 5, 4)
    assert isinstance(built.optimizer, dog.DoG) and built.schedule_free
    group = built.optimizer.param_groups[0]
    assert (group["lr"], group["reps_rel"], group["weight_decay"], group["eps"]) == (1.0, 1e-6, 0.0, 1e-8)
    # its docstring: reps_rel 1e-4 for a network with batch normalization
    assert get_method("dog").build(_bn_net(), 1.0, 5, 4).optimizer.param_groups[0]["reps_rel"] == 1e-4


def test_dog_is_evaluated_at_its_iterate_average_and_trains_on_from_its_iterate() -> None:
    """``eval()`` puts the polynomial-decay average (gamma 8) into the model, ``train()`` puts back the iterate
    exactly, so that evaluating does not change the training trajectory."""
    pytest.importorskip("dog")
    model = _mlp()
    built = get_method("dog").build(model, 1.0, 5, 4)
    opt = built.optimizer
    iterates, average = [], [p.detach().clone() for p in model.parameters()]
    for t in range(1, 6):
        _step(built, model)
        iterates.append([p.detach().clone() for p in model.parameters()])
        weight = 9 / (8 + t)
        average = [(1 - weight) * a + weight * x for a, x in zip(average, iterates[-1])]
    opt.eval()
    for p, a, x in zip(model.parameters(), average, iterates[-1]):
        assert torch.allclose(p, a, atol=1e-6) and not torch.equal(p, x)
    opt.eval()  # twice: still the average, the iterate not lost
    opt.train()
    assert all(torch.equal(p, x) for p, x in zip(model.parameters(), iterates[-1]))


def test_prodigy_sf_is_prodigy_plus_schedule_free_at_its_defaults() -> None:
    prodigyplus = pytest.importorskip("prodigyplus")
    built = get_method("prodigy-sf").build(_mlp(), 1.0, 5, 4)
    opt = built.optimizer
    assert isinstance(opt, prodigyplus.ProdigyPlusScheduleFree) and built.schedule_free and built.scheduler is None
    group = opt.param_groups[0]
    assert group["lr"] == 1.0 and group["betas"] == (0.9, 0.99) and group["d0"] == 1e-6
    assert group["weight_decay"] == 0.0 and group["use_schedulefree"]


def test_mechanic_tunes_torchs_adamw_at_its_defaults() -> None:
    mechanic = pytest.importorskip("mechanic_pytorch")
    opt = get_method("mechanic-adamw").build(_mlp(), 1.0, 5, 4).optimizer
    assert isinstance(opt, mechanic.Mechanic) and isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["lr"] == 1.0 and opt.param_groups[0]["weight_decay"] == 1e-2
    assert effective_lrs(opt)[0].mean == 0.0  # no step yet: Mechanic's scale starts at 0 (s_init 1e-8 wealth)


def test_adamw_wsd_warms_up_5_percent_holds_then_cools_down_linearly_over_the_last_20_percent() -> None:
    model = _mlp()
    built = get_method("adamw-wsd").build(model, 1e-3, 10, 10)  # 100 steps: 5 warmup, 75 stable, 20 cooldown
    lrs = []
    for _ in range(100):
        lrs.append(built.optimizer.param_groups[0]["lr"])
        _step(built, model)
    assert lrs[:5] == pytest.approx([2e-4, 4e-4, 6e-4, 8e-4, 1e-3])
    assert lrs[5:81] == pytest.approx([1e-3] * 76)
    assert lrs[90] == pytest.approx(5e-4) and lrs[99] == pytest.approx(5e-5)
    assert built.optimizer.param_groups[0]["lr"] == 0.0  # after the last step
    assert isinstance(built.optimizer, torch.optim.AdamW) and built.optimizer.param_groups[0]["weight_decay"] == 1e-2


def test_a_seed_fixes_the_initial_weights_and_the_batch_order_for_every_method(monkeypatch) -> None:
    """What makes the report's comparisons paired: two methods run at the same seed start from the same weights
    and see the same batches in the same order; another seed changes both."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    task = ClassificationTask("paired", lambda: (x, y, x, y), _unseeded_mlp, 16)
    monkeypatch.setitem(TASKS, "paired", task)
    seen: list[torch.Tensor] = []
    batches = ClassificationTask.epoch_batches

    def recording(self, order, device):  # type: ignore[no-untyped-def]
        for inputs, targets in batches(self, order, device):
            seen.append(targets.clone())
            yield inputs, targets

    monkeypatch.setattr(ClassificationTask, "epoch_batches", recording)

    def start(method: str, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        seen.clear()
        initial: list[torch.Tensor] = []

        def build(model: nn.Module) -> Built:
            initial.extend(p.detach().clone() for p in model.parameters())
            return get_method(method).build(model, METHODS[method].default_lr, 4, 2)

        train(task, build, 2, seed)
        return initial, list(seen)

    w_sgd, b_sgd = start("constant", 3)
    w_adam, b_adam = start("adamw", 3)
    assert all(torch.equal(a, b) for a, b in zip(w_sgd, w_adam))
    assert len(b_sgd) == 8 and all(torch.equal(a, b) for a, b in zip(b_sgd, b_adam))
    w_other, b_other = start("constant", 4)
    assert not all(torch.equal(a, b) for a, b in zip(w_sgd, w_other))
    assert not all(torch.equal(a, b) for a, b in zip(b_sgd, b_other))


def _unseeded_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
