"""Scale invariance, the assumption behind the exponential-LR equivalence: measure it, and impose it.

Li & Arora's equivalence needs ``L(c theta) = L(theta)`` for every ``c > 0`` on every minibatch, where
``theta`` is everything the optimizer trains (spec section 1). It holds when every trained weight is
followed by a normalization layer, the normalization layers' affine parameters are not trained and the
output layer is fixed (the paper's experiments fix BatchNorm's scale and bias; Hoffer et al. 2018 show a
fixed random output layer does not hurt). A normalization epsilon breaks it slightly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_number

__all__ = ["NORM_TYPES", "ScaleInvarianceReport", "ScaleInvariantChanges", "check_scale_invariance",
           "make_scale_invariant"]

#: Module types treated as normalization layers (their affine parameters are frozen by the recipe).
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*, lazy variants
    nn.GroupNorm,
    nn.LayerNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


# ---------------------------------------------------------------------------------------------- the recipe
@dataclass(frozen=True)
class ScaleInvariantChanges:
    """What :func:`make_scale_invariant` did.

    Attributes:
        frozen: names of the parameters it set to ``requires_grad=False`` (they were trainable before).
        norm_layers: names of the normalization modules found (their affine parameters are now frozen).
        last_layer: name of the module treated as the output layer (its parameters are now frozen), or None.
        trainable: names of the parameters that remain trainable (the ones to give the optimizer).
    """

    frozen: list[str]
    norm_layers: list[str]
    last_layer: str | None
    trainable: list[str]

    def __str__(self) -> str:
        lines = [f"make_scale_invariant: froze {len(self.frozen)} parameter tensor(s)"]
        lines += [f"  froze {name}" for name in self.frozen]
        lines.append(f"  output layer: {self.last_layer!r}; normalization layers: {self.norm_layers}")
        lines.append(f"  still trainable ({len(self.trainable)}): {self.trainable}")
        return "\n".join(lines)


def make_scale_invariant(model: nn.Module, last_layer: str | nn.Module | None = None) -> ScaleInvariantChanges:
    """Apply the paper's recipe: freeze the affine parameters of every normalization layer and the output layer.

    Args:
        model: the network (modified in place: ``requires_grad_(False)`` on the frozen parameters, their values
            are kept, so a randomly initialised output layer stays a fixed random layer).
        last_layer: the output layer, as a module of ``model`` or its name; default: the last module (in
            ``model.named_modules()`` order) that has parameters of its own and is not a normalization layer.

    Returns:
        :class:`ScaleInvariantChanges` (printable) listing what was frozen and what remains trainable. Give
        only the trainable parameters to the optimizer, and check the result with
        :func:`check_scale_invariance`: the recipe cannot see a trained weight that no normalization follows.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    if last_layer is None:
        candidates = [name for name, m in modules.items()
                      if not isinstance(m, NORM_TYPES) and any(True for _ in m.parameters(recurse=False))]
        last_name = candidates[-1] if candidates else None
    elif isinstance(last_layer, str):
        if last_layer not in modules:
            raise ValueError(f"last_layer={last_layer!r} is not a module of the model; modules: {sorted(modules)}")
        last_name = last_layer
    elif isinstance(last_layer, nn.Module):
        names = [name for name, m in modules.items() if m is last_layer]
        if not names:
            raise ValueError(f"last_layer ({type(last_layer).__name__}) is not a module of the model")
        last_name = names[0]
    else:
        raise TypeError(f"last_layer must be a module, a module name or None, got {last_layer!r}")

    norm_names = [name for name, m in modules.items() if isinstance(m, NORM_TYPES)]
    to_freeze = [*norm_names, *([last_name] if last_name is not None else [])]
    frozen: list[str] = []
    for mod_name in to_freeze:
        for p_name, p in modules[mod_name].named_parameters(recurse=False):
            if p.requires_grad:
                p.requires_grad_(False)
                frozen.append(f"{mod_name}.{p_name}" if mod_name else p_name)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    return ScaleInvariantChanges(frozen, norm_names, last_name, trainable)


