"""Angular velocity of the parameters: how fast their direction of travel turns.

AutoDrop (Teng, Wang & Choromanska, arXiv 2111.15317; UAI 2024, Def. 1.1 / eq. 2) measures

    omega_i = angle(s_i, s_{i-1}),   s_i = x_{i+1} - x_i,
    angle(a, b) = (180 / pi) * arccos(<a, b> / (||a|| ||b|| + eps)),

the angle in degrees between two successive displacements of the parameter vector ``x`` (all
trainable parameters flattened together). A small omega means the parameters keep moving in the same
direction (the optimiser is still descending); omega near or above 90 degrees means successive moves
are uncorrelated or opposed (the iterate is bouncing around inside a basin).

:class:`AngularVelocity` is that measurement on its own, usable without AutoDrop.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["AngularVelocity", "angle_degrees"]


def angle_degrees(dot: float, sq_norm_a: float, sq_norm_b: float, eps: float = 0.0) -> float:
    """The angle of eq. (2) in degrees, from ``<a, b>``, ``||a||^2`` and ``||b||^2``.

    ``eps`` is added to ``||a|| ||b||`` as in the paper and the official code. With ``eps == 0`` a zero
    displacement has no direction and the angle is NaN; so is any non-finite input.
    """
    denom = math.sqrt(sq_norm_a) * math.sqrt(sq_norm_b) + eps
    if not (math.isfinite(dot) and math.isfinite(denom)) or denom == 0.0:
        return math.nan
    cos = min(1.0, max(-1.0, dot / denom))
    return math.degrees(math.acos(cos))


def _resolve_params(params: Any, trainable_only: bool = True) -> tuple[list[Tensor], list[int]]:
    """Trainable tensors (every tensor if not ``trainable_only``) and, per group, how many of them there are.

    Accepts an optimizer, a list of param-group dicts, or an iterable of tensors (one group).
    """
    if isinstance(params, torch.optim.Optimizer):
        params = params.param_groups
    if isinstance(params, Tensor):
        params = [params]
    items = list(params)
    groups: list[list[Tensor]]
    if items and all(isinstance(g, dict) for g in items):
        groups = [list(g["params"]) for g in items]
    elif all(isinstance(p, Tensor) for p in items):
        groups = [items]
    else:
        raise TypeError(
            "params must be an optimizer, a list of param-group dicts or an iterable of tensors; got "
            f"{[type(p).__name__ for p in items[:3]]}"
        )
    tensors: list[Tensor] = []
    sizes: list[int] = []
    for group in groups:
        trainable = [p for p in group if p.requires_grad or not trainable_only]
        tensors.extend(trainable)
        sizes.append(len(trainable))
    if not tensors:
        raise ValueError("AngularVelocity needs at least one trainable (requires_grad) tensor; got none")
    return tensors, sizes


def _local(t: Tensor) -> Tensor:
    """The part of ``t`` this process holds: the local shard of a DTensor (FSDP2), ``t`` itself otherwise."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def _sq_norms(tensors: Sequence[Tensor]) -> Tensor:
    """Per-tensor squared L2 norms as one float64 vector (fused ``_foreach_norm``, float64 accumulation)."""
    norms = torch._foreach_norm(list(tensors), 2, dtype=torch.float64)
    device = norms[0].device
    return torch.stack([n.to(device) for n in norms]).square()


