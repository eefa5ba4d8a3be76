"""Specification of lrpilot under torch.distributed: 2 CPU processes, gloo backend.

* Sharded parameters (each rank holds a disjoint part of the vector, as with FSDP/ZeRO): the angular velocity
  from all-reduced sums equals the angle of the whole vector, on every rank.
* Plain DDP (replicated parameters, averaged gradients): AutoDrop takes identical decisions and ActiveAdamW
  keeps identical multipliers on every rank, although each rank sees different data.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.distributed as dist

from _gloo import run_on_ranks
from lrpilot import ActiveAdamW, AngularVelocity, AutoDrop

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()) or sys.platform != "linux",
    reason="needs torch.distributed with gloo and the fork start method (Linux)",
)


# ----------------------------------------------------------------------------------------------- sharded
SHAPES = [(5, 3), (7,), (2, 2, 3)]


def _trajectory():
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES] for _ in range(5)]


def _shard(tensors, rank):
    """Rank 0 holds the first ceil(n/2) elements of every tensor (flattened), rank 1 the rest: uneven shards."""
    parts = []
    for t in tensors:
        flat = t.reshape(-1)
        cut = math.ceil(flat.numel() / 2)
        parts.append(flat[:cut].clone() if rank == 0 else flat[cut:].clone())
    return parts


def _sharded_worker(rank, out):
    trajectory = _trajectory()
    params = [torch.zeros_like(p, requires_grad=True) for p in _shard(trajectory[0], rank)]
    groups = [{"params": params[:2]}, {"params": params[2:]}]
    av = AngularVelocity(groups, sharded=True, per_group=True)
    angles, group_angles = [], []
    for snapshot in trajectory:
        angles.append(av.update(_shard(snapshot, rank)))
        group_angles.append(av.group_angles)
    torch.save({"angles": angles, "group_angles": group_angles}, out / f"rank{rank}.pt")


def test_sharded_angular_velocity_is_the_angle_of_the_whole_vector_on_every_rank(tmp_path):
    results = run_on_ranks(_sharded_worker, tmp_path)
    full = [torch.zeros_like(p, requires_grad=True) for p in _trajectory()[0]]
    reference = AngularVelocity([{"params": full[:2]}, {"params": full[2:]}], per_group=True)
    expected, expected_groups = [], []
    for snapshot in _trajectory():
        expected.append(reference.update(snapshot))
        expected_groups.append(reference.group_angles)
    assert expected[:2] == [None, None] and all(e is not None for e in expected[2:])
    for res in results:
        assert res["angles"][:2] == [None, None]
        for got, want in zip(res["angles"][2:], expected[2:]):
            assert got == pytest.approx(want, abs=1e-9)
        for got, want in zip(res["group_angles"][2:], expected_groups[2:]):
            assert got == pytest.approx(want, abs=1e-9)
    # a shard alone measures something else: the reduction is what makes it right
    alone = AngularVelocity([torch.zeros_like(p, requires_grad=True) for p in _shard(_trajectory()[0], 0)])
    lone = [alone.update(_shard(s, 0)) for s in _trajectory()]
    assert any(abs(a - b) > 1e-3 for a, b in zip(lone[2:], expected[2:]))


def test_sharded_without_a_process_group_is_a_clear_error():
    p = torch.zeros(3, requires_grad=True)
    if dist.is_initialized():  # pragma: no cover - the test process never initialises one
        pytest.skip("a process group is initialised in this process")
    with pytest.raises(ValueError, match="init_process_group"):
        AngularVelocity([p], sharded=True)
    with pytest.raises(ValueError, match="process_group"):
        AngularVelocity([p], process_group=object())
    with pytest.raises(ValueError, match="init_process_group"):
        AutoDrop(torch.optim.SGD([p], lr=0.1), sharded=True)


# ----------------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank, out, epochs, steps):
    torch.manual_seed(0)  # identical init on both ranks (DDP also broadcasts it)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)))
    sgd_model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)))
    sgd = torch.optim.SGD(sgd_model.parameters(), lr=0.2, momentum=0.9)
    # options that make drops happen within a few epochs (as in the checkpoint tests)
    sched = AutoDrop(sgd, threshold=10.0, rise_threshold=-10.0, window=6)
    active = ActiveAdamW(model.parameters(), lr=1e-2, weight_decay=0.0, steps_per_epoch=steps)
    g = torch.Generator().manual_seed(100 + rank)  # every rank sees different data
    for _ in range(epochs):
        for _ in range(steps):
            x = torch.randn(8, 6, generator=g)
            y = torch.randint(0, 3, (8,), generator=g)
            for m, opt in ((model, active), (sgd_model, sgd)):
                loss = torch.nn.functional.cross_entropy(m(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        sched.step()
    torch.save({
        "omega": sched.omega_history, "drops": sched.drop_epochs, "lr": sched.get_last_lr(),
        "multipliers": [active.state[p]["multiplier"].clone() for p in model.parameters()],
        "params": [p.detach().clone() for p in sgd_model.parameters()],
    }, out / f"rank{rank}.pt")


def test_ddp_ranks_take_identical_autodrop_decisions_and_keep_identical_active_multipliers(tmp_path):
    r0, r1 = run_on_ranks(_ddp_worker, tmp_path, 14, 4)
    assert len(r0["drops"]) >= 1, "the test needs at least one drop to compare"
    assert r0["omega"] == r1["omega"] and r0["drops"] == r1["drops"] and r0["lr"] == r1["lr"]
    assert all(torch.equal(a, b) for a, b in zip(r0["params"], r1["params"]))
    assert all(torch.equal(a, b) for a, b in zip(r0["multipliers"], r1["multipliers"]))
    assert any(not torch.all(m == 1) for m in r0["multipliers"])  # the multipliers did adapt


# ----------------------------------------------------------------------------------------------- FSDP2
def _fsdp_worker(rank, out):
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sharded = AngularVelocity(opt, sharded=True)
    try:
        AngularVelocity(opt)
        refused = False
    except ValueError as err:
        refused = "sharded=True" in str(err)
    # interval=1: one measurement per optimizer step (step() below then only counts epochs)
    sched = AutoDrop(opt, sharded=True, interval=1)
    full = None
    g = torch.Generator().manual_seed(7)  # the same data on both ranks
    angles, reference = [], []
    for _ in range(6):
        loss = model(torch.randn(8, 6, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        whole = [p.full_tensor().detach() for p in model.parameters()]  # gathered: the unsharded vector
        if full is None:
            full = AngularVelocity([torch.zeros_like(w, requires_grad=True) for w in whole])
        angles.append(sharded.update())
        reference.append(full.update(whole))
        sched.step()
    # a resume under FSDP: load_state_dict keeps sharded=True, so the next angles still come from all-reduced sums
    resumed = AutoDrop(opt, sharded=True, interval=1)
    resumed.load_state_dict(sched.state_dict())
    sched.remove_hook()
    for _ in range(2):
        loss = model(torch.randn(8, 6, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        whole = [p.full_tensor().detach() for p in model.parameters()]
        reference.append(full.update(whole))
        resumed.step()
    torch.save({"angles": angles, "reference": reference, "refused": refused, "omega": sched.omega_history,
                "resumed_sharded": resumed.angular_velocity.sharded,
                "resumed_omega": [o for _, o in resumed.omega_history[-2:]]}, out / f"rank{rank}.pt")


def test_fsdp2_sharded_parameters_give_the_angle_of_the_gathered_model(tmp_path):
    """With FSDP2 (fully_shard, DTensor parameters) on CPU, AngularVelocity(sharded=True) measures from the local
    shards and all-reduced sums the same angle as on the gathered full parameters, on both ranks."""
    pytest.importorskip("torch.distributed.fsdp")
    results = run_on_ranks(_fsdp_worker, tmp_path)
    for res in results:
        assert res["angles"][:2] == [None, None]
        for got, want in zip(res["angles"][2:], res["reference"][2:]):
            assert got == pytest.approx(want, abs=1e-4)  # float32 parameters
    assert results[0]["angles"] == results[1]["angles"]
    assert all(res["refused"] for res in results)  # DTensors without sharded=True: a clear error
    assert len(results[0]["omega"]) == 4 and results[0]["omega"] == results[1]["omega"]  # AutoDrop agrees
    for res in results:  # resumed with load_state_dict: still sharded, still the gathered model's angle
        assert res["resumed_sharded"]
        assert res["resumed_omega"] == pytest.approx(res["reference"][-2:], abs=1e-4)
