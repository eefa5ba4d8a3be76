"""The methods ``lrpilot bench`` compares: a registry from a name to how it builds its optimizer and scheduler.

A :class:`Method` builds, for a model, a base learning rate, the number of optimizer steps per epoch and the
epoch budget, a :class:`Built`: the optimizer, the scheduler (or none) and when the scheduler is stepped
(after every optimizer step, after every epoch, or after every epoch with the train loss, as
``ReduceLROnPlateau`` wants). Hyper-parameters are each family's conventional defaults, not tuned per task:

* SGD family: momentum 0.9, weight decay 5e-4, base LR 0.1: ``constant``, ``multistep`` (MultiStepLR x0.1 at
  50%/75% of the budget), ``cosine`` (per step), ``warmup-cosine`` (5% linear warmup + cosine), ``plateau``
  (ReduceLROnPlateau x0.1 after 5 flat epochs), ``autodrop-sgd`` (AutoDrop), ``active-sgd`` (ActiveSGD),
  ``dadapt-sgd`` (D-Adaptation SGD at its LR factor 1), ``sf-sgd`` (schedule-free SGD at its default LR 1.0),
  ``dog`` (DoG at the ``dog-optimizer`` package's defaults, evaluated at its polynomial-decay iterate average, as
  its authors prescribe).
* Adam family: AdamW with torch's defaults (LR 1e-3, weight decay 1e-2): ``adamw`` (constant), ``adamw-cosine``,
  ``adamw-wsd`` (warmup-stable-decay: 5% linear warmup, constant, linear cooldown to 0 over the last 20%; Hägele
  et al. 2024), ``autodrop-adamw``, ``active-adamw``; ``sf-adamw`` (schedule-free AdamW at its default LR 2.5e-3
  with 5% warmup); ``prodigy`` and ``dadapt-adam`` at their LR factor 1; ``prodigy-sf``
  (``prodigy-plus-schedule-free``'s ProdigyPlusScheduleFree at its defaults, switched with ``train()``/
  ``eval()`` like schedule-free); ``mechanic-adamw`` (``mechanic-pytorch``'s Mechanic learning the LR scale of
  torch's AdamW at base LR 1, its README's call, package defaults); lrpilot's ``pilot`` (told the budget) and
  ``pilot-anytime`` (not told it).
* ``texp``: lrpilot's TEXP (Li & Arora) on a scale-invariant network, the no-weight-decay twin of ``multistep``;
  it only applies to the BatchNorm tasks (``mnist1d-bncnn``, ``mnist1d-resnet-bn``: every conv there is followed
  by BatchNorm, so each is scale-invariant once :func:`lrpilot.make_scale_invariant` has frozen the BN affine
  parameters and the linear head, whose weights are then multiplied by 4: the frozen head sets the logits'
  temperature; gain 4 as in ``benchmarks/exponential_demo.py``).

Each :class:`Method` also says whether it must be told the training length (``needs_budget``: ``multistep``,
``cosine``, ``warmup-cosine``, ``adamw-cosine``, ``adamw-wsd``, ``texp``, ``pilot``), whether it is lrpilot's
(``lrpilot``) and whether it takes an LR (``takes_lr``: not the LR-free optimizers), which the report's verdict
and robustness column read. Adding a method is one :func:`register` call; optional packages (``schedulefree``,
``prodigyopt``, ``dadaptation``, ``dog-optimizer``, ``prodigy-plus-schedule-free``, ``mechanic-pytorch``:
``pip install 'lrpilot[bench]'``) are imported only when their method is built.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.optim import Optimizer

from lrpilot.telemetry import EffectiveLR, lr_value

__all__ = ["METHODS", "Built", "Method", "get_method", "register"]

Interval = Literal["step", "epoch", "plateau"]

SGD_LR, SGD_MOMENTUM, SGD_WD = 0.1, 0.9, 5e-4
ADAMW_LR, ADAMW_WD = 1e-3, 1e-2
WARMUP_FRACTION = 0.05
WSD_COOLDOWN = 0.2
#: The pip package of each optional module a method imports (``Method.requires``), where the names differ.
PIP_PACKAGES = {"dog": "dog-optimizer", "prodigyplus": "prodigy-plus-schedule-free",
                "mechanic_pytorch": "mechanic-pytorch"}
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
        requires: the module it imports, if not torch or lrpilot (its pip package: :data:`PIP_PACKAGES`, or the
            same name).
        tasks: the tasks it applies to (None: all).
        family: ``"sgd"`` or ``"adam"``, for grouping in the report.
        needs_budget: whether it must be told the training length (a schedule over the budget: multistep,
            cosine, warmup-stable-decay, ``Pilot(total_steps=...)``); the report's verdict names the best method
            that needs none, for a user who does not know how long they will train.
        lrpilot: whether it is one of lrpilot's own methods (bold in the tables, solid lines in the figures,
            compared with the best other method of each task in the verdict).
        takes_lr: whether ``default_lr`` is a learning rate a user has to choose (False for the LR-free
            optimizers, whose value is a multiplier or an initial guess they correct); the report's
            robustness column (worst final over the LR sweep) is for the methods that take one.
    """

    name: str
    description: str
    default_lr: float
    build: Callable[[nn.Module, float, int, int], Built]
    reference: str | None = None
    requires: str | None = None
    tasks: tuple[str, ...] | None = None
    family: str = "sgd"
    needs_budget: bool = False
    lrpilot: bool = False
    takes_lr: bool = True

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


