"""Specification of lrpilot.exponential (Li & Arora, ICLR 2020): the growth factor, the equivalence it promises,
the paper's closed form, scale-invariance tools, renormalisation, checkpoints and argument checking."""

from __future__ import annotations

import copy
import io
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from lrpilot import (
    TEXP,
    ExpLR,
    check_scale_invariance,
    exponential_schedule,
    growth_factor,
    make_scale_invariant,
    texp_schedule,
)
from lrpilot.exponential import initial_buffer_coefficient, max_weight_decay_lr, step_decay_lrs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tiny networks run fastest on one thread (and the machine is shared); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_EPS = 1e-30  # torch requires BatchNorm eps > 0 in training; 1e-30 is 0 next to any float64 variance here


# ----------------------------------------------------------------------------- a scale-invariant toy network
def bn_net(seed: int = 0, eps: float = TINY_EPS, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """x -> W1 -> BN -> ReLU -> W2 -> BN -> ReLU -> V (spec section 6's 'bn' model, BN affine frozen by the recipe)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(20, 32, bias=False), nn.BatchNorm1d(32, eps=eps), nn.ReLU(),
        nn.Linear(32, 32, bias=False), nn.BatchNorm1d(32, eps=eps), nn.ReLU(),
        nn.Linear(32, 5),
    ).to(dtype)
    make_scale_invariant(model)
    return model


_g = torch.Generator().manual_seed(0)
X = torch.randn(512, 20, generator=_g, dtype=torch.float64)
Y = torch.randint(0, 5, (512,), generator=_g)
X_PROBE = torch.randn(64, 20, generator=_g, dtype=torch.float64)


@dataclass
class Run:
    model: nn.Module
    optimizer: torch.optim.SGD
    scheduler: LRScheduler | None
    weights: list[list[torch.Tensor]] = field(default_factory=list)  # after each step
    scales: list[float] = field(default_factory=list)  # scheduler.weight_scale after each step
    lrs: list[float] = field(default_factory=list)  # LR used at each step


def train_toy(kind: str, steps: int = 300, *, lr: float = 0.1, wd: float = 0.01, momentum: float = 0.9,
              milestones: tuple[int, ...] = (150, 250), gamma: float = 0.1, lrs: list[float] | None = None,
              mode: str = "exact", zero_buffer: bool = False, renorm_every: int | None = None,
              dtype: torch.dtype = torch.float64, eps: float = TINY_EPS, with_norm_layers: bool = True) -> Run:
    """kind "wd": SGD + weight decay + MultiStepLR (or the per-step ``lrs``); kind "exp": SGD + TEXP (or ExpLR)."""
    model = bn_net(eps=eps, dtype=dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    norm_layers = [model[1], model[4]] if with_norm_layers else []
    sched: LRScheduler | None
    if kind == "wd":
        opt = torch.optim.SGD(params, lr=lr if lrs is None else lrs[0], momentum=momentum, weight_decay=wd)
        sched = None if lrs is not None else torch.optim.lr_scheduler.MultiStepLR(opt, list(milestones), gamma)
    elif lrs is None:
        opt = torch.optim.SGD(params, lr=1.0, momentum=momentum)
        sched = TEXP(opt, lr, wd, momentum, list(milestones), gamma, mode=mode, renorm_every=renorm_every,
                     norm_layers=norm_layers)
    else:
        opt = torch.optim.SGD(params, lr=1.0, momentum=momentum)
        sched = ExpLR(opt, lrs, wd, momentum, mode=mode, renorm_every=renorm_every, norm_layers=norm_layers)
    if zero_buffer:
        for p in params:
            opt.state[p].pop("momentum_buffer")
    run = Run(model, opt, sched)
    order = torch.Generator().manual_seed(1)
    for t in range(steps):
        if kind == "wd" and lrs is not None:
            opt.param_groups[0]["lr"] = lrs[t]
        run.lrs.append(opt.param_groups[0]["lr"])
        idx = torch.randint(0, 512, (32,), generator=order)
        loss = F.cross_entropy(model(X[idx].to(dtype)), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        run.weights.append([p.detach().clone() for p in params])
        run.scales.append(getattr(sched, "weight_scale", 1.0))
    return run


def direction_error(a: Run, b: Run) -> float:
    """max over steps and tensors of || a/|a| - b/|b| || (normalised weights; unit vectors, so also relative)."""
    return max(
        float((x / x.norm() - y / y.norm()).norm())
        for wa, wb in zip(a.weights, b.weights) for x, y in zip(wa, wb)
    )


def scaled_error(wd_run: Run, exp_run: Run) -> float:
    """max over steps and tensors of ||theta~_t - weight_scale_t theta_t|| / ||theta~_t||."""
    return max(
        float((y - s * x).norm() / y.norm())
        for wa, wb, s in zip(wd_run.weights, exp_run.weights, exp_run.scales) for x, y in zip(wa, wb)
    )


def output_error(a: nn.Module, b: nn.Module, train: bool = True) -> float:
    """Relative max difference of the logits on a probe batch (train mode: batch statistics; eval mode: running
    statistics), computed on copies (no state change)."""
    outs = []
    for m in (copy.deepcopy(a), copy.deepcopy(b)):
        m.train(train)
        with torch.no_grad():
            outs.append(m(X_PROBE))
    return float((outs[0] - outs[1]).abs().max() / outs[0].abs().max())


@pytest.fixture(scope="module")
def toy_runs() -> dict[str, Run]:
    """Step decay 0.1 -> 0.01 -> 0.001 at steps 150 and 250 (lambda 0.01, gamma 0.9: lambda*eta = 1e-3), 300 steps."""
    return {
        "wd": train_toy("wd"),
        "exact": train_toy("exp"),
        "paper": train_toy("exp", mode="paper"),
        "zero_buffer": train_toy("exp", zero_buffer=True),
        "renorm": train_toy("exp", renorm_every=50),
        "no_norm_layers": train_toy("exp", with_norm_layers=False),
    }


# ----------------------------------------------------------------------------- Theorem 1.1: the growth factor
@settings(max_examples=200, deadline=None)
@given(momentum=st.floats(0.0, 0.99), lr=st.floats(1e-4, 2.0), fraction=st.floats(0.0, 0.95))
def test_growth_factor_is_the_larger_root_of_its_quadratic(momentum, lr, fraction):
    """alpha solves x^2 - (1 + gamma - lambda eta) x + gamma = 0 and is its larger root (numpy.roots), in
    [sqrt(gamma), 1]."""
    wd = fraction * max_weight_decay_lr(momentum) / lr
    alpha = growth_factor(lr, wd, momentum)
    b = 1 + momentum - wd * lr
    roots = np.roots([1.0, -b, momentum])
    assert np.all(np.abs(roots.imag) <= 1e-7)
    assert alpha == pytest.approx(max(roots.real), rel=1e-9, abs=1e-12)
    assert alpha * alpha - b * alpha + momentum == pytest.approx(0.0, abs=1e-12)
    assert math.sqrt(momentum) - 1e-12 <= alpha <= 1.0


def test_growth_factor_closed_forms_and_the_papers_constant():
    """gamma = 0: alpha = 1 - lambda eta. Paper settings (0.1, 5e-4, 0.9, 391 steps/epoch): alpha = 0.999497728 and
    the LR grows by alpha^-782 = 1.481 per epoch (the blog's 0.1 x 1.481^epoch)."""
    assert growth_factor(0.2, 0.005, 0.0) == pytest.approx(1 - 0.001, rel=1e-15)
    assert growth_factor(0.1, 0.0, 0.9) == 1.0  # no weight decay: constant LR
    alpha = growth_factor(0.1, 5e-4, 0.9)
    assert alpha == pytest.approx(0.999497728, abs=1e-9)
    assert alpha ** (-2 * 391) == pytest.approx(1.4812, abs=5e-5)
    assert 1 - alpha == pytest.approx(5e-5 / 0.1, rel=1e-2)  # ~ lambda eta / (1 - gamma)


def test_existence_condition_error_names_the_condition_and_the_margin():
    """lambda eta <= (1 - sqrt(gamma))^2: at the bound alpha = sqrt(gamma) (double root); above it a ValueError that
    states the product, the bound and by how much it fails; at gamma = 0 the bound (alpha = 0) is excluded."""
    bound = max_weight_decay_lr(0.9)
    assert bound == pytest.approx((1 - math.sqrt(0.9)) ** 2) and bound == pytest.approx(0.00263, abs=1e-5)
    assert growth_factor(1.0, bound, 0.9) == pytest.approx(math.sqrt(0.9), abs=1e-7)
    with pytest.raises(ValueError, match=r"weight_decay \* lr = .*0.003 > \(1 - sqrt\(momentum\)\)\^2 = 0.00263") as e:
        growth_factor(0.1, 0.03, 0.9)
    assert "fails by 0.000367" in str(e.value) and "1.139x the bound" in str(e.value)
    with pytest.raises(ValueError, match=r"weight_decay \* lr = .* >= \(1 - sqrt\(momentum\)\)\^2 = 1"):
        growth_factor(1.0, 1.0, 0.0)
    assert growth_factor(1.0, 0.999, 0.0) == pytest.approx(0.001)
    opt = torch.optim.SGD(bn_net().parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="no exponential equivalent"):
        TEXP(opt, 0.1, 0.03, 0.9, [10])
    with pytest.raises(ValueError, match=r"lrs\[0\]"):
        exponential_schedule([0.1, 0.01], 0.03, 0.9)


# ----------------------------------------------------------------------------- the LR sequences
def test_constant_lr_schedule_is_theorem_1_with_the_initial_buffer():
    """Constant LR: eta~_t = eta alpha^(-2t-1), weights alpha^(-t) larger, u~_0 = -(1 - alpha)/(alpha eta) theta_0."""
    eta, wd, m = 0.1, 0.01, 0.9
    alpha = growth_factor(eta, wd, m)
    sched = exponential_schedule([eta] * 500, wd, m)
    for t in (0, 1, 7, 499):
        assert sched.lrs[t] == pytest.approx(eta * alpha ** (-2 * t - 1), rel=1e-12)
        assert sched.weight_scales[t] == pytest.approx(alpha ** (-t), rel=1e-12)
        assert sched.factors[t] == pytest.approx(alpha, rel=1e-15)
    assert sched.initial_buffer == pytest.approx(-(1 - alpha) / (alpha * eta), rel=1e-12)
    assert initial_buffer_coefficient(eta, wd, m) == sched.initial_buffer
    assert exponential_schedule([eta] * 5, wd, 0.0).initial_buffer == 0.0


def test_exact_recursion_at_a_drop_and_its_relaxation():
    """At a drop by r the exact factor is a = 1 - r (1 - alpha_old) (spec section 4), then it relaxes to alpha_new;
    the paper's closed form uses alpha_new at once; ratio eta~_t / eta~_{t-1} = r_t / (a_{t-1} a_t)."""
    eta, wd, m = 0.1, 0.01, 0.9
    ex = texp_schedule(eta, wd, m, [200], 0.1, 1000)
    pa = texp_schedule(eta, wd, m, [200], 0.1, 1000, mode="paper")
    a_old, a_new = growth_factor(eta, wd, m), growth_factor(eta / 10, wd, m)
    assert ex.factors[199] == pytest.approx(a_old, rel=1e-14)
    assert ex.factors[200] == pytest.approx(1 - 0.1 * (1 - a_old), rel=1e-14)
    assert ex.factors[200] != pytest.approx(a_new, rel=1e-6)
    assert ex.factors[999] == pytest.approx(a_new, rel=1e-13)
    assert pa.factors[200] == a_new
    for t in (1, 200, 201, 999):
        want = (0.1 if t == 200 else 1.0) / (ex.factors[t - 1] * ex.factors[t])
        assert ex.lrs[t] / ex.lrs[t - 1] == pytest.approx(want, rel=1e-12)
    assert pa.lrs[200] / pa.lrs[199] == pytest.approx(0.1 / (a_old * a_new), rel=1e-12)  # TEXP's rule at a drop
    same = [texp_schedule(eta, wd, 0.0, [200], 0.1, 400, mode=mode).lrs for mode in ("exact", "paper")]
    assert max(abs(a / b - 1) for a, b in zip(*same)) < 1e-12  # momentum 0: the closed form is exact


def test_paper_mode_lr_deviation_at_the_papers_settings_is_below_1e_5():
    """PreResNet32 schedule (0.1 -> 0.01 -> 0.001 at epochs 80/120, wd 5e-4, momentum 0.9, 391 steps/epoch, 300
    epochs): max relative LR difference paper vs exact is ~4e-6 (spec: 4.1e-6), nonzero, below 1e-5."""
    B = 391
    args = (0.1, 5e-4, 0.9, [80 * B, 120 * B], 0.1, 300 * B)
    ex, pa = texp_schedule(*args), texp_schedule(*args, mode="paper")
    dev = max(abs(p / e - 1) for p, e in zip(pa.lrs, ex.lrs))
    assert 1e-6 < dev < 1e-5
    assert math.log10(ex.lrs[80 * B - 1]) == pytest.approx(12.65, abs=0.05)  # spec: ~10^12.65 at epoch 80
    assert math.log10(ex.lrs[-1]) == pytest.approx(11.6, abs=0.1)  # ~10^11.6 at epoch 300


def test_texp_scheduler_sets_the_schedules_lrs_and_momentum_buffer():
    """The scheduler's LR at every step equals texp_schedule's, and it sets u~_0 = coef * theta_0 for every
    trainable parameter (frozen ones get none)."""
    model = bn_net()
    theta0 = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(model.parameters(), lr=123.0, momentum=0.9)
    sched = TEXP(opt, 0.1, 0.01, 0.9, [30, 60], 0.2)
    coef = initial_buffer_coefficient(0.1, 0.01, 0.9)
    for p, p0 in zip([p for p in model.parameters() if p.requires_grad], theta0):
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], coef * p0, rtol=0, atol=0)
    assert all("momentum_buffer" not in opt.state.get(p, {}) for p in model.parameters() if not p.requires_grad)
    want = texp_schedule(0.1, 0.01, 0.9, [30, 60], 0.2, 100).lrs
    got = []
    for _ in range(100):
        got.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradients: nothing moves, but the scheduler sees one optimizer step per call
        sched.step()
    assert got == pytest.approx(want, rel=1e-13)
    assert sched.wd_lr == pytest.approx(0.1 * 0.2**2)
    assert isinstance(sched, LRScheduler)


