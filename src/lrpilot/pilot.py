"""``Pilot``: an AdamW that decides its learning rate and its schedule from what it measures.

``Pilot(model.parameters())`` is the whole call: no LR, no scheduler, no ``train()``/``eval()`` switch, no epoch
hook. Two decisions are taken during training, each from a published signal (docs/pilot.md has the figures
behind every default):

1. **The LR scale** -- Prodigy's distance estimate (Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive
   Parameter-Free Learner", ICML 2024, arXiv:2306.06101, the Adam version; as in the authors' ``prodigyopt`` 1.1
   with its defaults: no bias correction, unlimited growth, ``beta3 = sqrt(beta2)``)::

       r_k   = beta3 r_{k-1} + (d_k / d_0) eta_k <g_k, x_0 - x_k>          (numerator)
       s_k   = beta3 s_{k-1} + (d_k / d_0) d_k c g_k                        (a parameter-sized buffer)
       d_{k+1} = max(d_k, r_k / ||s_k||_1)
       m_k = beta1 m_{k-1} + d_k (1 - beta1) g_k,   v_k = beta2 v_{k-1} + d_k^2 (1 - beta2) g_k^2
       x_{k+1} = x_k - eta_k lambda x_k - eta_k m_k / (sqrt(v_k) + d_k eps),    eta_k = d_k f_k c

   ``d`` starts at ``lr`` (the user's guess, default 1e-6: Prodigy's ``d0``) and only grows (and only while
   ``f = 1``): the estimate is a lower bound on the distance to the solution, so a guess below the right LR is
   corrected within tens of steps; a guess *above* it is kept (docs/pilot.md measures how far that holds).
   ``c`` is the param group's ``lr`` at construction, a multiplier (1.0), as in Prodigy; ``f_k`` is the schedule
   factor below.
   The ``eps`` term is weighted by ``d_k``, as the paper writes the algorithm; the authors' code (``prodigyopt``
   1.1.2 and its ``prodigy_reference.py``) adds ``d_{k+1} eps``, the estimate already updated in the same step.
   That is the one difference: with an ``eps`` below float64 rounding the two take the same run, and at the default
   ``1e-8`` their estimates differ by a relative 3e-5 after 150 steps of a small MLP
   (``tests/test_pilot_reference.py``). Neither weight wins on our tasks (``benchmarks/prodigy_eps.py``: -0.6 to
   +1.8 points over five tasks); Pilot keeps the paper's.

2. **The schedule** ``f_k``:

   * ``total_steps`` given: warmup-stable-decay -- ``f`` linear from ``1/W`` to 1 over the first ``warmup``
     fraction (0.1, ``W`` steps), 1 until the last ``cooldown`` fraction of the budget (default 0.2), then linear
     to 0 at ``total_steps`` (Hägele et al., "Scaling Laws and Compute-Optimal Training
     Beyond Fixed Training Durations", NeurIPS 2024, section 3: a 20% linear cooldown matches cosine; Ren, Ma &
     Ying: keep the large LR long and decay late). ``s`` is weighted without ``f`` (Prodigy's ``safeguard_warmup``).
     The default weight decay is then :data:`BUDGET_WEIGHT_DECAY` (0.1; 0 in anytime mode; docs/pilot.md).
   * no budget ("anytime"): ``f = drop_factor ** drops``, the drops decided from two signals read at the end of
     measurement windows that grow with training (``W = max(1, t // 20)`` steps, so the same rule serves 20 and
     100k steps): (a) the estimate has *settled* -- ``d`` grew less than 5% over the last 3/4 of the run (not
     judged before step 100); (b) the steps have stalled -- the mean over the last ``window`` windows of the
     descent alignment ``cos(g_k, u_{k-1})`` (a step's gradient against the previous update's direction, read
     at every ``alignment_every``-th step: a sample of the window) is below zero with confidence
     (:class:`~lrpilot.saturation.StalledDescentTest`: Pflug's stationarity diagnostic, Chee & Toulis, AISTATS
     2018, tested with a confidence bound as in SASA, Lang, Zhang & Xiao, NeurIPS 2019). A drop also waits
     until the step count is ``hold`` (4) times that of the last drop (the first: of the settling): late decay
     (Ren, Ma & Ying), each phase three times as long as all before it. The estimate is frozen
     from the first drop (or the cooldown) on: it is the scale at the full LR.

Every decision is visible: :meth:`Pilot.effective_lr` (the protocol of :mod:`lrpilot.telemetry`),
:meth:`Pilot.metrics` and :attr:`Pilot.events` (a :class:`PilotEvent` for each change of scale by a factor 2,
each drop, the start of the cooldown and each skipped step).

Guarantees: a step whose gradients hold NaN/inf changes no parameter, moment or estimate (one host read per step,
as ``GradScaler``'s), and with a budget it still counts as one of its steps, so the cooldown ends at 0 on the
budget's last step however many were skipped -- ``GradScaler`` included, which hands Pilot its overflowing steps
instead of skipping the call (``unscale_in_step``);
``state_dict()`` round-trips bitwise; under DDP every rank takes the same decisions (the gradients are already
averaged); under FSDP2 (DTensor parameters) the sums of the estimate and of the angle are all-reduced; the
``foreach`` path (default where torch has the kernels, and on CPU) has a per-tensor for-loop twin
(``foreach=False``) that the tests compare to.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._torch_compat import foreach_by_default, group_tensors_by_device_and_dtype, is_compiling
from ._validation import check_betas, check_number
from .saturation import StalledDescentTest
from .telemetry import EffectiveLR

__all__ = ["BUDGET_WEIGHT_DECAY", "Pilot", "PilotEvent"]

#: the first measurement windows are this many steps; later ones ``t // WINDOW_DIVISOR`` steps.
WINDOW_DIVISOR = 20
#: the estimate is settled once it grew less than ``SETTLE_GROWTH`` over the last ``1 - 1/SETTLE_RATIO`` of the run
SETTLE_RATIO = 4
SETTLE_GROWTH = 1.05
#: ... and not before this step: Prodigy's estimate rises in jumps over its first tens of steps
MIN_SETTLE_STEPS = 100
#: anytime mode reads the alignment at every ``ALIGNMENT_EVERY``-th step (``alignment_every=``; docs/pilot.md)
ALIGNMENT_EVERY = 4
#: a sampled alignment counts only when ``||g||^2`` and ``||u||^2`` both exceed this. The squared norms are summed
#: in float32 for float32 (and bfloat16/float16) parameters, where an element below ~1e-19 squares to a subnormal
#: and one below ~4e-23 to 0; near a point of zero loss the gradient shrinks to such sizes and its squared norm
#: underflows while ``<g, u>`` does not, which gave "cosines" of 1e280 (digits MLP, 100k steps, flush-to-zero
#: on; benchmarks/pilot_horizons.py). Above 1e-26 the elements lost to underflow (each square below float32's
#: smallest normal, 1.2e-38) change the norm by less than 1% up to 1e12 elements.
ALIGNMENT_FLOOR = 1e-26
#: ``weight_decay=None`` with a budget (anytime mode: 0). Decoupled decay lets the estimate grow (the shrinking
#: weights add to the distance travelled: on the MNIST-1D CNN d ends at 0.026-0.034 against 0.013-0.018 without),
#: which the budget's cooldown anneals; without a budget the run may end at that larger LR (docs/pilot.md).
BUDGET_WEIGHT_DECAY = 0.1


@dataclass(frozen=True)
class PilotEvent:
    """One decision: ``kind`` (``"scale"``: the estimate doubled; ``"settled"``: it stopped growing; ``"drop"``;
    ``"cooldown"``: the budget's decay began; ``"skip"``: a non-finite gradient), the optimizer ``step`` at which it
    was taken, the measured ``value`` behind it (the estimate ``d``, or the alignment at a drop, or the gradient's
    squared norm at a skip) and ``why`` in words."""

    step: int
    kind: str
    value: float
    why: str


def _host_side(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Host-side bookkeeping: always eager. Under ``torch.compile`` the call goes through
    ``torch.compiler.disable`` (a graph break, never traced); in eager mode straight to ``fn``, which spares the
    disable wrapper's few microseconds per call (five calls a step: it showed in the small CNN's step time)."""
    disabled = torch.compiler.disable(fn)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return disabled(*args, **kwargs) if is_compiling() else fn(*args, **kwargs)
    return call


def _foreach_default(params: list[Tensor]) -> bool:
    """``foreach=None``: the foreach path where torch defaults to it (CUDA and the other devices with foreach
    kernels) and also on CPU, where torch does not: there it loops over the tensors in C++ instead of Python, and
    measured faster for Pilot (MNIST-1D CNN, 8 tensors: 0.87 ms a step against 0.96 ms; docs/pilot.md)."""
    return foreach_by_default(params) or all(p.device.type == "cpu" for p in params)


def _host_scalars(d: Tensor) -> bool:
    """Whether the step's scalars are Python floats: on CPU in eager mode, where reading a tensor costs no device
    sync and each 0-dim tensor op costs microseconds (a visible share of a small model's step); elsewhere, and
    under ``torch.compile``, they stay 0-dim tensors (no sync, no recompile on a changing number)."""
    return d.device.type == "cpu" and not is_compiling()


def _is_sharded(params: Iterable[Tensor]) -> bool:
    """Whether any of ``params`` is a DTensor (FSDP2), whose sums need an all-reduce."""
    return any(callable(getattr(p, "to_local", None)) for p in params)


def _local(t: Tensor) -> Tensor:
    to_local = getattr(t, "to_local", None)  # a DTensor (FSDP2): this rank's shard
    return to_local() if callable(to_local) else t


class Pilot(Optimizer):
    """AdamW with Prodigy's LR estimate and a schedule it decides itself (module docstring: the rules, sources).

    Args:
        params: the parameters, or param-group dicts (a group's ``lr`` at construction, default 1.0, is its
            multiplier of the decided LR; later changes of a group's ``lr``, e.g. by an LR scheduler, are ignored
            with a warning: Pilot decides the schedule).
        total_steps: the budget in optimizer steps, when known: warmup-stable-decay over it. ``None``: anytime
            mode, the LR is dropped when the estimate has settled and the steps have stalled (module docstring).
        lr: a guess of the learning rate; only where the search starts (Prodigy's ``d0``). It cannot lower the
            LR below what the estimate finds, only the steps it takes to find it.
        weight_decay: decoupled weight decay, multiplied by the decided LR as in AdamW. ``None``:
            :data:`BUDGET_WEIGHT_DECAY` (0.1) with a budget, 0 in anytime mode (docs/pilot.md has the
            measurements behind both).
        betas: Adam's ``(beta1, beta2)``.
        beta3: decay of the estimate's sums; ``None``: ``sqrt(beta2)`` (Prodigy's default).
        eps: Adam's epsilon (scaled by ``d`` as in Prodigy).
        warmup: the fraction of ``total_steps`` over which the LR rises linearly to its estimate (with a budget;
            0: none). The estimate's denominator ignores it (Prodigy's ``safeguard_warmup``). 0.1: with 0.05 one
            seed of three stalled on the character GPT; 0.1 costs the noisy-label tasks 2-3 points (docs/pilot.md).
        cooldown: the fraction of ``total_steps`` over which the LR decays linearly to 0.
        drop_factor: anytime mode's LR factor per drop.
        hold: anytime mode's hold: a drop waits until the step count is ``hold`` times the step of the last drop
            (the first: of the step the estimate settled), so that each phase is ``hold - 1`` times as long as
            all before it.
        window: anytime mode's number of measurement windows the stalled-descent test looks at.
        threshold: the test's bound in standard errors (1.28: the mean alignment is negative at one-sided 10%).
        alignment_every: anytime mode reads the descent alignment at every ``alignment_every``-th step only, a
            sample of each window's steps (the test's standard error counts the sample's noise); its four extra
            passes over the parameters then cost a quarter as much (docs/pilot.md measures the step time and
            the drops with 1 and 4). 1: every step.
        bias_correction: Adam's bias correction of the moments, as prodigyopt's ``use_bias_correction``: the step
            is multiplied by ``sqrt(1 - beta2^t) / (1 - beta1^t)``, so the first steps are Adam's size instead of
            up to 6x larger. Off by default, as in Prodigy: with the earlier 5% warmup it removed a stalled seed
            of the character GPT (validation loss 2.372 -> 2.030), as the 10% warmup now does, but cost 4.0 points
            on the noisy CNN and 2.2 on noisy digits (docs/pilot.md).
        foreach: use the ``torch._foreach_*`` path (``None``: where torch has the kernels, and on CPU, where it
            measured faster than the per-tensor loop).
        unscale_in_step: under ``torch.amp.GradScaler``, Pilot unscales the gradients in its own step (torch's
            ``_step_supports_amp_scaling`` contract, as fused Adam's), so the scaler calls it on an overflowing
            step too, which Pilot skips and a budget counts: the cooldown ends at 0 on the budget's last step
            however many steps overflowed. ``False``: the scaler unscales and skips the overflowing calls, which a
            budget then misses (a run with ``k`` of them ends its cooldown at a factor of about
            ``k / (cooldown x total_steps)``, not 0). Under FSDP2 with its ``ShardedGradScaler`` a rank-local
            overflow is skipped on every rank either way (tested). Lightning needs ``False`` for
            ``gradient_clip_val`` under ``precision="16-mixed"``: it refuses to clip for an optimizer that unscales
            itself. Plain loops that clip after ``scaler.unscale_(opt)``, and Hugging Face's Trainer
            (``max_grad_norm``), work either way.
    """

    #: torch's flag for an optimizer that unscales its own gradients, read by ``GradScaler.step`` (and Lightning);
    #: set per instance from ``unscale_in_step``. With it ``GradScaler.step`` calls :meth:`step` on every iteration,
    #: an overflowing one too, after setting the attributes ``grad_scale`` (the scale of gradients not yet
    #: unscaled; ``None`` after the user's ``scaler.unscale_``) and ``found_inf``: :meth:`_unscale` does the
    #: scaler's unscale, and the step's own finiteness check skips an overflow.
    _step_supports_amp_scaling = True

    def __init__(self, params: Iterable[Any], *, total_steps: int | None = None, lr: float = 1e-6,
                 weight_decay: float | None = None, betas: tuple[float, float] = (0.9, 0.999),
                 beta3: float | None = None, eps: float = 1e-8, warmup: float = 0.1, cooldown: float = 0.2,
                 drop_factor: float = 0.3, hold: float = 4.0, window: int = 10, threshold: float = 1.28,
                 alignment_every: int = ALIGNMENT_EVERY, bias_correction: bool = False,
                 foreach: bool | None = None, unscale_in_step: bool = True) -> None:
        if total_steps is not None:
            check_number("total_steps", total_steps, low=1, integer=True)
        check_number("lr", lr, low=0, low_open=True)
        if weight_decay is None:
            weight_decay = BUDGET_WEIGHT_DECAY if total_steps is not None else 0.0
        check_number("weight_decay", weight_decay, low=0)
        check_betas(betas)
        if beta3 is not None:
            check_number("beta3", beta3, low=0, high=1, high_open=True)
        check_number("eps", eps, low=0)
        check_number("cooldown", cooldown, low=0, high=1, low_open=True)
        check_number("warmup", warmup, low=0, high=1 - cooldown, high_open=True)
        check_number("drop_factor", drop_factor, low=0, high=1, low_open=True, high_open=True)
        check_number("hold", hold, low=1, low_open=True)
        check_number("window", window, low=3, integer=True)
        check_number("threshold", threshold, low=0, low_open=True)
        check_number("alignment_every", alignment_every, low=1, integer=True)
        for name, flag in (("bias_correction", bias_correction), ("unscale_in_step", unscale_in_step)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        defaults = {"lr": 1.0, "weight_decay": float(weight_decay), "betas": (float(betas[0]), float(betas[1])),
                    "eps": float(eps), "foreach": foreach}
        super().__init__(params, defaults)  # each group through add_param_group: checked before it joins
        self.total_steps = None if total_steps is None else int(total_steps)
        self.d0 = float(lr)
        self.beta3 = math.sqrt(float(betas[1])) if beta3 is None else float(beta3)
        self.cooldown = float(cooldown)
        self.warmup = float(warmup)
        self.drop_factor = float(drop_factor)
        self.hold = float(hold)
        self.alignment_every = int(alignment_every)
        self.bias_correction = bias_correction
        self.events: list[PilotEvent] = []
        self.test = StalledDescentTest(threshold=threshold, window=window)
        device = self._device()
        # the controller's tensors: the estimate d, its running numerator r, the schedule factor f, the step count
        self._scalars = {"d": torch.tensor(self.d0, dtype=torch.float64, device=device),
                         "numerator": torch.zeros((), dtype=torch.float64, device=device),
                         "factor": torch.ones((), dtype=torch.float64, device=device),
                         "align_sum": torch.zeros((), dtype=torch.float64, device=device),
                         "align_count": torch.zeros((), dtype=torch.float64, device=device),
                         "estimating": torch.ones((), dtype=torch.float64, device=device)}
        # the next step's number as a tensor, for bias correction off CPU (derived from ``steps``, not saved)
        self._step_number = torch.ones((), dtype=torch.float64, device=device)
        self.steps = 0  # steps taken (the parameters moved)
        self.skipped = 0  # steps skipped for a non-finite gradient: with ``steps``, the budget's clock
        self.drops = 0
        self._scale_mark = self.d0  # the d of the last "scale" event
        self._last_drop = 0
        self._next_measure = 1
        self._d_history: list[tuple[int, float]] = []  # (step, d) at the window ends of the last 3/4 of the run
        self._settled_from: int | None = None  # the step the estimate settled: the first drop waits as long again
        self._last_alignment: float | None = None
        self._lr_seen = [group["lr"] for group in self.param_groups]  # the group lr a scheduler would change
        self._warned_multiplier = False
        self._warned_past_budget = False
        self._sharded = any(_is_sharded(g["params"]) for g in self.param_groups)
        self.unscale_in_step = unscale_in_step
        if self.total_steps is not None:
            self._apply_schedule()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group`` (also what the constructor calls for each group), after checking the
        group's own hyperparameters: a bad ``lr``, ``weight_decay``, ``betas``, ``eps`` or ``foreach`` is refused
        naming it, before the group joins, so the optimizer is left as it was. The group's ``lr`` (default 1.0) is
        its multiplier of Pilot's LR; its ``weight_decay=None`` is the constructor's default for the mode (0.1 with
        a budget, 0 without), as for the constructor's argument."""
        if isinstance(param_group, dict):  # torch raises its own TypeError for anything else
            if "weight_decay" in param_group and param_group["weight_decay"] is None:
                param_group["weight_decay"] = self.defaults["weight_decay"]
            _check_group(param_group)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("lr_multiplier", float(group["lr"]))
        if hasattr(self, "_lr_seen"):  # after __init__
            self._sharded = self._sharded or _is_sharded(group["params"])
            self._lr_seen.append(group["lr"])

    # --------------------------------------------------------------------------------------------- reading
    def _device(self) -> torch.device:
        for group in self.param_groups:
            for p in group["params"]:
                return _local(p).device
        return torch.device("cpu")

    @property
    def unscale_in_step(self) -> bool:
        """Whether Pilot unscales ``GradScaler``'s gradients in its own step (the constructor's argument); settable
        between steps, e.g. by Lightning's ``PilotCallback`` when Lightning is to clip under ``16-mixed``."""
        return bool(self._step_supports_amp_scaling)

    @unscale_in_step.setter
    def unscale_in_step(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"unscale_in_step must be True or False, got {value!r}")
        self._step_supports_amp_scaling = value

    @property
    def d(self) -> float:
        """The current LR estimate (Prodigy's ``d``)."""
        return float(self._scalars["d"])

    @property
    def factor(self) -> float:
        """The current schedule factor ``f`` (1 until the cooldown or the first drop)."""
        return float(self._scalars["factor"])

    def effective_lr(self) -> list[EffectiveLR]:
        """Per param group the LR applied at the next step: ``d x f x`` the group's multiplier."""
        base = self.d * self.factor
        return [EffectiveLR(base * g["lr_multiplier"], base * g["lr_multiplier"], base * g["lr_multiplier"])
                for g in self.param_groups]

    def metrics(self) -> dict[str, float]:
        """What Pilot measured and decided, for a logger (:func:`lrpilot.telemetry.lrpilot_metrics` reads it)."""
        out = {"pilot/d": self.d, "pilot/factor": self.factor, "pilot/drops": float(self.drops),
               "pilot/skipped": float(self.skipped)}
        if self._last_alignment is not None:
            out["pilot/alignment"] = self._last_alignment
        return out

    # ------------------------------------------------------------------------------------------------ state
    def _init_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                    exp_avg_sqs: list[Tensor], s_list: list[Tensor], p0s: list[Tensor]) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("Pilot does not support sparse gradients")
            state = self.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["s"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["p0"] = p.detach().clone(memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            s_list.append(state["s"])
            p0s.append(state["p0"])

    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state plus the controller's (``"pilot"``): estimate, schedule, test, events."""
        out = super().state_dict()
        out["pilot"] = {
            "scalars": {k: v.detach().clone() for k, v in self._scalars.items()},
            "steps": self.steps, "skipped": self.skipped, "drops": self.drops, "scale_mark": self._scale_mark,
            "last_drop": self._last_drop,
            "next_measure": self._next_measure, "d_history": [list(e) for e in self._d_history],
            "settled_from": self._settled_from,
            "last_alignment": self._last_alignment,
            "test": self.test.state_dict(), "events": [asdict(e) for e in self.events],
            "config": {"total_steps": self.total_steps, "d0": self.d0, "beta3": self.beta3,
                       "cooldown": self.cooldown, "drop_factor": self.drop_factor},
        }
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; refuses one without Pilot's controller state (another optimizer's)."""
        if "pilot" not in state_dict:
            raise ValueError("this state_dict has no 'pilot' entry: it was not written by Pilot.state_dict() "
                             f"(keys: {sorted(state_dict)})")
        own = state_dict["pilot"]
        missing = {"scalars", "steps", "drops", "test", "events", "config"} - set(own)
        if missing:
            raise ValueError(f"Pilot state_dict's 'pilot' entry is missing {sorted(missing)}")
        if own["config"].get("total_steps") != self.total_steps:
            warnings.warn(f"Pilot.load_state_dict: the checkpoint was written with total_steps="
                          f"{own['config'].get('total_steps')}, this optimizer has {self.total_steps}; the schedule "
                          "follows this optimizer's", UserWarning, stacklevel=2)
        torch_state = {k: v for k, v in state_dict.items() if k != "pilot"}
        test = StalledDescentTest(threshold=self.test.threshold, window=self.test.window)
        test.load_state_dict(own["test"])  # validates its keys; nothing of self has changed yet
        super().load_state_dict(torch_state)  # torch checks the layout before changing anything
        self.test = test
        saved_d0 = float(own["config"].get("d0", self.d0))
        if saved_d0 != self.d0:
            warnings.warn(f"Pilot.load_state_dict: the checkpoint's estimate started at lr={saved_d0}, this optimizer "
                          f"at lr={self.d0}; the checkpoint's start is used (the estimate's sums are relative to it)",
                          UserWarning, stacklevel=2)
            self.d0 = saved_d0
        for key, value in {"estimating": torch.ones(()), **own["scalars"]}.items():
            if key in self._scalars:  # in place: a compiled step keeps pointing at the same tensors
                self._scalars[key].copy_(value.detach())
            else:
                self._scalars[key] = value.detach().clone().to(device=self._device(), dtype=torch.float64)
        self.steps = int(own["steps"])
        self.skipped = int(own.get("skipped", 0))  # absent from state dicts written before skips were counted
        self._step_number.fill_(self.steps + 1)
        self.drops = int(own["drops"])
        self._scale_mark = float(own["scale_mark"])
        self._last_drop = int(own["last_drop"])
        self._next_measure = int(own["next_measure"])
        self._d_history = [(int(t), float(v)) for t, v in own["d_history"]]
        self._settled_from = own["settled_from"]
        self._last_alignment = own["last_alignment"]
        self.events = [PilotEvent(**e) for e in own["events"]]
        self._lr_seen = [group["lr"] for group in self.param_groups]
        if self.total_steps is not None and own["config"].get("total_steps") != self.total_steps:
            self._scalars["factor"].fill_(self._schedule_value(self._clock))  # this optimizer's budget

    # ------------------------------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One Pilot step (module docstring). A step whose gradients hold NaN/inf is skipped: the parameters, the
        moments and the estimate stay as they were, and only the budget's clock moves on (a ``skip`` event)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._check_multipliers()
        groups = []
        for group in self.param_groups:
            lists: tuple[list[Tensor], ...] = ([], [], [], [], [], [])
            self._init_group(group, *lists)
            if lists[0]:
                groups.append((group, lists))
        if not groups:
            return loss
        grad_scale = getattr(self, "grad_scale", None)  # set by GradScaler.step (_step_supports_amp_scaling)
        if grad_scale is not None:
            self._unscale([g for _, lists in groups for g in lists[1]], grad_scale)
        d = self._scalars["d"]
        factor = self._scalars["factor"]
        measure = self.total_steps is None and self._reads_alignment()  # budget mode: no call, no graph break
        host = _host_scalars(d)
        d_now: Tensor | float = float(d) if host else d
        factor_now: Tensor | float = float(factor) if host else factor
        calls = []  # (bucket of local tensor lists, math function, keyword arguments) per group and (device, dtype)
        for group, lists in groups:
            local = [[_local(t) for t in ts] for ts in lists] if self._sharded else list(lists)
            use_foreach = group["foreach"] if group["foreach"] is not None else _foreach_default(local[0])
            # one call per (device, dtype), as torch's foreach optimizers: each scalar is cast to its tensors' dtype
            buckets = [b for b, _ in group_tensors_by_device_and_dtype(local).values()] if use_foreach else [local]
            mult = group["lr_multiplier"]  # x * 1.0 is x: the common case skips two tensor ops
            dlr = d_now * factor_now if mult == 1.0 else d_now * factor_now * mult
            if self.bias_correction:  # t: this step's number, a tensor off CPU so that compile sees no new number
                beta1, beta2 = group["betas"]
                dlr = dlr * _bias_correction(beta1, beta2, self.steps + 1 if host else self._step_number)
            kwargs = {"d": d_now, "d0": self.d0, "dlr": dlr,
                      "slr": d_now if mult == 1.0 else d_now * mult, "beta1": group["betas"][0],
                      "beta2": group["betas"][1], "beta3": self.beta3, "weight_decay": group["weight_decay"],
                      "eps": group["eps"]}
            calls += [(cast(Any, bucket), use_foreach, kwargs) for bucket in buckets]
        # 1. read: the estimate's numerator and, in anytime mode, the alignment's sums (nothing changes yet)
        reads = _sum_over_buckets([(_multi_tensor_reads if fe else _single_tensor_reads)(*bucket, measure=measure, **kw)
                                   for bucket, fe, kw in calls], d.device)
        if self._sharded:  # per-shard sums -> sums over the whole model (DDP needs none: replicated)
            torch.distributed.all_reduce(reads)
        values = reads.tolist() if host else None  # the one host read of the step
        finite = all(map(math.isfinite, values)) if values is not None else None
        if not self._before_update(reads, finite):
            return loss
        # 2. update the moments, s and the parameters
        denom = _sum_over_buckets([(_multi_tensor_pilot if fe else _single_tensor_pilot)(*bucket, **kw)
                                   for bucket, fe, kw in calls], d.device)
        if self._sharded:
            torch.distributed.all_reduce(denom)
        # 3. the estimate, d_{k+1} = max(d_k, r_k / ||s_k||_1) with r_k = beta3 r_{k-1} + the read increment, and in
        # anytime mode the window's alignment sums; on CPU in Python floats, else in 0-dim tensors (same float64 ops)
        if values is not None:
            self._estimate_host(values, float(denom), measure)
        else:
            self._estimate_tensors(reads, denom, measure)
        self._after_step()
        return loss

    def _unscale(self, grads: list[Tensor], grad_scale: Tensor) -> None:
        """``GradScaler.unscale_``'s multiply, for the gradients ``GradScaler.step`` hands over still scaled: each
        is multiplied in place by the scaler's ``inv_scale`` (the float32 reciprocal of the scale, computed as the
        scaler computes it), so Pilot steps the gradients the scaler's own unscale would give. An overflow's inf or
        NaN stays non-finite and :meth:`_before_update` skips the step."""
        inv_scale = grad_scale.double().reciprocal().float()
        local = [_local(g) for g in grads] if self._sharded else grads
        for (device, _), (bucket, _) in group_tensors_by_device_and_dtype([local]).items():
            torch._foreach_mul_(cast(list[Tensor], bucket[0]), inv_scale.to(device))

    def _estimate_host(self, reads: list[float], denom: float, measure: bool) -> None:
        """Step 3 of :meth:`step` in Python floats (CPU, eager): the operations of :meth:`_estimate_tensors`."""
        scalars, tiny = self._scalars, torch.finfo(torch.float64).tiny
        numerator = float(scalars["numerator"]) * self.beta3 + reads[0]
        scalars["numerator"].fill_(numerator)
        if float(scalars["estimating"]) > 0:  # the scale is estimated at the full LR only (docs/pilot.md)
            d_hat = numerator / max(denom, tiny)
            if math.isfinite(d_hat) and d_hat > float(scalars["d"]):
                scalars["d"].fill_(d_hat)
        # cos(g_k, u_{k-1}), within [-1, 1]; no previous direction at the first step (u = 0), and no sample where a
        # squared norm has underflowed (ALIGNMENT_FLOOR)
        if measure and reads[3] > ALIGNMENT_FLOOR and reads[1] > ALIGNMENT_FLOOR:
            g_sq, dot, sq_u = reads[1], reads[2], reads[3]
            cosine = min(1.0, max(-1.0, dot / max(math.sqrt(g_sq) * math.sqrt(sq_u), tiny)))
            scalars["align_sum"].fill_(float(scalars["align_sum"]) + cosine)
            scalars["align_count"].fill_(float(scalars["align_count"]) + 1.0)

    def _estimate_tensors(self, reads: Tensor, denom: Tensor, measure: bool) -> None:
        """Step 3 of :meth:`step` in 0-dim tensors (GPU, torch.compile: no host read, no branch on a value)."""
        d, tiny = self._scalars["d"], torch.finfo(torch.float64).tiny
        numerator = self._scalars["numerator"]
        numerator.mul_(self.beta3).add_(reads[0])
        # the scale is estimated at the full LR only (docs/pilot.md): "estimating" is 1 until the first drop or the
        # cooldown (a tensor set host-side, so that a compiled step has no branch on it)
        d_hat = torch.nan_to_num(numerator / denom.clamp_min(tiny), nan=0.0, posinf=0.0, neginf=0.0)
        d.copy_(torch.where(self._scalars["estimating"] > 0, torch.maximum(d, d_hat), d))
        if measure:
            g_sq, dot, sq_u = reads[1], reads[2], reads[3]
            zero = torch.zeros((), dtype=torch.float64, device=d.device)
            cosine = (dot / (g_sq.sqrt() * sq_u.sqrt()).clamp_min(tiny)).clamp(-1.0, 1.0)
            counted = (sq_u > ALIGNMENT_FLOOR) & (g_sq > ALIGNMENT_FLOOR)  # as in _estimate_host
            self._scalars["align_sum"].add_(torch.where(counted, cosine, zero))
            self._scalars["align_count"].add_(counted.double())

    @_host_side
    def _after_step(self) -> None:
        """Count the step, set the next step's schedule factor, take the window-end decisions."""
        self.steps += 1
        if self.bias_correction:
            self._step_number.fill_(self.steps + 1)
        self._apply_schedule()
        self._decide()
        if not self.factor_is_one:
            self._scalars["estimating"].zero_()

    @_host_side  # host-side: a compiled step sees a bool (two graphs), not the changing step count
    def _reads_alignment(self) -> bool:
        """Whether this step reads the descent alignment (anytime mode): at every ``alignment_every``-th step (a
        sample of each window's steps; at the first step the reads find no previous direction and count nothing)."""
        return self.steps % self.alignment_every == 0

    @_host_side  # the one host read per step
    def _before_update(self, reads: Tensor, finite: bool | None = None) -> bool:
        """Whether the step may go on: False (a ``skip`` event) when the reads are non-finite -- a NaN/inf gradient
        makes them NaN (``finite``: already read on the host); warns once when stepping past ``total_steps``."""
        if self.total_steps is not None and self._clock >= self.total_steps and not self._warned_past_budget:
            self._warned_past_budget = True
            warnings.warn(f"Pilot: step {self._clock + 1} is past total_steps={self.total_steps}; the LR stays 0. "
                          "Pass the real budget, or total_steps=None for the anytime schedule", UserWarning,
                          stacklevel=4)
        if not (finite if finite is not None else bool(torch.isfinite(reads).all())):
            why = ("GradScaler found inf/NaN in the scaled gradients (it lowers its scale): step skipped"
                   if getattr(self, "found_inf", None) is not None else "non-finite gradient: step skipped")
            self.events.append(PilotEvent(self.steps, "skip", float("nan"), why))
            self.skipped += 1  # nothing moves but the budget's clock: the budget counts the loop's steps
            self._apply_schedule()
            if not self.factor_is_one:
                self._scalars["estimating"].zero_()
            return False
        return True

    @property
    def _clock(self) -> int:
        """The budget's clock: the steps taken and skipped (a skipped step is still one of the loop's)."""
        return self.steps + self.skipped

    @property
    def factor_is_one(self) -> bool:
        """Whether the schedule is still at its full LR (before the cooldown; host-side, no device read)."""
        if self.total_steps is None:
            return self.drops == 0
        return self._clock < self._cooldown_start()

    # --------------------------------------------------------------------------------------------- decisions
    @_host_side
    def _check_multipliers(self) -> None:
        """A param group's ``lr`` changed since construction (an LR scheduler): warn once, and ignore it."""
        seen = [group["lr"] for group in self.param_groups]
        if seen != self._lr_seen and not self._warned_multiplier:
            self._warned_multiplier = True
            warnings.warn(f"Pilot: a param group's 'lr' changed from {self._lr_seen} to {seen}, probably by an LR "
                          "scheduler. Pilot decides the LR and the schedule itself and ignores the change (read the "
                          "LR it applies with effective_lr()). Use no scheduler (Hugging Face: "
                          "lr_scheduler_type='constant'); to pass a budget, Pilot(..., total_steps=N)",
                          UserWarning, stacklevel=3)
        self._lr_seen = seen

    def _cooldown_start(self) -> int:
        assert self.total_steps is not None
        return self.total_steps - max(1, round(self.cooldown * self.total_steps))

    @_host_side
    def _apply_schedule(self) -> None:
        """Set ``f`` for the next step (:attr:`_clock` steps done): the budget's cooldown; in anytime mode ``f``
        moves only at a drop. Called at construction and after each step, so that :meth:`effective_lr` read
        between steps is the LR the next step applies."""
        if self.total_steps is None:
            return
        total, t, start = self.total_steps, self._clock, self._cooldown_start()
        if t == start:
            self.events.append(PilotEvent(t, "cooldown", self.d, f"last {total - start} of {total} steps: linear "
                                          "decay to 0"))
        self._scalars["factor"].fill_(self._schedule_value(t))

    def _schedule_value(self, t: int) -> float:
        """The budget's factor for step ``t`` (0-based): linear from 1/W to 1 over the W warmup steps, 1, then
        linear to 0 over the cooldown."""
        assert self.total_steps is not None
        start = self._cooldown_start()
        if t >= start:
            return max(0.0, (self.total_steps - t) / (self.total_steps - start))
        warmup = round(self.warmup * self.total_steps)
        return min(1.0, (t + 1) / warmup) if warmup > 0 else 1.0

    @_host_side
    def _decide(self) -> None:
        """At the end of each measurement window (``W = max(1, t // 20)`` steps): record the estimate's growth; in
        anytime mode feed the window's mean descent alignment to the test and drop when it says so."""
        if self.steps < self._next_measure:
            return
        self._next_measure = next_window_end(self.steps)
        d = self.d  # host reads at window ends only
        self._d_history.append((self.steps, d))
        self._d_history = [(t, v) for t, v in self._d_history if t * SETTLE_RATIO >= self.steps]
        t0, d_then = self._d_history[0]
        if self._settled_from is None and self.steps >= MIN_SETTLE_STEPS and d <= SETTLE_GROWTH * d_then:
            self._settled_from = self.steps  # flat over the last 3/4 of the run: the scale is found
            self.events.append(PilotEvent(self.steps, "settled", d, f"estimate grew less than "
                                          f"{SETTLE_GROWTH - 1:.0%} since step {t0}"))
        if d >= 2 * self._scale_mark:
            self.events.append(PilotEvent(self.steps, "scale", d, f"estimate grew to {d:.3g} "
                                          f"({d / self.d0:.3g}x the start)"))
            while d >= 2 * self._scale_mark:
                self._scale_mark *= 2
        if self.total_steps is not None:
            return
        count = float(self._scalars["align_count"])
        if count == 0:
            return
        alignment = float(self._scalars["align_sum"]) / count
        self._scalars["align_sum"].zero_()
        self._scalars["align_count"].zero_()
        self._last_alignment = alignment
        self.test.observe(alignment)
        if self._settled_from is None:
            return
        reference = self._last_drop if self.drops else self._settled_from
        if self.steps >= self.hold * reference and self.test.saturated():
            self.drops += 1
            self._last_drop = self.steps
            self._scalars["factor"].mul_(self.drop_factor)
            self.test.reset()
            self.events.append(PilotEvent(self.steps, "drop", alignment, "steps no longer agree with the gradients "
                                          f"that follow them (mean alignment {alignment:.3g} over the last "
                                          f"{self.test.window} windows): LR x{self.drop_factor}"))


# ------------------------------------------------------------------------------------------------- the math
# The scalars (d, eta, the factors) are 0-dim float64 tensors on GPUs and under torch.compile, so that a compiled
# step never sees a changing Python number, and Python floats on CPU in eager mode (:meth:`Pilot.step`); the same
# float64 arithmetic either way. Reductions run in the parameters' dtype (as prodigyopt's ``torch.dot``),
# accumulating across tensors in float64. ``_single_tensor_pilot`` is the reference the tests compare
# ``_multi_tensor_pilot`` to.
Scalar = Tensor | float


def next_window_end(t: int) -> int:
    """The step count at which the measurement window after the one ending at step ``t`` ends: ``W = max(1, t //
    WINDOW_DIVISOR)`` steps later (the first window ends at step 1), so that 20 to 100k steps see tens to a
    couple of hundred windows."""
    return t + max(1, t // WINDOW_DIVISOR)


def _check_group(group: dict[str, Any]) -> None:
    """Refuse a param group's bad hyperparameter naming it (the keys it sets; the others come from the checked
    constructor arguments)."""
    if "lr" in group:
        check_number("param group lr (a multiplier of Pilot's LR)", group["lr"], low=0)
    if "weight_decay" in group:
        check_number("param group weight_decay", group["weight_decay"], low=0)
    if "betas" in group:
        check_betas(group["betas"], name="param group betas")
    if "eps" in group:
        check_number("param group eps", group["eps"], low=0)
    if group.get("foreach") not in (None, True, False):
        raise ValueError(f"param group foreach must be True, False or None, got {group['foreach']!r}")


def _cast(value: Scalar, dtype: torch.dtype) -> Scalar:
    """A 0-dim tensor scalar cast to ``dtype``; a float is cast by the kernel that takes it, except that one beyond
    ``dtype``'s range becomes +-inf here, as the tensor's cast makes it (a kernel refuses it with an error)."""
    if isinstance(value, Tensor):
        return value.to(dtype)
    if math.isnan(value) or abs(value) <= torch.finfo(dtype).max:
        return value
    return math.copysign(math.inf, value)


def _scalars(d: Scalar, d0: float, dlr: Scalar, slr: Scalar, beta1: float, beta2: float, eps: float,
             dtype: torch.dtype) -> tuple[Scalar, Scalar, Scalar, Scalar, Scalar]:
    """(d (1 - beta1), d^2 (1 - beta2), (d / d0) d c, eta, d eps), each cast once to ``dtype``; the third is s's
    weight, without the schedule factor (Prodigy's ``safeguard_warmup``: a small LR in the warmup does not
    shrink the denominator and so inflate the estimate)."""
    values = (d * (1 - beta1), d * d * (1 - beta2), d / d0 * slr, dlr, d * eps)
    return cast(tuple[Scalar, Scalar, Scalar, Scalar, Scalar], tuple(_cast(v, dtype) for v in values))


def _bias_correction(beta1: float, beta2: float, t: Scalar) -> Scalar:
    """Adam's bias correction folded into the step size, ``sqrt(1 - beta2^t) / (1 - beta1^t)`` for step ``t``
    (Kingma & Ba, ICLR 2015, Algorithm 1; prodigyopt's ``use_bias_correction``)."""
    return (1 - beta2 ** t) ** 0.5 / (1 - beta1 ** t)


def _sum64(values: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """The float64 sum of per-tensor reductions computed in their own dtype: one stack, one float64 sum."""
    return torch.stack(list(values)).sum(dtype=torch.float64)


def _sum_over_buckets(per_bucket: list[Tensor], device: torch.device) -> Tensor:
    """The sum over (device, dtype) buckets of their float64 reads, on ``device``; one bucket (the common case) is
    returned as it is."""
    if len(per_bucket) == 1:
        return per_bucket[0].to(device)
    return torch.stack([r.to(device) for r in per_bucket]).sum(0)


def _add_scaled_(x: Tensor, y: Tensor, c: Scalar) -> None:
    """``x += c y`` for a float or 0-dim tensor ``c``."""
    if isinstance(c, Tensor):
        x.addcmul_(y, c)
    else:
        x.add_(y, alpha=c)


def _foreach_add_scaled_(xs: list[Tensor], ys: list[Tensor], c: Scalar) -> None:
    """``x += c y`` over lists, for a float or 0-dim tensor ``c``."""
    if isinstance(c, Tensor):
        torch._foreach_addcmul_(xs, ys, [c] * len(ys))
    else:
        torch._foreach_add_(xs, ys, alpha=c)


@functools.lru_cache(maxsize=256)
def _cpu_scalar(value: float, dtype: torch.dtype) -> Tensor:
    return torch.tensor(value, dtype=dtype)


def _scalar_operand(value: Scalar, like: Tensor) -> Scalar:
    """The scalar operand of a ``torch._foreach_mul_``/``_foreach_div_`` over CPU tensors of ``like``'s dtype: a
    float as a 0-dim tensor of that dtype (cached; never written to). On CPU (torch 2.13) those kernels take a
    0-dim tensor of the list's dtype about 3x faster than a Python scalar (MNIST-1D CNN, 8 tensors: 4 us against
    13 us a call), with the same result: the scalar is rounded to the dtype either way (tested bitwise). float16 and
    bfloat16 compute with a float32 scalar, so a scalar of their own dtype would round it more: they keep the
    float, as does every other case (a tensor scalar already, not on CPU, or under ``torch.compile``, which
    takes the float as a constant of the graph)."""
    if (isinstance(value, Tensor) or like.device.type != "cpu" or like.dtype not in (torch.float32, torch.float64)
            or is_compiling()):
        return value
    return _cpu_scalar(value, like.dtype)


def _single_tensor_reads(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                         s_list: list[Tensor], p0s: list[Tensor], *, d: Scalar, d0: float, dlr: Scalar, slr: Scalar,
                         beta1: float, beta2: float, beta3: float, weight_decay: float, eps: float,
                         measure: bool) -> Tensor:
    """What a step reads before it changes anything, one tensor at a time, as a 1-D float64 tensor: ``(d/d0) eta
    sum <g, x0 - x>`` (the estimate's numerator increment), and in anytime mode also ``||g||^2``, ``<g, u_prev>``
    and ``||u_prev||^2`` with ``u_prev = m / (sqrt(v) + d eps)``, the previous step's direction. A NaN/inf
    gradient makes the numerator non-finite (``0 * inf`` is NaN too), which is how the step detects it."""
    nums, g_sqs, dots, sq_us = [], [], [], []
    for p, g, m, v, p0 in zip(params, grads, exp_avgs, exp_avg_sqs, p0s, strict=True):
        g_flat = g.reshape(-1)
        nums.append(torch.dot(g_flat, (p0 - p).reshape(-1)))
        if measure:
            u = (m / v.sqrt().add_(_cast(d * eps, p.dtype) + torch.finfo(p.dtype).tiny)).reshape(-1)
            g_sqs.append(torch.dot(g_flat, g_flat))
            dots.append(torch.dot(g_flat, u))
            sq_us.append(torch.dot(u, u))
    num = _sum64(nums) * (d / d0 * dlr)
    if not measure:
        return num.reshape(1)
    return torch.stack((num, _sum64(g_sqs), _sum64(dots), _sum64(sq_us)))


def _multi_tensor_reads(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                        s_list: list[Tensor], p0s: list[Tensor], *, d: Scalar, d0: float, dlr: Scalar, slr: Scalar,
                        beta1: float, beta2: float, beta3: float, weight_decay: float, eps: float,
                        measure: bool) -> Tensor:
    """:func:`_single_tensor_reads` with ``torch._foreach_*`` kernels (one device and dtype)."""
    def dots(xs: list[Tensor] | tuple[Tensor, ...], ys: list[Tensor] | tuple[Tensor, ...]) -> list[Tensor]:
        return [torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(xs, ys)]

    nums = dots(grads, torch._foreach_sub(p0s, params))
    if not measure:
        return (_sum64(nums) * (d / d0 * dlr)).reshape(1)
    u = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(u, _cast(d * eps, params[0].dtype) + torch.finfo(params[0].dtype).tiny)
    torch._foreach_div_(u, exp_avgs)  # (sqrt(v) + d eps) / m ...
    torch._foreach_reciprocal_(u)  # ... inverted: m / (sqrt(v) + d eps), one temporary list
    # one stack for the two dot-product sums, one for the two squared norms
    per_tensor = torch.stack(nums + dots(grads, u)).to(torch.float64).view(2, -1).sum(1)
    norms = torch.stack(torch._foreach_norm(grads) + torch._foreach_norm(u)).to(torch.float64).pow(2).view(2, -1).sum(1)
    return torch.stack((per_tensor[0] * (d / d0 * dlr), norms[0], per_tensor[1], norms[1]))


def _single_tensor_pilot(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                         s_list: list[Tensor], p0s: list[Tensor], *, d: Scalar, d0: float, dlr: Scalar, slr: Scalar,
                         beta1: float, beta2: float, beta3: float, weight_decay: float, eps: float) -> Tensor:
    """The update, one tensor at a time: Adam's moments scaled by ``d``, ``s``, decoupled weight decay and the
    step. Returns ``||s||_1`` (the estimate's denominator) over these tensors."""
    norms = []
    cache: dict[torch.dtype, tuple[Scalar, ...]] = {}
    for p, g, m, v, s in zip(params, grads, exp_avgs, exp_avg_sqs, s_list, strict=True):
        if p.dtype not in cache:
            cache[p.dtype] = _scalars(d, d0, dlr, slr, beta1, beta2, eps, p.dtype)
        c1, c2, cs, step, d_eps = cache[p.dtype]
        _add_scaled_(m.mul_(beta1), g, c1)
        if isinstance(c2, Tensor):
            v.mul_(beta2).addcmul_(g, g * c2)
        else:
            v.mul_(beta2).addcmul_(g, g, value=c2)
        _add_scaled_(s.mul_(beta3), g, cs)
        norms.append(torch.linalg.vector_norm(s, 1))
        if weight_decay != 0:  # multiplying by exactly 1 changes nothing: skipped (anytime mode's default is 0)
            p.mul_(1 - step * weight_decay)
        denom = v.sqrt().add_(d_eps).div_(step)  # p -= eta m / (sqrt(v) + d eps)
        p.addcdiv_(m, denom, value=-1)
    return _sum64(norms)


def _multi_tensor_pilot(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                        s_list: list[Tensor], p0s: list[Tensor], *, d: Scalar, d0: float, dlr: Scalar, slr: Scalar,
                        beta1: float, beta2: float, beta3: float, weight_decay: float, eps: float) -> Tensor:
    """The ``torch._foreach_*`` path (one device and dtype): the math of :func:`_single_tensor_pilot` in a few
    fused kernels over the whole list."""
    c1, c2, cs, step, d_eps = _scalars(d, d0, dlr, slr, beta1, beta2, eps, params[0].dtype)
    like = params[0]
    torch._foreach_mul_(exp_avgs, _scalar_operand(beta1, like))
    _foreach_add_scaled_(exp_avgs, grads, c1)
    torch._foreach_mul_(exp_avg_sqs, _scalar_operand(beta2, like))
    if isinstance(c2, Tensor):
        torch._foreach_addcmul_(exp_avg_sqs, grads, torch._foreach_mul(grads, c2))
    else:
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=c2)
    torch._foreach_mul_(s_list, _scalar_operand(beta3, like))
    _foreach_add_scaled_(s_list, grads, cs)
    den = _sum64(torch._foreach_norm(s_list, 1))
    if weight_decay != 0:
        torch._foreach_mul_(params, _scalar_operand(1 - step * weight_decay, like))
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denom, d_eps)
    torch._foreach_div_(denom, _scalar_operand(step, like))
    torch._foreach_addcdiv_(params, exp_avgs, denom, -1)
    return den