def _import(module: str, method: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = PIP_PACKAGES.get(module, module)
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
                lambda m, lr, spe, ep: _multistep(_sgd(m, lr), ep), reference="constant", needs_budget=True))
register(Method("cosine", "SGD, cosine to 0 (per step)", SGD_LR,
                lambda m, lr, spe, ep: _cosine(_sgd(m, lr), spe, ep), reference="constant", needs_budget=True))


def _build_warmup_cosine(model: nn.Module, lr: float, spe: int, epochs: int) -> Built:
    opt = _sgd(model, lr)
    factor = _warmup_cosine(spe * epochs, max(1, round(WARMUP_FRACTION * spe * epochs)))
    return Built(opt, torch.optim.lr_scheduler.LambdaLR(opt, factor), "step")


register(Method("warmup-cosine", "SGD, 5% linear warmup then cosine (per step)", SGD_LR, _build_warmup_cosine,
                reference="constant", needs_budget=True))
register(Method("plateau", "SGD, ReduceLROnPlateau x0.1 after 5 epochs without train-loss progress", SGD_LR,
                lambda m, lr, spe, ep: (lambda o: Built(o, torch.optim.lr_scheduler.ReduceLROnPlateau(
                    o, factor=0.1, patience=5), "plateau"))(_sgd(m, lr)), reference="constant"))
register(Method("adamw", "AdamW, constant LR", ADAMW_LR, lambda m, lr, spe, ep: Built(_adamw(m, lr)), family="adam"))
register(Method("adamw-cosine", "AdamW, cosine to 0 (per step)", ADAMW_LR,
                lambda m, lr, spe, ep: _cosine(_adamw(m, lr), spe, ep), reference="adamw", family="adam",
                needs_budget=True))
register(Method("sf-sgd", "schedule-free SGD (m 0.9, wd 5e-4, 5% warmup)", 1.0,
                lambda m, lr, spe, ep: _schedule_free(m, lr, spe, ep, "SGDScheduleFree", momentum=SGD_MOMENTUM,
                                                      weight_decay=SGD_WD),
                reference="constant", requires="schedulefree"))
register(Method("sf-adamw", "schedule-free AdamW (5% warmup)", 2.5e-3,
                lambda m, lr, spe, ep: _schedule_free(m, lr, spe, ep, "AdamWScheduleFree"),
                reference="adamw", requires="schedulefree", family="adam"))
register(Method("prodigy", "Prodigy (LR-free Adam), defaults", 1.0,
                lambda m, lr, spe, ep: Built(_import("prodigyopt", "prodigy").Prodigy(_params(m), lr=lr)),
                reference="adamw", requires="prodigyopt", family="adam", takes_lr=False))
register(Method("dadapt-sgd", "D-Adaptation SGD (m 0.9, wd 5e-4)", 1.0,
                lambda m, lr, spe, ep: Built(_import("dadaptation", "dadapt-sgd").DAdaptSGD(
                    _params(m), lr=lr, momentum=SGD_MOMENTUM, weight_decay=SGD_WD)),
                reference="constant", requires="dadaptation", takes_lr=False))
register(Method("dadapt-adam", "D-Adaptation Adam, defaults", 1.0,
                lambda m, lr, spe, ep: Built(_import("dadaptation", "dadapt-adam").DAdaptAdam(_params(m), lr=lr)),
                reference="adamw", requires="dadaptation", family="adam", takes_lr=False))
