"""Specification of lrpilot.late_decay.toy: the nonlinear toy model, its geometry and its SGD.

The reproduction built on it (its controls and pass criteria) is specified in tests/test_late_decay_study.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrpilot.late_decay import toy


def test_min_norm_interpolator_interpolates_and_has_the_least_norm():
    """X alpha_mn = y, and every other interpolator (alpha_mn + a null-space vector) is longer."""
    data = toy.make_data(d=50, n=10, seed=3, rowspace=False)
    X, y, amn = data.X, data.y, data.alpha_mn
    np.testing.assert_allclose(X @ amn, y, atol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(20):
        other = amn + data.null_projector @ rng.standard_normal(50)
        np.testing.assert_allclose(X @ other, y, atol=1e-10)
        assert np.linalg.norm(other) > np.linalg.norm(amn)
    # with alpha* drawn in the row space, the min-norm interpolator is the truth itself
    row = toy.make_data(d=50, n=10, seed=3, rowspace=True)
    np.testing.assert_allclose(row.alpha_mn, row.alpha_star, atol=1e-12)
    assert np.linalg.norm(row.alpha_star) == pytest.approx(1.0)


def test_alpha_and_w_maps_are_inverse_and_init_has_the_requested_norm():
    rng = np.random.default_rng(1)
    for gamma in (0.0, 0.5, 1.0, 2.0):
        w = rng.standard_normal((4, 30))
        np.testing.assert_allclose(toy.w_of_alpha(toy.alpha_of_w(w, gamma), gamma), w, rtol=1e-12)
        w0 = toy.init_w(30, rho=2.5, gamma=gamma, seed=7)
        assert np.linalg.norm(toy.alpha_of_w(w0, gamma)) == pytest.approx(2.5)


def test_gradient_matches_autograd_for_several_gammas():
    """grad_w of (1/2B) sum r^2 with r = X alpha(w) - y equals torch.autograd on the same loss."""
    data = toy.make_data(d=40, n=8, seed=0)
    rng = np.random.default_rng(2)
    for gamma in (0.0, 0.5, 1.0, 3.0):
        w = rng.standard_normal(40)
        r = data.X @ toy.alpha_of_w(w, gamma) - data.y
        ours = toy.grad_w(w, data.X, r, gamma)
        wt = torch.tensor(w, requires_grad=True)
        Xt, yt = torch.tensor(data.X), torch.tensor(data.y)
        loss = 0.5 * ((Xt @ (wt.norm() ** gamma * wt) - yt) ** 2).mean()
        loss.backward()
        np.testing.assert_allclose(ours, wt.grad.numpy(), rtol=1e-10, atol=1e-12)
        assert 0.5 * np.mean(r**2) == pytest.approx(float(toy.train_loss(w, data.X, data.y, gamma)))


def test_batched_sgd_equals_independent_runs():
    """The simulator vectorised over runs gives each run exactly what it would get alone."""
    data = [toy.make_data(30, 6, s) for s in (0, 1)]
    X = np.stack([d.X for d in data])
    y = np.stack([d.y for d in data])
    w0 = np.stack([toy.init_w(30, 1.0, 1.0, s) for s in (0, 1)])
    rng = np.random.default_rng(0)
    idx, noise = rng.integers(0, 6, (300, 2, 2)), rng.standard_normal((300, 2, 2))
    together, _ = toy.sgd(w0, X, y, 1.0, np.array([0.01, 0.02]), idx, noise, label_noise=np.array([0.5, 0.0]))
    for i, (lr, sigma) in enumerate(((0.01, 0.5), (0.02, 0.0))):
        alone, _ = toy.sgd(w0[i:i + 1], X[i:i + 1], y[i:i + 1], 1.0, lr, idx[:, i:i + 1], noise[:, i:i + 1], sigma)
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-13)


def test_gradient_flow_endpoint_prediction_matches_small_step_gradient_descent():
    """s(alpha) predicts where gradient flow from alpha lands: full-batch GD lands there up to a
    discretisation error that shrinks with the step (exactly, for the linear model gamma = 0)."""
    data = toy.make_data(d=40, n=8, seed=5)

    def landing(gamma, lr, steps):
        w = toy.init_w(40, 1.5, gamma, seed=5)
        for _ in range(steps):
            r = data.X @ toy.alpha_of_w(w, gamma) - data.y
            w = w - lr * toy.grad_w(w, data.X, r, gamma)
        assert toy.train_loss(w, data.X, data.y, gamma) < 1e-12
        return np.linalg.norm(toy.alpha_of_w(w, gamma) - data.alpha_mn)

    for gamma in (0.0, 1.0):
        s = float(toy.gf_endpoint_dist(toy.alpha_of_w(toy.init_w(40, 1.5, gamma, seed=5), gamma),
                                       data.null_projector, data.alpha_mn, gamma))
        coarse, fine = abs(landing(gamma, 0.004, 10_000) - s) / s, abs(landing(gamma, 0.002, 20_000) - s) / s
        if gamma == 0:
            assert coarse < 1e-10 and fine < 1e-10
        else:
            assert fine < 5e-3 and fine < 0.7 * coarse


def test_divergent_runs_are_frozen_as_nan_and_do_not_affect_the_others():
    data = toy.make_data(20, 5, 0)
    X, y = np.stack([data.X] * 2), np.stack([data.y] * 2)
    w0 = np.stack([toy.init_w(20, 1.0, 1.0, 0)] * 2)
    idx = np.zeros((200, 2, 1), dtype=int)
    w, _ = toy.sgd(w0, X, y, 1.0, np.array([5.0, 0.001]), idx, np.zeros((200, 2, 1)))
    assert np.isnan(w[0]).all() and np.isfinite(w[1]).all()


@pytest.mark.parametrize("field,value", [("n", 100), ("lr", 0.0), ("label_noise", -1.0), ("decay_times", (5, 1)),
                                         ("batch", 0), ("gamma", float("nan"))])
def test_bad_config_is_a_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field if field != "n" else "n="):
        toy.CONFIG_A.with_(**{field: value})
