"""Property-based fuzzing (hypothesis): whatever the arguments and the gradient or omega streams, lrpilot's
state stays finite and consistent, and a bad argument is a ValueError/TypeError that changes nothing."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrpilot import ActiveAdamW, ActiveSGD, AutoDrop

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
grad_values = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([math.nan, math.inf, -math.inf, 0.0]))


@FUZZ
@given(st.sampled_from([ActiveSGD, ActiveAdamW]), st.floats(0.0, 1.0), st.floats(0.0, 5.0),
       st.integers(1, 4), st.lists(st.lists(grad_values, min_size=3, max_size=3), min_size=1, max_size=25))
def test_active_multipliers_stay_finite_and_positive_for_any_gradient_stream(cls, low, high, spe, stream):
    """NaN/inf gradients may spoil the parameters (as in any optimizer) but never the multipliers."""
    p = torch.zeros(3, requires_grad=True)
    opt = cls([p], lr=1e-3, lr_low=low, lr_high=high, steps_per_epoch=spe)
    for grads in stream:
        p.grad = torch.tensor(grads)
        opt.step()
    mult = opt.state[p]["multiplier"]
    assert torch.isfinite(mult).all() and (mult >= 0).all()
    eff = opt.effective_lr()[0]
    assert math.isfinite(eff.mean) and eff.min <= eff.mean <= eff.max
    assert opt.epoch == len(stream) // spe


class Scripted:
    """Stands in for AngularVelocity: returns the scripted omegas (None twice first, like the real one)."""

    def __init__(self, params, omegas):
        self.params, self.values, self.calls, self.eps = list(params), [None, None, *omegas], 0, 0.0

    def update(self, tensors=None):
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return value

    def reset(self):
        pass


omega_values = st.one_of(st.floats(0.0, 180.0), st.just(math.nan))


@pytest.mark.filterwarnings("ignore:AutoDrop. the angular velocity:RuntimeWarning")  # the documented NaN warning
@FUZZ
@given(st.sampled_from(["trend", "code", "uai"]), st.floats(0.01, 0.99), st.floats(0.0, 1e-2),
       st.lists(omega_values, min_size=1, max_size=40))
def test_autodrop_lr_stays_within_its_floor_and_never_drops_on_a_nan_omega(mode, rho, min_lr, omegas):
    p = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    options = {"interval": 1} if mode == "uai" else {}
    sched = AutoDrop(opt, mode, rho=rho, min_lr=min_lr, **options)
    sched.angular_velocity = Scripted(sched.angular_velocity.params, omegas)
    for _ in range(len(omegas) + 2):
        p.grad = torch.ones(2)
        opt.step()
        sched.step()
    lr = opt.param_groups[0]["lr"]
    assert math.isfinite(lr) and min(min_lr, 0.1) - 1e-15 <= lr <= 0.1
    for drop in sched.drops:
        assert drop.omega is None or math.isfinite(drop.omega)
        assert all(new <= old for old, new in zip(drop.old_lrs, drop.new_lrs))
    assert sched.get_last_lr() == [lr]


@FUZZ
@given(st.dictionaries(st.sampled_from(["rho", "threshold", "min_lr", "extra_epochs", "window", "eps"]),
                       st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                                 st.text(max_size=2), st.none()), min_size=1, max_size=3))
def test_any_autodrop_arguments_are_accepted_or_refused_cleanly_without_touching_the_optimizer(kwargs):
    p = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    before = dict(opt.param_groups[0])
    try:
        sched = AutoDrop(opt, **kwargs)
    except (ValueError, TypeError):
        assert {k: v for k, v in opt.param_groups[0].items() if k != "params"} == {
            k: v for k, v in before.items() if k != "params"}
    else:
        assert 0 < sched.rho < 1 and sched.get_last_lr() == [0.1]
