"""The statistics of ``lrpilot bench``'s report: a 95% interval per method and the paired test behind win/tie/loss.

Every method of a task trains from the same seeds, and a seed fixes both the initial weights and the batch order
(:func:`lrpilot.bench.loop.train`), so run ``s`` of one method and run ``s`` of another differ only by the method:
comparisons are *paired* by seed, which removes the seed-to-seed variance that both share.

* :func:`mean_interval`: the mean over seeds with its two-sided 95% Student-t interval
  (``mean ± t(0.975, n-1) sd / sqrt(n)``); with one seed there is no interval (never a ``± sd`` of one value).
* :func:`paired_comparison`: a method against a baseline on the seeds both ran: the mean of the per-seed
  differences with its 95% t interval, i.e. the two-sided paired t-test at the 5% level: **win** when the interval
  is above 0, **loss** when below, **tie** when it contains 0; with one common seed it is **untested** (the sign
  of the difference is reported but no outcome). A seed in which the method diverged and the baseline did not is
  a loss outright (and the reverse a win): a diverged run has no final value to subtract.

No scipy: the t quantiles are tabulated (df 1-30) and approximated beyond (Cornish-Fisher, error < 1e-3).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Comparison", "Interval", "mean_interval", "paired_comparison", "t_quantile_975"]

# t(0.975, df) for df = 1..30
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_Z975 = 1.959964

Outcome = Literal["win", "tie", "loss", "untested"]


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (the half-width factor of a 95% interval)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and its 95% interval (``low``/``high`` None with fewer than 2 values)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def format(self, digits: int) -> str:
        """``95.2 [94.1, 96.3]``; ``95.2`` for a single value; ``n/a`` without one."""
        if self.n == 0 or math.isnan(self.mean):
            return "n/a"
        if self.low is None or self.high is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def mean_interval(values: Sequence[float]) -> Interval:
    """The mean of the finite ``values`` and its two-sided 95% Student-t interval (none with fewer than 2)."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return Interval(math.nan, None, None, 0)
    mean = statistics.fmean(vals)
    if len(vals) < 2:
        return Interval(mean, None, None, len(vals))
    half = t_quantile_975(len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))
    return Interval(mean, mean - half, mean + half, len(vals))


@dataclass(frozen=True)
class Comparison:
    """A method against a baseline over ``n`` paired seeds.

    Attributes:
        outcome: ``win``, ``tie``, ``loss`` (paired t-test, 5%, two-sided) or ``untested`` (fewer than 2 pairs).
        diff: the mean per-seed difference, positive when the method is better (in the values' units); NaN when
            decided by divergence.
        interval: its 95% interval (None when untested or decided by divergence).
        n: the number of seeds both ran.
        reason: ``"diverged"`` when a divergence decided it, else ``""``.
    """

    outcome: Outcome
    diff: float
    interval: tuple[float, float] | None
    n: int
    reason: str = ""


def paired_comparison(method: Mapping[int, float], baseline: Mapping[int, float], *, higher_is_better: bool = True
                      ) -> Comparison:
    """Compare ``method`` with ``baseline`` (seed -> final value; NaN or inf: the run diverged) on their common seeds
    with the two-sided paired t-test at 5% (module docstring)."""
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        return Comparison("untested", math.nan, None, 0)
    ours_failed = [s for s in seeds if not math.isfinite(method[s]) and math.isfinite(baseline[s])]
    theirs_failed = [s for s in seeds if math.isfinite(method[s]) and not math.isfinite(baseline[s])]
    if ours_failed:
        return Comparison("loss", math.nan, None, len(seeds), "diverged")
    if theirs_failed:
        return Comparison("win", math.nan, None, len(seeds), "diverged")
    both = [s for s in seeds if math.isfinite(method[s]) and math.isfinite(baseline[s])]
    if not both:  # both diverged in every common seed
        return Comparison("tie", 0.0, None, len(seeds), "diverged")
    sign = 1.0 if higher_is_better else -1.0
    diffs = [sign * (method[s] - baseline[s]) for s in both]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return Comparison("untested", mean, None, 1)
    half = t_quantile_975(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    low, high = mean - half, mean + half
    outcome: Outcome = "win" if low > 0 else "loss" if high < 0 else "tie"
    return Comparison(outcome, mean, (low, high), len(diffs))
