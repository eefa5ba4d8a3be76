"""Behaviour shared by every ActiveLR optimizer: the sign rule, the epoch clock, bounds, NaN/inf gradients,
effective LR, param groups, checkpoints and argument checking (each test runs on all of them)."""

from __future__ import annotations

import copy
import inspect
import io
import math
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from activelr_oracles import FACTORIES, drive, drive_quadratic, make_params
from lrpilot import Active, ActiveAdaBelief, ActiveAdamW, ActiveRAdam, ActiveSGD
from lrpilot.active import ActiveOptimizer, EffectiveLR, apply_sign_rule_
from lrpilot.active.sign_rule import ACTIVE_DEFAULTS

ALL = pytest.mark.parametrize("name", list(FACTORIES))


def vec(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def mult(opt: ActiveOptimizer, p: torch.Tensor) -> torch.Tensor:
    return opt.state[p][opt._MULT]


# Five elements, two steps per epoch, four epochs (each row: the two gradients of an epoch).
SEQUENCE = [
    [vec(1, 1, 1, 3, 0.25), vec(1, 1, 1, -1, 0.25)],  # sums +2, +2, +2, +2, +0.5 (stored only)
    [vec(1, -1, 1, 3, -5), vec(1, -1, -1, -1, -5)],  # +2, -2, 0 (exact zero), +2, -10
    [vec(1, 1, 1, 3, -1), vec(1, 1, 1, -1, -1)],  # +2, +2, +2, +2, -2
    [vec(1, -1, 1, 3, 1), vec(1, -1, 1, -1, 1)],  # +2, -2, +2, +2, +2
]
EXPECTED = [  # multipliers after each epoch with (lr_low, lr_high) = (0.5, 2.0)
    vec(1, 1, 1, 1, 1),  # first epoch: nothing changes
    vec(3, 0.5, 0.5, 3, 0.5),  # same sign +2; flip x0.5; a zero sum counts as a flip; the sum, not the last grad
    vec(5, 0.25, 0.25, 5, 2.5),  # previous sum 0 -> decrease again; -10 then -2: same sign, magnitude ignored
    vec(7, 0.125, 2.25, 7, 1.25),
]


@ALL
def test_sign_rule_on_hand_built_gradient_sequences(name):
    p = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = FACTORIES[name]([p], steps_per_epoch=2)
    for epoch, grads in enumerate(SEQUENCE):
        drive(opt, [p], [[g] for g in grads])
        assert opt.epoch == epoch + 1
        assert torch.equal(mult(opt, p), EXPECTED[epoch]), (epoch, mult(opt, p))
        if epoch == 0:
            tensor = mult(opt, p)
    assert mult(opt, p) is tensor  # updated in place: a captured step keeps pointing at the same tensor


@pytest.mark.parametrize("name", ["ActiveSGD", "Active(SGD)"])
def test_the_new_multiplier_applies_from_the_first_step_after_the_boundary(name):
    p = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    make = {"ActiveSGD": lambda: ActiveSGD([p], lr=1.0, steps_per_epoch=2),
            "Active(SGD)": lambda: Active(torch.optim.SGD([p], lr=1.0), steps_per_epoch=2)}[name]
    opt = make()
    used = []
    for grads in SEQUENCE:
        for g in grads:
            before = p.detach().clone()
            p.grad = g.clone()
            opt.step()
            used.append((before - p.detach()) / g)  # p -= lr * gai * g  =>  gai = displacement / g
    expected = [torch.ones(5, dtype=torch.float64)] * 4 + [EXPECTED[1]] * 2 + [EXPECTED[2]] * 2
    for step, (u, e) in enumerate(zip(used, expected)):
        torch.testing.assert_close(u, e, rtol=1e-12, atol=0, msg=f"step {step}")


@ALL
def test_steps_per_epoch_is_the_same_as_calling_end_epoch(name):
    a, b = make_params(), make_params()
    auto = FACTORIES[name](a, steps_per_epoch=3)
    manual = FACTORIES[name](b)
    drive_quadratic(auto, a, 15)
    drive_quadratic(manual, b, 15, end_epoch_every=3)
    assert auto.epoch == manual.epoch == 5
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb) and torch.equal(mult(auto, pa), mult(manual, pb))


