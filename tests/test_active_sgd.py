"""ActiveSGD: torch.optim.SGD when the multiplier is frozen, the spec's ActiveSGD when it is not."""

from __future__ import annotations

import pytest
import torch

from activelr_oracles import (
    SpecActiveLR,
    assert_rel_close,
    clone_params,
    drive,
    drive_quadratic,
    gradient_sequence,
    make_params,
)
from lrpilot import Active, ActiveSGD

FROZEN = {"lr_low": 1.0, "lr_high": 0.0}  # the multiplier stays exactly 1


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "hp",
    [
        {"momentum": 0.0},
        {"momentum": 0.9},
        {"momentum": 0.9, "dampening": 0.3},
        {"momentum": 0.9, "nesterov": True},
        {"momentum": 0.9, "maximize": True},
        {"momentum": 0.5, "weight_decay": 0.1, "decoupled_weight_decay": False},  # torch's L2 decay
    ],
)
def test_frozen_multiplier_matches_torch_sgd_over_100_steps_float64(hp, foreach):
    params, ref_params = make_params(), make_params()
    active = ActiveSGD(params, lr=0.05, foreach=foreach, steps_per_epoch=7, **FROZEN, **hp)
    torch_hp = {k: v for k, v in hp.items() if k != "decoupled_weight_decay"}
    reference = torch.optim.SGD(ref_params, lr=0.05, **torch_hp)
    drive_quadratic(active, params, 100)
    drive_quadratic(reference, ref_params, 100)
    assert active.epoch == 14  # the sign rule ran, and changed nothing
    assert_rel_close(params, ref_params, 1e-6)
    assert all(torch.equal(active.state[p]["multiplier"], torch.ones_like(p)) for p in params)


@pytest.mark.parametrize("scale", [False, True])
def test_weight_decay_is_decoupled_and_scaled_by_the_multiplier_only_if_asked(scale):
    p = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    opt = ActiveSGD([p], lr=0.1, weight_decay=0.5, scale_weight_decay=scale)
    p.grad = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    opt.step()  # creates the state; multiplier 1
    gai = torch.tensor([3.0, 0.5, 1.0], dtype=torch.float64)
    opt.state[p]["multiplier"].copy_(gai)
    before = p.detach().clone()
    opt.step()
    decay = 0.1 * 0.5 * (gai if scale else 1.0)
    expected = before * (1 - decay) - 0.1 * gai * p.grad  # p *= 1 - lr*wd(*gai); p -= lr*gai*g
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-15)


def test_momentum_buffer_is_not_scaled_so_a_multiplier_change_applies_to_the_whole_buffer():
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = ActiveSGD([p], lr=1.0, momentum=0.5)
    for _ in range(2):
        p.grad = torch.ones(2, dtype=torch.float64)
        opt.step()
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.full((2,), 1.5, dtype=torch.float64))
    opt.state[p]["multiplier"].fill_(4.0)
    before = p.detach().clone()
    p.grad = torch.ones(2, dtype=torch.float64)
    opt.step()
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.full((2,), 1.75, dtype=torch.float64))
    assert torch.equal(p.detach(), before - 4.0 * 1.75)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("hp", [{"momentum": 0.9}, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05},
                                {"momentum": 0.0, "weight_decay": 0.05, "scale_weight_decay": True}])
def test_live_multipliers_match_the_spec_written_out_per_parameter(hp, foreach):
    """Five epochs of 6 steps with the paper's (0.5, 2.0): the same parameters and multipliers as the spec's
    per-parameter formulas with the official code's per-parameter step clock."""
    params, ref_params = make_params(), make_params()
    opt = ActiveSGD(params, lr=0.02, foreach=foreach, steps_per_epoch=6, **hp)
    oracle = SpecActiveLR(ref_params, "sgd", 6, lr=0.02, lr_low=0.5, lr_high=2.0, **hp)
    grads = gradient_sequence(params, 30)
    drive(opt, params, grads)
    drive(oracle, ref_params, grads)
    assert_rel_close(params, ref_params, 1e-12)
    mults = [opt.state[p]["multiplier"] for p in params]
    assert_rel_close(mults, [oracle.state[k]["gai"] for k in range(3)], 0)
    assert any(bool((m != 1).any()) for m in mults)  # the multipliers really moved


@pytest.mark.parametrize("hp", [{"momentum": 0.9}, {"momentum": 0.9, "nesterov": True, "dampening": 0.0},
                                {"momentum": 0.9, "dampening": 0.2, "weight_decay": 0.01}])
def test_foreach_path_matches_the_for_loop_reference_with_live_multipliers(hp):
    a, b = make_params(), make_params()
    kw = {"lr": 0.03, "steps_per_epoch": 5, **hp}
    drive_quadratic(ActiveSGD(a, foreach=True, **kw), a, 40)
    drive_quadratic(ActiveSGD(b, foreach=False, **kw), b, 40)
    assert_rel_close(a, b, 1e-13)


@pytest.mark.parametrize("hp", [{"momentum": 0.0}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}])
def test_active_of_torch_sgd_matches_active_sgd(hp):
    """The generic meta-optimizer on torch.optim.SGD (multiplier applied to the displacement) and ActiveSGD
    (multiplier inside the update) give the same trajectory and multipliers, live, over 6 epochs."""
    a, b = make_params(), make_params()
    generic = Active(torch.optim.SGD(a, lr=0.02, **hp), steps_per_epoch=5)
    dedicated = ActiveSGD(b, lr=0.02, steps_per_epoch=5, **hp)
    drive_quadratic(generic, a, 30)
    drive_quadratic(dedicated, b, 30)
    assert_rel_close(a, b, 1e-10)
    assert_rel_close([generic.state[p]["active_multiplier"] for p in a],
                     [dedicated.state[p]["multiplier"] for p in b], 0)
    # pytest.approx takes flat sequences only (pytest >= 9 rejects a list of NamedTuples): compare field by field
    flat = [[*lr] for lr in generic.effective_lr()], [[*lr] for lr in dedicated.effective_lr()]
    assert len(flat[0]) == len(flat[1])
    for got, want in zip(*flat):
        assert got == pytest.approx(want)


@pytest.mark.parametrize("foreach", [False, True])
def test_tensor_lr_gives_the_same_steps_as_a_float_lr(foreach):
    a, b = make_params(), make_params()
    drive_quadratic(ActiveSGD(a, lr=torch.tensor(0.02, dtype=torch.float64), momentum=0.9, weight_decay=0.1,
                              scale_weight_decay=True, foreach=foreach), a, 20, end_epoch_every=4)
    drive_quadratic(ActiveSGD(b, lr=0.02, momentum=0.9, weight_decay=0.1, scale_weight_decay=True,
                              foreach=foreach), b, 20, end_epoch_every=4)
    assert_rel_close(a, b, 1e-14)


def test_nesterov_needs_momentum_and_no_dampening():
    with pytest.raises(ValueError, match="nesterov"):
        ActiveSGD(make_params(), lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"dampening=0\.1"):
        ActiveSGD(make_params(), lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)


def test_float32_foreach_and_for_loop_agree():
    a, b = make_params(dtype=torch.float32), clone_params(make_params(dtype=torch.float32))
    drive_quadratic(ActiveSGD(a, lr=0.02, momentum=0.9, foreach=True), a, 20, end_epoch_every=4)
    drive_quadratic(ActiveSGD(b, lr=0.02, momentum=0.9, foreach=False), b, 20, end_epoch_every=4)
    assert_rel_close(a, b, 1e-6)
