"""Specification of Pilot's LR scale against the paper and the authors' code: Pilot *is* Prodigy's Adam (Mishchenko
& Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner", ICML 2024, arXiv:2306.06101, the Adam
version of the algorithm) with a schedule factor ``f_k`` of its own.

Two twins, both in float64 on a small MLP with cross-entropy (real, non-quadratic gradients, an estimate that grows
from ``1e-6`` by four decades in the first tens of steps):

* :class:`PaperProdigyAdam`, the paper's recursion written out tensor by tensor in the plainest torch, with the
  factor ``f_k`` and the freeze of ``d`` outside the full LR that Pilot adds (docs/pilot.md). Pilot's foreach and
  for-loop paths must follow it to float64 rounding over a whole budget-mode run (warmup, stable phase, cooldown)
  and over an anytime run.
* ``prodigyopt.Prodigy`` (the authors' package, 1.1; its ``prodigy_reference.py`` does the same), stepped with its
  ``lr`` set to Pilot's factor before each step (``safeguard_warmup=True`` under a budget, as Pilot weights ``s``
  without ``f``). It differs from the paper in one place: its denominator adds ``d_{k+1} eps`` (the estimate already
  updated in the same step), where the paper writes ``d_k eps``. Pilot follows the paper. With ``eps`` so small that
  the term is below float64 rounding the two implementations must agree to rounding, up to the first point where
  Pilot's schedule changes the estimate's rule (the start of the cooldown, or the first drop). With the default
  ``eps=1e-8`` the estimates of the two differ by a relative 3e-5 here (measured: 150 steps of this MLP, both
  modes).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from _scripts import loaded_script
from lrpilot import Pilot

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "prodigy_eps.py"


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this file runs on one torch thread (tests/conftest.py)."""


def make_mlp() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2)).double()


def batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` mini-batches of 32 from 256 fixed samples of a linearly separable 2-class problem."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 20, generator=g, dtype=torch.float64)
    y = (x[:, :5].sum(1) > 0).long()
    return [(x[i * 32 % 256:][:32], y[i * 32 % 256:][:32]) for i in range(steps)]


def backward(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    for p in model.parameters():
        p.grad = None
    torch.nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()


class PaperProdigyAdam:
    """The paper's Prodigy-Adam step, one tensor at a time (the ``(1 - beta3)`` weights of ``r`` and ``s`` dropped:
    they cancel in ``r / ||s||_1``, as in the authors' code), with Pilot's additions: a factor ``f`` on the step
    size ``eta = d f``, ``s`` weighted without ``f`` (``safeguard_warmup``), and ``d`` updated only while
    ``estimating``::

        r  <- beta3 r + (d / d0) eta <g, x0 - x>
        m  <- beta1 m + d (1 - beta1) g,        v <- beta2 v + d^2 (1 - beta2) g^2
        s  <- beta3 s + (d / d0) d g
        x  <- x - eta lambda x - eta m / (sqrt(v) + d eps)
        d  <- max(d, r / ||s||_1)               (the new d serves the next step)
    """

    def __init__(self, params: list[torch.Tensor], d0: float = 1e-6, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        self.params, self.d, self.d0, self.eps, self.weight_decay = params, d0, d0, eps, weight_decay
        self.beta1, self.beta2 = betas
        self.beta3 = math.sqrt(self.beta2)
        self.x0 = [p.detach().clone() for p in params]
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.s = [torch.zeros_like(p) for p in params]
        self.r = 0.0

    @torch.no_grad()
    def step(self, factor: float, estimating: bool) -> None:
        d, eta = self.d, self.d * factor
        self.r = self.beta3 * self.r + (d / self.d0) * eta * sum(
            float(torch.dot(p.grad.flatten(), (x0 - p).flatten())) for p, x0 in zip(self.params, self.x0))
        for p, m, v, s in zip(self.params, self.m, self.v, self.s):
            g = p.grad
            m.mul_(self.beta1).add_(d * (1 - self.beta1) * g)
            v.mul_(self.beta2).add_(d * d * (1 - self.beta2) * g * g)
            s.mul_(self.beta3).add_((d / self.d0) * d * g)
            p.sub_(eta * self.weight_decay * p + eta * m / (v.sqrt() + d * self.eps))
        s_norm = sum(float(s.abs().sum()) for s in self.s)
        if estimating and s_norm > 0:
            self.d = max(d, self.r / s_norm)


def max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("total_steps", [100, None])
def test_pilot_is_the_papers_prodigy_adam_with_its_own_factor_to_float64_rounding(total_steps, foreach):
    """A whole budget-mode run (warmup, stable, cooldown: ``d`` frozen from the cooldown on) and an anytime run:
    Pilot's parameters and ``d`` follow the paper's recursion written out by hand, step by step, to float64
    rounding, with the weight decay Pilot chooses (0.1 with a budget, 0 without)."""
    steps = 100 if total_steps else 150
    pilot_model, paper_model = make_mlp(), make_mlp()
    pilot = Pilot(pilot_model.parameters(), total_steps=total_steps, foreach=foreach)
    paper = PaperProdigyAdam(list(paper_model.parameters()), weight_decay=pilot.param_groups[0]["weight_decay"])
    for k, batch in enumerate(batches(steps)):
        factor, estimating = pilot.factor, pilot.factor_is_one
        backward(pilot_model, batch)
        backward(paper_model, batch)
        pilot.step()
        paper.step(factor, estimating)
        assert pilot.d == pytest.approx(paper.d, rel=1e-12, abs=0), k
        assert max_difference(pilot_model, paper_model) < 1e-12, k
    assert pilot.d > 1e3 * 1e-6  # the estimate grew: the recursion was exercised, not only its start
    if total_steps:
        assert pilot.factor == 0.0 and any(e.kind == "cooldown" for e in pilot.events)


def lockstep_with_prodigy(cls: type[torch.optim.Optimizer], total_steps: int | None,
                          eps: float = 1e-8) -> tuple[Pilot, float, float]:
    """Pilot and ``cls`` (prodigyopt's ``Prodigy`` or a variant of it, at its defaults: ``lr`` set to Pilot's factor
    before each step, ``safeguard_warmup`` and Pilot's weight decay under a budget) on the same batches, over the
    warmup and the stable phase with a budget of 100 (the cooldown starts at step 80), 150 steps without one. Returns
    Pilot and, over all steps, the largest relative difference of the two ``d`` and of the parameters."""
    steps = 80 if total_steps else 150
    pilot_model, other_model = make_mlp(), make_mlp()
    pilot = Pilot(pilot_model.parameters(), total_steps=total_steps, eps=eps)
    other = cls(other_model.parameters(), lr=1.0, eps=eps, weight_decay=pilot.param_groups[0]["weight_decay"],
                safeguard_warmup=total_steps is not None)
    worst_d = worst_params = 0.0
    for batch in batches(steps):
        other.param_groups[0]["lr"] = pilot.factor
        backward(pilot_model, batch)
        backward(other_model, batch)
        pilot.step()
        other.step()
        worst_d = max(worst_d, abs(pilot.d / float(other.param_groups[0]["d"]) - 1))
        worst_params = max(worst_params, max_difference(pilot_model, other_model))
    return pilot, worst_d, worst_params


@pytest.mark.parametrize("total_steps", [100, None])
def test_pilot_is_the_authors_prodigyopt_up_to_where_its_schedule_takes_over(total_steps):
    """``prodigyopt.Prodigy`` at its defaults and Pilot take the same run to float64 rounding, with ``eps`` so small
    that the one difference between the paper and that code (``d_{k+1} eps`` against ``d_k eps``) is below rounding:
    over the warmup and the stable phase with a budget, over 150 steps without drops in anytime mode."""
    prodigyopt = pytest.importorskip("prodigyopt")
    pilot, worst_d, worst_params = lockstep_with_prodigy(prodigyopt.Prodigy, total_steps, eps=1e-30)
    assert worst_d < 1e-12 and worst_params < 1e-10, (worst_d, worst_params)
    assert pilot.drops == 0 and pilot.d > 1e3 * 1e-6  # the estimate grew; no drop ended the comparison early


@pytest.mark.parametrize("total_steps", [100, None])
def test_with_the_papers_d_k_eps_the_authors_prodigyopt_is_pilot_at_the_default_eps(total_steps):
    """The one difference is the one named: ``prodigyopt.Prodigy`` with its denominator's ``d_{k+1} eps`` changed to
    the paper's ``d_k eps`` (``benchmarks/prodigy_eps.py``'s :func:`paper_eps_prodigy`, the form that script
    measures against the authors') takes Pilot's run to float64 rounding at the default ``eps=1e-8``, over the
    same steps as above; the unchanged prodigyopt does not."""
    prodigyopt = pytest.importorskip("prodigyopt")
    with loaded_script(SCRIPT) as script:
        paper_prodigy = script.paper_eps_prodigy()
    _, paper_d, paper_params = lockstep_with_prodigy(paper_prodigy, total_steps)
    assert paper_d < 1e-12 and paper_params < 1e-10, (paper_d, paper_params)
    _, authors_d, _ = lockstep_with_prodigy(prodigyopt.Prodigy, total_steps)
    assert authors_d > 1e-7, authors_d  # d_{k+1} eps is a measurable difference here