@ALL
def test_a_second_end_epoch_without_steps_in_between_changes_nothing(name):
    params = make_params()
    opt = FACTORIES[name](params, steps_per_epoch=3)
    drive_quadratic(opt, params, 9)  # three automatic boundaries
    before = copy.deepcopy(opt.state_dict()["state"])
    opt.end_epoch()  # e.g. a training loop that also calls it
    after = opt.state_dict()["state"]
    for k in before:
        for key, value in before[k].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, after[k][key]), key
    assert opt.epoch == 4


@ALL
def test_a_parameter_without_gradient_for_an_epoch_is_left_out_of_that_boundary(name):
    """Its step is skipped (None grad) and its multiplier and reference sum are kept; the next epoch is
    compared with the last one in which it had gradients."""
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = FACTORIES[name]([a, b], steps_per_epoch=2)
    plus, minus = vec(1, 1), vec(1, -1)
    drive(opt, [a, b], [[plus, plus]] * 2)  # epoch 1: both store +2, +2 / +2, +2
    drive(opt, [a, b], [[plus, minus]] * 2)  # epoch 2: b: +2, -2
    b_before = b.detach().clone()
    b_state = copy.deepcopy(opt.state[b])
    drive(opt, [a, b], [[plus, None]] * 2)  # epoch 3: b has no gradient
    assert torch.equal(b.detach(), b_before)
    for key, value in b_state.items():
        assert torch.equal(value, opt.state[b][key]) if isinstance(value, torch.Tensor) else value == opt.state[b][key]
    drive(opt, [a, b], [[plus, -minus]] * 2)  # epoch 4: b: -2, +2, compared with epoch 2's +2, -2
    assert torch.equal(mult(opt, a), vec(7, 7))
    assert torch.equal(mult(opt, b), vec(1.5, 0.25))


@pytest.mark.parametrize("name", ["ActiveSGD", "ActiveAdamW", "ActiveRAdam", "ActiveAdaBelief"])
def test_sparse_gradients_are_rejected_before_anything_changes(name):
    dense = torch.ones(3, requires_grad=True)
    embedding = torch.ones(4, 2, requires_grad=True)
    opt = FACTORIES[name]([dense, embedding])
    dense.grad = torch.ones(3)
    embedding.grad = torch.sparse_coo_tensor([[1]], torch.ones(1, 2), (4, 2), check_invariants=True)
    with pytest.raises(RuntimeError, match=r"sparse gradients \(param group 0, parameter 1, shape \(4, 2\)\)"):
        opt.step()
    assert torch.equal(dense.detach(), torch.ones(3)) and len(opt.state) == 0 and opt._steps_in_epoch == 0


@ALL
def test_nan_and_inf_gradients_never_poison_the_multipliers(name):
    """Element 0 is clean; in epoch 2 element 1 sees a NaN, element 2 a +inf, element 3 +inf then -inf
    (a NaN sum). A non-finite sum keeps the multiplier at that boundary and the next; then it adapts again."""
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = FACTORIES[name]([p], steps_per_epoch=2)
    nan, inf = math.nan, math.inf
    epochs = [
        [vec(1, 1, 1, 1), vec(1, 1, 1, 1)],
        [vec(1, nan, inf, inf), vec(1, 1, 1, -inf)],
        [vec(1, 1, 1, 1), vec(1, 1, 1, 1)],
        [vec(1, -1, -1, 1), vec(1, -1, -1, 1)],
    ]
    expected = [vec(1, 1, 1, 1), vec(3, 1, 1, 1), vec(5, 1, 1, 1), vec(7, 0.5, 0.5, 3)]
    for grads, exp in zip(epochs, expected):
        drive(opt, [p], [[g] for g in grads])
        assert torch.isfinite(mult(opt, p)).all()
        assert torch.equal(mult(opt, p), exp)


