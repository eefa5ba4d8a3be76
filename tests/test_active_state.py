"""Specification: no checkpoint, resume or misuse path leaves an ActiveLR optimizer with a silently wrong
learning rate. ``load_state_dict`` refuses what it cannot load faithfully (ValueError naming the value) before
anything changes; ``steps_per_epoch`` is the constructor's; GradScaler, zero-filled gradients, gradient
accumulation and param groups added mid-training keep the epoch clock and the multipliers right."""

from __future__ import annotations

import copy
import io
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from activelr_oracles import FACTORIES, drive, drive_quadratic, make_params
from lrpilot import ActiveAdamW, ActiveSGD

ALL = pytest.mark.parametrize("name", list(FACTORIES))
PAIRS = [(a, b) for a in FACTORIES for b in FACTORIES if a != b]


def trained(name: str, steps: int = 6, **kw):
    params = make_params()
    opt = FACTORIES[name](params, steps_per_epoch=kw.pop("steps_per_epoch", 4), **kw)
    drive_quadratic(opt, params, steps)
    return opt, params


def snapshot(opt) -> dict:
    return copy.deepcopy(opt.state_dict())


def assert_same(a: dict, b: dict) -> None:
    """Two state dicts are equal: tensors bitwise, everything else by ==."""
    assert a["active"] == b["active"]
    assert [{k: v for k, v in g.items()} for g in a["param_groups"]] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert a["state"][k].keys() == b["state"][k].keys()
        for key, value in a["state"][k].items():
            other = b["state"][k][key]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, key


