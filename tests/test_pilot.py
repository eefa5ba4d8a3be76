"""Specification of ``lrpilot.Pilot``: an AdamW whose LR scale is Prodigy's estimate ``d`` and whose schedule
factor ``f`` is decided by Pilot itself (a budget's warmup-stable-decay, or anytime drops).

Most tests drive a tiny ``nn.Linear`` with a synthetic noisy loss, ``0.5 ||p - 1||^2 + sigma <noise_t, p>``: its
gradient ``(p - 1) + sigma * noise_t`` descends towards 1 and then bounces in a noise floor, so the anytime test
sees stationarity and drops within a few hundred steps; the noise of step ``t`` depends on ``t`` only, so an
interrupted run sees exactly the gradients of the uninterrupted one.
"""

from __future__ import annotations

import copy
import inspect
import io
import math
import pydoc
import re
import subprocess
import sys
import warnings
from itertools import pairwise
from pathlib import Path

import pytest
import torch

import lrpilot.pilot
from lrpilot import Pilot, PilotEvent
from lrpilot.telemetry import lrpilot_metrics

MULTIPLIER_WARNING = "Pilot: a param group's 'lr' changed"


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this file runs on one torch thread (tests/conftest.py)."""


# ------------------------------------------------------------------------------------------------ helpers
def make_model(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(5, 4).to(dtype)


def noisy_loss(model: torch.nn.Module, step: int, seed: int = 0, sigma: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 100_003 + step)
    return sum(0.5 * (p - 1).pow(2).sum() + sigma * (torch.randn(p.shape, generator=g, dtype=p.dtype) * p).sum()
               for p in model.parameters())


def drive(opt: Pilot, model: torch.nn.Module, start: int, stop: int, **kw) -> None:
    """Optimizer steps ``start`` .. ``stop - 1`` on :func:`noisy_loss`."""
    for t in range(start, stop):
        opt.zero_grad()
        noisy_loss(model, t, **kw).backward()
        opt.step()


def window_ends(up_to: int) -> set[int]:
    """The step counts at which a measurement window ends, by the rule ``W = max(1, t // 20)``."""
    ends, t = set(), 1
    while t <= up_to:
        ends.add(t)
        t += max(1, t // 20)
    return ends


def window_end(at_least: int) -> int:
    """The first window end >= ``at_least``."""
    return min(t for t in window_ends(2 * at_least + 1) if t >= at_least)


def mid_window(at_least: int) -> int:
    """The first step count >= ``at_least`` that is not a window end (a checkpoint inside a window)."""
    ends = window_ends(at_least + 1000)
    return next(t for t in range(at_least, at_least + 1000) if t not in ends)


def fit_full_batch(forward, opt: Pilot, x: torch.Tensor, y: torch.Tensor, steps: int, after_step=None) -> list[float]:
    """``steps`` full-batch MSE steps of ``forward`` with ``opt``; each step's loss (``after_step()`` after each)."""
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(forward(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if after_step is not None:
            after_step()
    return losses


def params_of(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_bitwise(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x, y), (x - y).abs().max()


def assert_same_state(a, b, path: str = "state_dict") -> None:
    """Two (state_dict-like) nested structures are equal: tensors bitwise, everything else by ==; a difference is
    reported with its path (e.g. ``state_dict['pilot']['test']['values']``)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{path}: {a} != {b}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same_state(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: {a} != {b}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), f"{path}: {a!r} != {b!r}"


def round_trip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def events(opt: Pilot) -> list[tuple[int, str, float]]:
    return [(e.step, e.kind, e.value) for e in opt.events]


def pilot_warnings(record) -> list[str]:
    return [str(w.message) for w in record if MULTIPLIER_WARNING in str(w.message)]


# ------------------------------------------------------------------------------------------------ the default call
def test_the_default_pilot_trains_a_regression_model_with_no_lr_scheduler_or_hook():
    """``Pilot(model.parameters())`` and nothing else -- no lr, no scheduler, no train()/eval(), no epoch hook --
    fits a small MLP regression: the loss falls more than 50-fold in 200 full-batch steps (measured: 0.996 to
    0.0018, about 550-fold) from the default guess lr=1e-6."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = torch.tanh(x @ torch.randn(8, 1, generator=g)) + 0.05 * torch.randn(256, 1, generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = Pilot(model.parameters())
    losses = fit_full_batch(model, opt, x, y, 200)
    assert losses[-1] < losses[0] / 50, (losses[0], losses[-1])
    assert opt.d > 1000 * 1e-6  # the estimate grew from the default guess
    assert all(math.isfinite(v) for v in losses)


def test_the_default_pilot_trains_a_classifier():
    """Three Gaussian blobs, a 2-16-3 MLP, cross-entropy, ``Pilot(model.parameters())``: 150 full-batch steps
    reach > 95% training accuracy and a loss 100x below the start (measured: 1.13 to 1e-7, accuracy 1.0)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 2, generator=g) * 3
    y = torch.randint(0, 3, (300,), generator=g)
    x = centers[y] + torch.randn(300, 2, generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = Pilot(model.parameters())
    first = None
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 100
    assert (model(x).argmax(1) == y).float().mean().item() > 0.95


# ------------------------------------------------------------------------------------------------ foreach vs for-loop
def two_group_run(foreach: bool, dtype: torch.dtype, total_steps: int | None, steps: int = 50):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).to(dtype)
    params = list(model.parameters())
    opt = Pilot([{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.1, "lr": 0.5}],
                total_steps=total_steps, foreach=foreach, lr=1e-4)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 5, generator=g, dtype=dtype)
        y = torch.randn(16, 2, generator=g, dtype=dtype)
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return opt, params


@pytest.mark.parametrize("total_steps", [50, None], ids=["budget", "anytime"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_foreach_and_for_loop_paths_agree_on_parameters_and_every_state_tensor(dtype, total_steps):
    """``foreach=True`` (``_multi_tensor_pilot``) and ``foreach=False`` (the per-tensor reference) over 50 steps
    of a 2-layer MLP with two param groups (the second with weight decay 0.1 and multiplier 0.5), through the
    budget's cooldown or in anytime mode: the same parameters, the same exp_avg/exp_avg_sq/s/p0 of every parameter,
    the same d and factor and the same decisions. Measured differences: 6e-7 relative (float32: the paths reduce
    in a different order and precision), 2e-15 (float64)."""
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-11, "atol": 1e-13}
    fused, fused_params = two_group_run(True, dtype, total_steps)
    loop, loop_params = two_group_run(False, dtype, total_steps)
    for a, b in zip(fused_params, loop_params):
        torch.testing.assert_close(a, b, **tol)
        assert fused.state[a].keys() == loop.state[b].keys() and len(fused.state[a]) >= 4
        for key in fused.state[a]:
            torch.testing.assert_close(fused.state[a][key], loop.state[b][key], **tol, msg=key)
    assert fused.d == pytest.approx(loop.d, rel=tol["rtol"])
    assert fused.d > 1e-4  # the estimate did move: the comparison covers its sums
    assert fused.factor == loop.factor
    assert [(e.step, e.kind) for e in fused.events] == [(e.step, e.kind) for e in loop.events]
    if total_steps is not None:
        assert fused.factor < 1  # the cooldown was reached


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "for-loop"])
@pytest.mark.parametrize("total_steps", [50, None], ids=["budget", "anytime"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_float_scalars_on_cpu_and_tensor_scalars_elsewhere_give_the_same_run(monkeypatch: pytest.MonkeyPatch, dtype,
                                                                             total_steps, foreach) -> None:
    """On CPU in eager mode the step's scalars (d, eta, the factors) and the estimate's update are Python floats;
    on other devices and under torch.compile 0-dim float64 tensors (``_host_scalars``). Both forms, forced on one
    CPU run, give the same parameters, every state tensor, d, factor and decisions over 50 steps, in both modes
    and on both paths: the estimate's update bitwise (the same float64 operations), the parameters within
    float rounding (a scaled add against a multiply-add by a cast scalar)."""
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-11, "atol": 1e-13}
    floats, float_params = two_group_run(foreach, dtype, total_steps)
    monkeypatch.setattr(lrpilot.pilot, "_host_scalars", lambda d: False)
    tensors, tensor_params = two_group_run(foreach, dtype, total_steps)
    for a, b in zip(float_params, tensor_params):
        torch.testing.assert_close(a, b, **tol)
        for key in floats.state[a]:
            torch.testing.assert_close(floats.state[a][key], tensors.state[b][key], **tol, msg=key)
    assert floats.d == pytest.approx(tensors.d, rel=tol["rtol"]) and floats.d > 1e-4
    assert floats.factor == tensors.factor
    assert [(e.step, e.kind) for e in floats.events] == [(e.step, e.kind) for e in tensors.events]


@pytest.mark.parametrize("total_steps", [50, None], ids=["budget", "anytime"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_the_foreach_path_with_0_dim_tensor_operands_on_cpu_is_bitwise_the_run_with_float_operands(
        monkeypatch: pytest.MonkeyPatch, dtype, total_steps) -> None:
    """On CPU the foreach step passes its multiply and divide scalars (the betas, the decay factor, the step size)
    as cached 0-dim tensors of the parameters' dtype, which torch's CPU foreach kernels take ~3x faster than a
    Python float (``_scalar_operand``). The scalar is rounded to the dtype either way, so the 50-step run is
    bitwise the one with float operands: parameters, every state tensor, d and the decisions."""
    lrpilot.pilot._cpu_scalar.cache_clear()
    tensors, tensor_params = two_group_run(True, dtype, total_steps)
    assert lrpilot.pilot._cpu_scalar.cache_info().currsize > 0  # the tensor operands were used
    monkeypatch.setattr(lrpilot.pilot, "_scalar_operand", lambda value, like: value)
    floats, float_params = two_group_run(True, dtype, total_steps)
    for a, b in zip(tensor_params, float_params):
        assert torch.equal(a, b)
        for key in tensors.state[a]:
            assert torch.equal(tensors.state[a][key], floats.state[b][key]), key
    assert tensors.d == floats.d and tensors.d > 1e-4 and tensors.factor == floats.factor
    assert [(e.step, e.kind) for e in tensors.events] == [(e.step, e.kind) for e in floats.events]


def test_scalar_operands_are_tensors_only_for_float32_and_float64_cpu_tensors() -> None:
    """float16/bfloat16 kernels compute with a float32 scalar, so a scalar of their own dtype would round it more:
    they keep the float; so does a scalar that is a tensor already. A float32 operand is the float rounded once."""
    operand = lrpilot.pilot._scalar_operand
    for dtype in (torch.float32, torch.float64):
        t = operand(0.9, torch.zeros(2, dtype=dtype))
        assert isinstance(t, torch.Tensor) and t.dim() == 0 and t.dtype == dtype
        assert t.item() == torch.tensor([0.9], dtype=dtype).item()
    for dtype in (torch.float16, torch.bfloat16):
        assert operand(0.9, torch.zeros(2, dtype=dtype)) == 0.9
    already = torch.tensor(0.5, dtype=torch.float64)
    assert operand(already, torch.zeros(2)) is already


def test_a_float_scalar_beyond_the_dtypes_range_is_cast_to_inf_as_the_tensor_form_is_not_an_error():
    """The float form of the scalars (CPU) casts like the tensor form: a value beyond float32's range becomes +-inf
    (a foreach kernel would refuse the Python float), one in range and NaN pass unchanged; so a step whose s-weight
    ``d^2 / d0`` overflows float32 gives the same parameters as the tensor form, not an exception."""
    cast_ = lrpilot.pilot._cast
    assert cast_(1e39, torch.float32) == math.inf and cast_(-1e39, torch.float32) == -math.inf
    assert cast_(1e39, torch.float64) == 1e39 and cast_(3.0, torch.float32) == 3.0
    assert math.isnan(cast_(math.nan, torch.float32))
    assert torch.equal(cast_(torch.tensor(1e39, dtype=torch.float64), torch.float32), torch.tensor(math.inf))

    def run() -> torch.Tensor:
        p = torch.nn.Parameter(torch.ones(3))
        opt = Pilot([p], lr=1e-30)
        opt._scalars["d"].fill_(1e5)  # (d / d0) d = 1e40: beyond float32
        p.grad = torch.full((3,), 0.5)
        opt.step()
        return p.detach().clone()
    floats = run()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lrpilot.pilot, "_host_scalars", lambda d: False)
        tensors = run()
    torch.testing.assert_close(floats, tensors, equal_nan=True)


def first_update(opt_factory, g: torch.Tensor) -> torch.Tensor:
    p = torch.nn.Parameter(torch.ones_like(g))
    opt = opt_factory([p])
    p.grad = g.clone()
    opt.step()
    return (p.detach() - 1.0)


def test_bias_correction_makes_the_first_step_adams_and_without_it_the_first_step_is_larger_by_the_missing_factor():
    """With ``bias_correction=True`` (no warmup, lr fixed by the guess on step 1) Pilot's first update equals
    torch AdamW's at the same LR; without it (Prodigy's default) it is ``(1 - beta1) / sqrt(1 - beta2)`` = 3.16
    times larger, the factor Adam's correction removes."""
    g = torch.tensor([0.3, -2.0, 0.05])  # gradients far above eps, which the two place differently
    kw = {"total_steps": 1000, "warmup": 0.0, "weight_decay": 0.0, "lr": 1e-3}
    adam = first_update(lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.0), g)
    corrected = first_update(lambda ps: Pilot(ps, bias_correction=True, **kw), g)
    plain = first_update(lambda ps: Pilot(ps, **kw), g)
    torch.testing.assert_close(corrected, adam, rtol=1e-5, atol=3e-7)  # float32 rounding of p = 1 - u
    torch.testing.assert_close(plain, adam * (0.1 / math.sqrt(0.001)), rtol=1e-5, atol=3e-7)


@pytest.mark.parametrize("total_steps", [60, None], ids=["budget", "anytime"])
def test_bias_correction_gives_the_same_run_in_float_and_tensor_form_and_resumes_bitwise(
        monkeypatch: pytest.MonkeyPatch, total_steps) -> None:
    """With ``bias_correction=True`` the CPU float form and the tensor form (GPU, compile: the step number is a
    0-dim tensor) give the same run; a state_dict round trip at step 25 into a fresh Pilot continues bitwise in
    both forms (the step number is derived from the restored step count)."""
    def run(k_resume: int | None):
        model = make_model()
        opt = Pilot(model.parameters(), total_steps=total_steps, bias_correction=True)
        if k_resume is None:
            drive(opt, model, 0, 60)
            return model, opt
        drive(opt, model, 0, k_resume)
        ckpt = round_trip({"model": model.state_dict(), "opt": opt.state_dict()})
        fresh_model = make_model()
        fresh_model.load_state_dict(ckpt["model"])
        fresh = Pilot(fresh_model.parameters(), total_steps=total_steps, bias_correction=True)
        fresh.load_state_dict(ckpt["opt"])
        drive(fresh, fresh_model, k_resume, 60)
        return fresh_model, fresh
    full_model, full = run(None)
    resumed_model, resumed = run(25)
    assert_bitwise(params_of(resumed_model), params_of(full_model))
    assert resumed.d == full.d
    monkeypatch.setattr(lrpilot.pilot, "_host_scalars", lambda d: False)
    tensor_model, tensor_opt = run(None)
    tensor_resumed_model, _ = run(25)  # the tensor step number is restored from the step count too
    assert_bitwise(params_of(tensor_resumed_model), params_of(tensor_model))
    for a, b in zip(params_of(tensor_model), params_of(full_model)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert tensor_opt.d == pytest.approx(full.d, rel=1e-5)
    plain_model = make_model()
    plain = Pilot(plain_model.parameters(), total_steps=total_steps)
    drive(plain, plain_model, 0, 60)
    assert not torch.allclose(params_of(plain_model)[0], params_of(full_model)[0])  # the option does act


def test_the_default_path_on_cpu_is_the_foreach_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """``foreach=None`` on CPU takes the foreach path (torch's own optimizers do not there; for Pilot it measured
    faster); ``foreach=False`` the per-tensor loop."""
    import lrpilot.pilot as pilot_module

    called: list[str] = []
    for name in ("_multi_tensor_pilot", "_single_tensor_pilot"):
        real = getattr(pilot_module, name)
        monkeypatch.setattr(pilot_module, name,
                            lambda *a, _real=real, _name=name, **k: called.append(_name) or _real(*a, **k))
    for foreach, expected in ((None, "_multi_tensor_pilot"), (False, "_single_tensor_pilot")):
        called.clear()
        w = torch.nn.Parameter(torch.ones(3))
        opt = Pilot([w], foreach=foreach)
        w.grad = torch.ones(3)
        opt.step()
        assert called == [expected]


def test_foreach_updates_a_float64_parameter_in_float64_when_a_float32_one_comes_first_in_its_group():
    """A group holding a float32 and a float64 parameter: the float64 one must be stepped in float64 by both paths.
    The float32 parameter gets zero gradients (contributing exactly 0 to every sum), so any difference comes from
    how the float64 parameter itself is updated; with the float64 parameter listed first the paths agree bitwise."""
    def run(foreach: bool, float32_first: bool):
        g = torch.Generator().manual_seed(0)
        a = torch.nn.Parameter(torch.zeros(6))
        b = torch.nn.Parameter(torch.randn(6, generator=g, dtype=torch.float64))
        opt = Pilot([a, b] if float32_first else [b, a], foreach=foreach, lr=1e-3)
        for _ in range(30):
            a.grad = torch.zeros(6)
            b.grad = b.detach() + 0.1 * torch.randn(6, generator=g, dtype=torch.float64)
            opt.step()
        return b.detach().clone(), opt.d

    for float32_first in (False, True):
        fused, d_fused = run(True, float32_first)
        loop, d_loop = run(False, float32_first)
        gap = (fused - loop).abs().max().item()
        torch.testing.assert_close(fused, loop, rtol=1e-12, atol=1e-14,
                                   msg=f"float32 parameter first: {float32_first}; foreach and for-loop differ by "
                                       f"{gap:.3g} on the float64 parameter")
        assert d_fused == pytest.approx(d_loop, rel=1e-12)


# ------------------------------------------------------------------------------------------------ the estimate d
LR_GUESSES = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4]


def regression_estimate(lr: float, steps: int = 100) -> float:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = torch.tanh(x @ torch.randn(8, 1, generator=g)) + 0.05 * torch.randn(256, 1, generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    # far from the cooldown and no warmup: f = 1 throughout
    opt = Pilot(model.parameters(), lr=lr, total_steps=10_000, warmup=0.0)
    history = [opt.d]
    fit_full_batch(model, opt, x, y, steps, after_step=lambda: history.append(opt.d))
    assert history[0] == lr
    assert all(b >= a for a, b in pairwise(history)), "d only grows"
    return history[-1]


def test_the_estimate_grows_from_a_tiny_start_to_the_same_scale_whatever_the_guess():
    """Guesses lr = 1e-8 .. 1e-4 (four decades) on the MLP regression: after 100 full-batch steps every estimate has
    grown at least 100-fold past its guess and all lie within a factor 2 of each other. Measured: 0.0473 .. 0.0494
    (max/min 1.045) at 100, 150 and 200 steps -- the estimate is found within ~20 steps and stays. Budget mode with
    a far budget keeps f = 1, so what is compared is the estimate alone."""
    estimates = [regression_estimate(lr) for lr in LR_GUESSES]
    for lr, d in zip(LR_GUESSES, estimates):
        assert d >= 100 * lr, (lr, d)
    assert max(estimates) / min(estimates) < 2.0, estimates


def test_the_estimate_only_grows_while_the_factor_is_one():
    """d never decreases; in anytime mode it is frozen from the first drop on, in budget mode from the cooldown on
    (the scale is estimated at the full LR only)."""
    model = make_model()
    opt = Pilot(model.parameters(), hold=2.0)
    history = []
    for t in range(700):
        drive(opt, model, t, t + 1)
        history.append((opt.d, opt.drops))
    assert all(b[0] >= a[0] for a, b in pairwise(history))
    after_drop = [d for d, drops in history if drops > 0]
    assert after_drop, "the scenario needs a drop"
    assert len(set(after_drop)) == 1

    model = make_model()
    opt = Pilot(model.parameters(), total_steps=60)  # cooldown from step 48
    seen = []
    for t in range(60):
        drive(opt, model, t, t + 1)
        seen.append(opt.d)
    assert len(set(seen[48:])) == 1


# ------------------------------------------------------------------------------------------------ budget mode
def applied_lrs(opt: Pilot, p: torch.nn.Parameter, steps: int, weight_decay: float) -> list[tuple[float, float]]:
    """(effective_lr() read before the step, the LR the step applied) for ``steps`` steps with zero gradients: the
    only change is the decoupled weight decay ``p <- p (1 - lr wd)``, so the applied LR is ``(1 - p'/p) / wd``."""
    out = []
    for _ in range(steps):
        announced = opt.effective_lr()[0].mean
        before = p.detach().clone()
        p.grad = torch.zeros_like(p)
        opt.step()
        out.append((announced, float((1 - p.detach() / before).mean()) / weight_decay))
    return out


def test_budget_mode_warms_up_over_10_percent_then_holds_one_then_decays_linearly_to_zero_over_the_last_20_percent():
    """total_steps=100: f = (t + 1) / 10 over the first 10 steps, 1 until step 80, then on the line from 1 at step 80
    to 0 at step 100 (the LR the weight decay applies, measured with zero gradients so that d stays at its start
    0.1); the 'cooldown' event is at step 80, once."""
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = Pilot([p], total_steps=100, lr=0.1, weight_decay=0.5)
    factors = [applied / 0.1 for _, applied in applied_lrs(opt, p, 100, 0.5)]
    assert opt.d == 0.1
    for t, f in enumerate(factors):
        assert f == pytest.approx(min(1.0, (t + 1) / 10, (100 - t) / 20), rel=1e-9, abs=1e-12), t
    assert [e.step for e in opt.events if e.kind == "cooldown"] == [80]


def test_budget_mode_without_warmup_keeps_the_factor_at_one_then_decays_linearly_to_zero_over_the_last_20_percent():
    """total_steps=50, warmup=0: f = 1 for the first 40 steps, then on the line from 1 at step 40 to 0 at step 50;
    the 'cooldown' event is at step 40, once."""
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = Pilot([p], total_steps=50, lr=0.1, weight_decay=0.5, warmup=0.0)
    factors = [applied / 0.1 for _, applied in applied_lrs(opt, p, 50, 0.5)]
    assert opt.d == 0.1
    for t, f in enumerate(factors):
        assert f == pytest.approx(min(1.0, (50 - t) / 10), rel=1e-9, abs=1e-12), t
    cooldowns = [e for e in opt.events if e.kind == "cooldown"]
    assert [e.step for e in cooldowns] == [40]


def test_budget_mode_cooldown_fraction_and_the_factor_attribute():
    """cooldown=0.5 over 20 steps, no warmup: f = 1 for 10 steps, then linear; ``opt.factor`` read after a step is
    the factor the next step applies (1 at construction), and reaches 0 at the budget."""
    model = make_model()
    opt = Pilot(model.parameters(), total_steps=20, cooldown=0.5, warmup=0.0)
    factors = [opt.factor]
    for t in range(20):
        drive(opt, model, t, t + 1)
        factors.append(opt.factor)
    assert factors[:11] == [1.0] * 11
    assert factors[11:] == pytest.approx([(20 - t) / 10 for t in range(11, 21)])
    assert [e.step for e in opt.events if e.kind == "cooldown"] == [10]


def test_effective_lr_read_before_a_step_is_the_lr_that_step_applies():
    """effective_lr() promises 'the LR applied at the next step': read before each of 20 steps of a budget with
    its cooldown (total_steps=20, zero gradients, only the weight decay acts), it equals the LR that step applied --
    in the cooldown as before it."""
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = Pilot([p], total_steps=20, lr=0.1, weight_decay=0.5)
    for t, (announced, applied) in enumerate(applied_lrs(opt, p, 20, 0.5)):
        assert announced == pytest.approx(applied, rel=1e-9, abs=1e-12), f"step {t}: announced {announced}, " \
                                                                          f"applied {applied}"


def test_stepping_past_total_steps_warns_once_and_applies_lr_zero():
    model = make_model()
    opt = Pilot(model.parameters(), total_steps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drive(opt, model, 0, 10)
    at_budget = params_of(model)
    with pytest.warns(UserWarning, match=r"past total_steps=10") as record:
        drive(opt, model, 10, 13)
    assert len([w for w in record if "past total_steps" in str(w.message)]) == 1
    assert_bitwise(params_of(model), at_budget)  # LR 0: the parameters no longer move
    assert opt.factor == 0.0 and opt.effective_lr()[0].mean == 0.0


# ------------------------------------------------------------------------------------------------ anytime mode
def anytime_run(steps: int = 1500, **kw) -> tuple[Pilot, list[tuple[float, float]]]:
    model = make_model()
    opt = Pilot(model.parameters(), **kw)
    trace = []
    for t in range(steps):
        drive(opt, model, t, t + 1)
        trace.append((opt.d, opt.factor))
    return opt, trace


@pytest.mark.parametrize("hold", [2.0, 3.0])
def test_anytime_mode_drops_by_drop_factor_after_settling_each_phase_held_hold_times_as_long(hold):
    """1500 steps of the noisy loss: the estimate settles, then the LR drops at least twice (measured: 2-3 drops).
    Each drop is a 'drop' event; after it the factor is drop_factor ** drops; no drop comes before the 'settled'
    event; the first drop waits until hold x the settled step, each later one until hold x the previous drop."""
    opt, trace = anytime_run(hold=hold, drop_factor=0.3)
    kinds = [e.kind for e in opt.events]
    assert set(kinds) <= {"scale", "settled", "drop"}
    settled = [e.step for e in opt.events if e.kind == "settled"]
    drops = [e.step for e in opt.events if e.kind == "drop"]
    assert len(settled) == 1, "the estimate settles once"
    assert len(drops) >= 2, f"the scenario needs drops: {events(opt)}"
    assert opt.drops == len(drops)
    assert opt.factor == pytest.approx(0.3 ** opt.drops, rel=1e-12)
    assert min(drops) > settled[0]
    reference = settled[0]
    for step in drops:
        assert step >= hold * reference, (step, reference)
        reference = step
    for step in drops:  # the factor changes at the drop's step, by drop_factor
        before, after = trace[step - 2][1], trace[step - 1][1]
        assert after == pytest.approx(before * 0.3, rel=1e-12)
    metrics = opt.metrics()
    assert metrics["pilot/drops"] == opt.drops and metrics["pilot/factor"] == opt.factor
    assert metrics["pilot/d"] == opt.d and math.isfinite(metrics["pilot/alignment"])
    assert metrics["pilot/skipped"] == opt.skipped == 0


def test_anytime_mode_settles_only_once_the_estimate_has_stopped_growing():
    """'settled' means the scale is found: the estimate at the 'settled' event is within 5% of the largest
    estimate of the run, which the first drop then freezes."""
    opt, trace = anytime_run(steps=600, hold=2.0)
    (settled,) = [e for e in opt.events if e.kind == "settled"]
    largest = max(d for d, _ in trace)
    assert settled.value == trace[settled.step - 1][0]
    assert settled.value >= largest / 1.05, (settled.step, settled.value, largest)


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "for-loop"])
def test_anytime_mode_reads_the_alignment_at_every_kth_step_as_the_window_mean_of_cos_g_and_the_previous_direction(
        monkeypatch: pytest.MonkeyPatch, every, foreach):
    """With ``alignment_every=k`` only the steps ``t`` with ``t % k == 0`` read the alignment (the reads are called
    with ``measure=True`` there and ``False`` elsewhere), and each window's alignment (``metrics()``) is the mean over
    those of its steps that have a previous direction of ``cos(g_t, m / (sqrt(v) + d eps))``, computed by hand from
    the gradient and the state before step ``t``."""
    flags: list[bool] = []
    kernel = lrpilot.pilot._multi_tensor_reads if foreach else lrpilot.pilot._single_tensor_reads

    def spy(*args, measure, **kwargs):
        flags.append(measure)
        return kernel(*args, measure=measure, **kwargs)
    monkeypatch.setattr(lrpilot.pilot, "_multi_tensor_reads" if foreach else "_single_tensor_reads", spy)
    model = make_model()
    opt = Pilot(model.parameters(), alignment_every=every, foreach=foreach)
    pending: list[float] = []
    windows = 0
    for t in range(400):
        opt.zero_grad()
        noisy_loss(model, t).backward()
        if t % every == 0 and t > 0:  # by hand: the previous direction from the state before this step
            params = list(model.parameters())
            g = torch.cat([p.grad.reshape(-1) for p in params]).double()
            m = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for p in params]).double()
            v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in params]).double()
            u = m / (v.sqrt() + opt.d * 1e-8)
            pending.append(float(g @ u / (g.norm() * u.norm())))
        window_ends_here = opt.steps + 1 >= opt._next_measure
        opt.step()
        if window_ends_here and pending:
            assert opt.metrics()["pilot/alignment"] == pytest.approx(sum(pending) / len(pending), rel=1e-4,
                                                                    abs=1e-6), t
            pending, windows = [], windows + 1
    assert flags == [t % every == 0 for t in range(400)]
    assert windows >= 30


