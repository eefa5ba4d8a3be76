"""ActiveLR ("Read the Signs", Wadi, Fredette & Senecal, arXiv 2301.10133): per-element learning-rate
multipliers adapted once per epoch from whether the epoch's summed gradient changed sign.

* :class:`ActiveSGD`, :class:`ActiveAdamW`, :class:`ActiveRAdam`, :class:`ActiveAdaBelief`: the four
  optimizers of the paper, with the multiplier inside the update (vectorised with ``torch._foreach_*``;
  ``foreach=False`` selects the plain for-loop reference path).
* :class:`Active`: the same rule for any torch optimizer, applied to the displacement it produces.

Call ``optimizer.end_epoch()`` once per epoch, or pass ``steps_per_epoch=len(loader)``;
``optimizer.effective_lr()`` reports lr x (mean, min, max) multiplier per param group.
See ``docs/activelr.md``.
"""

from ._base import ActiveOptimizer, EffectiveLR
from .active import Active
from .adabelief import ActiveAdaBelief
from .adamw import ActiveAdamW
from .radam import ActiveRAdam
from .sgd import ActiveSGD
from .sign_rule import apply_sign_rule_

__all__ = [
    "Active",
    "ActiveAdaBelief",
    "ActiveAdamW",
    "ActiveOptimizer",
    "ActiveRAdam",
    "ActiveSGD",
    "EffectiveLR",
    "apply_sign_rule_",
]
