"""Soak test: 10,000 steps with checkpoint/restore at random points (a fresh model, optimizer and scheduler
each time, state through torch.save bytes) end bitwise equal to an uninterrupted run, for AutoDrop on SGD and
for ActiveAdamW. About 35 s on 2 cores, so it runs where CI=true (as in `.ci/run`) or LRPILOT_SLOW=1."""

from __future__ import annotations

import io
import os
import random

import pytest
import torch

from lrpilot import ActiveAdamW, AutoDrop

STEPS, PER_EPOCH = 10_000, 50


def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    active_model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = AutoDrop(sgd, threshold=10.0, rise_threshold=-10.0, window=6, extra_epochs=1, weight_average=True)
    active = ActiveAdamW(active_model.parameters(), lr=1e-3, weight_decay=0.0, steps_per_epoch=PER_EPOCH,
                         max_multiplier=50.0)
    return model, active_model, sgd, sched, active


def save(objs):
    model, active_model, sgd, sched, active = objs
    buf = io.BytesIO()
    torch.save({"m": model.state_dict(), "am": active_model.state_dict(), "sgd": sgd.state_dict(),
                "sched": sched.state_dict(), "active": active.state_dict()}, buf)
    buf.seek(0)
    return buf


def restore(buf):
    objs = build()
    model, active_model, sgd, sched, active = objs
    state = torch.load(buf, weights_only=False)
    model.load_state_dict(state["m"])
    active_model.load_state_dict(state["am"])
    sgd.load_state_dict(state["sgd"])
    sched.load_state_dict(state["sched"])
    active.load_state_dict(state["active"])
    return objs


def run(restarts):
    objs = build()
    x_all = torch.randn(STEPS, 4, generator=torch.Generator().manual_seed(1))
    for step in range(STEPS):
        if step in restarts:
            objs = restore(save(objs))
        model, active_model, sgd, sched, active = objs
        x = x_all[step:step + 1]
        for m, opt in ((model, sgd), (active_model, active)):
            loss = (m(x) - x[:, :2].sin()).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if (step + 1) % PER_EPOCH == 0:
            sched.step()
    return objs


@pytest.mark.slow
@pytest.mark.skipif(not (os.environ.get("CI") == "true" or os.environ.get("LRPILOT_SLOW") == "1"),
                    reason="soak test: set LRPILOT_SLOW=1 (runs by default under CI=true)")
def test_ten_thousand_steps_with_random_restarts_match_an_uninterrupted_run():
    restarts = set(random.Random(0).sample(range(1, STEPS), 25))
    a, b = run(set()), run(restarts)
    assert a[3].drop_epochs == b[3].drop_epochs and len(a[3].drop_epochs) >= 2
    for m_a, m_b in ((a[0], b[0]), (a[1], b[1])):
        assert all(torch.equal(p, q) for p, q in zip(m_a.parameters(), m_b.parameters()))
    assert a[4].epoch == b[4].epoch == STEPS // PER_EPOCH