@pytest.mark.parametrize("form", ["host floats", "tensors"])
@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "for-loop"])
def test_an_alignment_sample_whose_squared_gradient_norm_underflowed_is_not_counted(form, foreach, monkeypatch):
    """Near zero loss a float32 gradient of ~1e-24 squares to 0 in the sums while <g, u> does not, and the
    'cosine' came out ~1e22 (at 100k steps, 1e280): such a sample is not counted. In the first steps every step
    ends a window, so the test sees each step's cosine: after 3 normal steps it holds 2 (the first step has no
    previous direction), the underflowed step adds none, the normal step after it adds one, and all lie in
    [-1, 1]."""
    if form == "tensors":
        monkeypatch.setattr(lrpilot.pilot, "_host_scalars", lambda d: False)
    p = torch.nn.Parameter(torch.zeros(4))
    opt = Pilot([p], alignment_every=1, foreach=foreach)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # a previous direction u
        p.grad = torch.randn(4, generator=g)
        opt.step()
    assert len(opt.test.values) == 2
    p.grad = torch.full((4,), 1e-24)  # its square, 1e-48, is 0 in float32; <g, u> is about 1e-24
    assert float(p.grad @ p.grad) == 0.0 and float(p.grad @ opt.state[p]["exp_avg"]) != 0.0
    opt.step()
    assert len(opt.test.values) == 2
    p.grad = torch.randn(4, generator=g)
    opt.step()
    assert len(opt.test.values) == 3 and all(-1.0 <= v <= 1.0 for v in opt.test.values)


