"""Test oracles for ActiveLR, written from ``shared/papers/activelr.md`` as plainly as possible.

* :class:`SpecActiveLR`: the four Active optimizers exactly as spec sections 1-2 describe them, one
  parameter and one formula at a time, with the official code's clock (a per-parameter step counter; the
  sign rule fires after the update of every ``step_size``-th step, from the 2nd epoch on, on the raw
  product ``gradOld * cumm <= 0``).
* :class:`AdaBeliefReference`: plain AdaBelief as published in ``adabelief_pytorch`` 0.0.5 (no multiplier),
  the counterpart of ``torch.optim.AdamW`` for ActiveAdaBelief's frozen-multiplier test.
* helpers that drive an optimizer with a fixed sequence of gradients.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor


class SpecActiveLR:
    """One of ``"sgd" | "adamw" | "radam" | "radam_lagged" | "adabelief"`` written from the spec."""

    def __init__(self, params: Sequence[Tensor], variant: str, step_size: int, *, lr: float, lr_low: float,
                 lr_high: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, scale_weight_decay: bool = False, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False, weight_decouple: bool = True,
                 fixed_decay: bool = False, rectify: bool = True) -> None:
        self.params = list(params)
        self.variant = variant
        self.step_size = step_size
        self.lr, self.lr_low, self.lr_high = lr, lr_low, lr_high
        self.b1, self.b2 = betas
        self.eps, self.wd, self.scale_wd = eps, weight_decay, scale_weight_decay
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov
        self.weight_decouple, self.fixed_decay, self.rectify = weight_decouple, fixed_decay, rectify
        self.state: dict[int, dict] = {}

    @torch.no_grad()
    def step(self) -> None:
        for k, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad.clone()
            st = self.state.setdefault(k, {"t": 0, "gai": torch.ones_like(p), "cumm": torch.zeros_like(p),
                                           "m": torch.zeros_like(p), "v": torch.zeros_like(p), "buf": None})
            st["cumm"] = st["cumm"] + g  # section 1, step 1: sum of raw gradients
            st["t"] += 1
            getattr(self, "_" + self.variant.replace("_lagged", ""))(p, g, st)
            t = st["t"]
            if t % self.step_size == 0:  # section 1, step 3
                if t / self.step_size > 1:
                    st["gai"] = torch.where(st["old"] * st["cumm"] <= 0, st["gai"] * self.lr_low,
                                            st["gai"] + self.lr_high)
                st["old"] = st["cumm"].clone()
                st["cumm"] = torch.zeros_like(p)

    def _decay(self, p: Tensor, gai: Tensor, base: float) -> None:
        factor = base * (gai if self.scale_wd else 1.0)
        p.copy_(p * (1 - factor))

    def _sgd(self, p: Tensor, g: Tensor, st: dict) -> None:
        lr, gai = self.lr, st["gai"]
        if self.wd:
            self._decay(p, gai, lr * self.wd)
        if self.momentum:
            st["buf"] = g.clone() if st["buf"] is None else self.momentum * st["buf"] + (1 - self.dampening) * g
            d = g + self.momentum * st["buf"] if self.nesterov else st["buf"]
        else:
            d = g
        p.copy_(p - lr * gai * d)

    def _adamw(self, p: Tensor, g: Tensor, st: dict) -> None:
        lr, gai, t, b1, b2 = self.lr, st["gai"], st["t"], self.b1, self.b2
        if self.wd:
            self._decay(p, gai, lr * self.wd)
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * g**2
        m_hat, v_hat = st["m"] / (1 - b1**t), st["v"] / (1 - b2**t)
        p.copy_(p - lr * gai * m_hat / (v_hat.sqrt() + self.eps))

    def _radam(self, p: Tensor, g: Tensor, st: dict) -> None:
        lr, gai, t, b1, b2 = self.lr, st["gai"], st["t"], self.b1, self.b2
        m_prev, v_prev = st["m"], st["v"]
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * g**2
        m, v = (m_prev, v_prev) if self.variant == "radam_lagged" else (st["m"], st["v"])
        if self.wd:
            self._decay(p, gai, lr * self.wd)
        n_max = 2 / (1 - b2) - 1
        n_t = n_max - 2 * t * b2**t / (1 - b2**t)
        if n_t >= 5:
            step = lr * math.sqrt((1 - b2**t) * (n_t - 4) * (n_t - 2) * n_max / ((n_max - 4) * (n_max - 2) * n_t))
            step /= 1 - b1**t
            p.copy_(p - step * gai * m / (v.sqrt() + self.eps))
        else:
            p.copy_(p - lr / (1 - b1**t) * gai * m)

    def _adabelief(self, p: Tensor, g: Tensor, st: dict) -> None:
        lr, gai, t, b1, b2, eps = self.lr, st["gai"], st["t"], self.b1, self.b2, self.eps
        if self.wd:
            if self.weight_decouple:
                self._decay(p, gai, self.wd if self.fixed_decay else lr * self.wd)
            else:
                g = g + self.wd * p  # L2, after cumm saw the raw gradient
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * (g - st["m"]) ** 2 + eps  # the state keeps the eps
        denom = st["v"].sqrt() / math.sqrt(1 - b2**t) + eps
        if not self.rectify:
            p.copy_(p - lr / (1 - b1**t) * gai * st["m"] / denom)
            return
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho_t > 4:
            r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            p.copy_(p - r_t * lr / (1 - b1**t) * gai * st["m"] / denom)
        else:
            p.copy_(p - lr * gai * st["m"])


class AdaBeliefReference(torch.optim.Optimizer):
    """Plain AdaBelief (``adabelief_pytorch`` 0.0.5 semantics), one tensor at a time, no multiplier."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, weight_decouple: bool = True,
                 fixed_decay: bool = False, rectify: bool = True) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                                  "amsgrad": amsgrad, "weight_decouple": weight_decouple,
                                  "fixed_decay": fixed_decay, "rectify": rectify})

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self.state[p]
                if not st:
                    st.update(t=0, m=torch.zeros_like(p), s=torch.zeros_like(p), s_max=torch.zeros_like(p))
                st["t"] += 1
                t = st["t"]
                if group["weight_decouple"]:
                    p.mul_(1 - (wd if group["fixed_decay"] else lr * wd))
                elif wd:
                    g = g + wd * p
                st["m"].mul_(b1).add_((1 - b1) * g)
                st["s"].mul_(b2).add_((1 - b2) * (g - st["m"]) ** 2)
                if group["amsgrad"]:
                    torch.maximum(st["s_max"], st["s"], out=st["s_max"])
                    second = st["s_max"].add_(eps)
                else:
                    second = st["s"].add_(eps)
                denom = second.sqrt() / math.sqrt(1 - b2**t) + eps
                rho_inf = 2 / (1 - b2) - 1
                rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
                if not group["rectify"]:
                    p.sub_(lr / (1 - b1**t) * st["m"] / denom)
                elif rho_t > 4:
                    r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                    p.sub_(r_t * lr / (1 - b1**t) * st["m"] / denom)
                else:
                    p.sub_(lr * st["m"])