@ALL
def test_optional_bounds_clamp_the_multiplier(name):
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = FACTORIES[name]([p], steps_per_epoch=1, max_multiplier=4.0, min_multiplier=0.3)
    seen = []
    for g in [vec(1, 1), vec(1, -1), vec(1, 1), vec(1, -1), vec(1, 1)]:
        drive(opt, [p], [[g]])
        seen.append(mult(opt, p).tolist())
    assert seen == [[1, 1], [3, 0.5], [4, 0.3], [4, 0.3], [4, 0.3]]


@ALL
def test_effective_lr_is_lr_times_mean_min_max_multiplier_per_group(name):
    a = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = FACTORIES[name]([a, b, c])
    lr = float(opt.param_groups[0]["lr"])
    assert opt.effective_lr() == [EffectiveLR(lr, lr, lr)]
    drive(opt, [a, b, c], [[vec(1, 1, 1), vec(1, 1), None]])  # c has no state yet: it counts as 1
    opt.state[a][opt._MULT].copy_(vec(3, 0.5, 1))
    opt.state[b][opt._MULT].copy_(vec(7, 2))
    got = opt.effective_lr()
    assert len(got) == 1
    assert got[0] == pytest.approx((lr * (3 + 0.5 + 1 + 7 + 2 + 5) / 10, lr * 0.5, lr * 7))


@ALL
def test_each_param_group_uses_its_own_lr_low_and_lr_high(name):
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = FACTORIES[name]([a], steps_per_epoch=1)
    opt.add_param_group({"params": [b], "lr_low": 0.9, "lr_high": 0.1})
    for g in [vec(1, 1), vec(1, -1), vec(1, 1)]:
        drive(opt, [a, b], [[g, g]])
    assert torch.equal(mult(opt, a), vec(5, 0.25))
    torch.testing.assert_close(mult(opt, b), vec(1.2, 0.81), rtol=1e-15, atol=0)
    assert len(opt.effective_lr()) == 2


@ALL
def test_state_dict_round_trip_resumes_bitwise_mid_epoch(name):
    a = make_params()
    b = [p.detach().clone().requires_grad_() for p in a]
    opt = FACTORIES[name](a, steps_per_epoch=4)
    drive_quadratic(opt, a, 14, seed=3)  # 3 epochs and 2 steps into the 4th
    for src, dst in zip(a, b):
        dst.data.copy_(src.data)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    resumed = FACTORIES[name](b, steps_per_epoch=4)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.epoch == opt.epoch == 3 and resumed._steps_in_epoch == opt._steps_in_epoch == 2
    drive_quadratic(opt, a, 10, seed=4)
    drive_quadratic(resumed, b, 10, seed=4)
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)
        assert torch.equal(mult(opt, pa), mult(resumed, pb)) and not torch.equal(mult(opt, pa), torch.ones_like(pa))
        assert torch.equal(opt.state[pa][opt._SUM], resumed.state[pb][resumed._SUM])


@ALL
def test_deepcopy_and_pickle_keep_the_epoch_clock(name):
    params = make_params()
    opt = FACTORIES[name](params, steps_per_epoch=4)
    drive_quadratic(opt, params, 6)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert (clone.epoch, clone._steps_in_epoch, clone.steps_per_epoch) == (1, 2, 4)
        if isinstance(clone, Active):
            assert clone.state is clone.optimizer.state and clone.param_groups is clone.optimizer.param_groups


@ALL
def test_loading_a_state_dict_without_the_active_entry_is_refused_and_changes_nothing(name):
    params = make_params()
    opt = FACTORIES[name](params)
    drive_quadratic(opt, params, 2)
    state = opt.state_dict()
    del state["active"]
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match="no 'active' entry"):
        opt.load_state_dict(state)
    assert opt.state_dict()["active"] == before["active"]


@ALL
def test_lr_schedulers_drive_the_base_lr_and_effective_lr_follows(name):
    params = make_params()
    opt = FACTORIES[name](params)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    lr = float(opt.param_groups[0]["lr"])
    drive_quadratic(opt, params, 1)
    scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(lr / 2)
    assert opt.effective_lr()[0].max == pytest.approx(lr / 2)