# ------------------------------------------------------------------------------------------------ skipped steps
def poisoned_run(bad_at: int | None, value: float, total_steps: int | None = None, steps: int = 80):
    model = make_model()
    opt = Pilot(model.parameters(), total_steps=total_steps)
    snapshots = {}
    t = 0
    for i in range(steps + (bad_at is not None)):
        opt.zero_grad()
        if i == bad_at:
            noisy_loss(model, t).backward()
            model.weight.grad[1, 2] = value
            snapshots["before"] = (copy.deepcopy(opt.state_dict()), params_of(model))
            opt.step()
            snapshots["after"] = (copy.deepcopy(opt.state_dict()), params_of(model))
            continue
        noisy_loss(model, t).backward()
        opt.step()
        t += 1
    return opt, model, snapshots


@pytest.mark.parametrize("total_steps", [None, 81], ids=["anytime", "budget"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("bad_at", [0, 43, 61], ids=["first-step", "would-end-a-window", "mid-window"])
def test_a_non_finite_gradient_skips_the_step_moving_only_the_budget_clock(bad_at, value, total_steps):
    """A step whose gradient holds NaN/inf (one element) leaves the parameters and every state tensor unchanged,
    and the controller state in state_dict()['pilot'] too, but for one added 'skip' event and the count of skipped
    steps (and, with a budget, the schedule factor, which moves on with the clock: see the next test); d stays
    finite and positive. Without a budget the finite steps that follow continue exactly (bitwise) like a run that
    never saw the bad step. (Window ends at step counts 42, 44 and 60, 63: the bad step at 43 would have ended a
    window, the one at 61 falls inside one.)"""
    assert {42, 44, 60, 63} <= window_ends(63) and not {61, 62} & window_ends(63)
    opt, model, snaps = poisoned_run(bad_at, value, total_steps)
    (state_before, params_before), (state_after, params_after) = snaps["before"], snaps["after"]
    assert_bitwise(params_after, params_before)
    pilot_before, pilot_after = dict(state_before.pop("pilot")), dict(state_after.pop("pilot"))
    events_before, events_after = pilot_before.pop("events"), pilot_after.pop("events")
    assert events_after[:len(events_before)] == events_before
    added = events_after[len(events_before):]
    assert [e["kind"] for e in added] == ["skip"] and added[0]["step"] == bad_at
    assert (pilot_before.pop("skipped"), pilot_after.pop("skipped")) == (0, 1)
    if total_steps is not None:  # the factor of the next call: the schedule at the clock, one further on
        factor_before = pilot_before["scalars"].pop("factor")
        factor_after = pilot_after["scalars"].pop("factor")
        assert float(factor_before) == opt._schedule_value(bad_at)
        assert float(factor_after) == opt._schedule_value(bad_at + 1)
    assert_same_state(pilot_after, pilot_before)
    if bad_at > 0:  # at the first step there is no state yet to compare
        assert_same_state(state_after, state_before)
    assert math.isfinite(opt.d) and opt.d > 0 and opt.skipped == 1 and opt.steps == 80
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if total_steps is None:
        clean_opt, clean_model, _ = poisoned_run(None, value, total_steps)
        assert_bitwise(params_of(model), params_of(clean_model))
        assert opt.d == clean_opt.d
        assert [e for e in opt.events if e.kind != "skip"] == clean_opt.events


@pytest.mark.parametrize("skip_at", [[0, 3], [30], [55, 58], [59]], ids=["warmup", "stable", "cooldown", "last"])
def test_with_a_budget_a_skipped_step_still_counts_so_the_cooldown_ends_at_zero_on_the_last_step(skip_at):
    """The budget counts the loop's steps, skipped ones included: over total_steps=60 calls of which some are
    skipped (non-finite gradient), each call applies the factor of its position in the budget -- the same
    factors, call for call, as a run without skips, and the estimate freezes at the same call -- the cooldown
    event falls where it would, the factor is 0
    after the 60th call, and no past-budget warning fires. The skipped calls move no parameter."""
    total = 60
    model, clean_model = make_model(), make_model()
    opt, clean = Pilot(model.parameters(), total_steps=total), Pilot(clean_model.parameters(), total_steps=total)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the past-budget warning would raise
        for t in range(total):
            assert opt.factor == clean.factor, t
            assert opt.factor_is_one == clean.factor_is_one, t  # the estimate freezes at the cooldown's first call
            assert float(opt._scalars["estimating"]) == float(clean._scalars["estimating"]), t
            for m, o in ((model, opt), (clean_model, clean)):
                o.zero_grad()
                noisy_loss(m, t).backward()
            if t in skip_at:
                model.weight.grad[0, 0] = float("nan")
                before = params_of(model)
                opt.step()
                assert_bitwise(params_of(model), before)
            else:
                opt.step()
            clean.step()
    assert opt.factor == clean.factor == 0.0
    assert (opt.steps, opt.skipped) == (total - len(skip_at), len(skip_at))
    assert [e.step for e in opt.events if e.kind == "skip"] == [t - i for i, t in enumerate(skip_at)]
    cooldown = [e.step for e in opt.events if e.kind == "cooldown"]
    assert cooldown == [e.step for e in clean.events if e.kind == "cooldown"] == [48]
    resumed = Pilot(make_model().parameters(), total_steps=total)
    resumed.load_state_dict(round_trip(opt.state_dict()))
    assert (resumed.steps, resumed.skipped, resumed.factor) == (opt.steps, opt.skipped, 0.0)


def _amp_step(scaler: torch.amp.GradScaler, opt: Pilot, model: torch.nn.Module, loss: torch.Tensor,
              unscale_first: bool, overflow: bool = False) -> None:
    """One iteration of torch's AMP recipe; with ``unscale_first`` the gradient-clipping variant
    (``scaler.unscale_(opt)``, clip, ``scaler.step``)."""
    scaler.scale(loss).backward()
    if overflow:  # an overflow in the scaled backward pass
        next(model.parameters()).grad[0, 0] = float("inf")
    if unscale_first:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)
    scaler.update()


@pytest.mark.parametrize("unscale_in_step", [True, False], ids=["unscale-in-step", "scaler-unscales"])
@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaler-step", "unscale-clip-step"])
@pytest.mark.parametrize("total_steps", [None, 60], ids=["anytime", "budget"])
def test_under_a_grad_scaler_pilot_takes_the_unscaled_run_and_counts_an_overflowing_step(total_steps,
                                                                                         unscale_first,
                                                                                         unscale_in_step):
    """The AMP loops of torch's docs (``scaler.step(opt)``, and ``scaler.unscale_(opt)`` + clipping before it):
    with a power-of-2 scale that does not overflow, Pilot steps the exact gradients, so the run is bitwise the one
    without a scaler (clipped alike), whether Pilot unscales them in its step (the default) or the scaler does.
    By default the scaler calls Pilot on an overflowing step too: Pilot skips it -- parameters and moments
    unchanged, a 'skip' event naming the scaler, the step counted as skipped -- so with a budget of 60 the
    factor is 0 after the 60th iteration. With ``unscale_in_step=False`` the scaler skips the call: nothing of
    Pilot changes, and the budget misses that step (the factor ends at 1/12, one step of the 12-step cooldown
    short). Either way the scale is halved and the run goes on."""
    scaled_model, plain_model = make_model(), make_model()
    scaled = Pilot(scaled_model.parameters(), total_steps=total_steps, unscale_in_step=unscale_in_step)
    plain = Pilot(plain_model.parameters(), total_steps=total_steps)
    assert scaled._step_supports_amp_scaling is unscale_in_step  # the flag GradScaler.step reads
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    for t in range(60):
        for model, opt in ((scaled_model, scaled), (plain_model, plain)):
            opt.zero_grad()
            loss = noisy_loss(model, t)
            if opt is plain:
                loss.backward()
                if unscale_first:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                continue
            if t == 30:
                before, params_before = copy.deepcopy(opt.state_dict()), params_of(model)
                events_before = len(opt.events)
            _amp_step(scaler, opt, model, loss, unscale_first, overflow=t == 30)
            if t == 30:
                after = opt.state_dict()
                assert_same_state(after["state"], before["state"], "state")
                assert_bitwise(params_of(model), params_before)
                assert scaler.get_scale() == 2.0 ** 11
                if unscale_in_step:
                    assert opt.events[-1].kind == "skip" and "GradScaler" in opt.events[-1].why
                    assert after["pilot"]["skipped"] == 1
                else:
                    assert_same_state(after, before)
                    assert len(opt.events) == events_before
        if t == 29:
            assert_bitwise(params_of(scaled_model), params_of(plain_model))
            assert scaled.d == plain.d and scaled.steps == plain.steps == 30
    assert (scaled.steps, scaled.skipped) == (59, int(unscale_in_step)) and (plain.steps, plain.skipped) == (60, 0)
    if total_steps is not None:
        assert plain.factor == 0.0 and scaled.factor == (0.0 if unscale_in_step else 1 / 12)


# ------------------------------------------------------------------------------------------------ LR schedulers
SCHEDULERS = {
    "LinearLR": lambda opt: torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=20),
    "LambdaLR": lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.9 ** t),
    "CosineAnnealingLR": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30),
}


