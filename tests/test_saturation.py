"""Specification of the saturation tests that decide when omega has stopped rising."""

from __future__ import annotations

import math
import random

import pytest

from lrpilot.saturation import (
    DeltaTest,
    GaussianSmoothedTest,
    StalledDescentTest,
    TrendTest,
    gaussian_smooth_center,
    mann_kendall_z,
)


def feed(test, values):
    decisions = []
    for v in values:
        test.observe(v)
        decisions.append(test.saturated())
    return decisions


def test_delta_test_needs_two_angles_and_is_strict_and_two_sided():
    assert feed(DeltaTest(0.5), [10.0]) == [False]
    assert feed(DeltaTest(0.5), [10.0, 10.4]) == [False, True]
    assert feed(DeltaTest(0.5), [10.0, 9.6]) == [False, True]
    assert feed(DeltaTest(0.5), [10.0, 10.5]) == [False, False]  # |delta| == theta is not < theta
    assert feed(DeltaTest(0.5), [10.0, 9.5]) == [False, False]


def test_delta_test_keeps_its_history_across_reset_like_the_official_code():
    t = DeltaTest(0.5)
    feed(t, [10.0, 12.0])
    t.reset()
    assert feed(t, [12.1]) == [True]


def test_mann_kendall_z_known_values():
    # strictly increasing, n = 10: S = 45, Var = 10*9*25/18 = 125, z = (45 - 1)/sqrt(125)
    assert mann_kendall_z(list(range(10))) == pytest.approx(44 / math.sqrt(125))
    assert mann_kendall_z(list(range(10, 0, -1))) == pytest.approx(-44 / math.sqrt(125))
    assert mann_kendall_z([1.0, 3.0, 2.0]) == 0.0  # S = 1 -> continuity-corrected to 0
    with pytest.raises(ValueError, match="at least 3"):
        mann_kendall_z([1.0, 2.0])


def rise_then_plateau(rng, noise, rise_epochs=20, plateau_epochs=30, start=50.0, top=90.0):
    slope = (top - start) / rise_epochs
    rise = [start + slope * e + rng.gauss(0, noise) for e in range(rise_epochs)]
    return rise + [top + rng.gauss(0, noise) for _ in range(plateau_epochs)]


def first_fire(test, values):
    for i, d in enumerate(feed(test, values)):
        if d:
            return i
    return None


def test_trend_test_waits_for_the_plateau_on_a_noisy_rise():
    """omega rising 2 deg/epoch for 20 epochs with +-5 deg noise, then flat: the test fires after the rise,
    within 12 epochs of the plateau's start, for (almost) every noise draw (measured: 2% fire early)."""
    fires = [first_fire(TrendTest(), rise_then_plateau(random.Random(seed), noise=4.0)) for seed in range(40)]
    assert all(f is not None for f in fires)
    assert sum(f < 18 for f in fires) <= 2  # fired clearly before the top: rare
    assert all(f <= 20 + 12 for f in fires)


def test_trend_test_does_not_depend_on_the_scale_or_offset_of_omega():
    values = rise_then_plateau(random.Random(3), noise=4.0)
    base = feed(TrendTest(), values)
    assert feed(TrendTest(), [0.01 * v - 3 for v in values]) == base
    assert feed(TrendTest(), [100 * v + 7 for v in values]) == base


def test_trend_test_fires_after_rise_then_plateau_at_any_noise_level_relative_to_the_rise():
    """Same shape, noise scaled with the rise: the decisions depend on the signal-to-noise ratio only."""
    for scale in (0.01, 1.0, 50.0):
        fires = [first_fire(TrendTest(), [scale * v for v in rise_then_plateau(random.Random(s), noise=2.0)])
                 for s in range(20)]
        assert all(f is not None and 20 <= f <= 32 for f in fires)


def test_trend_test_without_patience_never_calls_a_series_that_never_rose_saturated():
    """patience=None: a flat (or falling) omega is not the rise-then-plateau cycle, however long it lasts."""
    for noise in (0.5, 5.0):
        flat = [60 + random.Random(7).gauss(0, noise) for _ in range(60)]
        assert not any(feed(TrendTest(patience=None), flat))
    assert not any(feed(TrendTest(patience=None), [90.0 - e for e in range(60)]))


def test_trend_test_calls_a_flat_or_falling_series_saturated_only_after_patience():
    """Default patience 20: a series with no rise is left alone for 19 angles and saturated at the 20th
    (flat noise or a steady fall), so the early flat phase before omega's rise never triggers a drop."""
    for noise in (0.5, 5.0):
        flat = [60 + random.Random(7).gauss(0, noise) for _ in range(60)]
        assert first_fire(TrendTest(), flat) == 19
    assert first_fire(TrendTest(), [90.0 - e for e in range(60)]) == 19
    assert first_fire(TrendTest(patience=30), [90.0 - e for e in range(60)]) == 29


def test_trend_test_patience_does_not_fire_while_omega_is_still_rising():
    """Past the patience, a series whose recent stretch rises is still not saturated."""
    flat_then_slow_rise = [50.0 + 0.1 * random.Random(i).random() for i in range(15)] + [50 + e for e in range(1, 20)]
    t = TrendTest(rise_threshold=math.inf)  # never records a rise: only the patience path can fire
    assert not any(feed(t, flat_then_slow_rise))
    assert t.observed == len(flat_then_slow_rise) and not t.rose


