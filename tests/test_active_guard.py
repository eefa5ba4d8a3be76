"""Specification of ``flip_guard``, lrpilot's optional stability guard of the ActiveLR sign rule (not the paper's):
off by default, where every run is bitwise the published rule's; on, the growth of a tensor's same-sign multipliers
is full while at most ``flip_guard - 0.2`` of its elements flipped, none once ``flip_guard`` of them flipped, linear in
between (flipped ones still shrink); it is saved and restored with the param groups, and a bad value is refused
naming it (each test on every optimizer)."""

from __future__ import annotations

import copy
import io
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from activelr_oracles import FACTORIES, SpecActiveLR, drive, drive_quadratic, make_params
from lrpilot import Active, ActiveSGD
from lrpilot.active import apply_sign_rule_
from lrpilot.active.sign_rule import FLIP_GUARD_RAMP

ALL = pytest.mark.parametrize("name", list(FACTORIES))


def vec(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def mults(opt, params):
    return [opt.state[p][opt._MULT].clone() for p in params]


def round_trip(state_dict: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ------------------------------------------------------------------------------------------------- off by default
@ALL
def test_the_guard_is_off_by_default_and_none_is_bitwise_the_published_rule(name):
    """Default and ``flip_guard=None`` give the same parameters and multipliers bitwise over 8 epochs of a noisy
    quadratic, with multipliers that really moved; ``flip_guard=0.5`` changes them (the guard is live)."""
    runs = []
    for kw in ({}, {"flip_guard": None}, {"flip_guard": 0.5}):
        params = make_params()
        opt = FACTORIES[name](params, steps_per_epoch=4, **kw)
        assert opt.param_groups[0]["flip_guard"] == kw.get("flip_guard")
        drive_quadratic(opt, params, 32)
        runs.append((params, mults(opt, params)))
    (p0, m0), (p1, m1), (_, m2) = runs
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))
    assert all(torch.equal(a, b) for a, b in zip(m0, m1))
    assert any(bool((m != 1).any()) for m in m0)
    assert not all(torch.equal(a, b) for a, b in zip(m0, m2))


@pytest.mark.parametrize("foreach", [False, True])
def test_default_active_sgd_still_equals_the_spec_oracle_bitwise(foreach):
    """With the guard off, ActiveSGD's multipliers equal the spec's per-parameter rule exactly (for-loop and
    foreach paths)."""
    params, ref = make_params(), make_params()
    opt = ActiveSGD(params, lr=0.02, momentum=0.9, foreach=foreach, steps_per_epoch=5)
    oracle = SpecActiveLR(ref, "sgd", 5, lr=0.02, lr_low=0.5, lr_high=2.0, momentum=0.9)
    g = torch.Generator().manual_seed(3)
    grads = [[torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params] for _ in range(30)]
    drive(opt, params, grads)
    drive(oracle, ref, grads)
    for k, p in enumerate(params):
        assert torch.equal(opt.state[p]["multiplier"], oracle.state[k]["gai"])


# ------------------------------------------------------------------------------------------------------ the rule
# Two tensors, one step per epoch. Tensor a: 8 elements; tensor b: 2 elements that never flip. flip_guard=0.5:
# epoch 2 vs 1: 2 of 8 flipped (0.25 <= 0.5 - 0.2): full growth, bitwise the published rule;
# epoch 3 vs 2: 4 of 8 flipped (0.5 >= flip_guard): no growth, the flipped ones halved;
# epoch 4 vs 3: 3 of 8 flipped (0.375): growth 2 * (0.5 - 0.375) / 0.2 = 1.25 (up to rounding).
A_GRADS = [vec(1, 1, 1, 1, 1, 1, 1, 1), vec(1, 1, 1, 1, 1, 1, -1, -1), vec(-1, -1, -1, -1, 1, 1, -1, -1),
           vec(1, 1, 1, -1, 1, 1, -1, -1)]