@pytest.mark.parametrize("total_steps", [None, 40], ids=["anytime", "budget"])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_an_external_lr_scheduler_is_ignored_with_one_warning(name, total_steps):
    """A torch LR scheduler stepping alongside Pilot changes group['lr'] every step: Pilot warns once (naming the
    change) and its trajectory is bitwise the one without a scheduler (parameters, d, factor, events)."""
    plain_model = make_model()
    plain = Pilot(plain_model.parameters(), total_steps=total_steps)
    drive(plain, plain_model, 0, 40)
    model = make_model()
    opt = Pilot(model.parameters(), total_steps=total_steps)
    scheduler = SCHEDULERS[name](opt)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for t in range(40):
            drive(opt, model, t, t + 1)
            scheduler.step()
    assert len(pilot_warnings(record)) == 1, [str(w.message) for w in record]
    assert opt.param_groups[0]["lr"] != 1.0  # the scheduler did change the group's lr
    assert_bitwise(params_of(model), params_of(plain_model))
    assert (opt.d, opt.factor, opt.events) == (plain.d, plain.factor, plain.events)


def test_a_group_lr_set_at_construction_is_a_multiplier_and_no_change_warns_nothing():
    """Param-group lr at construction multiplies the decided LR (effective_lr = d x f x multiplier); a run
    that never touches group['lr'] raises no warning."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = Pilot([{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 0.5}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in range(5):
            opt.zero_grad()
            noisy_loss(model, t).backward()
            opt.step()
    first, second = opt.effective_lr()
    assert first.mean == first.min == first.max == pytest.approx(opt.d * opt.factor)
    assert second.mean == pytest.approx(0.5 * opt.d * opt.factor)


# ------------------------------------------------------------------------------------------------ state_dict
CASES = {
    # mode, steps of the whole run, where the checkpoint is taken
    "anytime-mid-window": (None, 700, mid_window(300)),
    "anytime-window-end": (None, 700, window_end(300)),
    "budget-mid-window": (400, 400, mid_window(150)),
    "budget-in-cooldown": (400, 400, mid_window(350)),
}


def full_run(total_steps, steps):
    model = make_model()
    opt = Pilot(model.parameters(), total_steps=total_steps, hold=2.0)
    drive(opt, model, 0, steps)
    return model, opt


@pytest.mark.parametrize("case", list(CASES))
def test_a_state_dict_round_trip_into_a_fresh_pilot_continues_bitwise(case):
    """Train k steps, save model and optimizer (through torch.save/torch.load(weights_only=True)), load both into a
    fresh model and a fresh Pilot, continue: parameters, state_dict and events end bitwise like the uninterrupted
    run -- at a window end and in the middle of a window (half a window of alignments accumulated), before a later
    drop in anytime mode and before or inside the cooldown in budget mode."""
    total_steps, steps, k = CASES[case]
    assert case.endswith("window-end") == (k in window_ends(k))
    full_model, full = full_run(total_steps, steps)
    if total_steps is None:
        assert any(e.kind == "drop" and e.step > k for e in full.events), "the scenario needs a drop after k"
    model = make_model()
    opt = Pilot(model.parameters(), total_steps=total_steps, hold=2.0)
    drive(opt, model, 0, k)
    ckpt = round_trip({"model": model.state_dict(), "opt": opt.state_dict()})
    fresh_model = make_model()
    fresh_model.load_state_dict(ckpt["model"])
    fresh = Pilot(fresh_model.parameters(), total_steps=total_steps, hold=2.0)
    fresh.load_state_dict(ckpt["opt"])
    drive(fresh, fresh_model, k, steps)
    assert_bitwise(params_of(fresh_model), params_of(full_model))
    assert fresh.events == full.events
    assert_same_state(fresh.state_dict(), full.state_dict())


CHILD = """
import sys, torch
torch.set_num_threads({threads})  # the parent's: reductions are not bitwise the same across thread counts
sys.path.insert(0, {tests!r})
from test_pilot import drive, make_model
from lrpilot import Pilot
for case, total_steps, steps in {cases!r}:
    ckpt = torch.load({out!r} + "/" + case + ".ckpt.pt", weights_only=True)
    model = make_model()
    model.load_state_dict(ckpt["model"])
    opt = Pilot(model.parameters(), total_steps=total_steps, hold=2.0)
    opt.load_state_dict(ckpt["opt"])
    drive(opt, model, ckpt["step"], steps)
    torch.save({{"params": [p.detach() for p in model.parameters()], "events": [(e.step, e.kind, e.value)
                for e in opt.events], "d": opt.d, "factor": opt.factor}}, {out!r} + "/" + case + ".resumed.pt")
