"""lrpilot: learning-rate schedules decided from signals measured during training.

Public API:
    Pilot -- an AdamW that decides its LR (Prodigy's estimate) and its schedule (a budget's cooldown, or drops
        when the measured rotation is stationary) by itself; PilotEvent -- one of its decisions.
    ActiveSGD, ActiveAdamW, ActiveRAdam, ActiveAdaBelief, Active -- ActiveLR per-element LR multipliers.
    AngularVelocity -- the angle between successive parameter displacements (AutoDrop eq. 2).
    AutoDrop -- an LR scheduler that drops the LR when the angular velocity saturates.
    DeltaTest, GaussianSmoothedTest, TrendTest -- the saturation tests AutoDrop's modes use.
    TEXP, ExpLR -- exponential LR without weight decay, equivalent to SGD + WD + step decay / any schedule
        (Li & Arora); growth_factor, exponential_schedule, texp_schedule, check_scale_invariance,
        make_scale_invariant -- the rest of lrpilot.exponential.
"""

from .active import Active, ActiveAdaBelief, ActiveAdamW, ActiveRAdam, ActiveSGD
from .angular_velocity import AngularVelocity
from .autodrop import MODES, AutoDrop, DropEvent
from .exponential import (
    TEXP,
    ExpLR,
    ExpSchedule,
    ScaleInvarianceReport,
    ScaleInvariantChanges,
    check_scale_invariance,
    exponential_schedule,
    growth_factor,
    make_scale_invariant,
    texp_schedule,
)
from .pilot import Pilot, PilotEvent
from .saturation import DeltaTest, GaussianSmoothedTest, StalledDescentTest, TrendTest

#: The package version, defined only here (pyproject.toml reads it: ``[tool.hatch.version]``).
__version__ = "0.1.0"

__all__ = [
    "MODES",
    "TEXP",
    "Active",
    "ActiveAdaBelief",
    "ActiveAdamW",
    "ActiveRAdam",
    "ActiveSGD",
    "AngularVelocity",
    "AutoDrop",
    "DeltaTest",
    "DropEvent",
    "ExpLR",
    "ExpSchedule",
    "GaussianSmoothedTest",
    "Pilot",
    "PilotEvent",
    "ScaleInvarianceReport",
    "ScaleInvariantChanges",
    "StalledDescentTest",
    "TrendTest",
    "__version__",
    "check_scale_invariance",
    "exponential_schedule",
    "growth_factor",
    "make_scale_invariant",
    "texp_schedule",
]
