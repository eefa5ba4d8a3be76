"""Specification: the Active optimizers' step() works under torch.compile without recompiling every step."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from lrpilot import Active, ActiveAdaBelief, ActiveAdamW, ActiveRAdam, ActiveSGD

OPTIMIZERS = [
    (ActiveSGD, {"momentum": 0.9}),  # torch's SGD has no capturable flag; tensor lr works on the foreach path
    (ActiveAdamW, {"weight_decay": 0.0, "capturable": True}),
    (ActiveRAdam, {"capturable": True}),
    (ActiveAdaBelief, {"capturable": True}),
]


def train(make_optimizer, compiled, steps, lr_change_at=None):
    """``steps`` steps of a small MLP with the optimizer ``make_optimizer(params)`` (tensor LR 1e-2, 4 steps per
    epoch), its step compiled or eager; at step ``lr_change_at`` the tensor LR is changed in place, as a
    scheduler would. Returns the final parameters and the optimizer."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = make_optimizer(model.parameters())
    step = torch.compile(opt.step, backend="eager") if compiled else opt.step
    g = torch.Generator().manual_seed(1)
    for i in range(steps):
        loss = model(torch.randn(4, 6, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        step()
        if i == lr_change_at:  # a scheduler changing the tensor LR in place must not force a recompile
            for group in opt.param_groups:
                group["lr"].fill_(5e-3)
    return [p.detach().clone() for p in model.parameters()], opt


def run(cls, kwargs, compiled, steps=20):
    return train(lambda params: cls(params, lr=torch.tensor(1e-2), foreach=True, steps_per_epoch=4, **kwargs),
                 compiled, steps, lr_change_at=9)

@pytest.mark.parametrize("cls,kwargs", OPTIMIZERS, ids=lambda v: getattr(v, "__name__", ""))
def test_compiled_step_is_not_recompiled_per_step_and_matches_eager(cls, kwargs):
    """20 compiled steps across 5 epoch boundaries and an LR change compile at most 3 graphs (the first
    step, which creates the state, and the steady state), and give the eager run's parameters."""
    torch._dynamo.reset()
    counters.clear()
    compiled_params, opt = run(cls, kwargs, compiled=True)
    graphs = counters["stats"]["unique_graphs"]
    eager_params, eager_opt = run(cls, kwargs, compiled=False)
    assert 1 <= graphs <= 3, f"{graphs} graphs for 20 steps: recompiling per step"
    for a, b in zip(compiled_params, eager_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert opt.epoch == eager_opt.epoch == 5


def run_generic(inner_cls, kwargs, compiled, steps):
    return train(lambda params: Active(inner_cls(params, lr=torch.tensor(1e-2), foreach=True, **kwargs),
                                       steps_per_epoch=4), compiled, steps)

@pytest.mark.parametrize("inner_cls,kwargs", [(torch.optim.Adagrad, {}), (torch.optim.SGD, {"momentum": 0.9})],
                         ids=["Adagrad", "SGD"])
def test_compiled_generic_active_compiles_a_fixed_set_of_graphs(inner_cls, kwargs):
    """lrpilot.Active(any optimizer).step under torch.compile: the number of graphs stops growing once the
    first step, the steady state and the first epoch boundary have been seen (the same at 8 and 40 steps,
    2 and 10 epoch boundaries); the per-parameter step counters add no recompiles (at most 6 graph pieces,
    10 when they were traced), and the result equals the eager run."""
    counts = {}
    for steps in (8, 40):
        torch._dynamo.reset()
        counters.clear()
        compiled_params, opt = run_generic(inner_cls, kwargs, compiled=True, steps=steps)
        counts[steps] = counters["stats"]["unique_graphs"]
    eager_params, eager_opt = run_generic(inner_cls, kwargs, compiled=False, steps=40)
    assert counts[40] == counts[8] <= 6, f"graphs per run length: {counts}"
    for a, b in zip(compiled_params, eager_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert opt.epoch == eager_opt.epoch == 10