"""
NEW_PROCESS_CASES = ["anytime-mid-window", "budget-mid-window"]


def test_a_checkpoint_resumed_in_a_new_process_is_bitwise_the_uninterrupted_run(tmp_path):
    """torch.save of model and Pilot state k steps in (mid-window; anytime mode before a drop, budget mode before
    the cooldown), a new Python process (torch threads pinned to this process's count) loads them into a fresh
    model and Pilot and finishes the run: bitwise the parameters, d, factor and events of the uninterrupted run
    here."""
    runs = {}
    for case in NEW_PROCESS_CASES:
        total_steps, steps, k = CASES[case]
        model = make_model()
        opt = Pilot(model.parameters(), total_steps=total_steps, hold=2.0)
        drive(opt, model, 0, k)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": k}, tmp_path / f"{case}.ckpt.pt")
        runs[case] = (model, opt)
    cases = [(case, CASES[case][0], CASES[case][1]) for case in NEW_PROCESS_CASES]
    child = CHILD.format(threads=torch.get_num_threads(), tests=str(Path(__file__).parent), cases=cases,
                         out=str(tmp_path))
    subprocess.run([sys.executable, "-c", child], check=True, timeout=120)
    for case in NEW_PROCESS_CASES:
        model, opt = runs[case]
        total_steps, steps, k = CASES[case]
        drive(opt, model, k, steps)  # the uninterrupted run
        resumed = torch.load(tmp_path / f"{case}.resumed.pt", weights_only=True)
        assert_bitwise(resumed["params"], params_of(model))
        assert resumed["events"] == events(opt), case
        assert (resumed["d"], resumed["factor"]) == (opt.d, opt.factor), case


def test_another_optimizers_state_dict_is_refused_naming_pilot_and_nothing_changes():
    """A torch.optim.AdamW state dict has no 'pilot' entry: ValueError naming it, before anything changes."""
    model = make_model()
    opt = Pilot(model.parameters())
    drive(opt, model, 0, 30)
    before = copy.deepcopy(opt.state_dict())
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.zero_grad()
    noisy_loss(model, 0).backward()
    adamw.step()
    with pytest.raises(ValueError, match="'pilot'"):
        opt.load_state_dict(adamw.state_dict())
    assert_same_state(opt.state_dict(), before)


def test_a_pilot_state_dict_of_another_layout_is_refused_and_nothing_changes():
    """A Pilot state dict with another number of param groups is refused (torch's ValueError) and leaves this
    optimizer exactly as it was: parameters' state, estimate, drop test, events."""
    source_model = make_model()
    source = Pilot(source_model.parameters(), hold=2.0)
    drive(source, source_model, 0, 400)
    model = make_model()
    opt = Pilot([{"params": [model.weight]}, {"params": [model.bias]}], hold=2.0)
    drive(opt, model, 0, 40, seed=3)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError):
        opt.load_state_dict(source.state_dict())
    assert_same_state(opt.state_dict(), before)


# ------------------------------------------------------------------------------------------------ arguments
BAD_ARGUMENTS = [
    ({"total_steps": 0}, "total_steps"), ({"total_steps": -1}, "total_steps"), ({"total_steps": 1.5}, "total_steps"),
    ({"lr": 0}, "lr"), ({"lr": -1}, "lr"), ({"lr": float("nan")}, "lr"),
    ({"weight_decay": -1}, "weight_decay"),
    ({"betas": (1.0, 0.9)}, "betas"), ({"betas": (0.9,)}, "betas"),
    ({"cooldown": 0}, "cooldown"), ({"cooldown": 1.5}, "cooldown"), ({"warmup": -0.1}, "warmup"),
    ({"warmup": 0.8}, "warmup"),
    ({"drop_factor": 0}, "drop_factor"), ({"drop_factor": 1}, "drop_factor"),
    ({"hold": 1}, "hold"), ({"window": 2}, "window"), ({"threshold": 0}, "threshold"), ({"eps": -1}, "eps"),
    ({"bias_correction": 1}, "bias_correction"), ({"alignment_every": 0}, "alignment_every"),
    ({"alignment_every": 1.5}, "alignment_every"), ({"unscale_in_step": 1}, "unscale_in_step"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD_ARGUMENTS, ids=[f"{next(iter(k))}={next(iter(k.values()))!r}"
                                                                  for k, _ in BAD_ARGUMENTS])
def test_a_bad_argument_is_refused_naming_it(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        Pilot([torch.nn.Parameter(torch.zeros(2))], **kwargs)


BAD_GROUPS = [
    ({"lr": -1.0}, "lr"), ({"lr": None}, "lr"), ({"weight_decay": -0.1}, "weight_decay"),
    ({"weight_decay": float("nan")}, "weight_decay"), ({"weight_decay": "0.1"}, "weight_decay"),
    ({"betas": (1.2, 0.9)}, "betas"), ({"betas": None}, "betas"), ({"betas": (0.9, float("inf"))}, "betas"),
    ({"eps": -1.0}, "eps"), ({"eps": None}, "eps"), ({"foreach": "yes"}, "foreach"),
]


@pytest.mark.parametrize(("bad", "name"), BAD_GROUPS, ids=[f"{next(iter(b))}={next(iter(b.values()))!r}"
                                                           for b, _ in BAD_GROUPS])
def test_a_param_group_with_a_bad_hyperparameter_is_refused_naming_it_and_the_optimizer_is_unchanged(bad, name):
    """A group's own ``lr``/``weight_decay``/``betas``/``eps``/``foreach`` is checked as the constructor's arguments
    are: refused at construction, and refused by ``add_param_group`` before the group joins (a NaN weight decay
    would otherwise make every parameter of the group NaN at the first step; a negative one grows them)."""
    with pytest.raises((ValueError, TypeError), match=name):
        Pilot([{"params": [torch.nn.Parameter(torch.zeros(2))], **bad}])
    model = make_model()
    opt = Pilot(model.parameters(), total_steps=20)
    drive(opt, model, 0, 3)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises((ValueError, TypeError), match=name):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], **bad})
    assert len(opt.param_groups) == 1
    assert_same_state(opt.state_dict(), before)
    drive(opt, model, 3, 5)  # and it still steps