@ALL
def test_closure_is_evaluated_once_with_gradients_enabled(name):
    p = torch.ones(2, requires_grad=True)
    opt = FACTORIES[name]([p])
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert calls == [True] and float(loss.detach()) == 2.0 and not torch.equal(p.detach(), torch.ones(2))


# ----------------------------------------------------------------------------------------- argument checking
BAD = [
    ("ActiveSGD", {"lr": -0.1}, ValueError, "lr must be >= 0.0, got -0.1"),
    ("ActiveSGD", {"lr_low": 1.5}, ValueError, "lr_low must be <= 1.0, got 1.5"),
    ("ActiveSGD", {"lr_low": -0.5}, ValueError, "lr_low must be >= 0.0, got -0.5"),
    ("ActiveSGD", {"lr_high": -1.0}, ValueError, "lr_high must be >= 0.0, got -1.0"),
    ("ActiveSGD", {"lr_high": math.nan}, ValueError, "lr_high must be finite, got nan"),
    ("ActiveSGD", {"lr_low": "0.5"}, TypeError, "lr_low must be a real number, got '0.5'"),
    ("ActiveSGD", {"max_multiplier": 0.5}, ValueError, "max_multiplier must be >= 1.0, got 0.5"),
    ("ActiveSGD", {"min_multiplier": 2.0}, ValueError, "min_multiplier must be <= 1.0, got 2.0"),
    ("ActiveSGD", {"steps_per_epoch": 0}, ValueError, "steps_per_epoch must be >= 1, got 0"),
    ("ActiveSGD", {"steps_per_epoch": 2.5}, TypeError, "steps_per_epoch must be an int, got 2.5"),
    ("ActiveSGD", {"momentum": -0.9}, ValueError, "momentum must be >= 0.0, got -0.9"),
    ("ActiveSGD", {"weight_decay": -1e-4}, ValueError, "weight_decay must be >= 0.0, got -0.0001"),
    ("ActiveSGD", {"scale_weight_decay": 1}, TypeError, "scale_weight_decay must be a bool, got 1"),
    ("ActiveSGD", {"fused": True}, ValueError, "fused=True is not supported"),
    ("ActiveSGD", {"differentiable": True}, ValueError, "differentiable=True is not supported"),
    ("ActiveAdamW", {"betas": (1.0, 0.999)}, ValueError, r"betas\[0\] must be < 1.0, got 1.0"),
    ("ActiveAdamW", {"betas": (0.9, -0.1)}, ValueError, r"betas\[1\] must be >= 0.0, got -0.1"),
    ("ActiveAdamW", {"eps": -1e-8}, ValueError, "eps must be >= 0.0, got -1e-08"),
    ("ActiveAdamW", {"lr": torch.tensor([0.1, 0.2])}, ValueError, r"1 element, got shape \(2,\)"),
    ("ActiveAdamW", {"lr": math.inf}, ValueError, "lr must be finite, got inf"),
    ("ActiveRAdam", {"lagged_moments": "yes"}, TypeError, "lagged_moments must be a bool, got 'yes'"),
    ("ActiveRAdam", {"weight_decay": -0.1}, ValueError, "weight_decay must be >= 0.0, got -0.1"),
    ("ActiveAdaBelief", {"rectify": None}, TypeError, "rectify must be a bool, got None"),
    ("ActiveAdaBelief", {"eps": -1.0}, ValueError, "eps must be >= 0.0, got -1.0"),
    ("Active(SGD)", {"lr_high": -2.0}, ValueError, "lr_high must be >= 0.0, got -2.0"),
    ("Active(SGD)", {"steps_per_epoch": -3}, ValueError, "steps_per_epoch must be >= 1, got -3"),
]


CONSTRUCTORS = {
    "ActiveSGD": ActiveSGD, "ActiveAdamW": ActiveAdamW, "ActiveRAdam": ActiveRAdam,
    "ActiveAdaBelief": ActiveAdaBelief, "Active(SGD)": lambda params, **kw: Active(torch.optim.SGD(params), **kw),
}