def test_step_decay_lrs_match_multisteplr_stepped_per_step():
    """step_decay_lrs is MultiStepLR (stepped every optimizer step): milestones count from step 0."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ms = torch.optim.lr_scheduler.MultiStepLR(opt, [3, 5], 0.5)
    want = []
    for _ in range(8):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        ms.step()
    assert step_decay_lrs(0.1, [3, 5], 0.5, 8) == pytest.approx(want, rel=1e-15)


# ----------------------------------------------------------------------------- the equivalence, in float64
def test_float64_step_decay_and_exact_texp_agree_after_300_steps_across_two_milestones(toy_runs):
    """Scale-invariant BN net, 300 steps, drops at 150 and 250: every trained tensor's normalised weights agree to
    1e-6 at every step (measured ~3e-15), theta~_t = weight_scale_t theta_t, and the outputs match in train mode and
    (running statistics kept on scale through norm_layers) in eval mode; the LR grew."""
    wd, ex = toy_runs["wd"], toy_runs["exact"]
    assert direction_error(wd, ex) < 1e-6
    assert scaled_error(wd, ex) < 1e-6
    assert output_error(wd.model, ex.model) < 1e-6
    assert output_error(wd.model, ex.model, train=False) < 1e-6
    for layer_wd, layer_ex in ((wd.model[1], ex.model[1]), (wd.model[4], ex.model[4])):
        torch.testing.assert_close(layer_ex.running_var, layer_wd.running_var * ex.scales[-1] ** 2, rtol=1e-10, atol=0)
    assert max(ex.lrs[:150]) > 15 * ex.lrs[0]  # exponential growth in phase 0 (x ~20 over 150 steps)
    assert ex.scales[-1] > 4  # the exponential run's weights are several times larger
    norms = [float(w[0].norm() / v[0].norm()) for w, v in zip(ex.weights, wd.weights)]
    assert norms[-1] == pytest.approx(ex.scales[-1], rel=1e-10)


def test_equivalence_needs_the_initial_momentum_buffer(toy_runs):
    """Control: the same exponential run with a zero initial buffer diverges from the WD run (spec: 0.19..0.55)."""
    assert direction_error(toy_runs["wd"], toy_runs["zero_buffer"]) > 1e-2


def test_without_norm_layers_only_train_mode_outputs_match(toy_runs):
    """Control: if the running statistics are not kept on scale they lag the growing weights, so eval-mode outputs
    differ (train-mode outputs and the weights still match)."""
    wd, run = toy_runs["wd"], toy_runs["no_norm_layers"]
    assert direction_error(wd, run) < 1e-12 and output_error(wd.model, run.model) < 1e-12
    assert output_error(wd.model, run.model, train=False) > 1e-3


def test_paper_mode_trajectory_deviates_measurably_but_boundedly(toy_runs):
    """Aggressive toy (lambda eta = 1e-3): the closed form's normalised weights deviate by 1e-4..2e-2 (spec up to 1e-2;
    measured ~6e-3) while the exact recursion agrees to 1e-12."""
    assert 1e-4 < direction_error(toy_runs["wd"], toy_runs["paper"]) < 2e-2
    assert direction_error(toy_runs["wd"], toy_runs["exact"]) < 1e-12


def test_norm_layers_make_the_equivalence_exact_with_a_nonzero_eps():
    """BN eps = 1e-3 breaks scale invariance: with a fixed eps the exponential run is the WD run with a shrinking eps
    and drifts away; with norm_layers TEXP sets eps = eps_0 weight_scale^2 and the runs agree to 1e-9."""
    wd = train_toy("wd", 200, eps=1e-3)
    exact = train_toy("exp", 200, eps=1e-3)
    fixed_eps = train_toy("exp", 200, eps=1e-3, with_norm_layers=False)
    assert direction_error(wd, exact) < 1e-9 and output_error(wd.model, exact.model, train=False) < 1e-9
    assert exact.model[1].eps == pytest.approx(1e-3 * exact.scales[-1] ** 2, rel=1e-12)
    assert direction_error(wd, fixed_eps) > 1e-5 and fixed_eps.model[1].eps == 1e-3


def test_float64_equivalence_without_momentum():
    """gamma = 0 (spec case eta .2, lambda .005): eta~_t = eta (1 - lambda eta)^(-2t-1); no buffer needed; the runs
    agree, and the paper's closed form is exact too."""
    kw = {"lr": 0.2, "wd": 0.005, "momentum": 0.0, "milestones": (100,)}
    wd = train_toy("wd", 150, **kw)
    for mode in ("exact", "paper"):
        ex = train_toy("exp", 150, mode=mode, **kw)
        assert direction_error(wd, ex) < 1e-9 and output_error(wd.model, ex.model) < 1e-9
        assert ex.lrs[99] == pytest.approx(0.2 * (1 - 0.001) ** (-2 * 99 - 1), rel=1e-12)
        assert len(ex.optimizer.state) == 0  # momentum 0: SGD keeps no buffers, TEXP sets none


