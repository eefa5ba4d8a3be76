"""Saturation tests: when has a series of angular velocities stopped rising?

AutoDrop drops the learning rate when the angular velocity omega of the parameters saturates. The
three tests here turn a stream of omega values (degrees, one per measurement interval) into that
decision. Each keeps only what it needs, feeds on :meth:`observe`, answers :meth:`saturated`, forgets
on :meth:`reset`, and round-trips through ``state_dict``.

* :class:`DeltaTest` -- the official AutoDrop code: saturated iff ``-theta < omega_e - omega_{e-1} < theta``.
* :class:`GaussianSmoothedTest` -- the UAI 2024 paper's Algorithm 1: Gaussian-smoothed omega over a
  buffer of ``m`` values, saturated iff ``C_i - C_{i-1} < threshold``.
* :class:`TrendTest` -- lrpilot's default: saturated iff no recent stretch of the series shows a
  statistically significant upward trend (Mann-Kendall test), which is scale-free and so works at any
  noise level without tuning a threshold in degrees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._validation import check_number

__all__ = ["DeltaTest", "GaussianSmoothedTest", "SaturationTest", "StalledDescentTest", "TrendTest", "mann_kendall_z"]


class SaturationTest:
    """Base class: a stateful test on a stream of angular velocities (degrees).

    Subclasses keep their state in plain Python numbers and lists so that ``state_dict()`` is exact.
    ``threshold`` is public because AutoDrop can adapt it after each drop.
    """

    threshold: float

    def observe(self, omega: float) -> None:
        """Record one finite angular velocity."""
        raise NotImplementedError

    def saturated(self) -> bool:
        """Whether the series recorded so far has saturated."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the series (called after a drop where the mode says so); keeps the threshold."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """A copy of the whole state."""
        return {key: (list(v) if isinstance(v, list) else v) for key, v in vars(self).items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; checks the keys before changing anything."""
        missing = set(vars(self)) - set(state)
        if missing:
            raise ValueError(f"{type(self).__name__} state_dict is missing keys {sorted(missing)}")
        for key in vars(self):
            value = state[key]
            setattr(self, key, list(value) if isinstance(value, list) else value)


class DeltaTest(SaturationTest):
    """The official AutoDrop code's test (spec section 1.2).

    Saturated iff at least two angles exist and ``-threshold < omega_e - omega_{e-1} < threshold``
    (strict, two-sided; degrees). Only the last two angles matter. The code never clears its angle
    history after a drop, so ``reset`` is a no-op here and the first test after a drop compares the new
    angle with the one measured before the drop.
    """

    def __init__(self, threshold: float = 0.01) -> None:
        check_number("threshold", threshold, low=0)
        self.threshold = float(threshold)
        self.previous: float | None = None
        self.current: float | None = None

    def observe(self, omega: float) -> None:
        self.previous, self.current = self.current, float(omega)

    def saturated(self) -> bool:
        if self.previous is None or self.current is None:
            return False
        delta = self.current - self.previous
        return -self.threshold < delta < self.threshold

    def reset(self) -> None:
        """No-op: the official code keeps its angle history across drops."""


def gaussian_smooth_center(values: Sequence[float], sigma: float, kernel: str) -> float:
    """The UAI paper's Gaussian filter evaluated at the centre of the buffer.

    ``y_t = sum_i x_{t+i} K_i / sum_i K_i`` over the buffer ``{x_{t+i}}, i = -m/2 .. m/2`` (the printed
    formula centres ``t`` in the buffer). ``kernel="value"`` is the formula as printed,
    ``K_i = exp(-(x_t - x_{t+i})^2 / (2 sigma^2))`` (a range kernel on omega values; the printed minus
    sign is missing and restored here); ``kernel="offset"`` weighs by index distance,
    ``K_i = exp(-i^2 / (2 sigma^2))``. ``sigma == 0`` degenerates to the plain mean.
    """
    n = len(values)
    center = n // 2
    if sigma <= 0:
        return sum(values) / n
    x_t = values[center]
    if kernel == "value":
        weights = [math.exp(-((x_t - v) ** 2) / (2 * sigma**2)) for v in values]
    else:
        weights = [math.exp(-((i - center) ** 2) / (2 * sigma**2)) for i in range(n)]
    return sum(w * v for w, v in zip(weights, values)) / sum(weights)


class GaussianSmoothedTest(SaturationTest):
    """The UAI 2024 paper's test (Algorithm 1, spec section 2).

    Each angle is appended to a buffer ``B``. Once ``len(B) >= min_buffer`` the smoothed value
    ``C_i = Gau(B; sigma, m)`` with ``sigma = min(std(B), m/2)`` is computed and the oldest entry of
    ``B`` is dropped; the series is saturated iff ``C_i - C_{i-1} < threshold`` (one-sided, as printed).
    After a drop ``B`` is emptied, so the next test needs ``min_buffer + 1`` fresh angles.

    Decisions where the paper is ambiguous (documented, tested): ``std`` is the population standard
    deviation; ``C`` is the filter evaluated at the buffer's centre; the first comparison needs two
    ``C`` values computed since the last reset; ``kernel`` chooses the printed value kernel (default) or
    an index-offset kernel.
    """

    def __init__(self, threshold: float = 0.1, m: int = 10, min_buffer: int = 10, kernel: str = "value") -> None:
        check_number("threshold", threshold, low=0)
        check_number("m", m, low=1, integer=True)
        check_number("min_buffer", min_buffer, low=3, integer=True)
        if kernel not in ("value", "offset"):
            raise ValueError(f"kernel must be 'value' or 'offset', got {kernel!r}")
        self.threshold = float(threshold)
        self.m = int(m)
        self.min_buffer = int(min_buffer)
        self.kernel = kernel
        self.buffer: list[float] = []
        self.smoothed: list[float] = []  # the last two C values since the last reset

    def observe(self, omega: float) -> None:
        self.buffer.append(float(omega))
        if len(self.buffer) >= self.min_buffer:
            mean = sum(self.buffer) / len(self.buffer)
            std = math.sqrt(sum((v - mean) * (v - mean) for v in self.buffer) / len(self.buffer))
            sigma = min(std, self.m / 2)
            self.smoothed = [*self.smoothed[-1:], gaussian_smooth_center(self.buffer, sigma, self.kernel)]
            self.buffer.pop(0)

    def saturated(self) -> bool:
        return len(self.smoothed) == 2 and self.smoothed[1] - self.smoothed[0] < self.threshold

    def reset(self) -> None:
        self.buffer = []
        self.smoothed = []


def mann_kendall_z(values: Sequence[float]) -> float:
    """The Mann-Kendall trend statistic of a series, as a standard-normal z score.

    ``S = sum_{i<j} sign(x_j - x_i)``, ``Var(S) = n(n-1)(2n+5)/18`` (no ties, which continuous
    measurements do not have), ``z = (S - sign(S)) / sqrt(Var(S))`` with the usual continuity
    correction. Under "no trend" ``z`` is approximately N(0, 1) whatever the noise distribution and
    scale; a rising series has large positive ``z``. Needs at least 3 values.
    """
    n = len(values)
    if n < 3:
        raise ValueError(f"mann_kendall_z needs at least 3 values, got {n}")
    s = 0
    for i in range(n - 1):
        xi = values[i]
        for xj in values[i + 1 :]:
            s += (xj > xi) - (xj < xi)
    var = n * (n - 1) * (2 * n + 5) / 18
    return (s - (s > 0) + (s < 0)) / math.sqrt(var)


class TrendTest(SaturationTest):
    """lrpilot's saturation test: omega rose, and has now stopped rising relative to its own noise.

    Why: per-epoch omega is noisy (about +-5 degrees with epoch-averaged snapshots, +-10 without, on
    MNIST-1D), while its rise before saturation is a few degrees per epoch, so any test on the raw
    difference ``omega_e - omega_{e-1}`` with a fixed tiny threshold either never fires or fires at
    random. A *trend* test asks instead whether the recent values are significantly ordered upward.
    The Mann-Kendall statistic (:func:`mann_kendall_z`) is rank-based: invariant to the noise level, to
    the scale and offset of omega and to outliers, so one threshold serves every task.

    Rule, on the angles since the last reset (the last ``window`` of them):

    * ``z`` = the largest Mann-Kendall z over the suffixes of length ``window // 2`` .. ``window``
      (checking short suffixes too keeps a rise that has just begun from being averaged away by
      older, flat values);
    * a *rise* has been seen once ``z > rise_threshold`` (default 2.33, one-sided 1%);
    * saturated iff at least ``window`` angles exist, ``z <= threshold`` (default 1.28, one-sided
      10%), and either a rise has been seen or ``patience`` angles (default 20) have been observed
      since the reset without one.

    Requiring the rise is the paper's cycle (omega rises, then plateaus): early in training omega can
    sit flat or dip for several epochs while the loss still falls fast, and a plateau test alone drops
    the LR there (measured: MNIST-1D, lr 0.05, seed 1 dropped at epoch 12 and ended 12 points lower).

    ``patience`` is for the series that never rise: after a drop omega sometimes settles on a new,
    lower level without the significant rise the paper describes (MNIST-1D at lr 0.2), and on a task
    that is fitted within a few epochs (scikit-learn digits) omega peaks and falls back before any
    stretch of ``window`` angles is significantly rising. Without the fallback such a run keeps its
    LR for the rest of training (measured in the AutoDrop study: 5 of 18 runs dropped at most once
    in 60 epochs). A series that has been flat or falling for ``patience`` epochs is saturated by the
    paper's own definition (omega no longer increases); 20 = twice the window leaves the early flat
    phase of MNIST-1D (about 10 epochs before the rise is detected) untouched. ``patience=None``
    restores the rise-only rule.
    """

    def __init__(self, threshold: float = 1.28, window: int = 10, rise_threshold: float = 2.33,
                 patience: int | None = 20) -> None:
        check_number("threshold", threshold, low=0)
        check_number("rise_threshold", rise_threshold, allow_inf=True)  # inf: never records a rise
        check_number("window", window, low=6, integer=True)
        if patience is not None:
            check_number("patience", patience, low=window, integer=True)
        self.threshold = float(threshold)
        self.rise_threshold = float(rise_threshold)
        self.window = int(window)
        self.patience = patience
        self.values: list[float] = []
        self.observed = 0  # angles since the last reset (values keeps only the last window of them)
        self.rose = False

    def observe(self, omega: float) -> None:
        self.values = [*self.values[-(self.window - 1) :], float(omega)]
        self.observed += 1
        if self.trend_z() > self.rise_threshold:
            self.rose = True

    def trend_z(self) -> float:
        """The largest Mann-Kendall z over the suffixes the rule checks (NaN before ``window // 2`` angles)."""
        shortest = self.window // 2
        if len(self.values) < shortest:
            return math.nan
        return max(mann_kendall_z(self.values[-n:]) for n in range(shortest, len(self.values) + 1))

    def saturated(self) -> bool:
        waited = self.patience is not None and self.observed >= self.patience
        return (self.rose or waited) and len(self.values) >= self.window and self.trend_z() <= self.threshold

    def reset(self) -> None:
        self.values = []
        self.observed = 0
        self.rose = False



class StalledDescentTest(SaturationTest):
    """Pilot's anytime drop test: the steps have stopped agreeing with the gradients that follow them.

    Fed one value per measurement window: the mean over the window of the *descent alignment*
    ``cos(g_k, u_{k-1})``, the cosine between a step's gradient and the direction of the previous update. While
    the iterate still travels down a slope the new gradient agrees with the last direction (positive); once it
    bounces in the noise floor at this LR the next gradient points back against it (negative on average). This is
    Pflug's stationarity diagnostic (consecutive stochastic gradients anti-correlate at stationarity; Pflug 1983,
    used to halve SGD's LR by Chee & Toulis, AISTATS 2018), taken here on the preconditioned update direction so
    that it applies to Adam's steps too, and tested like SASA (Lang, Zhang & Xiao, NeurIPS 2019) with a
    confidence bound instead of a fixed threshold.

    Saturated iff at least ``window`` values exist since the last reset and their mean is below zero by more than
    ``threshold`` standard errors (``mean + threshold * sd / sqrt(n) < 0``; 1.28: one-sided 10%).
    """

    def __init__(self, threshold: float = 1.28, window: int = 10) -> None:
        check_number("threshold", threshold, low=0)
        check_number("window", window, low=3, integer=True)
        self.threshold = float(threshold)
        self.window = int(window)
        self.values: list[float] = []

    def observe(self, omega: float) -> None:
        self.values = [*self.values[-(self.window - 1) :], float(omega)]

    def upper_bound(self) -> float:
        """``mean + threshold * sd / sqrt(n)`` of the last ``window`` values (NaN before ``window`` values)."""
        n = len(self.values)
        if n < self.window:
            return math.nan
        mean = sum(self.values) / n
        sd = math.sqrt(sum((v - mean) * (v - mean) for v in self.values) / (n - 1))  # x * x overflows to inf,
        # where Python's x ** 2 raises OverflowError
        return mean + self.threshold * sd / math.sqrt(n)

    def saturated(self) -> bool:
        return self.upper_bound() < 0

    def reset(self) -> None:
        self.values = []
