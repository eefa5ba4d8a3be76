"""ActiveAdaBelief: the published AdaBelief when the multiplier is frozen, the spec's ActiveBelief when not."""

from __future__ import annotations

import pytest
import torch

from activelr_oracles import (
    AdaBeliefReference,
    SpecActiveLR,
    assert_rel_close,
    drive,
    drive_quadratic,
    float64_steps,
    gradient_sequence,
    make_params,
)
from lrpilot import ActiveAdaBelief

FROZEN = {"lr_low": 1.0, "lr_high": 0.0}
VARIANTS = [
    {},  # the official ActiveBelief defaults: weight_decouple=True, rectify=True
    {"rectify": False},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "weight_decouple": False},  # L2 added to the gradient
    {"weight_decay": 0.01, "fixed_decay": True},
    {"amsgrad": True, "rectify": False},
]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("hp", VARIANTS)
def test_frozen_multiplier_matches_the_reference_adabelief_over_100_steps_float64(hp, foreach):
    params, ref_params = make_params(), make_params()
    active = ActiveAdaBelief(params, lr=0.01, foreach=foreach, steps_per_epoch=7, **FROZEN, **hp)
    reference = AdaBeliefReference(ref_params, lr=0.01, **hp)
    drive_quadratic(active, params, 100)
    drive_quadratic(reference, ref_params, 100)
    assert_rel_close(params, ref_params, 1e-6)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("hp", VARIANTS[:5])
def test_live_multipliers_match_the_spec(hp, foreach):
    params, ref_params = make_params(), make_params()
    opt = ActiveAdaBelief(params, lr=0.01, foreach=foreach, steps_per_epoch=6, **hp)
    oracle = SpecActiveLR(ref_params, "adabelief", 6, lr=0.01, lr_low=0.5, lr_high=2.0, **hp)
    grads = gradient_sequence(params, 36)
    drive(opt, params, grads)
    drive(oracle, ref_params, grads)
    assert_rel_close(params, ref_params, 1e-12)
    assert_rel_close([opt.state[p]["multiplier"] for p in params], [oracle.state[k]["gai"] for k in range(3)], 0)


def test_the_second_moment_state_keeps_the_eps_and_p_grad_is_not_modified_by_l2():
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = ActiveAdaBelief([p], lr=0.1, eps=1e-3, weight_decay=0.5, weight_decouple=False)
    grad = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    p.grad = grad.clone()
    opt.step()
    assert torch.equal(p.grad, grad)  # the official code adds the L2 term to p.grad in place; not here
    assert torch.equal(opt.state[p]["grad_sum"], grad)  # the raw gradient, without the L2 term
    m = 0.1 * grad
    torch.testing.assert_close(opt.state[p]["exp_avg_var"], 0.001 * (grad - m) ** 2 + 1e-3, rtol=0, atol=1e-15)


@pytest.mark.parametrize("hp", [{}, {"rectify": False, "amsgrad": True, "weight_decay": 0.1},
                                {"weight_decouple": False, "weight_decay": 0.1, "maximize": True}])
@pytest.mark.parametrize("capturable", [False, True])
def test_foreach_path_matches_the_for_loop_reference_with_live_multipliers(hp, capturable):
    a, b = make_params(), make_params()
    kw = {"lr": 0.01, "steps_per_epoch": 5, **hp}
    with float64_steps():
        drive_quadratic(ActiveAdaBelief(a, foreach=True, capturable=capturable, **kw), a, 40)
        drive_quadratic(ActiveAdaBelief(b, foreach=False, **kw), b, 40)
    assert_rel_close(a, b, 1e-13)


def test_capturable_for_loop_with_tensor_lr_matches_float_lr():
    a, b = make_params(), make_params()
    with float64_steps():
        drive_quadratic(ActiveAdaBelief(a, lr=torch.tensor(0.01, dtype=torch.float64), capturable=True,
                                        foreach=False, steps_per_epoch=4), a, 20)
        drive_quadratic(ActiveAdaBelief(b, lr=0.01, steps_per_epoch=4), b, 20)
    assert_rel_close(a, b, 1e-13)
