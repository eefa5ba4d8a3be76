"""The overhead benchmark's per-step time: the median over blocks of consecutive steps of their mean."""

from __future__ import annotations

import statistics

import pytest

from lrpilot.bench.overhead import BLOCK, block_median


def test_work_done_at_every_kth_step_is_counted_amortised_where_a_per_step_median_would_miss_it():
    """A method whose every 4th step costs 5x the others (Pilot's anytime alignment reads) costs its mean, 2x, per
    step; the median of single steps would report 1x."""
    times = [1.0, 1.0, 1.0, 5.0] * 16
    assert statistics.median(times) == 1.0
    assert block_median(times) == pytest.approx(2.0)
    assert BLOCK % 4 == 0, "a block holds whole periods of the alignment's every-4th-step reads"


def test_a_load_spike_in_a_few_blocks_does_not_decide_the_per_step_time():
    """Blocks hit by a 100x spike are outvoted by the median over the others."""
    times = [1.0] * (BLOCK * 9)
    times[3] = times[BLOCK * 4 + 1] = 100.0
    assert block_median(times) == pytest.approx(1.0)


def test_fewer_times_than_a_block_give_their_mean_and_none_is_refused_by_name():
    assert block_median([1.0, 2.0, 6.0]) == pytest.approx(3.0)
    assert block_median([1.0, 1.0, 1.0, 1.0, 9.0], block=2) == pytest.approx(1.0)  # the incomplete block is left out
    with pytest.raises(ValueError, match="block_median"):
        block_median([])