A_EXPECTED = [vec(1, 1, 1, 1, 1, 1, 1, 1), vec(3, 3, 3, 3, 3, 3, 0.5, 0.5), vec(1.5, 1.5, 1.5, 1.5, 3, 3, 0.5, 0.5),
              vec(0.75, 0.75, 0.75, 2.75, 4.25, 4.25, 1.75, 1.75)]
B_EXPECTED = [vec(1, 1), vec(3, 3), vec(5, 5), vec(7, 7)]


@ALL
@pytest.mark.parametrize("foreach", [False, True])
def test_the_guard_scales_growth_by_the_tensors_flip_fraction(name, foreach):
    """flip_guard=0.5 on tensor a: full growth at 2 of 8 flipped, none at 4 of 8 (no multiplier grows in that
    epoch), 1.25 instead of 2 at 3 of 8; flipped elements halve throughout; tensor b, without flips, grows by 2
    every epoch (the guard is per tensor). Same on the for-loop and the foreach path."""
    a = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    kw = {"foreach": foreach} if name in ("ActiveSGD", "ActiveAdamW", "ActiveRAdam", "ActiveAdaBelief") else {}
    opt = FACTORIES[name]([a, b], steps_per_epoch=1, flip_guard=0.5, **kw)
    for epoch, grad in enumerate(A_GRADS):
        before = mults(opt, [a, b]) if epoch else None
        drive(opt, [a, b], [[grad, vec(1, 1)]])
        got_a, got_b = mults(opt, [a, b])
        if epoch < 3:
            assert torch.equal(got_a, A_EXPECTED[epoch]), (epoch, got_a)
        else:
            torch.testing.assert_close(got_a, A_EXPECTED[epoch], rtol=0, atol=1e-6)
        assert torch.equal(got_b, B_EXPECTED[epoch]), (epoch, got_b)
        if epoch == 2:  # the epoch that tripped the guard fully: no multiplier of a grew
            assert bool((got_a <= before[0]).all())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([-2.0, -0.5, 0.0, 0.5, 2.0]), min_size=2, max_size=12), st.data(),
       st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))
def test_apply_sign_rule_with_guard_is_the_published_rule_with_scaled_growth(prev, data, guard):
    """For any sums: flipped elements are the published rule's; the others grow by lr_high times
    clamp((guard - flips) / 0.2, 0, 1): bitwise the published rule at or below guard - 0.2 flips, no growth at
    or above guard, never more than the published growth."""
    cur = data.draw(st.lists(st.sampled_from([-1.0, 0.0, 1.0, 3.0]), min_size=len(prev), max_size=len(prev)))
    m0 = torch.linspace(0.5, 4.0, len(prev), dtype=torch.float64)
    prev_t, cur_t = vec(*prev), vec(*cur)
    published, guarded = m0.clone(), m0.clone()
    apply_sign_rule_(published, prev_t, cur_t, 0.5, 2.0)
    apply_sign_rule_(guarded, prev_t, cur_t, 0.5, 2.0, flip_guard=guard)
    flip = torch.sign(prev_t) * torch.sign(cur_t) <= 0
    flips = float(flip.double().mean())
    assert torch.equal(guarded[flip], published[flip])
    assert bool((guarded <= published).all()) and bool((guarded >= m0)[~flip].all())
    scale = min(1.0, max(0.0, (guard - flips) / FLIP_GUARD_RAMP))
    torch.testing.assert_close(guarded[~flip], m0[~flip] + 2.0 * scale, rtol=0, atol=1e-6)
    if flips <= guard - FLIP_GUARD_RAMP - 1e-6:
        assert torch.equal(guarded, published)
    if flips >= guard:
        assert torch.equal(guarded[~flip], m0[~flip])


def test_the_guard_can_differ_per_param_group():
    """A group with the guard and one without, on the same sums: only the guarded group is held back."""
    a = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    opt = ActiveSGD([{"params": [a], "flip_guard": 0.5}, {"params": [b]}], lr=0.1, steps_per_epoch=1)
    for grad in A_GRADS[:3]:
        drive(opt, [a, b], [[grad, grad.clone()]])
    assert torch.equal(mults(opt, [a])[0], A_EXPECTED[2])
    assert torch.equal(mults(opt, [b])[0], vec(1.5, 1.5, 1.5, 1.5, 5, 5, 2.5, 2.5))  # the published rule


