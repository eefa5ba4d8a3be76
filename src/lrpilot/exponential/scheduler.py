"""Per-step schedulers that replace weight decay by an exponentially growing LR: :class:`TEXP` and :class:`ExpLR`.

Both turn a plain ``torch.optim.SGD(params, lr, momentum=m)`` (weight_decay 0, dampening 0, no Nesterov)
into the exponential run equivalent to SGD with ``weight_decay`` and a given per-step LR schedule (the
*WD run*): step decay for :class:`TEXP` (the paper's "Tapered Exponential LR", Theorem 2), any list of
per-step LRs for :class:`ExpLR` (e.g. cosine). They set the momentum buffers to the spec's initial value
``u~_0 = -(1 - alpha) / (alpha eta_0) * theta_0`` at construction (Theorem 1.1's condition; the WD run starts
with ``u_0 = 0``) and the LR before every step. The formulas are in :mod:`lrpilot.exponential.schedule`.

The equivalence needs a scale-invariant loss in the trained parameters (see
:mod:`lrpilot.exponential.invariance`): then the exponential run's weights are ``weight_scale`` times the
WD run's at every step and both runs compute the same function.

Float range and renormalisation
    The exponential run's weights grow like ``1 / c_t`` and its LR like ``1 / c_t^2``. With float32 weights
    SGD fails once the LR passes ~3.4e38 ("value cannot be converted to type float without overflow"), when
    the weights are ~1e19 and a BatchNorm layer's input variance overflows as well. The momentum-aware rescaling
    ``(theta, lr, buffer) -> (k theta, k^2 lr, buffer / k)`` maps the exponential run onto a run that is
    exactly ``k`` times it at every later step (the gradient of a scale-invariant loss scales by ``1/k``, so
    ``u' = gamma u / k + g / k`` and ``theta' = k theta - k^2 lr u' = k (theta - lr u)``): the function computed
    is unchanged and the equivalence with the WD run is kept, with ``weight_scale`` multiplied by ``k``.
    :meth:`renormalize` (and ``renorm_every=N``) picks ``k = 2^e`` with ``e = -round(log2 weight_scale)``,
    which brings the weights back to the WD run's scale (``weight_scale`` in ``[2^-0.5, 2^0.5]``):

    * a power of two makes every multiplication exact in binary floating point (no rounding, barring
      overflow/underflow), so a renormalised run is the non-renormalised one times ``2^e`` bit for bit as
      long as the network itself commutes with power-of-two scaling (BatchNorm with ``eps = 0`` does);
    * the target needs no data and no reduction over the weights: ``weight_scale`` is known from the
      recursion alone.

    Only the trainable parameters of the optimizer (``requires_grad``) and their momentum buffers are scaled.

Normalization layers (``norm_layers``): epsilon and running statistics
    A normalization layer fed by trained weights sees an input ``weight_scale`` times the WD run's. Two of
    its quantities do not follow that scale by themselves, and ``norm_layers`` (the layers whose *input*
    scales with the weights: typically every BatchNorm/GroupNorm/LayerNorm directly after a trained
    conv/linear layer; :func:`~lrpilot.exponential.check_scale_invariance` reports them as
    ``scaled_norm_layers``) lets the scheduler keep them on it:

    * ``eps``: ``x / sqrt(var + eps)`` is scale-invariant only for ``eps = 0``; with the input ``s`` times
      larger, the layer computes what the WD run's layer computes with ``eps / s^2``. So an exponential run
      with a fixed eps is the WD run with a *shrinking* eps, and the runs drift apart. The scheduler sets
      ``eps = eps_0 * weight_scale^2`` before every step (``eps_0``: the layer's eps at construction), which
      makes the equivalence exact for any eps (measured in ``docs/exponential.md``).
    * running statistics (eval mode): exponential averages of past batch statistics, which in the
      exponential run grow step by step, so left alone they lag behind (a mixture of past scales) and
      eval-mode outputs differ. After every step the scheduler multiplies ``running_mean`` by
      ``c_t / c_{t+1} = 1 / a_t`` and ``running_var`` by ``1 / a_t^2``; by induction (the averaging is linear
      and both runs start from the same values) they are then exactly ``weight_scale`` (``weight_scale^2``)
      times the WD run's, so eval-mode outputs are equivalent too.

    :meth:`renormalize` scales both with the weights (``k``, ``k^2``). Without ``norm_layers`` the weights and
    train-mode outputs are still equivalent when ``eps`` is negligible.
"""

from __future__ import annotations

import bisect
import math
import warnings
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import LRScheduler

