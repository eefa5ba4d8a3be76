"""The methods ``lrpilot bench`` compares: a registry from a name to how it builds its optimizer and scheduler.

A :class:`Method` builds, for a model, a base learning rate, the number of optimizer steps per epoch and the
epoch budget, a :class:`Built`: the optimizer, the scheduler (or none) and when the scheduler is stepped
(after every optimizer step, after every epoch, or after every epoch with the train loss, as
``ReduceLROnPlateau`` wants). Hyper-parameters are each family's conventional defaults, not tuned per task:

* SGD family: momentum 0.9, weight decay 5e-4, base LR 0.1 (constant, MultiStepLR at 50%/75% of the budget
  x0.1, cosine per step, 5% linear warmup + cosine, ReduceLROnPlateau x0.1 after 5 flat epochs, AutoDrop,
  ActiveSGD, D-Adaptation SGD at its LR factor 1, schedule-free SGD at its default LR 1.0).
* Adam family: AdamW with torch's defaults (LR 1e-3, weight decay 1e-2): constant, cosine, AutoDrop,
  ActiveAdamW; schedule-free AdamW at its default LR 2.5e-3 with 5% warmup; Prodigy and D-Adaptation Adam
  at their LR factor 1.
* ``texp``: lrpilot's TEXP (Li & Arora) on a scale-invariant network, the no-weight-decay twin of ``multistep``;
  it only applies to the BatchNorm tasks (``mnist1d-bncnn``, ``mnist1d-resnet-bn``: every conv there is followed
  by BatchNorm, so each is scale-invariant once :func:`lrpilot.make_scale_invariant` has frozen the BN affine
  parameters and the linear head, whose weights are then multiplied by 4: the frozen head sets the logits'
  temperature; gain 4 as in ``benchmarks/exponential_demo.py``).

Adding a method is one :func:`register` call; optional packages (``schedulefree``, ``prodigyopt``,
``dadaptation``: ``pip install 'lrpilot[bench]'``) are imported only when their method is built.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.optim import Optimizer

__all__ = ["METHODS", "Built", "Method", "get_method", "register"]

Interval = Literal["step", "epoch", "plateau"]

SGD_LR, SGD_MOMENTUM, SGD_WD = 0.1, 0.9, 5e-4
ADAMW_LR, ADAMW_WD = 1e-3, 1e-2
WARMUP_FRACTION = 0.05
TEXP_HEAD_GAIN = 4.0


@dataclass
class Built:
    """What one run trains with: ``optimizer``; ``scheduler`` (or None) stepped per ``interval``;
    ``schedule_free``: call ``optimizer.train()`` before training and ``optimizer.eval()`` before evaluation."""

    optimizer: Optimizer
    scheduler: Any = None
    interval: Interval | None = None
    schedule_free: bool = False


@dataclass(frozen=True)
class Method:
    """A benchmarked method.

    Attributes:
        name: registry key (the CLI's ``--methods`` value).
        description: one line for the report.
        default_lr: the base LR the suites use (for LR-free optimizers, their LR factor).
        build: ``build(model, lr, steps_per_epoch, epochs) -> Built``.
        reference: the plain method whose optimizer-step time this one's overhead is measured against.
        requires: the pip package it imports, if not torch or lrpilot.
        tasks: the tasks it applies to (None: all).
        family: ``"sgd"`` or ``"adam"``, for grouping in the report.
    """

    name: str
    description: str
    default_lr: float
    build: Callable[[nn.Module, float, int, int], Built]
    reference: str | None = None
    requires: str | None = None
    tasks: tuple[str, ...] | None = None
    family: str = "sgd"

    def applies_to(self, task: str) -> bool:
        """Whether this method can run on ``task``."""
        return self.tasks is None or task in self.tasks


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (its name must be new) and return it."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``; ``KeyError`` naming it and the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


def _import(package: str, method: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ImportError(f"method {method!r} needs the '{package}' package: pip install {package} "
                          "(or pip install 'lrpilot[bench]')") from err


def _params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _sgd(model: nn.Module, lr: float) -> Optimizer:
    return torch.optim.SGD(_params(model), lr=lr, momentum=SGD_MOMENTUM, weight_decay=SGD_WD)


def _adamw(model: nn.Module, lr: float) -> Optimizer:
    return torch.optim.AdamW(_params(model), lr=lr, weight_decay=ADAMW_WD)


def _warmup_cosine(total: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return factor


def _cosine(opt: Optimizer, spe: int, epochs: int) -> Built:
    return Built(opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spe * epochs), "step")


def _multistep(opt: Optimizer, epochs: int) -> Built:
    milestones = sorted({max(1, round(0.5 * epochs)), max(1, round(0.75 * epochs))})
    return Built(opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones, 0.1), "epoch")


def _autodrop(opt: Optimizer) -> Built:
    from lrpilot import AutoDrop

    return Built(opt, AutoDrop(opt), "epoch")


def _schedule_free(model: nn.Module, lr: float, spe: int, epochs: int, cls: str, **kw: Any) -> Built:
    sf = _import("schedulefree", cls)
    opt = getattr(sf, cls)(_params(model), lr=lr, warmup_steps=round(WARMUP_FRACTION * spe * epochs), **kw)
    return Built(opt, schedule_free=True)


def _texp(model: nn.Module, lr: float, spe: int, epochs: int) -> Built:
    import torch.nn.functional as F

    from lrpilot import TEXP, check_scale_invariance, make_scale_invariant

    make_scale_invariant(model)
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if heads:  # the frozen random head's scale is the logits' temperature (docs/exponential.md): gain 4 as there
        with torch.no_grad():
            heads[-1].weight.mul_(TEXP_HEAD_GAIN)
    params = _params(model)
    probe_in = next(m for m in model.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear))
    # a random probe batch of the first layer's input shape (channels-first, length 40 as in MNIST-1D)
    shape = (8, probe_in.in_channels, 40) if isinstance(probe_in, nn.Conv1d) else (8, probe_in.in_features)
    device = params[0].device  # the probe goes where the model is (``lrpilot bench --device cuda``)
    probe = (torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(device),
             (torch.arange(8) % 10).to(device))
    report = check_scale_invariance(model, F.cross_entropy, probe)
    if not report.ok:
        raise RuntimeError(f"texp needs a scale-invariant network:\n{report}")
    opt = torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM)
    milestones = sorted({max(1, round(0.5 * epochs)) * spe, max(1, round(0.75 * epochs)) * spe})
    sched = TEXP(opt, lr, SGD_WD, SGD_MOMENTUM, milestones, 0.1, renorm_every=spe,
                 norm_layers=report.scaled_norm_layers.values())
    return Built(opt, sched, "step")


# ------------------------------------------------------------------------------------------- the registry
register(Method("constant", "SGD, constant LR", SGD_LR, lambda m, lr, spe, ep: Built(_sgd(m, lr))))
register(Method("multistep", "SGD, MultiStepLR x0.1 at 50% and 75% of the epochs", SGD_LR,
                lambda m, lr, spe, ep: _multistep(_sgd(m, lr), ep), reference="constant"))
register(Method("cosine", "SGD, cosine to 0 (per step)", SGD_LR,
                lambda m, lr, spe, ep: _cosine(_sgd(m, lr), spe, ep), reference="constant"))


def _build_warmup_cosine(model: nn.Module, lr: float, spe: int, epochs: int) -> Built:
    opt = _sgd(model, lr)
    factor = _warmup_cosine(spe * epochs, max(1, round(WARMUP_FRACTION * spe * epochs)))
    return Built(opt, torch.optim.lr_scheduler.LambdaLR(opt, factor), "step")


register(Method("warmup-cosine", "SGD, 5% linear warmup then cosine (per step)", SGD_LR, _build_warmup_cosine,
                reference="constant"))
register(Method("plateau", "SGD, ReduceLROnPlateau x0.1 after 5 epochs without train-loss progress", SGD_LR,
                lambda m, lr, spe, ep: (lambda o: Built(o, torch.optim.lr_scheduler.ReduceLROnPlateau(
                    o, factor=0.1, patience=5), "plateau"))(_sgd(m, lr)), reference="constant"))
register(Method("adamw", "AdamW, constant LR", ADAMW_LR, lambda m, lr, spe, ep: Built(_adamw(m, lr)), family="adam"))
register(Method("adamw-cosine", "AdamW, cosine to 0 (per step)", ADAMW_LR,
                lambda m, lr, spe, ep: _cosine(_adamw(m, lr), spe, ep), reference="adamw", family="adam"))
register(Method("sf-sgd", "schedule-free SGD (m 0.9, wd 5e-4, 5% warmup)", 1.0,
                lambda m, lr, spe, ep: _schedule_free(m, lr, spe, ep, "SGDScheduleFree", momentum=SGD_MOMENTUM,
                                                      weight_decay=SGD_WD),
                reference="constant", requires="schedulefree"))
register(Method("sf-adamw", "schedule-free AdamW (5% warmup)", 2.5e-3,
                lambda m, lr, spe, ep: _schedule_free(m, lr, spe, ep, "AdamWScheduleFree"),
                reference="adamw", requires="schedulefree", family="adam"))
register(Method("prodigy", "Prodigy (LR-free Adam), defaults", 1.0,
                lambda m, lr, spe, ep: Built(_import("prodigyopt", "prodigy").Prodigy(_params(m), lr=lr)),
                reference="adamw", requires="prodigyopt", family="adam"))
register(Method("dadapt-sgd", "D-Adaptation SGD (m 0.9, wd 5e-4)", 1.0,
                lambda m, lr, spe, ep: Built(_import("dadaptation", "dadapt-sgd").DAdaptSGD(
                    _params(m), lr=lr, momentum=SGD_MOMENTUM, weight_decay=SGD_WD)),
                reference="constant", requires="dadaptation"))
register(Method("dadapt-adam", "D-Adaptation Adam, defaults", 1.0,
                lambda m, lr, spe, ep: Built(_import("dadaptation", "dadapt-adam").DAdaptAdam(_params(m), lr=lr)),
                reference="adamw", requires="dadaptation", family="adam"))
register(Method("autodrop-sgd", "lrpilot AutoDrop (default mode) on SGD", SGD_LR,
                lambda m, lr, spe, ep: _autodrop(_sgd(m, lr)), reference="constant"))
register(Method("autodrop-adamw", "lrpilot AutoDrop (default mode) on AdamW", ADAMW_LR,
                lambda m, lr, spe, ep: _autodrop(_adamw(m, lr)), reference="adamw", family="adam"))


def _active(cls_name: str, **kw: Any) -> Callable[[nn.Module, float, int, int], Built]:
    def build(model: nn.Module, lr: float, spe: int, epochs: int) -> Built:
        import lrpilot

        return Built(getattr(lrpilot, cls_name)(_params(model), lr=lr, steps_per_epoch=spe, **kw))
    return build


register(Method("active-sgd", "lrpilot ActiveSGD (m 0.9, wd 5e-4)", SGD_LR,
                _active("ActiveSGD", momentum=SGD_MOMENTUM, weight_decay=SGD_WD), reference="constant"))
register(Method("active-adamw", "lrpilot ActiveAdamW (wd 1e-2)", ADAMW_LR,
                _active("ActiveAdamW", weight_decay=ADAMW_WD), reference="adamw", family="adam"))
register(Method("texp", "lrpilot TEXP: no-WD exponential twin of multistep (scale-invariant BN net only)", SGD_LR,
                _texp, reference="constant", tasks=("mnist1d-bncnn", "mnist1d-resnet-bn")))
