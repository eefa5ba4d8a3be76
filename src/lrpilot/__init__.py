"""lrpilot: learning-rate schedules decided from signals measured during training.

Public API:
    ActiveSGD, ActiveAdamW, ActiveRAdam, ActiveAdaBelief, Active -- ActiveLR per-element LR multipliers.
    AngularVelocity -- the angle between successive parameter displacements (AutoDrop eq. 2).
    AutoDrop -- an LR scheduler that drops the LR when the angular velocity saturates.
    DeltaTest, GaussianSmoothedTest, TrendTest -- the saturation tests AutoDrop's modes use.
"""

from .active import Active, ActiveAdaBelief, ActiveAdamW, ActiveRAdam, ActiveSGD
from .angular_velocity import AngularVelocity
from .autodrop import MODES, AutoDrop, DropEvent
from .saturation import DeltaTest, GaussianSmoothedTest, TrendTest

__version__ = "0.1.0"

__all__ = [
    "MODES",
    "Active",
    "ActiveAdaBelief",
    "ActiveAdamW",
    "ActiveRAdam",
    "ActiveSGD",
    "AngularVelocity",
    "AutoDrop",
    "DeltaTest",
    "DropEvent",
    "GaussianSmoothedTest",
    "TrendTest",
    "__version__",
]
