"""Specification of lrpilot.AngularVelocity: the angle between successive parameter displacements (AutoDrop eq. 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrpilot import AngularVelocity


def trajectory_with_angle(angle_deg: float, dtype=torch.float64, scale_a=1.0, scale_b=1.0):
    """Three points whose two displacements make exactly ``angle_deg`` degrees."""
    t = math.radians(angle_deg)
    x0 = torch.tensor([0.3, -1.2, 2.0], dtype=dtype)
    d1 = torch.tensor([1.0, 0.0, 0.0], dtype=dtype) * scale_a
    d2 = torch.tensor([math.cos(t), math.sin(t), 0.0], dtype=dtype) * scale_b
    return [x0, x0 + d1, x0 + d1 + d2]


def measure(points, **kwargs):
    p = torch.nn.Parameter(points[0].clone())
    av = AngularVelocity([p], **kwargs)
    out = []
    for x in points:
        with torch.no_grad():
            p.copy_(x)
        out.append(av.update())
    return out


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0, 180.0])
def test_angle_of_hand_built_trajectory_is_exact_in_float64(angle):
    assert measure(trajectory_with_angle(angle))[2] == pytest.approx(angle, abs=1e-6)


@pytest.mark.parametrize("angle", [0.0, 45.0, 90.0, 180.0])
def test_angle_in_float32_is_within_float32_resolution(angle):
    assert measure(trajectory_with_angle(angle, dtype=torch.float32))[2] == pytest.approx(angle, abs=0.05)


def test_none_until_three_snapshots():
    assert measure(trajectory_with_angle(60.0))[:2] == [None, None]


@pytest.mark.parametrize("scale_a,scale_b", [(1e-3, 1.0), (1.0, 1e3), (7.0, 7.0)])
def test_angle_is_invariant_to_the_lengths_of_the_displacements(scale_a, scale_b):
    assert measure(trajectory_with_angle(60.0, scale_a=scale_a, scale_b=scale_b))[2] == pytest.approx(60.0, abs=1e-6)


def test_all_trainable_tensors_are_flattened_together_and_frozen_ones_skipped():
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (5,), (2, 2, 2)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64)) for s in shapes]
    frozen = torch.nn.Parameter(torch.randn(3, dtype=torch.float64), requires_grad=False)
    av = AngularVelocity([*params, frozen])
    flat = []
    for _ in range(4):
        with torch.no_grad():
            for p in [*params, frozen]:
                p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        flat.append(np.concatenate([p.detach().numpy().ravel() for p in params]))
        got = av.update()
    d1, d2 = flat[3] - flat[2], flat[2] - flat[1]
    expected = math.degrees(math.acos(d1 @ d2 / np.linalg.norm(d1) / np.linalg.norm(d2)))
    assert got == pytest.approx(expected, abs=1e-9)


def test_per_group_angles_match_separate_measurements_and_total_uses_all_groups():
    g = torch.Generator().manual_seed(1)
    a = torch.nn.Parameter(torch.randn(6, dtype=torch.float64, generator=g))
    b = torch.nn.Parameter(torch.randn(4, dtype=torch.float64, generator=g))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    joint, only_a, only_b = AngularVelocity(opt, per_group=True), AngularVelocity([a]), AngularVelocity([b])
    for _ in range(3):
        with torch.no_grad():
            a.add_(torch.randn(6, dtype=torch.float64, generator=g))
            b.add_(torch.randn(4, dtype=torch.float64, generator=g))
        total, ga, gb = joint.update(), only_a.update(), only_b.update()
    assert joint.group_angles == pytest.approx([ga, gb], abs=1e-9)
    assert total not in (pytest.approx(ga), pytest.approx(gb))


def test_memory_is_two_parameter_sized_buffers():
    params = [torch.nn.Parameter(torch.randn(100, 10)), torch.nn.Parameter(torch.randn(10))]
    av = AngularVelocity(params)
    for _ in range(5):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p))
        av.update()
    held = [t for t in vars(av).values() if isinstance(t, list) and t and isinstance(t[0], torch.Tensor)]
    held = [t for t in held if t is not av.params]
    assert len(held) == 2
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    assert sum(t.numel() * t.element_size() for buf in held for t in buf) == 2 * param_bytes


def test_non_finite_parameters_give_nan_and_a_warning():
    p = torch.nn.Parameter(torch.zeros(3))
    av = AngularVelocity([p])
    for step in range(3):
        with torch.no_grad():
            p.add_(1.0)
            if step == 2:
                p[0] = float("nan")
        if step < 2:
            av.update()
    with pytest.warns(RuntimeWarning, match="NaN or inf"):
        assert math.isnan(av.update())


def test_zero_displacement_has_no_direction():
    p = torch.nn.Parameter(torch.ones(3))
    av = AngularVelocity([p])
    av.update()
    with torch.no_grad():
        p.add_(1.0)
    av.update()
    assert math.isnan(av.update())  # did not move: angle undefined, not 90 degrees


def test_eps_reproduces_the_official_formula():
    got = measure(trajectory_with_angle(0.0), eps=1e-8)[2]
    assert got == pytest.approx(math.degrees(math.acos(1 / (1 + 1e-8))), rel=1e-3)


def test_state_dict_round_trip_continues_identically():
    g = torch.Generator().manual_seed(2)
    p = torch.nn.Parameter(torch.randn(8))
    steps = [torch.randn(8, generator=g) for _ in range(6)]
    av = AngularVelocity([p])
    ref = []
    for i, s in enumerate(steps):
        with torch.no_grad():
            p.add_(s)
        ref.append(av.update())
        if i == 2:
            saved = av.state_dict()
            p_saved = p.detach().clone()
    q = torch.nn.Parameter(p_saved)
    resumed = AngularVelocity([q])
    resumed.load_state_dict(saved)
    for i, s in enumerate(steps[3:], start=3):
        with torch.no_grad():
            q.add_(s)
        assert resumed.update() == ref[i]


def test_load_state_dict_rejects_mismatched_shapes_without_changing_anything():
    p = torch.nn.Parameter(torch.randn(4))
    av = AngularVelocity([p])
    av.update()
    before = av.state_dict()
    bad = AngularVelocity([torch.nn.Parameter(torch.randn(5))])
    bad.update()
    with pytest.raises(ValueError, match="shape"):
        av.load_state_dict(bad.state_dict())
    assert torch.equal(av.state_dict()["prev"][0], before["prev"][0])
    with pytest.raises(ValueError, match="missing"):
        av.load_state_dict({"prev": None})


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="eps"):
        AngularVelocity([torch.nn.Parameter(torch.zeros(1))], eps=-1.0)
    with pytest.raises(ValueError, match="trainable"):
        AngularVelocity([torch.zeros(2)])
    with pytest.raises(TypeError, match="params"):
        AngularVelocity([1, 2, 3])
    av = AngularVelocity([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="shape"):
        av.update([torch.zeros(4)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_buffers_stay_on_the_parameters_device():
    p = torch.nn.Parameter(torch.randn(1000, device="cuda"))
    av = AngularVelocity([p])
    for _ in range(3):
        with torch.no_grad():
            p.add_(torch.randn_like(p))
        av.update()
    assert all(t.is_cuda for t in av.state_dict()["prev"] + av.state_dict()["disp"])
