"""The nonlinear toy model of late learning-rate decay (Ren, Ma & Ying, arXiv 2401.11600, AISTATS 2024).

Model (spec section 1.1; its form reached us through a third-party review, not the paper's text):

    f(x; w) = ||w||^gamma <w, x>,    alpha(w) = ||w||^gamma w   (the effective linear predictor)

on overparameterised Gaussian regression: ``x ~ N(0, I_d)``, ``n < d`` training points, clean labels
``y = X alpha*``. Losses (our convention, spec 1.1):

    train  L(w)      = (1/2n) sum_i (f(x_i; w) - y_i)^2
    test   L_test(w) = ||alpha(w) - alpha*||^2          (the exact population loss on clean labels)

The train-loss minima form the manifold M = {w : X alpha(w) = y}. Its minimum-norm point is
``alpha_mn = X^T (X X^T)^{-1} y``, and with ``alpha*`` in the row space of X (the default) ``alpha_mn = alpha*``,
so the test loss of any interpolator is ``dist^2 = ||alpha - alpha_mn||^2``.

The paper's claim reproduced here: a long large-LR phase of SGD drifts along M towards ``alpha_mn``; a small-LR
branch started later therefore lands nearer it and generalises better. Our calibration (spec 1.2, all ours):
plain minibatch SGD stops moving along M after about 1e3 steps because its noise vanishes on M, so the primary
configuration uses *label-noise* SGD (fresh Gaussian label noise of scale ``sigma`` at every step, Blanc et al.
2020), whose noise persists on M; both controls (``sigma = 0`` and ``gamma = 0``) are run by the reproduction
(:mod:`lrpilot.bench.studies.late_decay`, which also holds its pass criteria).

The gradient-flow endpoint (spec 1.1, derived there and checked by our tests): under gradient flow the
direction of ``P_N alpha`` (its null-space part) is fixed and ``Q = ||P_N alpha|| / ||alpha||^kappa`` with
``kappa = 1 - 1/(1+gamma)^2`` is conserved, so a small-LR run started from ``alpha`` lands at distance ``s`` from
``alpha_mn``, the root of ``s = Q (||alpha_mn||^2 + s^2)^(kappa/2)`` (:func:`gf_endpoint_dist`).

Every simulation is vectorised over a batch of independent runs ("replicas": seeds, branches): one Python
step advances all of them with numpy float64 array operations. Random streams follow the spec's layout
(section 4.1): data seed ``s`` uses ``default_rng(s)``, the init ``default_rng(1000 + s)``, the k-th trajectory
segment ``default_rng(2000 + 97 s + k)``, the j-th branch ``default_rng(5000 + 97 s + j)`` and the hitting-time run
``default_rng(3000 + s)``; each draws the batch indices ``(T, B)`` first, then the label noise ``(T, B)``.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np

from .._validation import check_number

__all__ = [
    "CONFIG_A",
    "CONFIG_B",
    "ToyConfig",
    "ToyData",
    "alpha_of_w",
    "branch_experiment",
    "gf_endpoint_dist",
    "grad_w",
    "hit_time",
    "init_w",
    "make_data",
    "min_norm_interpolator",
    "sgd",
    "test_loss",
    "train_loss",
    "w_of_alpha",
]

Array = np.ndarray


# ----------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ToyData:
    """One regression problem: inputs ``X`` (n, d), clean labels ``y`` (n,), truth ``alpha_star``, ``alpha_mn``."""

    X: Array
    y: Array
    alpha_star: Array
    alpha_mn: Array

    @property
    def null_projector(self) -> Array:
        """``P_N = I - X^T (X X^T)^{-1} X``, the projector onto null(X)."""
        X = self.X
        return cast(Array, np.eye(X.shape[1]) - X.T @ np.linalg.solve(X @ X.T, X))


def min_norm_interpolator(X: Array, y: Array) -> Array:
    """``alpha_mn = X^T (X X^T)^{-1} y``: the interpolator ``X alpha = y`` of least Euclidean norm (needs rank n)."""
    return cast(Array, X.T @ np.linalg.solve(X @ X.T, y))


def make_data(d: int, n: int, seed: int, rowspace: bool = True) -> ToyData:
    """Spec 1.1: ``X ~ N(0, 1)^{n x d}``, ``g ~ N(0, I_d)``, ``alpha* = P_R g / ||P_R g||`` (``rowspace=True``, so
    ``alpha_mn = alpha*``) or ``g / ||g||`` (the generic variant), clean labels ``y = X alpha*``."""
    if not (isinstance(n, int) and isinstance(d, int)) or not 0 < n < d:
        raise ValueError(f"need integers 0 < n < d (overparameterised), got n={n!r}, d={d!r}")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    g = rng.standard_normal(d)
    if rowspace:
        g = X.T @ np.linalg.solve(X @ X.T, X @ g)
    alpha_star = g / np.linalg.norm(g)
    y = X @ alpha_star
    return ToyData(X, y, alpha_star, min_norm_interpolator(X, y))


# ----------------------------------------------------------------------------------------------- model
def alpha_of_w(w: Array, gamma: float) -> Array:
    """``alpha = ||w||^gamma w`` (row-wise for a batch of runs)."""
    return cast(Array, np.linalg.norm(w, axis=-1, keepdims=True) ** gamma * w)


def w_of_alpha(alpha: Array, gamma: float) -> Array:
    """Inverse of :func:`alpha_of_w`: ``w = alpha / ||alpha||^(gamma / (1 + gamma))``."""
    return cast(Array, alpha / np.linalg.norm(alpha, axis=-1, keepdims=True) ** (gamma / (1 + gamma)))


def init_w(d: int, rho: float, gamma: float, seed: int) -> Array:
    """``w0 = rho^(1/(1+gamma)) z`` with ``z`` uniform on the unit sphere, so ``||alpha(w0)|| = rho`` (spec 4.1)."""
    z = np.random.default_rng(1000 + seed).standard_normal(d)
    return cast(Array, rho ** (1 / (1 + gamma)) * z / np.linalg.norm(z))


def train_loss(w: Array, X: Array, y: Array, gamma: float) -> Array:
    """``(1/2n) ||X alpha(w) - y||^2``; ``w`` may be (d,) or a batch (R, d) with X (R, n, d), y (R, n)."""
    r = np.einsum("...nd,...d->...n", X, alpha_of_w(w, gamma)) - y
    return cast(Array, 0.5 * np.mean(r**2, axis=-1))


def test_loss(w: Array, alpha_star: Array, gamma: float) -> Array:
    """``||alpha(w) - alpha*||^2`` (no 1/2): the population loss on clean labels, ``E_x (f(x; w) - <alpha*, x>)^2``."""
    return cast(Array, np.sum((alpha_of_w(w, gamma) - alpha_star) ** 2, axis=-1))


def grad_w(w: Array, X: Array, r: Array, gamma: float) -> Array:
    """Gradient of ``(1/2B) sum_b r_b^2`` w.r.t. ``w`` given residuals ``r = X alpha(w) - y`` (spec 1.1):

        G = X^T r / B,    grad_w = J G = ||w||^gamma G + gamma ||w||^(gamma-2) (w . G) w

    (``J = ||w||^gamma (I + gamma w_hat w_hat^T)``). Works on one run or a batch of runs (leading axis R).
    """
    G = np.einsum("...bd,...b->...d", X, r) / r.shape[-1]
    norm = np.linalg.norm(w, axis=-1, keepdims=True)
    wG = np.sum(w * G, axis=-1, keepdims=True)
    return cast(Array, norm**gamma * G + gamma * norm ** (gamma - 2) * wG * w)


def gf_endpoint_dist(alpha: Array, null_projector: Array, alpha_mn: Array, gamma: float, iters: int = 200) -> Array:
    """Distance to ``alpha_mn`` at which gradient flow started from ``alpha`` lands on the minima manifold.

    Spec 1.1 (derived there, ours): ``Q = ||P_N alpha|| / ||alpha||^kappa`` is conserved with
    ``kappa = 1 - 1/(1+gamma)^2``; the endpoint is ``alpha_mn + s u`` where ``s = Q (||alpha_mn||^2 + s^2)^(kappa/2)``,
    solved by fixed-point iteration (a contraction since ``kappa < 1``). ``gamma = 0`` gives ``s = ||P_N alpha||``.
    Batched: ``alpha`` (..., d), ``null_projector`` (..., d, d), ``alpha_mn`` (..., d).
    """
    kappa = 1 - 1 / (1 + gamma) ** 2
    q = np.linalg.norm(np.einsum("...ij,...j->...i", null_projector, alpha), axis=-1)
    q = q / np.linalg.norm(alpha, axis=-1) ** kappa
    m2 = np.sum(alpha_mn**2, axis=-1)
    s = q * m2 ** (kappa / 2)
    for _ in range(iters):
        s_next = q * (m2 + s**2) ** (kappa / 2)
        if np.allclose(s_next, s, rtol=1e-14, atol=0):
            return cast(Array, s_next)
        s = s_next
    return cast(Array, s)


# ----------------------------------------------------------------------------------------------- SGD
def _draws(seed_stream: int, steps: int, n: int, batch: int) -> tuple[Array, Array]:
    rng = np.random.default_rng(seed_stream)
    return rng.integers(0, n, (steps, batch)), rng.standard_normal((steps, batch))


def sgd(w0: Array, X: Array, y: Array, gamma: float, lr: Array | float, idx: Array, noise: Array,
        label_noise: Array | float = 0.0, log_every: int = 0, null_projector: Array | None = None,
        alpha_mn: Array | None = None, diverge_norm: float = 1e3) -> tuple[Array, dict[str, Array]]:
    """Label-noise minibatch SGD (spec 1.2) on a batch of R independent runs, vectorised over the runs.

    Step: ``w <- w - lr grad_w (1/2B) sum_{i in b} (f(x_i; w) - y_i - sigma xi_i)^2``, with the batch ``b`` from
    ``idx[t]`` and ``xi`` from ``noise[t]``; ``sigma = 0`` is plain SGD.

    Args:
        w0: (R, d) initial weights. X: (R, n, d). y: (R, n). lr, label_noise: scalars or (R,).
        idx: (T, R, B) integer batch indices; noise: (T, R, B) standard normal draws.
        log_every: if > 0, record train loss, ``||alpha||``, ``||alpha - alpha_mn||`` and the gradient-flow
            endpoint distance every ``log_every`` steps (needs ``null_projector`` (R, d, d) and ``alpha_mn``).
        diverge_norm: a run whose ``||w||`` exceeds this is frozen and reported as NaN.
    Returns:
        the final (R, d) weights (NaN rows for diverged runs) and the log (``step`` (K,), other keys (K, R)).
    """
    w = np.array(w0, dtype=np.float64, copy=True)
    runs = w.shape[0]
    lr_col = np.broadcast_to(np.asarray(lr, dtype=np.float64), (runs,))[:, None]
    sigma = np.broadcast_to(np.asarray(label_noise, dtype=np.float64), (runs,))[:, None]
    rows = np.arange(runs)[:, None]
    alive = np.ones(runs, dtype=bool)
    log: dict[str, list[Any]] = {"step": [], "train": [], "norm_alpha": [], "dist": [], "gf_dist": []}

    def record(t: int) -> None:
        alpha = alpha_of_w(w, gamma)
        log["step"].append(t)
        log["train"].append(train_loss(w, X, y, gamma))
        log["norm_alpha"].append(np.linalg.norm(alpha, axis=-1))
        if alpha_mn is not None:
            log["dist"].append(np.linalg.norm(alpha - alpha_mn, axis=-1))
            if null_projector is not None:
                log["gf_dist"].append(gf_endpoint_dist(alpha, null_projector, alpha_mn, gamma))

    with np.errstate(over="ignore", invalid="ignore"):  # a diverging run overflows; it is caught below
        for t in range(idx.shape[0]):
            if log_every and t % log_every == 0:
                record(t)
            xb = X[rows, idx[t]]  # (R, B, d)
            r = np.einsum("rbd,rd->rb", xb, alpha_of_w(w, gamma)) - y[rows, idx[t]] - sigma * noise[t]
            w -= lr_col * grad_w(w, xb, r, gamma)
            if t % 100 == 99:  # divergence check (cheap, not every step)
                blown = ~(np.linalg.norm(w, axis=1) <= diverge_norm)
                if blown.any():
                    alive &= ~blown
                    w[blown] = np.nan
    if log_every and idx.shape[0] % log_every == 0:
        record(idx.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):
        blown = ~(np.linalg.norm(w, axis=1) <= diverge_norm)
    w[blown | ~alive] = np.nan
    return w, {k: np.asarray(v) for k, v in log.items() if v}


# ----------------------------------------------------------------------------------------------- experiments
@dataclass(frozen=True)
class ToyConfig:
    """One reproduction setting (spec section 4). Defaults are Config A: sigma 1, decays at 0..15k, 10k after."""

    d: int = 100
    n: int = 20
    gamma: float = 1.0
    rho: float = 1.0
    batch: int = 1
    lr: float = 0.005
    small_lr_factor: float = 0.1
    label_noise: float = 1.0
    decay_times: tuple[int, ...] = (0, 500, 1500, 5000, 15000)
    post_steps: int = 10_000
    noise_after_decay: bool = False
    rowspace: bool = True
    log_every: int = 100
    name: str = field(default="A", compare=False)

    def __post_init__(self) -> None:
        for key in ("d", "n", "batch", "post_steps", "log_every"):
            check_number(key, getattr(self, key), low=1, integer=True)
        for key in ("gamma", "label_noise"):
            check_number(key, getattr(self, key), low=0)
        for key in ("rho", "lr", "small_lr_factor"):
            check_number(key, getattr(self, key), low=0, low_open=True)
        times = self.decay_times
        if not times or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in times) or list(
                times) != sorted(set(times)):
            raise ValueError(f"decay_times must be increasing non-negative ints, got {times!r}")
        if not 0 < self.n < self.d:
            raise ValueError(f"need 0 < n < d (overparameterised), got n={self.n}, d={self.d}")

    def with_(self, **changes: Any) -> ToyConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


#: Spec 4.2: the unit-test-sized configuration (label noise sigma = 1).
CONFIG_A = ToyConfig()
#: Spec 4.3: the main configuration (sigma = 0.5, decays up to 60k steps, 20k steps after each).
CONFIG_B = ToyConfig(label_noise=0.5, decay_times=(0, 1000, 3000, 10_000, 30_000, 60_000), post_steps=20_000,
                     name="B")


def _stack_data(cfg: ToyConfig, seeds: Sequence[int]) -> tuple[list[ToyData], Array, Array, Array, Array]:
    data = [make_data(cfg.d, cfg.n, s, cfg.rowspace) for s in seeds]
    X = np.stack([dd.X for dd in data])
    y = np.stack([dd.y for dd in data])
    proj = np.stack([dd.null_projector for dd in data])
    amn = np.stack([dd.alpha_mn for dd in data])
    return data, X, y, proj, amn


def branch_experiment(cfg: ToyConfig, seeds: Sequence[int] = (0, 1, 2, 3)) -> dict[str, Any]:
    """One large-LR trajectory per seed, snapshotted at each decay time, and one small-LR branch per snapshot.

    The large-LR phase runs at ``cfg.lr`` with label noise ``cfg.label_noise``; each branch runs
    ``cfg.post_steps`` steps at ``cfg.lr * cfg.small_lr_factor`` (noise off unless ``noise_after_decay``).
    Returns arrays indexed [seed, decay time]: ``test``, ``dist``, ``norm_excess`` (``||alpha|| - ||alpha_mn||``),
    ``train`` (clean train loss after the branch) and ``predicted`` (the gradient-flow endpoint distance of the
    snapshot, :func:`gf_endpoint_dist`); the trajectory log (keys ``step``, ``train``, ``norm_alpha``, ``dist``,
    ``gf_dist``, each [step, seed]); and ``norm_alpha_mn``, ``null_test`` (``||P_N alpha*||^2``) per seed.
    """
    seeds = list(seeds)
    data, X, y, proj, amn = _stack_data(cfg, seeds)
    w = np.stack([init_w(cfg.d, cfg.rho, cfg.gamma, s) for s in seeds])
    snapshots: list[Array] = []
    logs: list[dict[str, Array]] = []
    t_prev = 0
    for k, t_dec in enumerate(cfg.decay_times):
        steps = t_dec - t_prev
        if steps:
            draws = [_draws(2000 + 97 * s + k, steps, cfg.n, cfg.batch) for s in seeds]
            idx = np.stack([a for a, _ in draws], axis=1)
            noise = np.stack([b for _, b in draws], axis=1)
            w, log = sgd(w, X, y, cfg.gamma, cfg.lr, idx, noise, cfg.label_noise, cfg.log_every, proj, amn)
            if logs:  # the segment's first record repeats the previous segment's last one
                log = {key: value[1:] for key, value in log.items()}
            log["step"] = log["step"] + t_prev
            logs.append(log)
        snapshots.append(w.copy())
        t_prev = t_dec
    # all branches of all seeds advance together: replica (j, seed) starts from snapshot j of that seed
    S, J = len(seeds), len(cfg.decay_times)
    W0 = np.concatenate(snapshots)  # (J * S, d), order j-major
    rep = lambda a: np.concatenate([a] * J)  # noqa: E731
    draws = [_draws(5000 + 97 * s + j, cfg.post_steps, cfg.n, cfg.batch) for j in range(J) for s in seeds]
    idx = np.stack([a for a, _ in draws], axis=1)
    noise = np.stack([b for _, b in draws], axis=1)
    sigma = cfg.label_noise if cfg.noise_after_decay else 0.0
    w_end, _ = sgd(W0, rep(X), rep(y), cfg.gamma, cfg.lr * cfg.small_lr_factor, idx, noise, sigma)
    alpha_end = alpha_of_w(w_end, cfg.gamma)
    alpha_star = rep(np.stack([dd.alpha_star for dd in data]))
    shape = (J, S)
    out = {
        "config": cfg,
        "seeds": seeds,
        "decay_times": list(cfg.decay_times),
        "test": np.sum((alpha_end - alpha_star) ** 2, axis=1).reshape(shape).T,
        "dist": np.linalg.norm(alpha_end - rep(amn), axis=1).reshape(shape).T,
        "norm_excess": (np.linalg.norm(alpha_end, axis=1) - np.linalg.norm(rep(amn), axis=1)).reshape(shape).T,
        "train": train_loss(w_end, rep(X), rep(y), cfg.gamma).reshape(shape).T,
        "predicted": gf_endpoint_dist(alpha_of_w(W0, cfg.gamma), rep(proj), rep(amn), cfg.gamma).reshape(shape).T,
        "norm_alpha_mn": np.linalg.norm(amn, axis=1),
        "null_test": np.array([np.sum((dd.null_projector @ dd.alpha_star) ** 2) for dd in data]),
        "trajectory": {key: np.concatenate([lg[key] for lg in logs]) for key in logs[0]} if logs else {},
    }
    return out


def hit_time(cfg: ToyConfig, seeds: Sequence[int] = (0, 1, 2, 3), threshold: float = 0.1,
             max_steps: int = 200_000, check_every: int = 100) -> tuple[Array, Array]:
    """Drift-time law (spec 4.4): how fast the large-LR run moves along the minima manifold.

    Returns, per seed, the steps until the gradient-flow endpoint distance ``s(alpha_t)`` first drops to
    ``threshold`` (checked every ``check_every`` steps; NaN if not within ``max_steps``), and the exponential
    rate ``r`` of ``s(t)``: minus the least-squares slope of ``log s`` over the checks with
    ``threshold / 4 <= s <= 2 threshold`` (the run continues until every seed is below ``threshold / 4``).
    Spec (ours): ``r ~ 25-31 eta^2 sigma^2`` per step.
    """
    seeds = list(seeds)
    _, X, y, proj, amn = _stack_data(cfg, seeds)
    w = np.stack([init_w(cfg.d, cfg.rho, cfg.gamma, s) for s in seeds])
    draws = [_draws(3000 + s, max_steps, cfg.n, cfg.batch) for s in seeds]
    idx = np.stack([a for a, _ in draws], axis=1)
    noise = np.stack([b for _, b in draws], axis=1)
    hits = np.full(len(seeds), np.nan)
    steps, values = [], []
    t = 0
    done = np.zeros(len(seeds), dtype=bool)
    while t < max_steps and not done.all():
        w, _ = sgd(w, X, y, cfg.gamma, cfg.lr, idx[t:t + check_every], noise[t:t + check_every], cfg.label_noise)
        t += check_every
        s = gf_endpoint_dist(alpha_of_w(w, cfg.gamma), proj, amn, cfg.gamma)
        steps.append(t)
        values.append(s)
        hits[np.isnan(hits) & (s <= threshold)] = t
        done |= ~(s > threshold / 4)  # NaN (diverged) counts as done
    values_arr = np.array(values)  # (K, S)
    rates = np.full(len(seeds), np.nan)
    for i in range(len(seeds)):
        sel = (values_arr[:, i] <= 2 * threshold) & (values_arr[:, i] >= threshold / 4)
        if sel.sum() >= 3:
            slope = np.polyfit(np.array(steps)[sel], np.log(values_arr[sel, i]), 1)[0]
            rates[i] = -slope
    return hits, rates


# ----------------------------------------------------------------------------------------------- moved names
#: Names that moved with the reproduction's pass criteria to the late-decay study
#: (:mod:`lrpilot.bench.studies.late_decay`); still reachable here, with a ``DeprecationWarning``.
_MOVED_TO_STUDY = frozenset({"check_config_b", "check_criteria", "run_reproduction"})


def _moved(module: str, name: str) -> Any:
    """The deprecated alias ``module.name`` of a name in ``_MOVED_TO_STUDY`` (``AttributeError`` for any other
    name). The study is imported only when such a name is asked for: importing the core never imports
    :mod:`lrpilot.bench`."""
    if name not in _MOVED_TO_STUDY:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(f"{module}.{name} moved to lrpilot.bench.studies.late_decay.{name} with the reproduction it "
                  "belongs to; import it from there", DeprecationWarning, stacklevel=3)
    return getattr(importlib.import_module("lrpilot.bench.studies.late_decay"), name)


def __getattr__(name: str) -> Any:
    """Deprecated aliases of the names that moved to :mod:`lrpilot.bench.studies.late_decay`."""
    return _moved(__name__, name)