register(Method("autodrop-sgd", "lrpilot AutoDrop (default mode) on SGD", SGD_LR,
                lambda m, lr, spe, ep: _autodrop(_sgd(m, lr)), reference="constant", lrpilot=True))
register(Method("autodrop-adamw", "lrpilot AutoDrop (default mode) on AdamW", ADAMW_LR,
                lambda m, lr, spe, ep: _autodrop(_adamw(m, lr)), reference="adamw", family="adam",
                lrpilot=True))


def _active(cls_name: str, **kw: Any) -> Callable[[nn.Module, float, int, int], Built]:
    def build(model: nn.Module, lr: float, spe: int, epochs: int) -> Built:
        import lrpilot

        return Built(getattr(lrpilot, cls_name)(_params(model), lr=lr, steps_per_epoch=spe, **kw))
    return build


register(Method("active-sgd", "lrpilot ActiveSGD (m 0.9, wd 5e-4)", SGD_LR,
                _active("ActiveSGD", momentum=SGD_MOMENTUM, weight_decay=SGD_WD), reference="constant",
                lrpilot=True))
register(Method("active-adamw", "lrpilot ActiveAdamW (wd 1e-2)", ADAMW_LR,
                _active("ActiveAdamW", weight_decay=ADAMW_WD), reference="adamw", family="adam",
                lrpilot=True))
register(Method("texp", "lrpilot TEXP: no-WD exponential twin of multistep (scale-invariant BN net only)", SGD_LR,
                _texp, reference="constant", tasks=("mnist1d-bncnn", "mnist1d-resnet-bn"),
                needs_budget=True, lrpilot=True))


def _pilot(budget: bool) -> Callable[[nn.Module, float, int, int], Built]:
    def build(model: nn.Module, lr: float, spe: int, epochs: int) -> Built:
        from lrpilot import Pilot

        return Built(Pilot(_params(model), lr=lr, total_steps=spe * epochs if budget else None))
    return build


# Both take an initial guess of the LR (where Prodigy's estimate starts) that they correct, not an LR to choose.
register(Method("pilot", "lrpilot Pilot, given the budget (total_steps)", 1e-6, _pilot(True), reference="adamw",
                family="adam", needs_budget=True, lrpilot=True, takes_lr=False))
register(Method("pilot-anytime", "lrpilot Pilot, no budget (drops once its estimate settled and its steps stall)",
                1e-6, _pilot(False), reference="adamw", family="adam", lrpilot=True, takes_lr=False))


