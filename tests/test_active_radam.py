"""ActiveRAdam: torch.optim.RAdam when the multiplier is frozen; the official code's moment lag on request."""

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
from lrpilot import ActiveRAdam
from lrpilot.active.radam import radam_coefficients

FROZEN = {"lr_low": 1.0, "lr_high": 0.0}


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "hp",
    [{}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "decoupled_weight_decay": False},
     {"maximize": True, "betas": (0.8, 0.99)}],
)
def test_frozen_multiplier_matches_torch_radam_over_100_steps_float64(hp, foreach):
    """Covers both of RAdam's regimes: N_t < 5 for the first steps (un-rectified), then rectified."""
    params, ref_params = make_params(), make_params()
    active = ActiveRAdam(params, lr=0.01, foreach=foreach, steps_per_epoch=7, **FROZEN, **hp)
    torch_hp = {"decoupled_weight_decay": True, **hp}
    reference = torch.optim.RAdam(ref_params, lr=0.01, **torch_hp)
    drive_quadratic(active, params, 100)
    drive_quadratic(reference, ref_params, 100)
    assert_rel_close(params, ref_params, 1e-6)


def test_both_regimes_occur_and_the_threshold_is_never_hit_exactly():
    """torch switches at N_t > 5, the official code at N_t >= 5; no integer step makes them differ."""
    coefficients = [radam_coefficients(t, 1.0, 0.9, 0.999) for t in range(1, 10)]
    assert coefficients[0][0] == 0 and coefficients[-1][1] == 0
    for beta2 in (0.99, 0.999, 0.9999):
        n_max = 2 / (1 - beta2) - 1
        n_t = [n_max - 2 * t * beta2**t / (1 - beta2**t) for t in range(1, 50)]
        assert 5.0 not in n_t


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("lagged", [False, True])
def test_live_multipliers_match_the_spec_and_lagged_moments_reproduce_the_official_code(lagged, foreach):
    params, ref_params = make_params(), make_params()
    opt = ActiveRAdam(params, lr=0.01, weight_decay=0.05, lagged_moments=lagged, foreach=foreach, steps_per_epoch=6)
    oracle = SpecActiveLR(ref_params, "radam_lagged" if lagged else "radam", 6, lr=0.01, lr_low=0.5, lr_high=2.0,
                          weight_decay=0.05)
    grads = gradient_sequence(params, 36)
    drive(opt, params, grads)
    drive(oracle, ref_params, grads)
    assert_rel_close(params, ref_params, 1e-12)
    assert_rel_close([opt.state[p]["multiplier"] for p in params], [oracle.state[k]["gai"] for k in range(3)], 0)


def test_lagged_moments_make_the_first_update_zero():
    p = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
    opt = ActiveRAdam([p], lr=0.1, lagged_moments=True)
    p.grad = torch.tensor([3.0, -2.0], dtype=torch.float64)
    opt.step()
    assert torch.equal(p.detach(), torch.tensor([1.0, -1.0], dtype=torch.float64))
    p.grad = torch.tensor([3.0, -2.0], dtype=torch.float64)
    opt.step()
    assert not torch.equal(p.detach(), torch.tensor([1.0, -1.0], dtype=torch.float64))


@pytest.mark.parametrize("hp", [{}, {"lagged_moments": True, "weight_decay": 0.1, "scale_weight_decay": True},
                                {"decoupled_weight_decay": False, "weight_decay": 0.1, "maximize": True}])
@pytest.mark.parametrize("capturable", [False, True])
def test_foreach_path_matches_the_for_loop_reference_with_live_multipliers(hp, capturable):
    a, b = make_params(), make_params()
    kw = {"lr": 0.01, "steps_per_epoch": 5, **hp}
    with float64_steps():
        drive_quadratic(ActiveRAdam(a, foreach=True, capturable=capturable, **kw), a, 40)
        drive_quadratic(ActiveRAdam(b, foreach=False, **kw), b, 40)
    assert_rel_close(a, b, 1e-13)


def test_capturable_for_loop_with_tensor_lr_matches_float_lr():
    a, b = make_params(), make_params()
    with float64_steps():
        drive_quadratic(ActiveRAdam(a, lr=torch.tensor(0.01, dtype=torch.float64), capturable=True, foreach=False,
                                    steps_per_epoch=4), a, 20)
        drive_quadratic(ActiveRAdam(b, lr=0.01, steps_per_epoch=4), b, 20)
    assert_rel_close(a, b, 1e-13)