@pytest.mark.parametrize(("name", "kwargs", "error", "message"), BAD)
def test_bad_arguments_are_rejected_naming_the_argument_and_the_value(name, kwargs, error, message):
    with pytest.raises(error, match=message):
        CONSTRUCTORS[name](make_params(), **kwargs)


@ALL
def test_a_bad_param_group_is_rejected_before_it_is_added(name):
    params = make_params()
    opt = FACTORIES[name](params[:2])
    with pytest.raises(ValueError, match=r"lr_low must be <= 1\.0, got 3\.0"):
        opt.add_param_group({"params": [params[2]], "lr_low": 3.0})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [params[2]], "lr_low": 0.25})
    assert opt.param_groups[1]["lr_low"] == 0.25 and opt.param_groups[1]["lr_high"] == 2.0


def test_a_bad_per_group_hyperparameter_of_the_base_optimizer_is_rejected_too():
    params = make_params()
    with pytest.raises(ValueError, match=r"momentum must be >= 0\.0, got -1"):
        ActiveSGD([{"params": params[:1], "momentum": -1}, {"params": params[1:]}], lr=0.1)


# ----------------------------------------------------------------------------------------- the sign rule itself
def _rule(m: float, prev: float, cur: float, low: float, high: float) -> float:
    """The rule for one element, in plain Python."""
    if not (math.isfinite(prev) and math.isfinite(cur)):
        return m
    same_sign = (prev > 0 and cur > 0) or (prev < 0 and cur < 0)
    return m + high if same_sign else m * low


values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.sampled_from([0.0, -0.0, 1e-300]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 100.0), values, values), min_size=1, max_size=20),
       st.floats(0.0, 1.0), st.floats(0.0, 10.0))
def test_sign_rule_matches_its_elementwise_definition_for_any_values(triples, low, high):
    """Including NaN, +-inf, signed zeros and sums whose product would underflow (1e-300 * 1e-300 == 0)."""
    m = torch.tensor([t[0] for t in triples], dtype=torch.float64)
    prev = torch.tensor([t[1] for t in triples], dtype=torch.float64)
    cur = torch.tensor([t[2] for t in triples], dtype=torch.float64)
    expected = [_rule(*t, low, high) for t in triples]
    apply_sign_rule_(m, prev, cur, low, high)
    assert m.tolist() == pytest.approx(expected, rel=1e-15, abs=0)
    assert torch.isfinite(m).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sign_rule_cannot_underflow_in_half_precision(dtype):
    """1e-4 * 1e-4 is 0 in float16: the code's raw product would call this a sign flip."""
    m = torch.ones(2, dtype=dtype)
    apply_sign_rule_(m, torch.tensor([1e-4, -1e-4], dtype=dtype), torch.tensor([1e-4, 1e-4], dtype=dtype), 0.5, 2.0)
    assert m.tolist() == [3.0, 0.5]


SHARED_ARGS = ("lr_low", "lr_high", "max_multiplier", "min_multiplier", "steps_per_epoch", "scale_weight_decay")


@pytest.mark.parametrize("cls", [ActiveSGD, ActiveAdamW, ActiveRAdam, ActiveAdaBelief, Active],
                         ids=lambda c: c.__name__)
def test_the_shared_arguments_are_documented_once_and_every_class_refers_there(cls):
    """ActiveOptimizer's docstring describes ActiveLR's own arguments; each class names them and points there,
    and takes them with the same defaults (Active: all but scale_weight_decay)."""
    for arg in SHARED_ARGS:
        assert f"{arg}:" in ActiveOptimizer.__doc__
    taken = [a for a in SHARED_ARGS if a in inspect.signature(cls).parameters]
    assert taken == [a for a in SHARED_ARGS if cls is not Active or a != "scale_weight_decay"]
    doc = cls.__doc__
    assert "~lrpilot.active.ActiveOptimizer" in doc
    assert ", ".join(taken) in " ".join(doc.split())
    params = inspect.signature(cls).parameters
    assert {k: params[k].default for k in ACTIVE_DEFAULTS} == ACTIVE_DEFAULTS
    assert params["steps_per_epoch"].default is None
    assert cls is Active or params["scale_weight_decay"].default is False