def test_float64_cosine_schedule_converted_by_explr_is_equivalent():
    """Any per-step schedule (here cosine from 0.1 to ~0 over 200 steps) converts by the same recursion."""
    steps = 200
    lrs = [0.05 * (1 + math.cos(math.pi * t / steps)) for t in range(steps)]
    wd, ex = train_toy("wd", steps, lrs=lrs), train_toy("exp", steps, lrs=lrs)
    assert direction_error(wd, ex) < 1e-6
    assert scaled_error(wd, ex) < 1e-6
    assert output_error(wd.model, ex.model) < 1e-6
    assert ex.lrs == pytest.approx(list(exponential_schedule(lrs, 0.01, 0.9).lrs), rel=1e-13)
    sched = ex.scheduler
    sched.optimizer.step()
    sched.step()  # beyond the list: the WD run continues at lrs[-1]
    assert sched.wd_lr == lrs[-1]


# ----------------------------------------------------------------------------- renormalisation
def test_renormalisation_is_exact_a_power_of_two_times_the_plain_run(toy_runs):
    """With eps ~ 0, a run renormalised every 50 steps is the plain exponential run times 2^S bit for bit at every
    step (S = exponents applied so far), so the function and the equivalence are untouched; weights stay at the WD
    run's scale."""
    plain, ren = toy_runs["exact"], toy_runs["renorm"]
    sched = ren.scheduler
    assert sched.renorm_steps and sched.scale_exponent < 0
    exponent = 0
    applied = dict.fromkeys(sched.renorm_steps, 0)
    for t, (wp, wr) in enumerate(zip(plain.weights, ren.weights), start=1):
        if t in applied:
            exponent = -round(math.log2(plain.scales[t - 1]))  # the scale the renormalisation removed
        assert all(torch.equal(y, x * 2.0**exponent) for x, y in zip(wp, wr)), t
    assert exponent == sched.scale_exponent
    assert 2**-0.5 <= ren.scales[-1] <= 2**0.5
    assert direction_error(toy_runs["wd"], ren) < 1e-12 and scaled_error(toy_runs["wd"], ren) < 1e-12