def round_trip(state_dict: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ------------------------------------------------------------------------------------ the optimizer class
@pytest.mark.parametrize(("saved", "target"), PAIRS)
def test_a_state_dict_of_another_class_is_refused_naming_both_and_nothing_changes(saved, target):
    """e.g. an ActiveSGD dict into ActiveAdamW used to load and fail at the next step (KeyError 'amsgrad')."""
    source, _ = trained(saved)
    opt, _ = trained(target)
    before = snapshot(opt)
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(source.state_dict())
    message = str(info.value)
    assert saved in message and target in message
    assert_same(opt.state_dict(), before)


@pytest.mark.parametrize(("saved", "target"), PAIRS)
def test_an_old_state_dict_without_the_class_name_is_recognised_by_its_keys(saved, target):
    """Dicts saved before the class name was stored: another class shows in its group or state keys."""
    source, _ = trained(saved)
    state = source.state_dict()
    del state["active"]["optimizer"]
    opt, _ = trained(target)
    before = snapshot(opt)
    with pytest.raises(ValueError, match=r"saved by (another|a dedicated)"):
        opt.load_state_dict(state)
    assert_same(opt.state_dict(), before)


@ALL
def test_an_old_state_dict_of_the_same_class_still_loads_and_resumes_bitwise(name):
    opt, params = trained(name, steps=6)
    state = round_trip(opt.state_dict())
    assert state["active"].pop("optimizer") == opt._optimizer_name()
    other = [p.detach().clone().requires_grad_() for p in params]
    resumed = FACTORIES[name](other, steps_per_epoch=4)
    resumed.load_state_dict(state)
    drive_quadratic(opt, params, 7, seed=5)
    drive_quadratic(resumed, other, 7, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(params, other))
    assert_same(resumed.state_dict(), opt.state_dict())


def test_a_plain_torch_adamw_state_dict_is_refused_by_active_adamw():
    """It holds no multipliers, sums or clock; the reverse (ActiveAdamW's dict into torch.optim.AdamW) is torch's
    to accept: it loads and ignores the multipliers (docs/activelr.md)."""
    params = make_params()
    plain = torch.optim.AdamW(params, lr=0.01)
    drive_quadratic(plain, params, 2)
    opt = ActiveAdamW(params, lr=0.01)
    with pytest.raises(ValueError, match=r"no 'active' entry.*ActiveAdamW"):
        opt.load_state_dict(plain.state_dict())
    assert len(opt.state) == 0


# ------------------------------------------------------------------------------------ layout and values
@ALL
def test_a_param_group_or_parameter_count_mismatch_is_refused_naming_both_counts(name):
    opt, params = trained(name)
    state = opt.state_dict()
    two = FACTORIES[name]([{"params": params[:2]}, {"params": params[2:]}], steps_per_epoch=4)
    with pytest.raises(ValueError, match=r"1 param group\(s\), .* has 2"):
        two.load_state_dict(state)
    fewer = FACTORIES[name](params[:2], steps_per_epoch=4)
    drive_quadratic(fewer, params[:2], 2)
    before = snapshot(fewer)
    with pytest.raises(ValueError, match=r"param group 0 has 3 parameter\(s\), .*'s has 2"):
        fewer.load_state_dict(state)
    assert_same(fewer.state_dict(), before)


BAD_VALUES = {
    "wrong-shape multiplier": ("_MULT", lambda t: torch.ones(7, dtype=t.dtype), r"shape \(5,\)"),
    "wrong-shape grad sum": ("_SUM", lambda t: torch.zeros(2, 2, dtype=t.dtype), r"shape \(5,\)"),
    "wrong-shape previous sum": ("_PREV", lambda t: t[:3].clone(), r"shape \(5,\)"),
    "NaN multiplier": ("_MULT", lambda t: t.clone().index_fill_(0, torch.tensor([2]), float("nan")), "nan"),
    "inf multiplier": ("_MULT", lambda t: t.clone().index_fill_(0, torch.tensor([0]), float("inf")), "inf"),
    "negative multiplier": ("_MULT", lambda t: -t, r"finite and >= 0"),
    "multiplier not a tensor": ("_MULT", lambda t: 1.0, "got float"),
    "negative step count": ("_COUNT", lambda t: -1, "-1"),
}


@ALL
@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_multiplier_or_sum_is_refused_naming_the_parameter_and_nothing_changes(name, case):
    attr, corrupt, detail = BAD_VALUES[case]
    opt, _ = trained(name, steps=6)  # 1.5 epochs: every parameter has a previous sum
    state = copy.deepcopy(opt.state_dict())
    key = getattr(opt, attr)
    state["state"][1][key] = corrupt(state["state"][1][key])
    before = snapshot(opt)
    with pytest.raises(ValueError, match=rf"{key}.*param group 0, parameter 1 of shape \(5,\)") as info:
        opt.load_state_dict(state)
    assert re.search(detail, str(info.value)), str(info.value)
    assert_same(opt.state_dict(), before)


@ALL
def test_a_missing_sum_and_a_bad_group_hyperparameter_are_refused(name):
    opt, _ = trained(name)
    before = snapshot(opt)
    state = copy.deepcopy(opt.state_dict())
    del state["state"][0][opt._SUM]
    with pytest.raises(ValueError, match=rf"parameter 0 of shape \(4, 3\) has no '{opt._SUM}'"):
        opt.load_state_dict(state)
    state = copy.deepcopy(opt.state_dict())
    state["param_groups"][0]["lr_low"] = 2.0
    with pytest.raises(ValueError, match=r"lr_low must be <= 1.0, got 2.0"):
        opt.load_state_dict(state)
    assert_same(opt.state_dict(), before)


@pytest.mark.parametrize("name", ["ActiveAdamW", "ActiveSGD"])
def test_a_wrong_shape_base_optimizer_moment_is_refused_too(name):
    opt, _ = trained(name)
    state = copy.deepcopy(opt.state_dict())
    key = "exp_avg" if name == "ActiveAdamW" else "momentum_buffer"
    state["state"][0][key] = torch.zeros(3)
    with pytest.raises(ValueError, match=rf"'{key}' of param group 0, parameter 0 .* shape \(4, 3\), got shape \(3,\)"):
        opt.load_state_dict(state)


# ------------------------------------------------------------------------------------ steps_per_epoch
@ALL
def test_the_constructors_steps_per_epoch_wins_over_the_saved_one_with_a_warning(name):
    """The batch size may have changed since the checkpoint: the new value counts, the clock position is kept."""
    opt, params = trained(name, steps=6, steps_per_epoch=4)  # epoch 1, 2 steps into epoch 2
    resumed = FACTORIES[name](params, steps_per_epoch=5)
    with pytest.warns(UserWarning, match=r"saved with steps_per_epoch=4.*has steps_per_epoch=5; keeping steps_per_e"):
        resumed.load_state_dict(opt.state_dict())
    assert (resumed.steps_per_epoch, resumed.epoch, resumed._steps_in_epoch) == (5, 1, 2)
    drive_quadratic(resumed, params, 2)
    assert (resumed.epoch, resumed._steps_in_epoch) == (1, 4)
    drive_quadratic(resumed, params, 1)
    assert (resumed.epoch, resumed._steps_in_epoch) == (2, 0)
    manual = FACTORIES[name](params)
    with pytest.warns(UserWarning, match=r"steps_per_epoch=4.*keeping steps_per_epoch=None"):
        manual.load_state_dict(opt.state_dict())
    assert manual.steps_per_epoch is None


@ALL
def test_an_epoch_already_longer_than_the_new_steps_per_epoch_closes_at_the_next_step(name):
    opt, params = trained(name, steps=7, steps_per_epoch=10)  # 7 steps into the first epoch
    resumed = FACTORIES[name](params, steps_per_epoch=3)
    with pytest.warns(UserWarning, match=r"already 7 steps long, closes at the next step\(\)"):
        resumed.load_state_dict(opt.state_dict())
    drive_quadratic(resumed, params, 1)
    assert (resumed.epoch, resumed._steps_in_epoch) == (1, 0)
    drive_quadratic(resumed, params, 3)
    assert (resumed.epoch, resumed._steps_in_epoch) == (2, 0)


@ALL
def test_the_same_steps_per_epoch_loads_without_a_warning(name):
    opt, params = trained(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FACTORIES[name](params, steps_per_epoch=4).load_state_dict(opt.state_dict())


# ------------------------------------------------------------------------------------ a new process
CHILD = """
import sys, torch
torch.set_num_threads({threads})  # the parent's: reductions are not bitwise the same across thread counts
sys.path.insert(0, {tests!r})
from activelr_oracles import FACTORIES, drive_quadratic, make_params
for name in FACTORIES:
    params = make_params()
    opt = FACTORIES[name](params, steps_per_epoch=4)
    drive_quadratic(opt, params, 10, seed=7)
    torch.save({{"params": [p.detach() for p in params], "opt": opt.state_dict()}}, {out!r} + "/" + name + ".pt")
"""


def test_a_mid_epoch_checkpoint_from_another_process_resumes_bitwise_in_a_fresh_optimizer(tmp_path):
    """Saved 2 steps into the 3rd epoch by another process, loaded into a never-stepped optimizer here."""
    tests = str(Path(__file__).parent)
    child = CHILD.format(tests=tests, out=str(tmp_path), threads=torch.get_num_threads())
    subprocess.run([sys.executable, "-c", child], check=True, timeout=120)
    for name in FACTORIES:
        params = make_params()
        full = FACTORIES[name](params, steps_per_epoch=4)
        drive_quadratic(full, params, 10, seed=7)
        ckpt = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        fresh = [p.detach().clone().requires_grad_() for p in ckpt["params"]]
        resumed = FACTORIES[name](fresh, steps_per_epoch=4)
        resumed.load_state_dict(ckpt["opt"])
        assert (resumed.epoch, resumed._steps_in_epoch) == (2, 2)
        drive_quadratic(full, params, 9, seed=8)
        drive_quadratic(resumed, fresh, 9, seed=8)
        assert all(torch.equal(a, b) for a, b in zip(params, fresh)), name
        assert_same(resumed.state_dict(), full.state_dict())


# ------------------------------------------------------------------------------------ GradScaler
def scaled_run(name: str, scaler_kind: str, inf_at: int | None = None):
    """Six steps of a tiny float32 model, steps_per_epoch=3; optionally an inf gradient at step ``inf_at``."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = FACTORIES[name](list(model.parameters()), steps_per_epoch=3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=1000) if scaler_kind != "none" else None
    g = torch.Generator().manual_seed(1)
    for t in range(6):
        x = torch.randn(4, 3, generator=g)
        opt.zero_grad()
        loss = (model(x) - 1).pow(2).mean()
        (scaler.scale(loss) if scaler else loss).backward()
        if inf_at == t:
            model.weight.grad[0, 0] = float("inf")
        if scaler is None:
            opt.step()
            continue
        if scaler_kind == "unscale":
            scaler.unscale_(opt)  # e.g. before gradient clipping
        scaler.step(opt)
        scaler.update()
    return model, opt


@ALL
@pytest.mark.parametrize("kind", ["scale", "unscale"])
def test_grad_scaler_steps_are_those_of_unscaled_training_bitwise(name, kind):
    plain, plain_opt = scaled_run(name, "none")
    scaled, scaled_opt = scaled_run(name, kind)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), scaled.parameters()))
    assert plain_opt.epoch == scaled_opt.epoch == 2


@ALL
def test_a_step_grad_scaler_skips_changes_nothing_and_is_not_counted_by_steps_per_epoch(name):
    """GradScaler does not call step() on inf/NaN: nothing moves, no sum or count changes, and the automatic
    boundary comes one step later (documented: call end_epoch() per epoch to stay aligned with the data)."""
    model, opt = scaled_run(name, "scale", inf_at=4)
    assert (opt.epoch, opt._steps_in_epoch) == (1, 2)
    assert [opt.state[p][opt._COUNT] for p in model.parameters()] == [2, 2]
    opt.end_epoch()
    assert (opt.epoch, opt._steps_in_epoch) == (2, 0)


# ------------------------------------------------------------------------------------ other loops
@ALL
def test_zero_filled_gradients_are_gradients_while_none_leaves_a_parameter_out(name):
    """``zero_grad(set_to_none=False)`` leaves zero tensors: a parameter unused for an epoch then "received" a
    zero gradient, its epoch sum is 0 and, by the paper's rule (``gradOld * cumm <= 0``), its multiplier is
    multiplied by ``lr_low``; with the default ``set_to_none=True`` its grad is None and it is left out."""
    used, unused = torch.zeros(2, dtype=torch.float64, requires_grad=True), torch.zeros(2, dtype=torch.float64,
                                                                                      requires_grad=True)
    plus = torch.tensor([1.0, 1.0], dtype=torch.float64)
    results = {}
    for zero in (None, torch.zeros(2, dtype=torch.float64)):
        a, b = used.detach().clone().requires_grad_(), unused.detach().clone().requires_grad_()
        opt = FACTORIES[name]([a, b], steps_per_epoch=2)
        drive(opt, [a, b], [[plus, plus]] * 2)  # epoch 1: both store +2
        drive(opt, [a, b], [[plus, zero]] * 2)  # epoch 2: b unused
        results[zero is None] = opt.state[b][opt._MULT].tolist()
    assert results[True] == [1.0, 1.0]  # None: left out of the boundary
    assert results[False] == [0.5, 0.5]  # zeros: a zero sum counts as a sign flip


def test_steps_per_epoch_counts_optimizer_steps_not_backward_calls():
    """With gradient accumulation the epoch sum is the sum of the accumulated gradients of its steps."""
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = ActiveSGD([p], lr=0.1, steps_per_epoch=2)
    micro = [torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([1.0, 0.5], dtype=torch.float64)]
    for _ in range(4):  # 4 optimizer steps of 2 micro-batches: 2 epochs
        opt.zero_grad()
        for g in micro:
            (p * g).sum().backward()
        opt.step()
    assert opt.epoch == 2
    assert opt.state[p]["multiplier"].tolist() == [3.0, 3.0]  # both epochs sum to [4, -1]: same signs
    assert opt.state[p]["prev_grad_sum"].tolist() == [4.0, -1.0]


@ALL
def test_a_param_group_added_after_steps_has_its_own_first_epoch_and_checkpoints(name):
    """Its first boundary only stores the sum; a dict saved before the group was added no longer fits."""
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = FACTORIES[name]([a], steps_per_epoch=2)
    plus = torch.tensor([1.0, 1.0], dtype=torch.float64)
    drive(opt, [a], [[plus]] * 3)  # epoch 1 and 1 step into epoch 2
    early = opt.state_dict()
    opt.add_param_group({"params": [b]})
    drive(opt, [a, b], [[plus, plus]])  # closes epoch 2: a's rule runs, b stores its first sum
    assert opt.state[a][opt._MULT].tolist() == [3.0, 3.0] and opt.state[b][opt._MULT].tolist() == [1.0, 1.0]
    drive(opt, [a, b], [[plus, plus]] * 2)
    assert opt.state[a][opt._MULT].tolist() == [5.0, 5.0] and opt.state[b][opt._MULT].tolist() == [3.0, 3.0]
    with pytest.raises(ValueError, match=r"1 param group\(s\)"):
        opt.load_state_dict(early)
    c, d = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    resumed = FACTORIES[name]([c], steps_per_epoch=2)
    resumed.add_param_group({"params": [d]})
    resumed.load_state_dict(round_trip(opt.state_dict()))
    drive(opt, [a, b], [[plus, -plus]] * 2)
    drive(resumed, [c, d], [[plus, -plus]] * 2)
    assert torch.equal(a, c) and torch.equal(b, d)
    assert resumed.state[d][resumed._MULT].tolist() == [1.5, 1.5]


@ALL
def test_a_second_load_and_a_load_after_deepcopy_or_pickle_work(name):
    """torch's ``__setstate__`` (run by load, deepcopy and pickle) adds ``differentiable`` to ``defaults`` only;
    that must not make the next load look like another optimizer's dict."""
    opt, params = trained(name)
    state = round_trip(opt.state_dict())
    resumed = FACTORIES[name](params, steps_per_epoch=4)
    resumed.load_state_dict(state)
    resumed.load_state_dict(round_trip(opt.state_dict()))
    copy.deepcopy(resumed).load_state_dict(round_trip(opt.state_dict()))
    assert_same(resumed.state_dict(), opt.state_dict())