class AngularVelocity:
    """The angle in degrees between the last two displacements of a set of parameters.

    Each :meth:`update` records a snapshot ``x_t`` of the tracked parameters (or of tensors you pass,
    e.g. an average of the parameters over an epoch) and returns
    ``angle(x_t - x_{t-1}, x_{t-1} - x_{t-2})`` (AutoDrop, eq. 2) once three snapshots exist, ``None``
    before. The vector is every trainable parameter flattened together, in the order of the groups.

    How it is computed: per-tensor squared norms come from one fused ``torch._foreach_norm`` call with
    float64 accumulation, and the inner product from the polarisation identity
    ``<d, p> = (||d||^2 + ||p||^2 - ||p - d||^2) / 2``, so the whole measurement is a handful of
    ``torch._foreach_*`` kernels over the parameter list, no Python loop over elements, and the
    parameters never leave their device. Memory: exactly two parameter-sized buffers (the previous
    snapshot and the previous displacement), in the parameters' own dtype. For float32 parameters the
    cosine carries an absolute error of about 1e-7, i.e. angles near 0 or 180 degrees are resolved to
    about 0.03 degrees; in float64 to about 1e-6 degrees.

    Args:
        params: the tensors to track, a list of param-group dicts, or an optimizer (its groups).
            Tensors with ``requires_grad=False`` are skipped.
        eps: added to ``||a|| ||b||`` as in eq. (2). The default 0 gives the exact angle (a zero
            displacement then yields NaN, since it has no direction); ``1e-8`` reproduces the official
            code, which biases small angles upward (by 0.008 degrees at unit displacement norm).
        per_group: also compute one angle per param group, readable from :attr:`group_angles`.
        sharded: the tracked tensors are this process's *shard* of a parameter vector split across the
            processes of ``process_group`` (FSDP, ZeRO, any sharding in which each rank holds a disjoint
            part). The three sums of eq. (2) (``<d, p>``, ``||d||^2``, ``||p||^2``, per group) are then
            all-reduced (SUM) before the angle is taken, so every rank gets the angle of the whole vector.
            :meth:`update` becomes a collective: call it on every rank. The reduction runs on the
            parameters' device (gloo for CPU tensors, NCCL for CUDA). With replicated parameters (plain
            DDP) leave it off: every rank already holds the whole vector and measures the same angle.
        process_group: the group to reduce over with ``sharded=True`` (default: the whole world).
        trainable_only: skip tensors with ``requires_grad=False`` (default). ``False`` tracks every tensor given,
            e.g. to restore a checkpoint whose measured set includes parameters that are frozen right now.
    """

    def __init__(self, params: Any, *, eps: float = 0.0, per_group: bool = False, sharded: bool = False,
                 process_group: Any = None, trainable_only: bool = True) -> None:
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        if not isinstance(sharded, bool):
            raise TypeError(f"sharded must be a bool, got {sharded!r}")
        if sharded and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise ValueError("sharded=True needs an initialised torch.distributed process group "
                             "(torch.distributed.init_process_group)")
        if process_group is not None and not sharded:
            raise ValueError("process_group is only used with sharded=True")
        self.sharded = sharded
        self.process_group = process_group
        self.params, group_sizes = _resolve_params(params, trainable_only)
        if not sharded and any(callable(getattr(p, "to_local", None)) for p in self.params):
            raise ValueError("the parameters are DTensors (e.g. FSDP2's fully_shard): pass sharded=True so that the "
                             "angle is computed from this rank's shard and all-reduced sums")
        ends = [sum(group_sizes[: i + 1]) for i in range(len(group_sizes))]
        self._group_bounds = [(end - size, end) for end, size in zip(ends, group_sizes)]
        self.eps = float(eps)
        self.per_group = bool(per_group)
        self._prev: list[Tensor] | None = None  # x_{t-1}
        self._disp: list[Tensor] | None = None  # x_{t-1} - x_{t-2}
        self.num_snapshots = 0
        self.last: float | None = None
        self.group_angles: list[float] | None = None

    # ------------------------------------------------------------------ measurement
    def _snapshot_source(self, tensors: Sequence[Tensor] | None) -> list[Tensor]:
        if tensors is None:
            return [_local(p.detach()) for p in self.params]
        tensors = list(tensors)
        if len(tensors) != len(self.params):
            raise ValueError(
                f"update() got {len(tensors)} tensors but tracks {len(self.params)} parameters"
            )
        for i, (t, p) in enumerate(zip(tensors, self.params)):
            if t.shape != p.shape:
                raise ValueError(f"update() tensor {i} has shape {tuple(t.shape)}, expected {tuple(p.shape)}")
        return [_local(t.detach()) for t in tensors]

    @torch.no_grad()
    def update(self, tensors: Sequence[Tensor] | None = None) -> float | None:
        """Record a snapshot; return the angle in degrees between the last two displacements.

        Returns ``None`` until three snapshots exist, NaN (with a ``RuntimeWarning``) when the
        snapshots contain NaN/inf or a displacement is exactly zero.
        """
        x = self._snapshot_source(tensors)
        self.num_snapshots += 1
        if self._prev is None:
            self._prev = [t.clone() for t in x]
            return None
        if self._disp is None:
            self._disp = list(torch._foreach_sub(x, self._prev))
            torch._foreach_copy_(self._prev, x)
            return None

        prev, disp = self._prev, self._disp
        torch._foreach_sub_(prev, x)  # prev := x_{t-1} - x_t = -d
        sq_d = _sq_norms(prev)  # ||d||^2 per tensor
        sq_p = _sq_norms(disp)  # ||p||^2, p = previous displacement
        torch._foreach_add_(disp, prev)  # disp := p - d
        sq_diff = _sq_norms(disp)
        dots = (sq_d + sq_p - sq_diff) * 0.5  # <d, p> per tensor (polarisation identity)
        # Rotate the buffers: the new previous displacement is d (= -prev), the new snapshot is x.
        torch._foreach_neg_(prev)
        torch._foreach_copy_(disp, x)
        self._disp, self._prev = prev, disp

        per_tensor = torch.stack([dots, sq_d, sq_p], dim=1)  # (tensors, 3)
        bounds = self._group_bounds if self.per_group else [(0, len(self.params))]
        stats = torch.stack([per_tensor[a:b].sum(0) for a, b in bounds])  # (groups, 3), float64
        if self.sharded:  # the sums over this rank's shard -> the sums over the whole vector
            torch.distributed.all_reduce(stats, op=torch.distributed.ReduceOp.SUM, group=self.process_group)
        rows: list[list[float]] = stats.tolist()  # one host sync
        totals = [sum(col) for col in zip(*rows)]
        if self.per_group:
            self.group_angles = [angle_degrees(dot_g, sq_a_g, sq_b_g, self.eps) for dot_g, sq_a_g, sq_b_g in rows]
        dot, sq_a, sq_b = totals
        if not all(math.isfinite(v) for v in totals):
            warnings.warn(
                "AngularVelocity: the parameters contain NaN or inf; the angle is NaN",
                RuntimeWarning,
                stacklevel=3,  # the caller of update(), past torch.no_grad's wrapper
            )
        self.last = angle_degrees(dot, sq_a, sq_b, self.eps)
        return self.last

    def reset(self) -> None:
        """Forget all snapshots (the next two updates return ``None`` again); frees both buffers."""
        self._prev = None
        self._disp = None
        self.num_snapshots = 0
        self.last = None
        self.group_angles = None

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bitwise identically: both buffers (cloned) and counters."""
        return {
            "num_snapshots": self.num_snapshots,
            "prev": None if self._prev is None else [t.clone() for t in self._prev],
            "disp": None if self._disp is None else [t.clone() for t in self._disp],
            "last": self.last,
            "group_angles": None if self.group_angles is None else list(self.group_angles),
            "eps": self.eps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; validates everything before changing anything."""
        missing = {"num_snapshots", "prev", "disp", "last"} - set(state)
        if missing:
            raise ValueError(f"AngularVelocity state_dict is missing keys {sorted(missing)}")
        buffers: dict[str, list[Tensor] | None] = {}
        for key in ("prev", "disp"):
            value = state[key]
            if value is None:
                buffers[key] = None
                continue
            if len(value) != len(self.params):
                raise ValueError(
                    f"AngularVelocity state_dict '{key}' holds {len(value)} tensors, "
                    f"this instance tracks {len(self.params)}"
                )
            for i, (t, p) in enumerate(zip(value, [_local(q.detach()) for q in self.params])):
                if tuple(t.shape) != tuple(p.shape):
                    raise ValueError(
                        f"AngularVelocity state_dict '{key}'[{i}] has shape {tuple(t.shape)}, "
                        f"expected {tuple(p.shape)}"
                    )
            buffers[key] = [t.detach().to(device=p.device, dtype=p.dtype).clone()
                            for t, p in zip(value, [_local(q.detach()) for q in self.params])]
        self._prev, self._disp = buffers["prev"], buffers["disp"]
        self.num_snapshots = int(state["num_snapshots"])
        self.last = state["last"]
        self.group_angles = state.get("group_angles")
        self.eps = float(state.get("eps", self.eps))