def test_renormalize_leaves_eval_and_train_outputs_unchanged_via_norm_layers():
    """A renormalisation in the middle of training changes neither train- nor eval-mode outputs (running statistics
    of the listed norm layers are scaled with the weights); without norm_layers the eval outputs change."""
    for layers_given in (True, False):
        run = train_toy("exp", 60, renorm_every=None)
        model, sched = run.model, run.scheduler
        if not layers_given:
            sched.norm_layers = []
        before = [copy.deepcopy(model).train(mode)(X_PROBE).detach() for mode in (True, False)]
        e = sched.renormalize()
        assert e < 0 and sched.weight_scale == pytest.approx(1, rel=0.42)
        after = [copy.deepcopy(model).train(mode)(X_PROBE).detach() for mode in (True, False)]
        torch.testing.assert_close(after[0], before[0], rtol=1e-12, atol=1e-12)
        if layers_given:
            torch.testing.assert_close(after[1], before[1], rtol=1e-12, atol=1e-12)
        else:
            assert (after[1] - before[1]).abs().max() > 1e-3
    assert sched.renormalize() == 0  # already at scale: nothing to do


def test_float32_run_overflows_without_renormalisation_and_not_with_it():
    """Fast growth (lr 0.1, wd 0.8, momentum 0.5: weights x1.29 per step) in float32: without renormalisation the
    LR passes float32's range and SGD fails within 300 steps; with renorm_every=10 every step is finite and the
    weights stay within a factor 2 of the WD run's."""
    kw = {"lr": 0.1, "wd": 0.8, "momentum": 0.5, "milestones": (), "dtype": torch.float32, "eps": 1e-5}
    with pytest.raises(RuntimeError, match="overflow"):
        train_toy("exp", 300, **kw)
    ren, wd = train_toy("exp", 300, renorm_every=10, **kw), train_toy("wd", 300, **kw)
    assert all(torch.isfinite(w).all() for ws in ren.weights for w in ws)
    assert ren.scheduler.scale_exponent < -50  # it would have grown by more than 2^50
    ratio = float(torch.cat([w.flatten() for w in ren.weights[-1]]).norm()
                  / torch.cat([w.flatten() for w in wd.weights[-1]]).norm())
    assert 0.5 < ratio < 2