@pytest.mark.parametrize("total_steps", [20, None])
def test_a_param_group_weight_decay_none_is_the_modes_default_as_for_the_constructor(total_steps):
    """``{"params": ..., "weight_decay": None}`` (e.g. a group list built for another optimizer's default) gets
    Pilot's default for the mode, 0.1 with a budget and 0 without, at construction and in ``add_param_group``;
    an explicit 0 is kept (the usual no-decay group of biases and norms)."""
    expected = 0.1 if total_steps else 0.0
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    opt = Pilot([{"params": [a], "weight_decay": None}, {"params": [b], "weight_decay": 0.0}],
                total_steps=total_steps)
    opt.add_param_group({"params": [c], "weight_decay": None})
    assert [g["weight_decay"] for g in opt.param_groups] == [expected, 0.0, expected]
    for p in (a, b, c):
        p.grad = torch.ones(2)
    opt.step()


HYPERPARAMETERS = ["total_steps", "lr", "weight_decay", "betas", "beta3", "eps", "warmup", "cooldown", "drop_factor",
                   "hold", "window", "threshold", "alignment_every", "bias_correction", "foreach",
                   "unscale_in_step"]


def test_the_signature_and_help_show_every_hyperparameter_as_a_keyword_with_its_default():
    """inspect.signature(Pilot): params, then every hyperparameter keyword-only with a default; help(Pilot) (pydoc's
    text) shows each as ``name: type = default`` and documents it under Args; a Pilot built with the defaults holds
    them."""
    signature = inspect.signature(Pilot)
    names = list(signature.parameters)
    assert names[0] == "params" and signature.parameters["params"].default is inspect.Parameter.empty
    assert set(names[1:]) == set(HYPERPARAMETERS)
    for name in HYPERPARAMETERS:
        parameter = signature.parameters[name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, name
        assert parameter.default is not inspect.Parameter.empty, name
    defaults = {name: signature.parameters[name].default for name in HYPERPARAMETERS}
    assert defaults["total_steps"] is None and defaults["lr"] == 1e-6 and defaults["cooldown"] == 0.2
    assert defaults["warmup"] == 0.1
    text = pydoc.render_doc(Pilot, renderer=pydoc.plaintext)
    for name in HYPERPARAMETERS:
        assert re.search(rf"\b{name}: [^=]*= {re.escape(repr(defaults[name]))}[,)]", text), name
        assert re.search(rf"^\s*\|?\s*{name}: ", text, flags=re.MULTILINE), f"{name} is not documented under Args"
    opt = Pilot([torch.nn.Parameter(torch.zeros(2))])
    assert (opt.total_steps, opt.d0, opt.cooldown, opt.drop_factor, opt.hold) == (
        defaults["total_steps"], defaults["lr"], defaults["cooldown"], defaults["drop_factor"], defaults["hold"])
    assert opt.d == defaults["lr"] and opt.test.window == defaults["window"]
    assert opt.test.threshold == defaults["threshold"] and opt.alignment_every == defaults["alignment_every"] == 4
    group = opt.param_groups[0]
    assert defaults["weight_decay"] is None and group["weight_decay"] == 0.0  # anytime mode's (next test)
    assert (tuple(group["betas"]), group["eps"], group["foreach"]) == (
        tuple(defaults["betas"]), defaults["eps"], defaults["foreach"])


@pytest.mark.parametrize("total_steps", [100, None], ids=["budget", "anytime"])
def test_weight_decay_none_is_0_1_with_a_budget_and_0_without_and_an_explicit_value_is_kept(total_steps):
    """``weight_decay=None`` (the default) gives every param group ``BUDGET_WEIGHT_DECAY`` = 0.1 with a budget and 0
    in anytime mode; an explicit value, 0 included, is kept in both modes, and a group's own value wins."""
    p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    expected = 0.1 if total_steps is not None else 0.0
    assert lrpilot.pilot.BUDGET_WEIGHT_DECAY == 0.1
    assert Pilot([p], total_steps=total_steps).param_groups[0]["weight_decay"] == expected
    for explicit in (0.0, 0.03):
        assert Pilot([p], total_steps=total_steps, weight_decay=explicit).param_groups[0]["weight_decay"] == explicit
    groups = Pilot([{"params": [p]}, {"params": [q], "weight_decay": 0.5}], total_steps=total_steps).param_groups
    assert [g["weight_decay"] for g in groups] == [expected, 0.5]


def test_pilot_event_is_a_frozen_record():
    event = PilotEvent(3, "drop", -0.1, "why")
    with pytest.raises(AttributeError):
        event.step = 4  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------ telemetry
def test_lrpilot_metrics_reports_the_lr_pilot_applies():
    """lrpilot.telemetry.lrpilot_metrics(opt): lr/group{i} (and min/max) = d x f x the group's multiplier, also after
    a drop; Pilot's own metrics() agree."""
    model = make_model()
    opt = Pilot([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.5}], hold=2.0)
    drive(opt, model, 0, 20)
    for t in range(20, 700):
        drive(opt, model, t, t + 1)
        if opt.drops:
            break
    assert opt.drops == 1, "the scenario needs a drop"
    metrics = lrpilot_metrics(opt)
    lr = opt.d * opt.factor
    assert metrics["lr/group0"] == pytest.approx(lr) and metrics["lr/group1"] == pytest.approx(0.5 * lr)
    assert metrics["lr_min/group0"] == metrics["lr_max/group0"] == metrics["lr/group0"]
    assert opt.factor == pytest.approx(0.3)
    own = opt.metrics()
    assert own["pilot/d"] * own["pilot/factor"] == pytest.approx(metrics["lr/group0"])