# ---------------------------------------------------------------------------------------------- drivers
def make_params(seed: int = 0, dtype: torch.dtype = torch.float64) -> list[Tensor]:
    """Three leaf tensors of different shapes (a matrix, a vector, a scalar)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (5,), ()]
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def gradient_sequence(params: Sequence[Tensor], steps: int, seed: int = 1, drift: float = 0.3) -> list[list[Tensor]]:
    """Random gradients with a per-element bias, so that some epoch sums keep their sign and some flip."""
    g = torch.Generator().manual_seed(seed)
    bias = [drift * torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    return [[torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 + b for p, b in zip(params, bias)]
            for _ in range(steps)]


def drive(optimizer, params: Sequence[Tensor], grads: Sequence[Sequence[Tensor | None]],
          on_step: Callable[[int], None] | None = None) -> None:
    """Set ``p.grad`` from ``grads[t]`` and step, for every t (``None`` leaves ``p.grad`` as None)."""
    for t, step_grads in enumerate(grads):
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.clone()
        optimizer.step()
        if on_step is not None:
            on_step(t)


def clone_params(params: Sequence[Tensor]) -> list[Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


def drive_quadratic(optimizer, params: Sequence[Tensor], steps: int, seed: int = 1,
                    end_epoch_every: int | None = None) -> None:
    """Gradients of a noisy quadratic, ``g = (p - c) + noise_t``: they depend on the trajectory, so any
    discrepancy between two optimizers compounds. Calls ``end_epoch()`` every ``end_epoch_every`` steps."""
    g = torch.Generator().manual_seed(seed)
    centers = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    noise = [[torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params] for _ in range(steps)]
    for t in range(steps):
        for p, c, n in zip(params, centers, noise[t]):
            p.grad = (p.detach() - c) + n
        optimizer.step()
        if end_epoch_every and (t + 1) % end_epoch_every == 0:
            optimizer.end_epoch()


def assert_rel_close(actual: Sequence[Tensor], expected: Sequence[Tensor], rtol: float = 1e-6) -> None:
    """Every tensor within ``rtol`` of its counterpart, relative to the counterpart's norm."""
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        err = float((a.detach() - e.detach()).norm())
        scale = float(e.detach().norm())
        assert err <= rtol * max(scale, 1e-300), f"relative error {err / max(scale, 1e-300):.3g} > {rtol}"


@contextlib.contextmanager
def float64_steps() -> Iterator[None]:
    """Default dtype float64 for the body: torch (and lrpilot) keep capturable step counters in the default
    float dtype, so float32 bias corrections would otherwise limit a float64 comparison to ~1e-7."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


# ---------------------------------------------------------------------------------------------- the optimizers
def _factories() -> dict[str, Callable[..., torch.optim.Optimizer]]:
    from lrpilot import Active, ActiveAdaBelief, ActiveAdamW, ActiveRAdam, ActiveSGD

    return {
        "ActiveSGD": lambda params, **kw: ActiveSGD(params, lr=0.1, momentum=0.9, **kw),
        "ActiveAdamW": lambda params, **kw: ActiveAdamW(params, lr=0.01, **kw),
        "ActiveRAdam": lambda params, **kw: ActiveRAdam(params, lr=0.01, **kw),
        "ActiveAdaBelief": lambda params, **kw: ActiveAdaBelief(params, lr=0.01, **kw),
        "Active(SGD)": lambda params, **kw: Active(torch.optim.SGD(params, lr=0.1, momentum=0.9), **kw),
        "Active(Adagrad)": lambda params, **kw: Active(torch.optim.Adagrad(params, lr=0.1), **kw),
    }


#: Every ActiveLR optimizer at a small-problem LR, by name: ``FACTORIES[name](params, **kwargs)``.
FACTORIES = _factories()