# ----------------------------------------------------------------------------- scale-invariance tools
def test_check_scale_invariance_catches_the_output_layer_and_passes_after_the_recipe():
    """Before the recipe the output layer (and the last BN's affine) change the loss when scaled; after it every
    trained tensor is invariant, and the BN layers fed by trained weights are reported for renormalisation."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 5)).double()
    batch = (X[:64], Y[:64])
    report = check_scale_invariance(model, F.cross_entropy, batch)
    assert not report.ok
    assert "3.weight" in report.not_invariant and "3.bias" in report.not_invariant
    assert "0.weight" not in report.not_invariant
    assert report.changes["3.weight"] > 1e-2 and report.changes["0.weight"] < 1e-4
    assert "NOT invariant: 3.weight" in str(report)
    changes = make_scale_invariant(model)
    assert changes.frozen == ["1.weight", "1.bias", "3.weight", "3.bias"] and changes.trainable == ["0.weight"]
    assert changes.last_layer == "3" and changes.norm_layers == ["1"]
    report = check_scale_invariance(model, F.cross_entropy, batch)
    assert report.ok and report.joint_change < 1e-4 and report.not_invariant == []  # eps = 1e-5: ~4e-6
    assert list(report.scaled_norm_layers) == ["1"] and report.scaled_norm_layers["1"] is model[1]


def test_check_scale_invariance_finds_the_norm_layers_fed_by_trained_weights():
    """Every BN after a trained layer is reported even when eps (1e-3) perturbs the downstream scaling; a BN on the
    raw input (not fed by trained weights) is not."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(20), nn.Linear(20, 32, bias=False), nn.BatchNorm1d(32, eps=1e-3), nn.ReLU(),
                          nn.Linear(32, 32, bias=False), nn.BatchNorm1d(32, eps=1e-3), nn.ReLU(),
                          nn.Linear(32, 5)).double()
    make_scale_invariant(model)
    report = check_scale_invariance(model, F.cross_entropy, (X[:64], Y[:64]))
    assert list(report.scaled_norm_layers) == ["2", "5"]