# ------------------------------------------------------------------------------------------------ torch.compile
def test_a_compiled_model_trains_with_pilot_like_the_eager_model():
    """torch.compile(model) (aot_eager: AOTAutograd's functionalised graph, no C++ compiler needed) trained by Pilot
    gives the eager run's parameters and estimate."""
    def run(compiled: bool):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        forward = torch.compile(model, backend="aot_eager") if compiled else model
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 8, generator=g)
        y = torch.sin(x.sum(1, keepdim=True))
        opt = Pilot(model.parameters())
        return fit_full_batch(forward, opt, x, y, 60), params_of(model), opt.d

    torch._dynamo.reset()
    losses, compiled, d = run(True)
    _, eager, d_eager = run(False)
    assert losses[-1] < losses[0] / 5
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert d == pytest.approx(d_eager, rel=1e-5)


def compiled_step_run(steps: int, total_steps: int | None, compiled: bool, bias_correction: bool = False):
    model = make_model()
    opt = Pilot(model.parameters(), total_steps=total_steps, foreach=True, bias_correction=bias_correction)
    step = torch.compile(opt.step, backend="eager") if compiled else opt.step
    for t in range(steps):
        opt.zero_grad()
        noisy_loss(model, t).backward()
        step()
    return params_of(model), opt