def test_trend_test_bad_arguments_are_named():
    """Each test validates its own arguments (used alone, not only through AutoDrop): a NaN threshold, a patience
    shorter than the window or not an int, a window under 6 are refused naming the argument."""
    with pytest.raises(ValueError, match="patience"):
        TrendTest(window=10, patience=5)
    for bad in (2.5, True):
        with pytest.raises(TypeError, match="patience"):
            TrendTest(window=10, patience=bad)
    for kwargs in ({"threshold": math.nan}, {"threshold": -1.0}, {"window": 5}, {"rise_threshold": math.nan}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            TrendTest(**kwargs)
    with pytest.raises(ValueError, match="threshold"):
        DeltaTest(math.nan)
    for kwargs in ({"threshold": math.nan}, {"m": 0}, {"min_buffer": 2}, {"kernel": "box"}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            GaussianSmoothedTest(**kwargs)


def test_trend_test_never_fires_on_a_steady_rise():
    values = [40 + 2 * e + random.Random(5).gauss(0, 1.0) for e in range(40)]
    assert not any(feed(TrendTest(), values))


def test_trend_test_catches_a_rise_that_just_started_after_a_dip():
    """Early in training omega can dip before it rises; a rising recent half must keep the test quiet."""
    dip_then_rise = [47, 37.5, 39.2, 36.3, 34.7, 34.2, 41.9, 44.1, 46.1, 48.7]
    t = TrendTest(window=10)
    assert not any(feed(t, dip_then_rise))


def test_trend_test_reset_restarts_the_window():
    t = TrendTest(window=6)
    feed(t, [10.0, 20.0, 30.0, 40.0, 50.0, 50.0, 49.0, 50.5, 49.5, 50.2, 49.8])
    assert t.saturated() and t.rose
    t.reset()
    assert not t.rose and t.observed == 0
    assert feed(t, [50.0] * 5) == [False] * 5


def test_gaussian_smoothed_test_timing_follows_algorithm_1():
    """C is first computed at the min_buffer-th angle, compared from the (min_buffer+1)-th on."""
    t = GaussianSmoothedTest(threshold=0.1, m=10, min_buffer=10)
    decisions = feed(t, [60.0] * 12)
    assert decisions == [False] * 10 + [True, True]
    assert len(t.buffer) == 9


def test_gaussian_smoothed_test_one_sided_threshold_on_smoothed_rise():
    rising = GaussianSmoothedTest(threshold=0.1)
    assert not any(feed(rising, [float(v) for v in range(30)]))  # +1 deg per angle: never saturated
    falling = GaussianSmoothedTest(threshold=0.1)
    assert feed(falling, [float(30 - v) for v in range(12)])[-1]  # a fall is "no rise": saturated (one-sided)
    falling.reset()
    assert falling.buffer == [] and falling.smoothed == [] and not falling.saturated()


def test_gaussian_filter_kernels():
    values = [0.0, 0.0, 10.0, 0.0, 0.0]
    assert gaussian_smooth_center(values, 0.0, "value") == pytest.approx(2.0)  # sigma 0: plain mean
    # value kernel centred on the outlier 10: the other values are far in value, so weigh ~0
    assert gaussian_smooth_center(values, 1.0, "value") == pytest.approx(10.0, abs=1e-9)
    # offset kernel: weights exp(-i^2/2) for i = -2..2
    w = [math.exp(-(i**2) / 2) for i in range(-2, 3)]
    assert gaussian_smooth_center(values, 1.0, "offset") == pytest.approx(10 * w[2] / sum(w))
    with pytest.raises(ValueError, match="kernel"):
        GaussianSmoothedTest(kernel="box")


def test_state_dicts_round_trip():
    for test in (DeltaTest(0.3), GaussianSmoothedTest(), TrendTest()):
        values = rise_then_plateau(random.Random(0), noise=2.0)
        feed(test, values[:25])
        clone = type(test).__new__(type(test))
        clone.__dict__.update({k: None for k in vars(test)})
        clone.load_state_dict(test.state_dict())
        assert feed(clone, values[25:]) == feed(test, values[25:])
        with pytest.raises(ValueError, match="missing"):
            clone.load_state_dict({})


def test_stalled_descent_test_fires_only_on_a_full_window_whose_mean_is_negative_with_confidence():
    """window=10, threshold 1.28: nine values are not enough (NaN bound); ten alignments around -0.05 with a
    spread of 0.01 are saturated; the same around +0.05, or around -0.001 with a spread of 0.1, are not; reset
    starts over."""
    rng = random.Random(0)
    test = StalledDescentTest(threshold=1.28, window=10)
    for _ in range(9):
        test.observe(-0.05 + 0.01 * rng.gauss(0, 1))
    assert math.isnan(test.upper_bound()) and not test.saturated()
    test.observe(-0.05)
    assert test.saturated()
    for centre, spread in ((0.05, 0.01), (-0.001, 0.1)):
        test.reset()
        for _ in range(10):
            test.observe(centre + spread * rng.gauss(0, 1))
        assert not test.saturated(), (centre, spread)


def test_stalled_descent_test_takes_a_huge_value_without_raising_and_is_not_saturated_by_it():
    """A value of 1e280 in the window (an underflowed norm upstream, before Pilot stopped counting such
    samples) made ``(v - mean) ** 2`` raise OverflowError; the bound is now infinite and the test not saturated,
    and a huge negative value does not saturate it either (its spread is infinite)."""
    for huge in (1e280, -1e280):
        test = StalledDescentTest(window=10)
        for v in [-0.1] * 9 + [huge]:
            test.observe(v)
        assert not test.saturated()