def test_check_scale_invariance_flags_a_network_without_normalization_and_changes_nothing():
    """No normalization: every weight is flagged. The check restores parameters, buffers, mode and the global RNG,
    and dropout (same seed every forward) is not mistaken for non-invariance."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5)).double()
    report = check_scale_invariance(plain, F.cross_entropy, (X[:64], Y[:64]))
    assert set(report.not_invariant) == {"0.weight", "0.bias", "2.weight", "2.bias"}

    model = nn.Sequential(nn.Linear(20, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(32, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 5)).double()
    make_scale_invariant(model)
    model.eval()
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    report = check_scale_invariance(model, F.cross_entropy, (X[:64], Y[:64]))
    assert report.ok, str(report)
    assert not model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_make_scale_invariant_explicit_last_layer_and_bad_arguments():
    """last_layer can be named or given as a module; a foreign one is a ValueError, a wrong type a TypeError."""
    model = bn_net()
    for p in model.parameters():
        p.requires_grad_(True)
    changes = make_scale_invariant(model, last_layer=model[3])
    assert changes.last_layer == "3" and "3.weight" in changes.frozen and changes.trainable == ["0.weight", "6.weight",
                                                                                              "6.bias"]
    assert "froze 3.weight" in str(changes)
    with pytest.raises(ValueError, match="last_layer='nope'"):
        make_scale_invariant(model, last_layer="nope")
    with pytest.raises(ValueError, match="not a module of the model"):
        make_scale_invariant(model, last_layer=nn.Linear(2, 2))
    with pytest.raises(TypeError, match="last_layer"):
        make_scale_invariant(model, last_layer=3)
    with pytest.raises(TypeError, match="model"):
        make_scale_invariant("model")


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"scales": ()}, ValueError, "scales must not be empty"),
    ({"scales": (1.0,)}, ValueError, "scales must not contain 1"),
    ({"scales": (-2.0,)}, ValueError, "scales must be > 0"),
    ({"rtol": -1.0}, ValueError, "rtol must be >= 0"),
    ({"rtol": "tight"}, TypeError, "rtol must be a real number"),
    ({"params": ["nope"]}, ValueError, r"params \['nope'\]"),
    ({"batch": X[:8]}, TypeError, "batch must be a pair"),
    ({"loss_fn": 3}, TypeError, "loss_fn must be callable"),
])
def test_check_scale_invariance_rejects_bad_arguments(kwargs, exc, match):
    """Every argument is validated with an error naming it."""
    args = {"model": bn_net(), "loss_fn": F.cross_entropy, "batch": (X[:8], Y[:8]), **kwargs}
    with pytest.raises(exc, match=match):
        check_scale_invariance(args.pop("model"), args.pop("loss_fn"), args.pop("batch"), **args)


# ----------------------------------------------------------------------------- checkpoints
def test_state_dict_round_trip_resumes_bit_for_bit():
    """Save model, optimizer and TEXP (with renormalisation) mid-run, through torch.save; a fresh set that loads
    them continues exactly like the original (same LRs, same weights, same scale)."""
    def make():
        model = bn_net()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
        return model, opt, TEXP(opt, 0.1, 0.02, 0.9, [45, 55], 0.1, renorm_every=20, norm_layers=[model[1], model[4]])

    def steps(model, opt, sched, start, n):
        lrs = []
        for t in range(start, start + n):
            idx = torch.arange(32) + t % 16 * 32
            loss = F.cross_entropy(model(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            lrs.append(sched.get_last_lr()[0])
        return lrs

    model, opt, sched = make()
    steps(model, opt, sched, 0, 30)
    assert sched.scale_exponent == -1  # renormalised once (step 20) before the checkpoint
    buffer = io.BytesIO()
    torch.save({"m": model.state_dict(), "o": opt.state_dict(), "s": sched.state_dict()}, buffer)
    want = steps(model, opt, sched, 30, 40)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=False)
    model2, opt2, sched2 = make()
    model2.load_state_dict(ckpt["m"])
    opt2.load_state_dict(ckpt["o"])
    sched2.load_state_dict(ckpt["s"])
    assert sched2.last_epoch == 30 and sched2.scale_exponent == -1 and sched2.wd_lr == 0.1
    got = steps(model2, opt2, sched2, 30, 40)
    assert got == want
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert sched2.scale_exponent == sched.scale_exponent and sched2.renorm_steps == sched.renorm_steps
    assert len(sched.renorm_steps) >= 2 and sched.renorm_steps[-1] > 30
    assert sched2.weight_scale == sched.weight_scale
    assert model2[1].eps == model[1].eps != TINY_EPS  # eps is not in the model's state_dict: the scheduler restores it


def test_load_state_dict_checks_before_changing_anything():
    """A state from another configuration, or with missing keys, raises and leaves the scheduler as it was."""
    model = bn_net()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    sched = TEXP(opt, 0.1, 0.01, 0.9, [25], 0.1)
    for _ in range(3):
        opt.step()
        sched.step()
    other_opt = torch.optim.SGD([p for p in bn_net().parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    other = TEXP(other_opt, 0.1, 0.01, 0.9, [30], 0.1)
    before = sched.state_dict()
    with pytest.raises(ValueError, match=r"differs in \['milestones'\]"):
        sched.load_state_dict(other.state_dict())
    broken = dict(other.state_dict())
    del broken["recursion"]
    with pytest.raises(ValueError, match="missing keys"):
        sched.load_state_dict(broken)
    assert sched.state_dict() == before


# ----------------------------------------------------------------------------- argument checking
def fresh_opt(**sgd):
    model = bn_net()
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], **{"lr": 0.1, "momentum": 0.9, **sgd})


GOOD = {"lr": 0.1, "weight_decay": 5e-4, "momentum": 0.9, "milestones": [10, 20], "gamma": 0.1}


@pytest.mark.parametrize(("change", "exc", "match"), [
    ({"lr": 0.0}, ValueError, "lr must be > 0"),
    ({"lr": "0.1"}, TypeError, "lr must be a real number"),
    ({"lr": math.nan}, ValueError, "lr must be finite"),
    ({"weight_decay": -1e-4}, ValueError, "weight_decay must be >= 0"),
    ({"weight_decay": True}, TypeError, "weight_decay must be a real number"),
    ({"momentum": 1.0}, ValueError, "momentum must be < 1"),
    ({"milestones": [20, 10]}, ValueError, "milestones must be strictly increasing"),
    ({"milestones": [0, 10]}, ValueError, "milestones must be >= 1"),
    ({"milestones": [1.5]}, TypeError, "milestones must contain ints"),
    ({"milestones": 10}, TypeError, "milestones must be a sequence"),
    ({"gamma": 0.0}, ValueError, "gamma must be > 0"),
    ({"gamma": 2.0}, ValueError, "gamma must be <= 1"),
    ({"mode": "closed"}, ValueError, "mode must be one of"),
    ({"renorm_every": 0}, ValueError, "renorm_every must be >= 1"),
    ({"renorm_every": 2.5}, TypeError, "renorm_every must be an int"),
    ({"norm_layers": nn.BatchNorm1d(3)}, TypeError, "norm_layers must be an iterable"),
    ({"norm_layers": [nn.Linear(3, 3)]}, TypeError, "norm_layers must contain normalization modules"),
    ({"weight_decay": 0.05}, ValueError, "no exponential equivalent"),
])
def test_texp_rejects_bad_arguments_before_changing_anything(change, exc, match):
    """Each bad argument raises a TypeError/ValueError naming it; the optimizer is left untouched."""
    opt = fresh_opt()
    groups_before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
    with pytest.raises(exc, match=match):
        TEXP(opt, **{**GOOD, **change})
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups_before
    assert len(opt.state) == 0


@pytest.mark.parametrize(("make_opt", "exc", "match"), [
    (lambda: torch.optim.Adam(bn_net().parameters()), TypeError, "optimizer must be a torch.optim.SGD"),
    (lambda: fresh_opt(weight_decay=5e-4), ValueError, "group 0 has weight_decay=0.0005.*weight_decay=0"),
    (lambda: fresh_opt(momentum=0.5), ValueError, "group 0 has momentum=0.5 but momentum=0.9"),
    (lambda: fresh_opt(nesterov=True), ValueError, "nesterov=True"),
    (lambda: fresh_opt(dampening=0.1), ValueError, "dampening=0.1"),
    (lambda: fresh_opt(maximize=True), ValueError, "maximize=True"),
])
def test_texp_rejects_an_optimizer_it_cannot_convert(make_opt, exc, match):
    """Only plain SGD with momentum, no weight decay (TEXP adds it back as growth), no Nesterov/dampening."""
    with pytest.raises(exc, match=match):
        TEXP(make_opt(), **GOOD)


def test_texp_refuses_an_optimizer_that_has_already_stepped_and_step_takes_no_epoch():
    """The initial buffer condition is for the first step; step(epoch) is not supported."""
    model = bn_net()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    F.cross_entropy(model(X[:32]), Y[:32]).backward()
    opt.step()
    with pytest.raises(ValueError, match="already has momentum buffers"):
        TEXP(opt, **GOOD)
    sched = TEXP(fresh_opt(), **GOOD)
    with pytest.raises(ValueError, match="takes no epoch argument"):
        sched.step(3)
    frozen_only = torch.optim.SGD([p for p in model.parameters() if not p.requires_grad], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="no trainable parameters"):
        TEXP(frozen_only, **GOOD)


@pytest.mark.parametrize(("call", "exc", "match"), [
    (lambda: growth_factor(0.0, 5e-4, 0.9), ValueError, "lr must be > 0"),
    (lambda: growth_factor(0.1, -1.0, 0.9), ValueError, "weight_decay must be >= 0"),
    (lambda: growth_factor(0.1, 5e-4, 1.0), ValueError, "momentum must be < 1"),
    (lambda: growth_factor(0.1, 5e-4, None), TypeError, "momentum must be a real number"),
    (lambda: max_weight_decay_lr(-0.1), ValueError, "momentum must be >= 0"),
    (lambda: initial_buffer_coefficient(0.1, 0.05, 0.9), ValueError, "no exponential equivalent"),
    (lambda: step_decay_lrs(0.1, [5], 0.1, 0), ValueError, "steps must be >= 1"),
    (lambda: step_decay_lrs(0.1, [5], 0.1, 2.0), TypeError, "steps must be an int"),
    (lambda: texp_schedule(0.1, 5e-4, 0.9, [5], 1.5, 10), ValueError, "gamma must be <= 1"),
    (lambda: texp_schedule(0.1, 5e-4, 0.9, [5], 0.1, 10, mode="exactly"), ValueError, "mode must be one of"),
    (lambda: exponential_schedule([0.1], 5e-4, 0.9, mode=None), ValueError, "mode must be one of"),
])
def test_schedule_functions_reject_bad_arguments(call, exc, match):
    """The pure functions validate every argument too, naming it."""
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize(("lrs", "exc", "match"), [
    ([], TypeError, "lrs must be a non-empty sequence"),
    ("0.1", TypeError, "lrs must be a non-empty sequence"),
    ([0.1, 0.0], ValueError, r"lrs\[1\] must be > 0"),
    ([0.1, math.inf], ValueError, r"lrs\[1\] must be finite"),
    # "paper" mode: every LR must admit alpha
    ([0.1, 0.6], ValueError, r"no exponential equivalent: weight_decay \* lrs\[1\]"),
])
def test_explr_rejects_bad_schedules(lrs, exc, match):
    """ExpLR validates the whole list (and, in "paper" mode, every LR's existence condition) at construction."""
    with pytest.raises(exc, match=match):
        ExpLR(fresh_opt(), lrs, 5e-3, 0.9, mode="paper")


def test_exact_recursion_rejects_an_lr_rise_it_cannot_absorb():
    """A jump up by r makes a_t = 1 - r (1 - alpha); r > 1 / (1 - alpha) would need a negative LR: ValueError."""
    with pytest.raises(ValueError, match="not positive"):
        exponential_schedule([0.1, 0.1, 300.0], 0.01, 0.9)
    assert len(exponential_schedule([0.1, 0.2, 0.2], 0.01, 0.9).lrs) == 3  # a modest rise converts fine


# ----------------------------------------------------------------------------- the stepping rate (issue 14)
def test_texp_stepped_once_per_epoch_warns_once_that_it_is_a_per_step_scheduler():
    """TEXP's recursion and milestones count optimizer steps: a step() after several optimizer steps (the
    scheduler placed after the batch loop) warns at once, naming the fix, and only once."""
    opt = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.1, momentum=0.9)
    sched = TEXP(opt, 0.1, 0.01, 0.9, [30], 0.1)
    for _ in range(5):
        opt.step()
    with pytest.warns(UserWarning, match="after every optimizer.step"):
        sched.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(5):
            opt.step()
        sched.step()


