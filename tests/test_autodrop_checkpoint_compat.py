"""Specification: AutoDrop checkpoints written before the measurement / test / action split (the files in
tests/data, made by tests/data/make_autodrop_v1_checkpoints.py with that code) load into today's AutoDrop, which
then continues exactly as the code that wrote them did: same angles, saturations, drops, LRs and weights."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lrpilot import AutoDrop

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
from make_autodrop_v1_checkpoints import half_epoch, model_and_optimizer, train  # noqa: E402


@pytest.mark.parametrize("mode", ["trend", "code", "uai"])
def test_a_first_format_checkpoint_resumes_as_the_code_that_wrote_it(mode):
    checkpoint = torch.load(DATA / f"autodrop_v1_{mode}.pt", weights_only=False)
    assert "format" not in checkpoint["autodrop"], "the file must hold the first (flat) format"
    model, opt = model_and_optimizer()
    sched = AutoDrop(opt, mode, **checkpoint["options"])
    half_epoch(model, opt, seed=0)  # a different state first: everything must come from the checkpoint
    model.load_state_dict(checkpoint["model"])
    opt.load_state_dict(checkpoint["optimizer"])
    sched.load_state_dict(checkpoint["autodrop"])
    torch.set_num_threads(1)  # as when the file was written
    train(model, opt, sched, 12, seed=3)
    after = checkpoint["after"]
    assert sched.drop_epochs == after["drop_epochs"] and sched.saturation_epochs == after["saturation_epochs"]
    assert [e for e, _ in sched.omega_history] == [e for e, _ in after["omega_history"]]
    assert [o for _, o in sched.omega_history] == pytest.approx([o for _, o in after["omega_history"]], abs=1e-9)
    assert sched.get_last_lr() == pytest.approx(after["lrs"], rel=1e-12)
    for p, q in zip(model.parameters(), after["params"]):
        torch.testing.assert_close(p.detach(), q, rtol=1e-10, atol=1e-12)


def test_a_current_checkpoint_round_trips_through_the_parts():
    """state_dict() is the parts' state dicts; loading one restores each part in place (the objects stay)."""
    model, opt = model_and_optimizer()
    sched = AutoDrop(opt, threshold=10.0, rise_threshold=-10.0, window=6)
    train(model, opt, sched, 5, seed=1)
    state = sched.state_dict()
    assert {"meter", "test", "action"} <= set(state) and state["format"] == 2
    meter = sched.meter
    sched.load_state_dict(state)
    assert sched.meter is meter
    assert sched.state_dict()["test"] == state["test"] and sched.state_dict()["action"]["floors"] == \
        state["action"]["floors"]