# ------------------------------------------------------------------------------------------------- checkpoints
@ALL
def test_the_guard_round_trips_through_state_dict_and_resumes_bitwise(name):
    """A guarded optimizer's state_dict (through torch.save) restores the guard into one built without it
    (torch's rule: loaded param groups carry the hyperparameters) and both continue identically."""
    params = make_params()
    opt = FACTORIES[name](params, steps_per_epoch=3, flip_guard=0.25)
    drive_quadratic(opt, params, 7)
    state = round_trip(copy.deepcopy(opt.state_dict()))
    assert [g["flip_guard"] for g in state["param_groups"]] == [0.25] * len(opt.param_groups)
    other = [p.detach().clone().requires_grad_() for p in params]
    resumed = FACTORIES[name](other, steps_per_epoch=3)
    resumed.load_state_dict(state)
    assert all(g["flip_guard"] == 0.25 for g in resumed.param_groups)
    drive_quadratic(opt, params, 12, seed=4)
    drive_quadratic(resumed, other, 12, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(params, other))
    assert all(torch.equal(a, b) for a, b in zip(mults(opt, params), mults(resumed, other)))


@ALL
def test_a_state_dict_saved_before_the_option_existed_loads_with_the_guard_off(name):
    """Param groups without a ``flip_guard`` key (checkpoints written before it existed) load, and resume
    exactly as an unguarded optimizer."""
    params = make_params()
    opt = FACTORIES[name](params, steps_per_epoch=3)
    drive_quadratic(opt, params, 7)
    state = copy.deepcopy(opt.state_dict())
    for group in state["param_groups"]:
        del group["flip_guard"]
    other = [p.detach().clone().requires_grad_() for p in params]
    resumed = FACTORIES[name](other, steps_per_epoch=3, flip_guard=0.5)
    resumed.load_state_dict(state)
    drive_quadratic(opt, params, 12, seed=4)
    drive_quadratic(resumed, other, 12, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(params, other))


# ------------------------------------------------------------------------------------------------ bad values
@ALL
@pytest.mark.parametrize(("value", "error", "message"), [
    (-0.1, ValueError, "flip_guard must be >= 0.0, got -0.1"),
    (1.5, ValueError, "flip_guard must be <= 1.0, got 1.5"),
    (float("nan"), ValueError, "flip_guard must be finite, got nan"),
    (True, TypeError, "flip_guard must be a real number, got True"),
    ("0.5", TypeError, "flip_guard must be a real number, got '0.5'"),
])
def test_a_bad_guard_is_refused_naming_the_value(name, value, error, message):
    """At construction, in add_param_group (nothing added) and in load_state_dict (nothing changed)."""
    with pytest.raises(error, match=re.escape(message)):
        FACTORIES[name](make_params(), flip_guard=value)
    opt = FACTORIES[name](make_params(), steps_per_epoch=2)
    groups = len(opt.param_groups)
    with pytest.raises(error, match=re.escape(message)):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "flip_guard": value})
    assert len(opt.param_groups) == groups
    drive_quadratic(opt, [p for g in opt.param_groups for p in g["params"]], 3)
    state = copy.deepcopy(opt.state_dict())
    state["param_groups"][0]["flip_guard"] = value
    with pytest.raises(error, match=re.escape(message)):
        opt.load_state_dict(state)
    assert opt.param_groups[0]["flip_guard"] is None


def test_active_takes_the_guard_per_inner_param_group():
    """``Active`` reads ``flip_guard`` from the inner optimizer's groups too, checked before wrapping."""
    p = torch.zeros(2, requires_grad=True)
    inner = torch.optim.SGD([{"params": [p], "flip_guard": 0.3}], lr=0.1)
    assert Active(inner).param_groups[0]["flip_guard"] == 0.3
    with pytest.raises(ValueError, match=r"flip_guard must be <= 1\.0, got 2"):
        Active(torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)], "flip_guard": 2}], lr=0.1))
