"""Specification of the real-network diagnostics: TrajectoryRecorder, PCAPlane, loss_surface, decay_branches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lrpilot.late_decay import PCAPlane, TrajectoryRecorder, decay_branches, loss_surface, snapshot


def plane_trajectory(k=30, d=500, seed=0):
    """Points c + a_i u + b_i v on a known plane (u, v orthonormal), with a, b of different spreads."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, 2, generator=g, dtype=torch.float64))
    u, v = q[:, 0], q[:, 1]
    c = torch.randn(d, generator=g, dtype=torch.float64)
    t = torch.linspace(-1, 1, k, dtype=torch.float64)
    a, b = 5 * t, 2 * t**2 - 2 * (t**2).mean()
    return c + a[:, None] * u + b[:, None] * v, u, v, a, b


def test_pca_plane_recovers_a_known_plane_and_the_coordinates():
    points, u, v, a, b = plane_trajectory()
    plane = PCAPlane.fit(points)
    basis = plane.directions
    torch.testing.assert_close(basis @ basis.T, torch.eye(2, dtype=torch.float64), atol=1e-10, rtol=0)
    for w in (u, v):  # u and v lie in the fitted plane
        assert float((basis @ w).norm()) == pytest.approx(1.0, abs=1e-9)
    coords = plane.coordinates(points)
    rebuilt = torch.stack([plane.point(float(x), float(y)) for x, y in coords])
    torch.testing.assert_close(rebuilt, points, atol=1e-9, rtol=0)
    assert sum(plane.explained) == pytest.approx(1.0, abs=1e-9)
    assert plane.explained[0] > plane.explained[1]  # the wider spread (a) comes first
    # pairwise distances within the plane are those of (a, b)
    ab = torch.stack([a, b], 1)
    pairwise = lambda z: (z[:, None] - z[None]).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pairwise(coords), pairwise(ab), atol=1e-9, rtol=0)


def test_curved_plane_follows_a_parabolic_third_component_as_the_authors_code_fits_it():
    """Points c + a u + b v + 0.05 a^2 w (b independent of a): the flat PCA plane misses the bend, the curved
    surface (PC3 regressed on PC1 with a quadratic, spec 2.3) passes through every point."""
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(200, 3, generator=g, dtype=torch.float64))
    a = torch.linspace(-5, 5, 40, dtype=torch.float64)
    b = 2 * torch.randn(40, generator=g, dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.stack([torch.ones_like(a), a, a**2], 1))
    b = b - basis @ (basis.T @ b)  # uncorrelated with a and a^2 in the sample, so the PCs are u, v, w
    points = 3.0 + a[:, None] * q[:, 0] + b[:, None] * q[:, 1] + (0.05 * a**2)[:, None] * q[:, 2]
    curved, flat = PCAPlane.fit(points, curved=True), PCAPlane.fit(points)
    assert curved.curve is not None and abs(curved.curve[0]) == pytest.approx(0.05, rel=1e-6)
    residual = lambda plane: float(torch.stack([plane.point(float(x), float(y)) for x, y in  # noqa: E731
                                                plane.coordinates(points)]).sub(points).norm())
    assert residual(curved) < 1e-8 < 1.0 < residual(flat)


def test_loss_surface_evaluates_the_metric_at_every_grid_point_without_touching_the_model():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1, bias=False)).double()
    total = sum(p.numel() for p in model.parameters())
    points, *_ = plane_trajectory(k=10, d=total)
    plane = PCAPlane.fit(points)
    before = [p.detach().clone() for p in model.parameters()]
    target = torch.arange(total, dtype=torch.float64)

    def metric(m):
        flat = torch.cat([p.reshape(-1) for p in m.parameters()])
        return float(((flat - target) ** 2).sum())

    xs, ys = [-1.0, 0.0, 2.0], [0.5, -0.5]
    grid = loss_surface(model, plane, {"sq": metric}, xs, ys)["sq"]
    assert grid.shape == (2, 3)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            assert grid[i, j] == pytest.approx(float(((plane.point(x, y) - target) ** 2).sum()), rel=1e-12)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_recorder_keeps_memory_bounded_and_snapshots_evenly_spaced():
    model = nn.Linear(4, 3)
    rec = TrajectoryRecorder(model, every=1, max_snapshots=8)
    for step in range(100):
        with torch.no_grad():
            model.weight.fill_(float(step))
        rec.step()
    assert len(rec) <= 8
    assert np.all(np.diff(rec.steps) == rec.steps[1] - rec.steps[0])  # even spacing survives thinning
    assert rec.steps[0] == 0
    assert rec.snapshots.shape == (len(rec), 15)
    # each snapshot holds the weights of the step it is tagged with
    for step, snap in zip(rec.steps, rec.snapshots):
        assert float(snap[0]) == float(step)
    rec.record()  # the final weights, tagged with the last step call, recorded once
    assert rec.steps[-1] == 99 and float(rec.snapshots[-1][0]) == 99.0
    n = len(rec)
    rec.record()
    assert len(rec) == n


