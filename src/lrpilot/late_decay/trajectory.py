"""Where did training go? Parameter snapshots, their PCA plane, and loss landscapes on that plane.

The view of Ren, Ma & Ying (arXiv 2401.11600, and the authors' ``param_pca.py`` / ``landscape_pca.py``, spec
section 2.3): flatten the parameters of every checkpoint of a run, fit a PCA, and evaluate the train and test
loss on a grid over the plane of the first two components. The large-LR trajectory then shows up as a path
along a valley of low train loss, with the test loss lowest near its late end.

* :class:`TrajectoryRecorder` keeps flattened snapshots on the CPU with bounded memory.
* :class:`PCAPlane` is the plane (centre, two orthonormal directions, optional quadratic PC3 curvature as in
  the authors' code), fitted with a randomised low-rank SVD of the ``K x D`` snapshot matrix (never a ``D x D``
  matrix), optionally filter-normalised (Li et al. 2018).
* :func:`loss_surface` evaluates any metrics of a model on a grid over a plane.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from .._validation import check_number

__all__ = ["PCAPlane", "TrajectoryRecorder", "loss_surface"]


def _params(source: nn.Module | Iterable[Tensor]) -> list[Tensor]:
    params: list[Tensor] = ([p for p in source.parameters() if p.requires_grad] if isinstance(source, nn.Module)
                            else list(source))
    if not params:
        raise ValueError("no parameters to record (a module without trainable parameters or an empty list)")
    if not all(isinstance(p, Tensor) for p in params):
        raise TypeError("parameters must be tensors")
    return params


class TrajectoryRecorder:
    """Flattened parameter snapshots of a training run, kept on the CPU in bounded memory.

    Call :meth:`step` once per optimizer step or per epoch (whichever clock ``every`` counts); every
    ``every``-th call stores a copy of all parameters flattened into one CPU vector. When more than
    ``max_snapshots`` are stored, every other one is dropped and ``every`` doubles, so the kept snapshots stay
    evenly spaced over the whole run and memory stays below ``max_snapshots x D x 4`` bytes (float32 default).
    :meth:`record` stores one snapshot now regardless of the clock (e.g. the final weights).

    Args:
        source: a module (its trainable parameters) or a list of parameters.
        every: record every ``every`` calls of :meth:`step` (the first call records).
        max_snapshots: memory bound, >= 4.
        dtype: storage dtype (float32 default; float64 for exact tests).
    """

    def __init__(self, source: nn.Module | Iterable[Tensor], every: int = 1, max_snapshots: int = 512,
                 dtype: torch.dtype = torch.float32) -> None:
        check_number("every", every, low=1, integer=True)
        check_number("max_snapshots", max_snapshots, low=4, integer=True)
        self.params = _params(source)
        self.every = every
        self.max_snapshots = max_snapshots
        self.dtype = dtype
        self.calls = 0
        self.steps: list[int] = []
        self._snapshots: list[Tensor] = []

    def step(self) -> None:
        """Advance the clock by one; record if it is time."""
        if self.calls % self.every == 0:
            self._store(self.calls)
        self.calls += 1

    def record(self) -> None:
        """Record the current parameters whatever the clock says (e.g. the final weights), tagged with the
        last :meth:`step` call (0 before any); nothing happens if that call was already recorded."""
        tag = max(self.calls - 1, 0)
        if not self.steps or self.steps[-1] != tag:
            self._store(tag)

    def _store(self, step: int) -> None:
        with torch.no_grad():
            flat = parameters_to_vector([p.detach() for p in self.params]).to("cpu", self.dtype, copy=True)
        if not torch.isfinite(flat).all():
            raise ValueError(f"the parameters contain NaN or inf at step {step}; not recording a trajectory")
        self._snapshots.append(flat)
        self.steps.append(step)
        if len(self._snapshots) > self.max_snapshots:
            self._snapshots = self._snapshots[::2]
            self.steps = self.steps[::2]
            self.every *= 2

    @property
    def snapshots(self) -> Tensor:
        """(K, D) tensor of the stored snapshots, oldest first."""
        if not self._snapshots:
            raise ValueError("no snapshots recorded yet")
        return torch.stack(self._snapshots)

    def __len__(self) -> int:
        return len(self._snapshots)

    def pca(self, *, curved: bool = False, extra: Tensor | None = None, seed: int = 0) -> PCAPlane:
        """The PCA plane of the stored snapshots (plus ``extra`` rows, e.g. branch endpoints)."""
        points = self.snapshots if extra is None else torch.cat([self.snapshots, extra.to(self.dtype)])
        return PCAPlane.fit(points, curved=curved, seed=seed)


@dataclass
class PCAPlane:
    """A 2-D (optionally curved) surface through parameter space: ``theta(x1, x2) = center + x1 u1 + x2 u2
    [+ (a x1^2 + b x1 + c) u3]``.

    ``u1, u2`` are the first two principal directions of the fitted points (orthonormal unless
    :meth:`filter_normalized` rescaled them); ``explained`` their share of the variance. With ``curved=True``
    the third direction's coordinate is regressed on the first with a quadratic, as the authors' landscape code
    does (spec 2.3), so the surface follows a bent valley.
    """

    center: Tensor
    directions: Tensor  # (2, D)
    explained: tuple[float, float]
    third: Tensor | None = None  # (D,) PC3 when curved
    curve: tuple[float, float, float] | None = None  # (a, b, c) of c3 ~ a c1^2 + b c1 + c

    @classmethod
    def fit(cls, points: Tensor, *, curved: bool = False, seed: int = 0, oversample: int = 8,
            niter: int = 6) -> PCAPlane:
        """Fit on ``points`` (K, D), K >= 3 (>= 4 curved), by a randomised low-rank SVD of the centred
        ``K x D`` matrix (:func:`torch.svd_lowrank`; no ``D x D`` matrix is formed)."""
        if points.ndim != 2 or points.shape[0] < (4 if curved else 3):
            raise ValueError(f"need a (K, D) tensor with K >= {4 if curved else 3} points, got {tuple(points.shape)}")
        if not torch.isfinite(points).all():
            raise ValueError("the points contain NaN or inf")
        x = points.to(torch.float64)
        center = x.mean(0)
        centred = x - center
        k = 3 if curved else 2
        q = min(k + oversample, *centred.shape)
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # svd_lowrank draws a random test matrix; keep the fit reproducible
        try:
            _, s, v = torch.svd_lowrank(centred, q=q, niter=niter, M=None)
        finally:
            torch.random.set_rng_state(state)
        total = float(centred.pow(2).sum())
        if total == 0:
            raise ValueError("all points are identical: there is no plane to fit")
        directions = v[:, :2].T.contiguous()
        explained = (float(s[0] ** 2) / total, float(s[1] ** 2) / total)
        third = curve = None
        if curved:
            third = v[:, 2].contiguous()
            c1, c3 = centred @ directions[0], centred @ third
            a, b, c = np.polyfit(c1.numpy(), c3.numpy(), 2)
            curve = (float(a), float(b), float(c))
        return cls(center, directions, explained, third, curve)

    def point(self, x1: float, x2: float) -> Tensor:
        """The parameter vector at plane coordinates ``(x1, x2)``."""
        theta = self.center + x1 * self.directions[0] + x2 * self.directions[1]
        if self.third is not None and self.curve is not None:
            a, b, c = self.curve
            theta = theta + (a * x1 * x1 + b * x1 + c) * self.third
        return theta

    def coordinates(self, points: Tensor) -> Tensor:
        """(K, 2) plane coordinates of ``points`` (K, D): least-squares projection onto the two directions
        (the orthogonal projection when they are orthonormal)."""
        d = self.directions.T  # (D, 2)
        rhs = (points.to(torch.float64) - self.center).T
        solution: Tensor = torch.linalg.lstsq(d, rhs).solution
        return solution.T

    def filter_normalized(self, reference: Sequence[Tensor] | nn.Module) -> PCAPlane:
        """Filter normalisation (Li et al., "Visualizing the Loss Landscape of Neural Nets", 2018): in each
        direction, every filter (row along dim 0 of a weight tensor with >= 2 dims) is rescaled to the norm of
        the same filter of ``reference``; 1-D tensors (biases, norm scales) get a zero direction, as in Li et
        al.'s ``ignore='biasbn'``. ``reference`` (a module or its parameter list, in the recorder's order) gives
        the tensor shapes and the filter norms; usually the weights at the plane's point of interest."""
        tensors = _params(reference)
        shapes = [p.shape for p in tensors]
        ref = parameters_to_vector([p.detach() for p in tensors]).to("cpu", torch.float64)
        if sum(int(np.prod(s)) for s in shapes) != self.center.numel():
            raise ValueError("reference parameters do not have the plane's dimension")
        new = []
        for direction in self.directions:
            parts, offset = [], 0
            for shape in shapes:
                size = int(np.prod(shape))
                d = direction[offset:offset + size].reshape(shape)
                r = ref[offset:offset + size].reshape(shape)
                if len(shape) < 2:
                    parts.append(torch.zeros(size, dtype=d.dtype))
                else:
                    dn = d.flatten(1).norm(dim=1).clamp_min(1e-12)
                    rn = r.flatten(1).norm(dim=1)
                    parts.append((d.flatten(1) * (rn / dn)[:, None]).reshape(-1))
                offset += size
            new.append(torch.cat(parts))
        return PCAPlane(self.center, torch.stack(new), self.explained, self.third, self.curve)


@torch.no_grad()
def loss_surface(model: nn.Module, plane: PCAPlane, metrics: Mapping[str, Callable[[nn.Module], float | Tensor]],
                 xs: Sequence[float], ys: Sequence[float]) -> dict[str, np.ndarray]:
    """Evaluate each metric of ``model`` at every grid point ``plane.point(x, y)``.

    Works on a deep copy of ``model`` (the original is never modified); the plane's vector is written into the
    copy's trainable parameters in ``model.parameters()`` order (the recorder's order). Buffers (e.g. BatchNorm
    running statistics) keep the model's current values. Returns ``{name: array (len(ys), len(xs))}``.
    """
    probe = copy.deepcopy(model)
    params = _params(probe)
    if sum(p.numel() for p in params) != plane.center.numel():
        raise ValueError(f"the model has {sum(p.numel() for p in params)} trainable values, the plane "
                         f"{plane.center.numel()}")
    out = {name: np.empty((len(ys), len(xs))) for name in metrics}
    dtype, device = params[0].dtype, params[0].device
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            vector_to_parameters(plane.point(float(xv), float(yv)).to(device, dtype), params)
            for name, fn in metrics.items():
                out[name][i, j] = float(fn(probe))
    return out