@pytest.mark.slow
@pytest.mark.parametrize("total_steps", [None, 24], ids=["anytime", "budget"])
def test_a_compiled_step_compiles_a_fixed_set_of_graphs_and_matches_eager(total_steps):
    """torch.compile(opt.step) (dynamo, eager backend; the step's host reads are graph breaks, accepted): the
    number of graphs after 24 steps is the number after the first two (the first creates the state) -- window ends,
    the estimate's growth and (budget) the cooldown from step 19 add no recompiles -- and the result equals the
    eager run. Measured: 11 graphs in anytime mode (steps that read the alignment and steps that do not; 8 when
    every step read it), 5 with a budget, at 2 as at 24 steps."""
    from torch._dynamo.utils import counters

    graphs = {}
    for steps in (2, 24):
        torch._dynamo.reset()
        counters.clear()
        compiled, opt = compiled_step_run(steps, total_steps, compiled=True)
        graphs[steps] = counters["stats"]["unique_graphs"]
    eager, eager_opt = compiled_step_run(24, total_steps, compiled=False)
    assert 1 <= graphs[2] == graphs[24], f"graphs per run length: {graphs}"
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert opt.d == pytest.approx(eager_opt.d, rel=1e-6)
    assert [(e.step, e.kind) for e in opt.events] == [(e.step, e.kind) for e in eager_opt.events]
    if total_steps is not None:
        assert opt.factor < 1
    torch._dynamo.reset()


def test_a_compiled_step_with_bias_correction_adds_no_recompile_per_step():
    """With ``bias_correction=True`` the step number enters the compiled step as a 0-dim tensor set host-side, so
    the graphs after 24 steps are those after 2 and the result equals the eager run (budget mode)."""
    from torch._dynamo.utils import counters

    graphs = {}
    for steps in (2, 24):
        torch._dynamo.reset()
        counters.clear()
        compiled, opt = compiled_step_run(steps, 24, compiled=True, bias_correction=True)
        graphs[steps] = counters["stats"]["unique_graphs"]
    eager, eager_opt = compiled_step_run(24, 24, compiled=False, bias_correction=True)
    assert 1 <= graphs[2] == graphs[24], f"graphs per run length: {graphs}"
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert opt.d == pytest.approx(eager_opt.d, rel=1e-6)


def test_the_kernels_are_the_module_functions_the_paths_name(monkeypatch):
    """foreach=True runs _multi_tensor_pilot, foreach=False _single_tensor_pilot (the comparison above compares the
    two implementations, not one twice)."""
    called = []
    for name in ("_multi_tensor_pilot", "_single_tensor_pilot"):
        original = getattr(lrpilot.pilot, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            called.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(lrpilot.pilot, name, spy)
    for foreach in (True, False):
        model = make_model()
        opt = Pilot(model.parameters(), foreach=foreach)
        drive(opt, model, 0, 1)
    assert called == ["_multi_tensor_pilot", "_single_tensor_pilot"]