def test_recorder_refuses_non_finite_parameters_and_bad_arguments():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="every"):
        TrajectoryRecorder(model, every=0)
    with pytest.raises(ValueError, match="max_snapshots"):
        TrajectoryRecorder(model, max_snapshots=2)
    rec = TrajectoryRecorder(model)
    with torch.no_grad():
        model.weight[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        rec.step()
    assert len(rec) == 0


def test_filter_normalised_directions_have_the_reference_filter_norms_and_ignore_biases():
    model = nn.Sequential(nn.Conv1d(1, 3, 3), nn.Flatten(), nn.Linear(6, 2))
    rec = TrajectoryRecorder(model, dtype=torch.float64)
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        rec.step()
    plane = rec.pca().filter_normalized(model)
    shapes = [p.shape for p in model.parameters()]
    for direction in plane.directions:
        offset = 0
        for p, shape in zip(model.parameters(), shapes):
            part = direction[offset:offset + p.numel()].reshape(shape)
            if p.dim() < 2:
                assert torch.count_nonzero(part) == 0
            else:
                torch.testing.assert_close(part.flatten(1).norm(dim=1), p.detach().double().flatten(1).norm(dim=1))
            offset += p.numel()


def tiny_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    y = (x[:, :1] - 2 * x[:, 1:2]).tanh()

    def build():
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
        return model, torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)

    def train_epoch(model, opt, index):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(index))
        for idx in order.split(16):
            loss = ((model(x[idx]) - y[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    def evaluate(model):
        with torch.no_grad():
            return {"loss": float(((model(x) - y) ** 2).mean())}

    return build, train_epoch, evaluate


def test_decay_branches_continue_from_each_checkpoint_with_the_decayed_lr():
    """A branch equals resuming the checkpointed run by hand with lr x factor; checkpoints stay untouched."""
    build, train_epoch, evaluate = tiny_problem()
    model, opt = build()
    checkpoints = {}
    for epoch in range(1, 7):
        train_epoch(model, opt, 100 + epoch)
        if epoch in (2, 6):
            checkpoints[epoch] = snapshot(model, opt)
    saved = {k: {n: t.clone() for n, t in v["model"].items()} for k, v in checkpoints.items()}
    branches = decay_branches(checkpoints, build, train_epoch, evaluate, epochs=3, factor=0.1, evaluate_every=1,
                              keep_parameters=True)
    assert [b.decay_epoch for b in branches] == [2, 6]
    assert [h["epoch"] for h in branches[0].history] == [3.0, 4.0, 5.0]
    for k in checkpoints:
        assert all(torch.equal(checkpoints[k]["model"][n], saved[k][n]) for n in saved[k])
    # by hand, for the branch at epoch 2
    m, o = build()
    m.load_state_dict(checkpoints[2]["model"])
    o.load_state_dict(checkpoints[2]["optimizer"])
    for group in o.param_groups:
        group["lr"] = 0.02
    for i in range(3):
        train_epoch(m, o, i)
    assert branches[0].final["loss"] == pytest.approx(evaluate(m)["loss"], rel=1e-6)
    flat = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
    torch.testing.assert_close(branches[0].final_parameters, flat)
    assert branches[0].weight_norm == pytest.approx(float(flat.double().norm()), rel=1e-6)


@pytest.mark.parametrize("kwargs,match", [({"epochs": 0}, "epochs"), ({"factor": 1.5}, "factor"),
                                          ({"factor": 0.0}, "factor"), ({"evaluate_every": -1}, "evaluate_every")])
def test_decay_branches_bad_arguments_are_named(kwargs, match):
    build, train_epoch, evaluate = tiny_problem()
    model, opt = build()
    args = {"epochs": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        decay_branches({1: snapshot(model, opt)}, build, train_epoch, evaluate, **args)
    with pytest.raises(ValueError, match="empty"):
        decay_branches({}, build, train_epoch, evaluate, epochs=1)