from .._validation import check_number
from ..telemetry import set_lr
from .invariance import NORM_TYPES
from .schedule import (
    _check_exists,
    _check_hyper,
    _check_milestones,
    _check_mode,
    _exp2,
    _Recursion,
    _validate_schedule,
    initial_buffer_coefficient,
)

__all__ = ["TEXP", "ExpLR"]


class _ExponentialScheduler(LRScheduler):
    """Shared machinery: validation, the initial momentum buffer, the recursion, renormalisation, state."""

    _CONFIG_KEYS: tuple[str, ...] = ("weight_decay", "momentum", "mode", "renorm_every")
    _STATE_KEYS = ("last_epoch", "_step_count", "_last_lr", "base_lrs", "scale_exponent", "renorm_steps")

    # ------------------------------------------------------------------ construction
    @classmethod
    def _validate_common(cls, optimizer: Any, weight_decay: Any, momentum: Any, mode: Any, renorm_every: Any,
                         norm_layers: Any) -> list[nn.Module]:
        """Validate everything shared by the subclasses; nothing is modified."""
        name = cls.__name__
        if not isinstance(optimizer, SGD):
            raise TypeError(f"optimizer must be a torch.optim.SGD (with momentum), got {type(optimizer).__name__}")
        check_number("weight_decay", weight_decay, low=0)
        check_number("momentum", momentum, low=0, high=1, high_open=True)
        _check_mode(mode)
        if renorm_every is not None:
            check_number("renorm_every", renorm_every, low=1, integer=True)
        if isinstance(norm_layers, nn.Module) or not isinstance(norm_layers, Iterable):
            raise TypeError(f"norm_layers must be an iterable of normalization modules, got {norm_layers!r}")
        layers = list(norm_layers)
        for layer in layers:
            if not isinstance(layer, NORM_TYPES):
                raise TypeError(
                    f"norm_layers must contain normalization modules ({', '.join(t.__name__ for t in NORM_TYPES)}), "
                    f"got {type(layer).__name__}"
                )
        if len({id(layer) for layer in layers}) != len(layers):
            raise ValueError("norm_layers contains the same module twice")
        for i, group in enumerate(optimizer.param_groups):
            if group.get("weight_decay", 0) != 0:
                raise ValueError(
                    f"optimizer param group {i} has weight_decay={group['weight_decay']!r}: {name} replaces weight "
                    "decay, so create the SGD optimizer with weight_decay=0 and pass the weight decay to the scheduler"
                )
            if group.get("momentum", 0) != momentum:
                raise ValueError(
                    f"optimizer param group {i} has momentum={group.get('momentum')!r} but momentum={momentum!r} was "
                    "passed: they must be equal"
                )
            for key, ok in (("dampening", 0), ("nesterov", False), ("maximize", False)):
                if group.get(key, ok) != ok:
                    raise ValueError(
                        f"optimizer param group {i} has {key}={group[key]!r}; the equivalence needs {ok!r}"
                    )
            for p in group["params"]:
                if "momentum_buffer" in optimizer.state.get(p, {}):
                    raise ValueError(
                        "the optimizer already has momentum buffers (it has taken steps or loaded a state): construct "
                        "the scheduler before the first step and before loading the optimizer's state_dict"
                    )
        if not any(p.requires_grad for g in optimizer.param_groups for p in g["params"]):
            raise ValueError("the optimizer has no trainable parameters (requires_grad=True)")
        return layers

    def _setup(self, optimizer: SGD, lr0: float, weight_decay: float, momentum: float, mode: str,
               renorm_every: int | None, norm_layers: list[nn.Module]) -> None:
        """Everything is validated: build the state, set the LR of step 0 and the momentum buffers."""
        self.weight_decay = float(weight_decay)
        self.momentum = float(momentum)
        self.mode = mode
        self.renorm_every = renorm_every
        self.norm_layers = norm_layers
        self._norm_eps0 = [getattr(layer, "eps", None) for layer in norm_layers]
        self.scale_exponent = 0  # renormalisations multiplied the weights by 2**scale_exponent in all
        self.renorm_steps: list[int] = []  # steps at which the weights were rescaled
        self._rec = _Recursion(float(lr0), self.weight_decay, self.momentum, mode)
        self._steps_since_call = 0  # optimizer steps since the last step(): the recursion is per optimizer step
        self._warned_rate = False
        # This scheduler's own count of step() calls (checkpointed): set here, not left to LRScheduler.__init__
        # (a private attribute of torch's), so that step() can tell the call __init__ makes from the others.
        self._step_count = 0
        super().__init__(optimizer)  # calls step() once: LR of step 0
        ref = weakref.ref(self)

        def count_step(opt: Optimizer, args: Any, kwargs: Any) -> None:
            scheduler = ref()
            if scheduler is not None:
                scheduler._steps_since_call += 1

        self._hook_handle = optimizer.register_step_post_hook(count_step)
        if self.momentum > 0:
            coef = initial_buffer_coefficient(float(lr0), self.weight_decay, self.momentum)
            with torch.no_grad():
                for p in self._params():
                    optimizer.state[p]["momentum_buffer"] = p.detach() * coef

    def _params(self) -> list[Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"] if p.requires_grad]

    def _wd_lr(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ public views
    @property
    def wd_lr(self) -> float:
        """The WD run's LR at the current step (``eta_t``)."""
        return self._rec.lr

    @property
    def weight_scale(self) -> float:
        """``theta~_t / theta_t``: how much larger the weights are than the WD run's now (``2^S / c_t``).

        ``inf`` if it exceeds float64. Exact in ``"exact"`` mode (for a scale-invariant loss); in ``"paper"``
        mode it is the closed form's prediction.
        """
        log2_scale = self._log2_weight_scale
        return math.inf if log2_scale > 1023 else 2.0**log2_scale

    @property
    def _log2_weight_scale(self) -> float:
        return -self._rec.log_c / math.log(2.0) + self.scale_exponent

    def metrics(self) -> dict[str, float]:
        """The telemetry protocol (:mod:`lrpilot.telemetry`): the WD run's LR this step stands for
        (``exponential/wd_lr``), ``log2`` of how much larger the weights are than the WD run's
        (``exponential/log2_weight_scale``) and the renormalisations so far (``exponential/renorms``)."""
        return {"exponential/wd_lr": float(self.wd_lr), "exponential/log2_weight_scale": float(self._log2_weight_scale),
                "exponential/renorms": float(len(self.renorm_steps))}

    def get_lr(self) -> list[float | Tensor]:
        """The LR of the current step for every param group (all groups share it)."""
        return [self._lr_now()] * len(self.optimizer.param_groups)

    def _lr_now(self) -> float:
        return _exp2(self._rec.log_lr, 2 * self.scale_exponent)

    # ------------------------------------------------------------------ the clock
    def step(self, epoch: int | None = None) -> None:
        """Call after every ``optimizer.step()``: sets the LR of the next step (and renormalises when due).

        The recursion advances one optimizer step per call, so the stepping rate is checked: a call with no
        optimizer step since the previous one (a step skipped by ``GradScaler``, or ``step()`` called twice) is
        ignored, and a call after several optimizer steps (the scheduler stepped once per epoch) warns once; both
        would otherwise silently break the equivalence with the WD run.
        """
        if epoch is not None:
            raise ValueError(f"{type(self).__name__}.step() takes no epoch argument, got epoch={epoch!r}")
        if self._step_count > 0:  # not the call made by LRScheduler.__init__
            steps, self._steps_since_call = self._steps_since_call, 0
            if steps == 0:
                self._warn_rate(f"{type(self).__name__}.step() was called with no optimizer step since its previous "
                                "call (a step skipped by GradScaler, or step() called twice): the call is ignored, "
                                "the recursion advances once per optimizer step")
                return
            if steps > 1:
                self._warn_rate(f"{type(self).__name__}.step() was called after {steps} optimizer steps: it is a "
                                "per-step scheduler (its milestones and recursion count optimizer steps), so call "
                                "scheduler.step() after every optimizer.step(), not once per epoch")
        t = self.last_epoch + 1
        if t > 0:
            growth = 1.0 / (1.0 + self._rec.d)  # c_t / c_{t+1}: the step just taken grew the weights' scale by this
            self._rec.advance(self._wd_lr(t))
            self._sync_norm_layers(growth)
        self._step_count += 1
        self.last_epoch = t
        if self.renorm_every is not None and t > 0 and t % self.renorm_every == 0:
            self.renormalize()
        self._apply_lr()

    def _warn_rate(self, message: str) -> None:
        if not self._warned_rate:
            self._warned_rate = True
            warnings.warn(message, UserWarning, stacklevel=3)

    def remove_hook(self) -> None:
        """Detach the step counter from the optimizer."""
        self._hook_handle.remove()

    def _apply_lr(self) -> None:
        lr = self._lr_now()
        for group in self.optimizer.param_groups:
            set_lr(group, lr)
        self._last_lr = [lr] * len(self.optimizer.param_groups)

    @torch.no_grad()
    def renormalize(self) -> int:
        """Rescale weights, momentum buffers, LR and ``norm_layers``' statistics back to the WD run's scale.

        Multiplies the trainable parameters by ``k = 2^e``, their momentum buffers by ``1/k``, the LR (of this
        and every later step) by ``k^2``, and the ``norm_layers``' ``running_mean`` by ``k``, ``running_var`` and
        ``eps`` by ``k^2``, with
        ``e = -round(log2 weight_scale)``; the function and the equivalence are unchanged (module docstring).
        Call between optimizer steps. Returns ``e`` (0: nothing to do).
        """
        e = -round(self._log2_weight_scale)
        if e == 0:
            return 0
        k, inv = 2.0**e, 2.0**-e
        params = self._params()
        torch._foreach_mul_(params, k)
        for p in params:
            buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                buf.mul_(inv)
        self.scale_exponent += e
        self._sync_norm_layers(k)
        self.renorm_steps.append(self.last_epoch)
        self._apply_lr()
        return e

    @torch.no_grad()
    def _sync_norm_layers(self, k: float = 1.0) -> None:
        """Scale ``norm_layers``' running statistics by ``k`` (``k^2``), set ``eps = eps_0 weight_scale^2``."""
        eps_factor = self.weight_scale**2
        for layer, eps0 in zip(self.norm_layers, self._norm_eps0):
            if k != 1.0:
                running_mean: Tensor | None = getattr(layer, "running_mean", None)
                running_var: Tensor | None = getattr(layer, "running_var", None)
                if running_mean is not None:
                    running_mean.mul_(k)
                if running_var is not None:
                    running_var.mul_(k * k)
            if eps0 is not None:
                layer.eps = eps0 * eps_factor

    # ------------------------------------------------------------------ checkpointing
    def _config(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self._CONFIG_KEYS}

    def state_dict(self) -> dict[str, Any]:
        """The configuration (checked on load), the recursion state, the clock and the renormalisation scale.

        The momentum buffers live in the optimizer's state_dict and the running statistics in the model's;
        ``norm_layers`` are not saved (their ``eps`` is recomputed on load).
        """
        state = {key: getattr(self, key) for key in self._STATE_KEYS}
        state = {k: (list(v) if isinstance(v, list) else v) for k, v in state.items()}
        state["config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._config().items()}
        state["recursion"] = list(self._rec.state())
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. Everything is checked before anything changes."""
        missing = {*self._STATE_KEYS, "config", "recursion"} - set(state_dict)
        if missing:
            raise ValueError(f"{type(self).__name__} state_dict is missing keys {sorted(missing)}")
        mine = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._config().items()}
        theirs = state_dict["config"]
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ValueError(f"state_dict is for a different configuration (differs in {diff}); this scheduler "
                             f"has { {k: mine.get(k) for k in diff} }")
        rec = state_dict["recursion"]
        if len(rec) != 4 or int(rec[0]) != state_dict["last_epoch"]:
            raise ValueError(
                f"state_dict recursion state {rec!r} does not match last_epoch={state_dict['last_epoch']!r}"
            )
        groups = len(self.optimizer.param_groups)
        if len(state_dict["_last_lr"]) != groups:
            raise ValueError(
                f"state_dict is for {len(state_dict['_last_lr'])} param groups, the optimizer has {groups}"
            )
        for key in self._STATE_KEYS:
            value = state_dict[key]
            setattr(self, key, list(value) if isinstance(value, list) else value)
        self._rec.load(rec)
        self._sync_norm_layers()  # eps is not in the model's state_dict: put it back on the loaded scale


class TEXP(_ExponentialScheduler):
    """Tapered Exponential LR: the no-weight-decay equivalent of SGD + weight decay + step decay.

    Li & Arora (ICLR 2020), Theorem 2 ("TEXP"); per-step LRScheduler. Replaces the WD run
    ``SGD(lr=lr, momentum=momentum, weight_decay=weight_decay)`` with LR ``lr * gamma^(milestones passed)``
    (``MultiStepLR`` stepped every optimizer step) by ``SGD(lr=lr, momentum=momentum)`` and this scheduler::

        opt = torch.optim.SGD(trainable_params, lr=0.1, momentum=0.9)          # weight_decay=0
        sched = TEXP(opt, lr=0.1, weight_decay=5e-4, momentum=0.9, milestones=[30 * B, 45 * B], gamma=0.1)
        for x, y in batches:                                                    # B batches per epoch
            loss = loss_fn(model(x), y); opt.zero_grad(); loss.backward(); opt.step(); sched.step()

    Construct it after the model is initialised and before the first step: it sets every trainable
    parameter's momentum buffer to ``-(1 - alpha_0) / (alpha_0 lr) * theta_0`` (spec section 3).

    Args:
        optimizer: ``torch.optim.SGD`` with ``weight_decay=0``, ``momentum`` equal to ``momentum``, no
            dampening, no Nesterov, ``maximize=False``; every trainable parameter must be scale-invariant.
        lr: the WD run's initial LR (``eta_0``; the optimizer's own ``lr`` is overwritten).
        weight_decay: the WD run's weight decay ``lambda``; ``lr * weight_decay <= (1 - sqrt(momentum))^2``.
        momentum: ``gamma`` in [0, 1).
        milestones: steps (not epochs) at which the WD run's LR is multiplied by ``gamma``; strictly
            increasing, >= 1.
        gamma: decay factor in (0, 1].
        mode: ``"exact"`` (default): the per-step recursion, exactly equivalent; ``"paper"``: the paper's
            closed form (growth ``alpha_I^-2`` per step in phase I, ``x (eta_I/eta_{I-1}) / (alpha_{I-1} alpha_I)``
            at a drop), which deviates slightly after each drop when ``momentum > 0``.
        renorm_every: rescale the weights back to the WD run's scale every this many steps (None: never);
            see :meth:`renormalize`.
        norm_layers: normalization layers whose input scales with the weights (e.g.
            ``check_scale_invariance(...).scaled_norm_layers.values()``); their ``eps`` and running statistics
            are kept on the weights' scale, which makes the equivalence exact for ``eps > 0`` and in eval mode
            (module docstring). Without them only train-mode outputs are equivalent, and only while
            ``eps`` is negligible next to the batch variances.
    """

    _CONFIG_KEYS = ("lr", "weight_decay", "momentum", "milestones", "gamma", "mode", "renorm_every")

    def __init__(self, optimizer: Optimizer, lr: float, weight_decay: float, momentum: float,
                 milestones: Sequence[int], gamma: float = 0.1, mode: str = "exact", *,
                 renorm_every: int | None = None, norm_layers: Iterable[nn.Module] = ()) -> None:
        layers = self._validate_common(optimizer, weight_decay, momentum, mode, renorm_every, norm_layers)
        _check_hyper(lr, weight_decay, momentum)
        ms = _check_milestones(milestones)
        check_number("gamma", gamma, low=0, high=1, low_open=True)
        _check_exists(lr, weight_decay, momentum)  # gamma <= 1: later phases have smaller LRs, also fine
        self.lr = float(lr)
        self.milestones = ms
        self.gamma = float(gamma)
        self._setup(cast(SGD, optimizer), self.lr, weight_decay, momentum, mode, renorm_every, layers)

    def _wd_lr(self, t: int) -> float:
        return self.lr * self.gamma ** bisect.bisect_right(self.milestones, t)


class ExpLR(_ExponentialScheduler):
    """The no-weight-decay exponential equivalent of SGD + weight decay + any per-step LR schedule.

    ``lrs[t]`` is the WD run's LR at optimizer step t (e.g. cosine: ``[0.05 * (1 + cos(pi * t / T)) for t in
    range(T)]``); after the last entry the WD run is taken to continue at ``lrs[-1]``. The conversion is the
    recursion of spec section 4 (``"exact"``), or the per-step fixed point ``alpha(lrs[t])`` (``"paper"``, the
    natural extension of the paper's closed form; not exactly equivalent when the LR changes). The whole
    sequence is converted once at construction, so an ``lrs`` that has no equivalent (``lrs[0]`` fails the
    existence condition, or an LR rise drives ``a_t <= 0``) raises there. Same usage and other arguments as
    :class:`TEXP`.
    """

    _CONFIG_KEYS = ("lrs", "weight_decay", "momentum", "mode", "renorm_every")

    def __init__(self, optimizer: Optimizer, lrs: Sequence[float], weight_decay: float, momentum: float,
                 mode: str = "exact", *, renorm_every: int | None = None,
                 norm_layers: Iterable[nn.Module] = ()) -> None:
        layers = self._validate_common(optimizer, weight_decay, momentum, mode, renorm_every, norm_layers)
        _validate_schedule(lrs, weight_decay, momentum, mode)  # the values and the whole recursion
        self.lrs = tuple(float(v) for v in lrs)
        self._setup(cast(SGD, optimizer), self.lrs[0], weight_decay, momentum, mode, renorm_every, layers)

    def _wd_lr(self, t: int) -> float:
        return self.lrs[min(t, len(self.lrs) - 1)]
