"""benchmarks/pilot_horizons.py: its count of Pilot's measurement windows is Pilot's, and a run reports Pilot's
decisions as fractions of the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from _scripts import loaded_script
from lrpilot import Pilot

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pilot_horizons.py"


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    with loaded_script(SCRIPT) as module:
        yield module


def test_windows_closed_counts_the_window_ends_pilot_itself_reaches(script: ModuleType) -> None:
    """Stepping a Pilot 500 times, the steps at which its next window end moves on are the window ends; after
    each of 1, 23, 207 and 500 steps the script's count equals how many of them Pilot reached."""
    p = torch.nn.Parameter(torch.zeros(3))
    opt = Pilot([p])
    ends, last = [], opt._next_measure
    g = torch.Generator().manual_seed(0)
    for _ in range(500):
        p.grad = torch.randn(3, generator=g)
        opt.step()
        if opt._next_measure != last:
            ends.append(opt.steps)
            last = opt._next_measure
    for steps in (1, 23, 207, 500):
        assert script.windows_closed(steps) == sum(1 for t in ends if t <= steps), steps


def test_a_run_reports_pilots_events_as_fractions_of_its_steps_and_the_report_shows_every_run(
        script: ModuleType) -> None:
    """A 9-epoch budget run (207 steps) reports its cooldown at step 166 = 207 - round(0.2 x 207), fraction
    166/207, the factor 0 at the end, and the report has a row for it and for AdamW at the same horizon."""
    rows = [script.run("pilot", 9), script.run("adamw", 9)]
    pilot = rows[0]
    assert pilot["steps"] == 207 and pilot["factor"] == 0.0
    cooldown = [e for e in pilot["events"] if e["kind"] == "cooldown"]
    assert [(e["step"], e["fraction"]) for e in cooldown] == [(166, 166 / 207)]
    assert 0 < pilot["final"] <= 1 and pilot["best"] >= pilot["final"]
    text = script.report(rows, 1.0, 1)
    assert "| 207 | " in text and "| pilot | 207 | " in text and "166 (0.80)" in text