# ---------------------------------------------------------------------------------------------- the check
@dataclass(frozen=True)
class ScaleInvarianceReport:
    """The result of :func:`check_scale_invariance`.

    Attributes:
        loss: the loss at the unscaled parameters.
        changes: per checked parameter tensor, ``max_s |L(s p) - L(p)| / |L(p)|`` over the scales.
        joint_change: the same when all checked tensors are scaled together (what the equivalence needs).
        not_invariant: names whose change exceeds ``rtol``, worst first.
        scaled_norm_layers: the normalization modules (name -> module) whose input is multiplied by ``s`` when
            all checked tensors are (input norm ``~ s^d`` with ``|d - 1| < 0.05``: a normalization epsilon
            perturbs ``d`` slightly, an unscaled input has ``d = 0``): the ``norm_layers`` to give
            :class:`~lrpilot.TEXP` (it keeps their ``eps`` and running statistics on the weights' scale).
        rtol: the tolerance used.
    """

    loss: float
    changes: dict[str, float]
    joint_change: float
    not_invariant: list[str]
    rtol: float
    scaled_norm_layers: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every checked tensor, and all of them jointly, are scale-invariant within ``rtol``."""
        return not self.not_invariant and self.joint_change <= self.rtol

    def __str__(self) -> str:
        head = (f"scale invariance (rtol {self.rtol:g}, loss {self.loss:.6g}): "
                f"{len(self.changes) - len(self.not_invariant)}/{len(self.changes)} tensors invariant, "
                f"joint change {self.joint_change:.3g}")
        lines = [head] + [f"  NOT invariant: {name} (relative loss change {self.changes[name]:.3g})"
                          for name in self.not_invariant]
        return "\n".join(lines)


def check_scale_invariance(model: nn.Module, loss_fn: Callable[[Any, Any], Tensor], batch: Sequence[Any], *,
                           scales: Iterable[float] = (0.5, 3.0), rtol: float = 1e-3,
                           params: Iterable[str] | None = None, train_mode: bool = True,
                           seed: int = 0) -> ScaleInvarianceReport:
    """Measure, per parameter tensor, whether the loss is invariant to scaling it.

    For every checked tensor ``p`` and every ``s`` in ``scales`` the loss ``loss_fn(model(x), y)`` on
    ``batch = (x, y)`` is evaluated with ``p`` replaced by ``s p`` and compared with the unscaled loss; the
    same with all checked tensors scaled together. Nothing is changed: parameters, buffers (BatchNorm running
    statistics), the train/eval flag and the global RNG are restored; every forward pass uses the same RNG
    seed, so dropout does not count as a change.

    Args:
        model: the network.
        loss_fn: ``loss_fn(output, target) -> scalar tensor``, e.g. ``torch.nn.functional.cross_entropy``.
        batch: ``(inputs, targets)``.
        scales: factors to try (positive, not 1).
        rtol: a tensor is *not invariant* if the relative loss change exceeds this. The default 1e-3 is far
            above float32 rounding and the effect of BatchNorm's ``eps = 1e-5`` at ordinary weight scales, and
            far below the change caused by scaling a non-invariant tensor (an output layer: O(1)).
        params: names of the parameters to check (default: every parameter with ``requires_grad``).
        train_mode: evaluate in train mode (BatchNorm uses batch statistics, as in training; default). In eval
            mode the running statistics do not follow the scaling.
        seed: the RNG seed of every forward pass.

    Returns:
        :class:`ScaleInvarianceReport`; ``report.not_invariant`` names the offenders, ``report.ok`` is the
        verdict.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(output, target), got {loss_fn!r}")
    if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence) or len(batch) != 2:
        raise TypeError(f"batch must be a pair (inputs, targets), got {type(batch).__name__}")
    scale_list = list(scales)
    if not scale_list:
        raise ValueError("scales must not be empty")
    for s in scale_list:
        check_number("scales", s, low=0, low_open=True)
        if s == 1:
            raise ValueError("scales must not contain 1 (no scaling)")
    check_number("rtol", rtol, low=0)
    check_number("seed", seed, integer=True)
    named = dict(model.named_parameters())
    if params is None:
        names = [name for name, p in named.items() if p.requires_grad]
    else:
        names = list(params)
        unknown = [n for n in names if n not in named]
        if unknown:
            raise ValueError(f"params {unknown} are not parameters of the model")
    if not names:
        raise ValueError("no parameters to check (none has requires_grad=True)")

    x, y = batch
    norm_modules = {name: m for name, m in model.named_modules() if isinstance(m, NORM_TYPES)}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    was_training = model.training
    captured: dict[str, float] = {}

    def capture(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            captured[name] = float(torch.linalg.vector_norm(args[0].detach(), dtype=torch.float64))
        return hook

    def loss_now() -> float:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            value = float(loss_fn(model(x), y))
        for name, b in model.named_buffers():  # undo running-statistics updates
            b.copy_(buffers[name])
        return value

    handles = [m.register_forward_pre_hook(capture(name)) for name, m in norm_modules.items()]
    try:
        model.train(train_mode)
        with torch.no_grad():
            base = loss_now()
            base_inputs = dict(captured)
            denom = max(abs(base), 1e-30)
            changes: dict[str, float] = {}
            for name in names:
                p = named[name]
                original = p.detach().clone()
                worst = 0.0
                for s in scale_list:
                    p.mul_(s)
                    worst = max(worst, abs(loss_now() - base) / denom)
                    p.copy_(original)
                changes[name] = worst if math.isfinite(worst) else math.inf
            originals = [named[n].detach().clone() for n in names]
            joint, scaled_layers = 0.0, set(norm_modules)
            for s in scale_list:
                for n in names:
                    named[n].mul_(s)
                joint = max(joint, abs(loss_now() - base) / denom)
                for n, orig in zip(names, originals):
                    named[n].copy_(orig)
                for layer in list(scaled_layers):  # input ~ s^degree: keep the layers of degree ~1
                    before, after = base_inputs.get(layer, 0.0), captured.get(layer, 0.0)
                    degree = math.log(after / before) / math.log(s) if before > 0 and after > 0 else math.nan
                    if not abs(degree - 1) < 0.05:
                        scaled_layers.discard(layer)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    not_invariant = sorted((n for n in names if not changes[n] <= rtol), key=lambda n: -changes[n])
    return ScaleInvarianceReport(
        loss=base, changes=changes, joint_change=joint if math.isfinite(joint) else math.inf,
        not_invariant=not_invariant, rtol=float(rtol),
        scaled_norm_layers={name: m for name, m in norm_modules.items() if name in scaled_layers},
    )
