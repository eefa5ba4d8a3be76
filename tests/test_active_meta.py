"""lrpilot.Active: ActiveLR around any torch optimizer, sharing its param groups and state."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from activelr_oracles import assert_rel_close, drive, drive_quadratic, make_params
from lrpilot import Active, ActiveAdamW

FROZEN = {"lr_low": 1.0, "lr_high": 0.0}
INNER = {
    "Adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1),
    "Adamax": lambda p: torch.optim.Adamax(p, lr=0.01),
    "RMSprop": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5),
    "NAdam": lambda p: torch.optim.NAdam(p, lr=0.01),
}


def test_is_an_optimizer_sharing_the_inner_param_groups_and_state():
    params = make_params()
    inner = torch.optim.Adagrad(params, lr=0.1)
    opt = Active(inner)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is inner.param_groups and opt.state is inner.state
    assert opt.param_groups[0]["lr_low"] == 0.5 and opt.param_groups[0]["lr_high"] == 2.0
    assert opt.defaults["lr"] == 0.1 and repr(opt).startswith("Active(Adagrad (")


@pytest.mark.parametrize("inner", list(INNER))
def test_frozen_multiplier_is_the_inner_optimizer_over_100_steps_float64(inner):
    a, b = make_params(), make_params()
    opt = Active(INNER[inner](a), steps_per_epoch=7, **FROZEN)
    drive_quadratic(opt, a, 100)
    drive_quadratic(INNER[inner](b), b, 100)
    assert_rel_close(a, b, 1e-6)


@pytest.mark.parametrize("inner", list(INNER))
def test_the_multiplier_scales_the_inner_displacement_elementwise(inner):
    """One step from the same state: Active's displacement is gai times the inner optimizer's."""
    a = make_params()
    opt = Active(INNER[inner](a))
    drive_quadratic(opt, a, 3)  # the inner state exists now
    gai = [torch.rand(p.shape, dtype=p.dtype) * 4 for p in a]
    for p, g in zip(a, gai):
        opt.state[p]["active_multiplier"].copy_(g)
    plain = copy.deepcopy(opt.optimizer)  # the same inner optimizer, on copies of the parameters
    b = plain.param_groups[0]["params"]
    grads = [[torch.randn(p.shape, dtype=p.dtype) for p in a]]
    before = [p.detach().clone() for p in a]
    drive(opt, a, grads)
    drive(plain, b, grads)
    assert_rel_close([pa - p0 for pa, p0 in zip(a, before)], [g * (pb - p0) for g, pb, p0 in zip(gai, b, before)],
                     1e-12)


def test_inner_state_is_initialised_by_the_inner_optimizer_first():
    """Adam initialises when ``len(state) == 0``; Active's keys arrive after its first step."""
    params = make_params()
    opt = Active(torch.optim.Adam(params, lr=0.01))
    drive_quadratic(opt, params, 2)
    state = opt.state[params[0]]
    assert {"step", "exp_avg", "exp_avg_sq", "active_multiplier", "active_grad_sum"} <= set(state)
    assert float(state["step"]) == 2


def test_state_dict_round_trip_reshares_the_loaded_state():
    a = make_params()
    b = [p.detach().clone().requires_grad_() for p in a]
    opt = Active(torch.optim.Adam(a, lr=0.01), steps_per_epoch=3)
    drive_quadratic(opt, a, 8)
    for src, dst in zip(a, b):
        dst.data.copy_(src.data)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    resumed = Active(torch.optim.Adam(b, lr=0.01), steps_per_epoch=3)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.state is resumed.optimizer.state and resumed.param_groups is resumed.optimizer.param_groups
    drive_quadratic(opt, a, 7, seed=5)
    drive_quadratic(resumed, b, 7, seed=5)
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)
        assert torch.equal(opt.state[pa]["active_multiplier"], resumed.state[pb]["active_multiplier"])


def test_add_param_group_goes_to_the_inner_optimizer_with_both_sets_of_defaults():
    params = make_params()
    inner = torch.optim.SGD(params[:2], lr=0.1, momentum=0.9)
    opt = Active(inner, lr_high=1.0)
    opt.add_param_group({"params": [params[2]], "lr": 0.05})
    assert len(inner.param_groups) == 2
    assert inner.param_groups[1]["momentum"] == 0.9 and inner.param_groups[1]["lr_high"] == 1.0
    with pytest.raises(ValueError, match=r"max_multiplier must be >= 1\.0, got 0\.1"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "max_multiplier": 0.1})
    assert len(inner.param_groups) == 2


def test_per_group_constants_can_come_from_the_inner_optimizer_groups():
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    inner = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr_high": 0.5}], lr=0.1)
    opt = Active(inner, steps_per_epoch=1)
    for _ in range(3):
        drive(opt, [a, b], [[torch.ones(1), torch.ones(1)]])
    assert opt.state[a]["active_multiplier"].item() == 5.0 and opt.state[b]["active_multiplier"].item() == 2.0
    with pytest.raises(ValueError, match=r"lr_low must be <= 1\.0, got 2\.0"):
        Active(torch.optim.SGD([{"params": [a], "lr_low": 2.0}], lr=0.1))


def test_sparse_gradients_are_accumulated_when_the_inner_optimizer_takes_them():
    embedding = torch.nn.Embedding(6, 2, sparse=True)
    opt = Active(torch.optim.SGD(embedding.parameters(), lr=0.1), steps_per_epoch=2)
    for rows in ([1, 2], [2, 3], [1, 2], [2, 3]):
        opt.zero_grad()
        embedding(torch.tensor(rows)).sum().backward()
        assert embedding.weight.grad.is_sparse
        opt.step()
    mults = opt.state[embedding.weight]["active_multiplier"]
    # rows 1-3 had positive gradient sums in both epochs; rows 0, 4, 5 none (a zero sum: decreased)
    assert mults[:, 0].tolist() == [0.5, 3.0, 3.0, 3.0, 0.5, 0.5]


@pytest.mark.parametrize("bad", [torch.optim.LBFGS, ActiveAdamW])
def test_rejects_optimizers_it_cannot_wrap(bad):
    with pytest.raises(TypeError):
        Active(bad(make_params()))
    with pytest.raises(TypeError, match=r"must be a torch\.optim\.Optimizer"):
        Active(object())  # type: ignore[arg-type]


def test_grad_scaler_skips_a_step_with_inf_gradients_and_leaves_the_multipliers_alone():
    """A step GradScaler skips (inf gradient) moves nothing and changes no state, the epoch clock included
    (GradScaler does not call step(); see test_active_state for steps_per_epoch)."""
    model = torch.nn.Linear(3, 1)
    opt = Active(torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=1)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    x = torch.randn(8, 3)
    for _ in range(3):
        opt.zero_grad()
        scaler.scale(model(x).pow(2).mean()).backward()
        scaler.step(opt)
        scaler.update()
    before = {k: v.clone() for k, v in opt.state[model.weight].items() if isinstance(v, torch.Tensor)}
    weight = model.weight.detach().clone()
    opt.zero_grad()
    scaler.scale(model(x).pow(2).mean()).backward()
    model.weight.grad[0, 0] = float("inf")
    scaler.step(opt)  # skipped: found inf
    scaler.update()
    assert torch.equal(model.weight.detach(), weight) and opt.epoch == 3
    for key, value in before.items():
        assert torch.equal(opt.state[model.weight][key], value)
