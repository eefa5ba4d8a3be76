"""ActiveAdamW: torch.optim.AdamW when the multiplier is frozen, the spec's ActiveAdamW when it is not."""

from __future__ import annotations

import pytest
import torch

from activelr_oracles import (
    SpecActiveLR,
    assert_rel_close,
    drive,
    drive_quadratic,
    float64_steps,
    gradient_sequence,
    make_params,
)
from lrpilot import Active, ActiveAdamW

FROZEN = {"lr_low": 1.0, "lr_high": 0.0}


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "hp",
    [{}, {"weight_decay": 0.0}, {"amsgrad": True}, {"maximize": True, "weight_decay": 0.1},
     {"betas": (0.8, 0.99), "eps": 1e-6}],
)
def test_frozen_multiplier_matches_torch_adamw_over_100_steps_float64(hp, foreach):
    params, ref_params = make_params(), make_params()
    active = ActiveAdamW(params, lr=0.01, foreach=foreach, steps_per_epoch=7, **FROZEN, **hp)
    reference = torch.optim.AdamW(ref_params, lr=0.01, **hp)
    drive_quadratic(active, params, 100)
    drive_quadratic(reference, ref_params, 100)
    assert active.epoch == 14
    assert_rel_close(params, ref_params, 1e-6)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("scale", [False, True])
def test_live_multipliers_match_the_spec_code_a_and_code_b(scale, foreach):
    """scale_weight_decay=True is the first code (``p *= 1 - lr*gai*wd``), False the later one."""
    params, ref_params = make_params(), make_params()
    opt = ActiveAdamW(params, lr=0.01, weight_decay=0.1, scale_weight_decay=scale, foreach=foreach,
                      steps_per_epoch=6)
    oracle = SpecActiveLR(ref_params, "adamw", 6, lr=0.01, lr_low=0.5, lr_high=2.0, weight_decay=0.1,
                          scale_weight_decay=scale)
    grads = gradient_sequence(params, 36)
    drive(opt, params, grads)
    drive(oracle, ref_params, grads)
    assert_rel_close(params, ref_params, 1e-12)
    assert_rel_close([opt.state[p]["multiplier"] for p in params], [oracle.state[k]["gai"] for k in range(3)], 0)


@pytest.mark.parametrize("hp", [{}, {"amsgrad": True, "weight_decay": 0.05, "scale_weight_decay": True},
                                {"maximize": True}])
@pytest.mark.parametrize("capturable", [False, True])
def test_foreach_path_matches_the_for_loop_reference_with_live_multipliers(hp, capturable):
    a, b = make_params(), make_params()
    kw = {"lr": 0.01, "steps_per_epoch": 5, **hp}
    with float64_steps():
        drive_quadratic(ActiveAdamW(a, foreach=True, capturable=capturable, **kw), a, 40)
        drive_quadratic(ActiveAdamW(b, foreach=False, **kw), b, 40)
    assert_rel_close(a, b, 1e-13)


@pytest.mark.parametrize("foreach", [False, True])
def test_capturable_keeps_steps_on_the_parameters_device_and_accepts_a_tensor_lr(foreach):
    a, b = make_params(), make_params()
    lr = torch.tensor(0.01, dtype=torch.float64)
    with float64_steps():
        opt = ActiveAdamW(a, lr=lr, capturable=True, foreach=foreach, steps_per_epoch=4)
        drive_quadratic(opt, a, 20)
        drive_quadratic(ActiveAdamW(b, lr=0.01, steps_per_epoch=4), b, 20)
    assert all(opt.state[p]["step"].device == p.device and opt.state[p]["step"].dim() == 0 for p in a)
    assert_rel_close(a, b, 1e-13)


def test_tensor_lr_without_capturable_is_rejected_on_the_foreach_path_as_in_torch():
    with pytest.raises(ValueError, match="capturable=False and foreach=True"):
        ActiveAdamW(make_params(), lr=torch.tensor(0.01), foreach=True)
    ActiveAdamW(make_params(), lr=torch.tensor(0.01))  # the for-loop path takes it


def test_active_of_torch_adam_matches_active_adamw_without_weight_decay():
    a, b = make_params(), make_params()
    generic = Active(torch.optim.Adam(a, lr=0.01), steps_per_epoch=5)
    dedicated = ActiveAdamW(b, lr=0.01, weight_decay=0.0, steps_per_epoch=5)
    drive_quadratic(generic, a, 30)
    drive_quadratic(dedicated, b, 30)
    assert_rel_close(a, b, 1e-10)


def test_active_of_torch_adamw_scales_the_decay_like_scale_weight_decay_true():
    a, b = make_params(), make_params()
    generic = Active(torch.optim.AdamW(a, lr=0.01, weight_decay=0.1), steps_per_epoch=5)
    dedicated = ActiveAdamW(b, lr=0.01, weight_decay=0.1, scale_weight_decay=True, steps_per_epoch=5)
    drive_quadratic(generic, a, 30)
    drive_quadratic(dedicated, b, 30)
    assert_rel_close(a, b, 1e-10)


def test_moments_are_those_of_plain_adamw_whatever_the_multiplier():
    """The multiplier scales the step only: exp_avg and exp_avg_sq never see it."""
    a, b = make_params(), make_params()
    active = ActiveAdamW(a, lr=0.01, weight_decay=0.0, steps_per_epoch=3)
    plain = ActiveAdamW(b, lr=0.01, weight_decay=0.0, **FROZEN)
    grads = gradient_sequence(a, 15)
    drive(active, a, grads)
    drive(plain, b, grads)
    assert any(bool((active.state[p]["multiplier"] != 1).any()) for p in a)
    for pa, pb in zip(a, b):
        assert torch.equal(active.state[pa]["exp_avg"], plain.state[pb]["exp_avg"])
        assert torch.equal(active.state[pa]["exp_avg_sq"], plain.state[pb]["exp_avg_sq"])
