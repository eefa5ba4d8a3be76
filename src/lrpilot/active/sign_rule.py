"""The ActiveLR sign rule: how a tensor of multipliers changes at an epoch boundary, and its constants.

ActiveLR (Wadi, Fredette & Senecal, "Read the Signs", arXiv 2301.10133; spec ``shared/papers/activelr.md``)
gives every parameter element ``i`` its own learning-rate multiplier ``gai_i`` (initialised to 1) and
adapts it once per epoch from the sign of the epoch's summed gradient (spec section 1, the code's
``SetLR`` block):

    cumm_e     = sum over the steps of epoch e of p.grad                        (gradient sum, "cumm")
    gai_i     <- gai_i * lr_low   if gradOld_i * cumm_i <= 0   (sign flip or exact zero)
                 gai_i + lr_high  otherwise                    (same sign: additive increase)
    gradOld   <- cumm_e,  cumm <- 0

from the end of the second epoch on (the first epoch's sum is only stored). Every step then multiplies
the base optimizer's update elementwise by ``gai``. When the boundaries fall and which parameters take part
is the optimizers' business (:class:`~lrpilot.active.ActiveOptimizer`); this module is the rule itself.

Decisions taken here (documented in ``docs/activelr.md`` and tested):

* **Sign test.** ``sign(gradOld) * sign(cumm) <= 0``: the code's ``gradOld * cumm <= 0`` evaluated on the
  signs, so that the product cannot underflow to 0 (a spurious "flip") or overflow in float16/bfloat16.
* **Non-finite sums.** An element whose current or previous epoch sum is NaN or +-inf (a NaN/inf gradient
  reached it) keeps its multiplier at that boundary. The sums are reset every epoch, so the multiplier
  resumes adapting after one clean epoch; it can never become NaN. The parameter update itself is not
  protected (as in every torch optimizer: skip such steps, e.g. with ``torch.amp.GradScaler``).
* **Bounds.** ``max_multiplier`` / ``min_multiplier`` clamp the multiplier after each update; both default
  to ``None`` (unbounded, as in the paper's code). Both must admit the initial value 1.
* **Flip guard (lrpilot's, not the paper's; off by default).** ``flip_guard=f``: the growth of a tensor's
  same-sign multipliers shrinks linearly from full to none as the fraction of its elements that flipped rises
  from ``f - 0.2`` to ``f``; the flipped ones still shrink. See :func:`apply_sign_rule_`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["ACTIVE_DEFAULTS", "FLIP_GUARD_RAMP", "apply_sign_rule_"]

#: ActiveLR's own hyperparameters and their defaults (spec section 3: every logged experiment of the paper
#: used lr_high = 2.0 and lr_low = 0.5; the published files' defaults differ).
ACTIVE_DEFAULTS: dict[str, Any] = {"lr_low": 0.5, "lr_high": 2.0, "max_multiplier": None, "min_multiplier": None}

#: ``flip_guard``'s ramp width (lrpilot's, not the paper's): growth is full up to ``flip_guard - FLIP_GUARD_RAMP``
#: flipped elements and zero from ``flip_guard`` on (0.2: measured, ``docs/activelr.md``).
FLIP_GUARD_RAMP = 0.2


@torch.no_grad()
def apply_sign_rule_(multiplier: Tensor, prev_sum: Tensor, cur_sum: Tensor, lr_low: float, lr_high: float,
                     min_multiplier: float | None = None, max_multiplier: float | None = None,
                     flip_guard: float | None = None) -> None:
    """The ActiveLR update of one tensor of multipliers, in place (spec section 1, the code's ``SetLR``).

    ``gai <- where(gradOld * cumm <= 0, gai * lr_low, gai + lr_high)``, evaluated on signs; elements whose
    ``prev_sum`` or ``cur_sum`` is not finite keep their multiplier; then the optional clamp.

    ``flip_guard`` (None: the paper's rule, unchanged): lrpilot's stability guard, not the paper's. With
    ``flips`` the fraction of the tensor's elements that flipped (the test above, exact zeros included), the
    growth of the same-sign elements is scaled down as ``flips`` approaches ``flip_guard``:

        gai + lr_high * clamp((flip_guard - flips) / FLIP_GUARD_RAMP, 0, 1)      (FLIP_GUARD_RAMP = 0.2)

    full growth (bitwise the paper's) while ``flips <= flip_guard - 0.2``, none from ``flips >= flip_guard`` on,
    linear in between; the flipped elements still get ``gai * lr_low``. Rationale: epoch sums that are
    independent noise flip about half of the time, sums that follow a consistent descent direction flip less.
    Flips approaching chance (``flip_guard=0.5``) say the tensor's steps no longer make consistent progress:
    its effective LR is near or past the stability edge, where the additive growth of the other elements
    pushes it further (ActiveSGD at lr 0.1 collapses that way; measured in ``docs/activelr.md``, which also
    gives the step variant, no growth only above ``flip_guard``, that proved too late). The scale is a 0-dim
    tensor on the multipliers' device: no host read.
    """
    flip = torch.sign(prev_sum) * torch.sign(cur_sum) <= 0
    grown = multiplier + lr_high
    if flip_guard is not None:
        flips = flip.sum(dtype=torch.float32) / max(flip.numel(), 1)  # float32: no float16 overflow
        scale = ((flip_guard - flips) / FLIP_GUARD_RAMP).clamp(min=0.0, max=1.0)
        grown = multiplier + lr_high * scale
    new = torch.where(flip, multiplier * lr_low, grown)
    finite = torch.isfinite(prev_sum) & torch.isfinite(cur_sum)
    new = torch.where(finite, new, multiplier)
    if min_multiplier is not None or max_multiplier is not None:
        new.clamp_(min=min_multiplier, max=max_multiplier)
    multiplier.copy_(new)  # in place: a captured step keeps pointing at the same tensor