def test_a_step_skipped_by_gradscaler_does_not_advance_texp():
    """GradScaler skips optimizer.step() on inf gradients while the loop still calls scheduler.step(): that call
    is ignored (with one warning), so the LR sequence per *taken* step is the schedule's, as in a run without
    the skipped step."""
    want = texp_schedule(0.1, 0.01, 0.9, [4], 0.2, 8).lrs
    p = torch.zeros(3, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    sched = TEXP(opt, 0.1, 0.01, 0.9, [4], 0.2)
    scaler = torch.amp.GradScaler("cpu")
    got = []
    with pytest.warns(UserWarning, match="no optimizer step"):
        for i in range(9):
            opt.zero_grad()
            loss = (p * torch.arange(3.0)).sum() * (float("inf") if i == 2 else 1.0)
            scaler.scale(loss).backward()
            lr = opt.param_groups[0]["lr"]
            scaler.step(opt)
            if i != 2:
                got.append(lr)
            scaler.update()
            sched.step()
    assert got == pytest.approx(want, rel=1e-13)


def test_texp_answers_the_telemetry_protocol():
    """metrics() (read by lrpilot_metrics, hence by every logging sink) reports the WD run's LR, the weight scale
    and the renormalisation count; lrpilot_metrics adds the LR actually applied."""
    from lrpilot.telemetry import lrpilot_metrics

    opt = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.1, momentum=0.9)
    sched = TEXP(opt, 0.1, 0.01, 0.9, [3], 0.1)
    for _ in range(5):
        opt.step()
        sched.step()
    metrics = lrpilot_metrics(opt, sched)
    assert metrics["exponential/wd_lr"] == pytest.approx(0.01)
    assert metrics["exponential/renorms"] == float(len(sched.renorm_steps))
    assert metrics["exponential/log2_weight_scale"] == pytest.approx(math.log2(sched.weight_scale))
    assert metrics["lr/group0"] == pytest.approx(float(opt.param_groups[0]["lr"]))