# ------------------------------------------------------------------ more peers a user would pick, at their defaults
def _wsd(total: int, warmup: int, cooldown: int) -> Callable[[int], float]:
    """Warmup-stable-decay: linear warmup over ``warmup`` steps, 1 until the last ``cooldown`` steps of ``total``,
    then linear to 0 at ``total`` (Hägele et al. 2024)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if step < total - cooldown:
            return 1.0
        return max(0.0, (total - step) / max(1, cooldown))
    return factor


def _build_adamw_wsd(model: nn.Module, lr: float, spe: int, epochs: int) -> Built:
    opt = _adamw(model, lr)
    total = spe * epochs
    factor = _wsd(total, max(1, round(WARMUP_FRACTION * total)), max(1, round(WSD_COOLDOWN * total)))
    return Built(opt, torch.optim.lr_scheduler.LambdaLR(opt, factor), "step")


register(Method("adamw-wsd", "AdamW, warmup-stable-decay: 5% linear warmup, constant, 20% linear cooldown to 0 "
                "(per step)", ADAMW_LR, _build_adamw_wsd, reference="adamw", family="adam", needs_budget=True))


def _uniform(lr: float) -> EffectiveLR:
    """The effective LR of a param group whose every coordinate steps with ``lr``."""
    return EffectiveLR(lr, lr, lr)


class _PolynomialAverage:
    """The polynomial-decay iterate average DoG's authors pair it with (Shamir & Zhang 2013, ``gamma`` 8 as in the
    ``dog`` package's ``PolynomialDecayAverager``): ``avg += (gamma + 1) / (gamma + t) (x_t - avg)`` over the
    parameters and floating-point buffers (BatchNorm statistics). :meth:`swap_in` puts the average into the model
    (stashing the iterate) for evaluation, :meth:`swap_out` puts the iterate back. Kept here rather than the
    package's averager, whose state-dict loop updates a tied weight (the GPT's head) once per name."""

    def __init__(self, model: nn.Module, gamma: float = 8.0) -> None:
        self.tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
        self.average = [t.detach().clone() for t in self.tensors]
        self.gamma, self.t = gamma, 1
        self.stash: list[torch.Tensor] | None = None

    @torch.no_grad()
    def step(self) -> None:
        weight = (self.gamma + 1) / (self.gamma + self.t)
        for avg, tensor in zip(self.average, self.tensors):
            avg.lerp_(tensor, weight)
        self.t += 1

    @torch.no_grad()
    def swap_in(self) -> None:
        if self.stash is None:
            self.stash = [t.detach().clone() for t in self.tensors]
            for tensor, avg in zip(self.tensors, self.average):
                tensor.copy_(avg)

    @torch.no_grad()
    def swap_out(self) -> None:
        if self.stash is not None:
            for tensor, saved in zip(self.tensors, self.stash):
                tensor.copy_(saved)
            self.stash = None


def _build_dog(model: nn.Module, lr: float, spe: int, epochs: int) -> Built:
    """DoG at the ``dog`` package's defaults (lr 1, no weight decay; ``reps_rel`` 1e-6, or 1e-4 for a network with
    BatchNorm, as its docstring prescribes), evaluated at its polynomial-decay iterate average: the package's
    docstring calls the averaging crucial. The average is swapped in by ``eval()`` and out by ``train()``, the
    switch the loop makes for schedule-free optimizers."""
    batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    average = _PolynomialAverage(model)

    class AveragedDoG(_import("dog", "dog").DoG):  # type: ignore[misc]
        def step(self, closure: Any = None) -> Any:
            loss = super().step(closure)
            average.step()
            return loss

        def train(self) -> None:
            average.swap_out()

        def eval(self) -> None:
            average.swap_in()

        def effective_lr(self) -> list[EffectiveLR]:
            """DoG's step size ``eta`` = lr x max distance from x_0 / sqrt(sum of squared gradient norms)."""
            return [_uniform(lr_value(group["eta"][0]) if "eta" in group else 0.0) for group in self.param_groups]

    opt = AveragedDoG(_params(model), lr=lr, reps_rel=1e-4 if batchnorm else 1e-6)
    return Built(opt, schedule_free=True)


register(Method("dog", "DoG (distance over gradients, LR-free SGD), defaults, evaluated at its polynomial iterate "
                "average", 1.0, _build_dog, reference="constant", requires="dog", takes_lr=False))


def _build_prodigy_sf(model: nn.Module, lr: float, spe: int, epochs: int) -> Built:
    cls = _import("prodigyplus", "prodigy-sf").ProdigyPlusScheduleFree
    with contextlib.redirect_stdout(io.StringIO()):  # it prints that one param group disables split_groups
        opt = cls(_params(model), lr=lr)
    return Built(opt, schedule_free=True)


register(Method("prodigy-sf", "Prodigy + schedule-free (prodigy-plus-schedule-free), defaults", 1.0,
                _build_prodigy_sf, reference="adamw", requires="prodigyplus", family="adam", takes_lr=False))


def _build_mechanic(model: nn.Module, lr: float, spe: int, epochs: int) -> Built:
    """Mechanic (Cutkosky, Defazio & Mehta 2023) tuning AdamW's LR scale, at its package defaults (``s_decay``
    0.01, six betas, ``s_init`` 1e-8) on torch's AdamW at base LR 1.0, the package README's call."""
    mechanize = _import("mechanic_pytorch", "mechanic-adamw").mechanize

    class Mechanic(mechanize(torch.optim.AdamW)):  # type: ignore[misc]
        def effective_lr(self) -> list[EffectiveLR]:
            """The base LR x Mechanic's learned scale ``s`` (summed over its betas)."""
            state = self.state.get("_mechanic")
            scale = float(state["s"].sum()) if state is not None else 0.0
            return [_uniform(lr_value(g["lr"]) * scale) for g in self.param_groups]

    return Built(Mechanic(_params(model), lr=lr, weight_decay=ADAMW_WD))


register(Method("mechanic-adamw", "Mechanic (mechanic-pytorch) learning AdamW's LR scale, defaults", 1.0,
                _build_mechanic, reference="adamw", requires="mechanic_pytorch", family="adam", takes_lr=False))
