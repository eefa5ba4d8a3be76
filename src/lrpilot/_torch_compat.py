"""The one module that touches torch's private optimizer internals, each with a fallback for torch versions
where the name is missing or has moved.

Where torch has a public API, the package uses it directly (``torch.compiler.disable`` instead of
``torch._dynamo.disable``), or it is rebuilt here from public calls; only names with no public
equivalent are imported from torch, and each of them only here:

* :func:`foreach_by_default`: ``torch.optim.optimizer._default_to_fused_or_foreach`` (no public
  equivalent); without it, torch's rule rebuilt: every tensor on a device with foreach kernels.
* :func:`group_tensors_by_device_and_dtype`: ``Optimizer._group_tensors_by_device_and_dtype``, else
  ``torch.utils._foreach_utils._group_tensors_by_device_and_dtype`` (no public equivalent); without both, a
  pure-Python grouping.
* :func:`step_value`, :func:`scalar_dtype`: torch's ``_get_value`` and ``_get_scalar_dtype`` rebuilt from
  public calls (nothing private imported).
* :func:`is_compiling`: the public ``torch.compiler.is_compiling`` (torch >= 2.3), else
  ``torch._dynamo.is_compiling``.

``LRScheduler._step_count`` is not read from torch: the schedulers that use it (:mod:`lrpilot.exponential`)
set it themselves before ``LRScheduler.__init__`` and count it in their own ``step()``. ``torch._foreach_*``
ops are torch's documented way to write optimizers and are called where they are used.

``tests/test_torch_compat.py`` checks every wrapper against its torch counterpart and its fallback path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, cast

import torch
from torch import Tensor

__all__ = ["foreach_by_default", "group_tensors_by_device_and_dtype", "is_compiling", "scalar_dtype", "step_value"]

TensorListList: TypeAlias = list[list[Tensor | None]]
Groups: TypeAlias = dict[tuple[Any, Any], tuple[TensorListList, list[int]]]


# ---------------------------------------------------------------------------------------------- is_compiling
def _dynamo_is_compiling() -> bool:  # torch < 2.3
    return bool(torch._dynamo.is_compiling())


_is_compiling: Callable[[], bool] = getattr(torch.compiler, "is_compiling", _dynamo_is_compiling)


def is_compiling() -> bool:
    """True while ``torch.compile`` traces the caller (``torch.compiler.is_compiling``)."""
    return _is_compiling()


# ---------------------------------------------------------------------------------------------- step_value
def step_value(step: Tensor | float) -> float:
    """A step counter as a Python number in eager mode (``.item()``, faster than CPU tensor maths), the tensor
    itself while compiling (it stands in for the number in the traced maths, hence the type); torch's
    ``_get_value`` built from public calls."""
    if not torch.jit.is_scripting() and is_compiling():
        return step  # type: ignore[return-value]
    return step.item() if isinstance(step, Tensor) else step


# ---------------------------------------------------------------------------------------------- scalar_dtype
def scalar_dtype() -> torch.dtype:
    """The dtype of step counters, as torch's non-fused optimizers choose it (``_get_scalar_dtype()``):
    float64 under ``torch.set_default_dtype(torch.float64)``, else float32."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------------- foreach_by_default
#: Device types with foreach kernels, for the fallback (torch's ``_get_foreach_kernels_supported_devices``
#: adds the registered privateuse1 backend).
FOREACH_DEVICES = ("cuda", "xpu", "mtia")


def _foreach_by_default_fallback(params: list[Tensor]) -> bool:
    """torch's rule rebuilt: every tensor is a plain tensor or parameter on a device with foreach kernels."""
    if torch.jit.is_scripting():
        return False
    plain = (Tensor, torch.nn.Parameter)
    return all(p is None or (type(p) in plain and p.device.type in FOREACH_DEVICES) for p in params)


def _torch_foreach_by_default() -> Callable[[list[Tensor]], bool] | None:
    try:
        from torch.optim.optimizer import _default_to_fused_or_foreach
    except ImportError:
        return None

    def foreach_by_default(params: list[Tensor]) -> bool:
        return bool(_default_to_fused_or_foreach(params, differentiable=False, use_fused=False)[1])

    return foreach_by_default


_foreach_by_default = _torch_foreach_by_default() or _foreach_by_default_fallback


def foreach_by_default(params: list[Tensor]) -> bool:
    """Whether torch's optimizers would take their foreach path for ``params`` (``foreach=None``): yes when
    every tensor is on a device with fast foreach kernels (CUDA, XPU, ...), no on the CPU."""
    return _foreach_by_default(params)


# ---------------------------------------------------------------------------------------------- grouping
def _group_fallback(tensorlistlist: TensorListList, with_indices: bool = False) -> Groups:
    """Group the lists' i-th entries by the device and dtype of ``tensorlistlist[0][i]`` (order kept)."""
    if is_compiling():  # as torch: inductor groups while lowering
        return {(None, None): (tensorlistlist, list(range(len(tensorlistlist[0]))))}
    groups: Groups = {}
    for i, first in enumerate(tensorlistlist[0]):
        assert first is not None, "the first list must hold tensors"
        lists, indices = groups.setdefault((first.device, first.dtype), ([[] for _ in tensorlistlist], []))
        for column, tensors in zip(lists, tensorlistlist):
            column.append(tensors[i])
        if with_indices:
            indices.append(i)
    return groups


def _torch_group() -> Callable[[TensorListList, bool], Groups] | None:
    grouper: Callable[[TensorListList, bool], Groups] | None = getattr(
        torch.optim.Optimizer, "_group_tensors_by_device_and_dtype", None)
    if grouper is None:
        try:
            from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype
        except ImportError:
            return None
        grouper = _group_tensors_by_device_and_dtype
    return grouper


_group = _torch_group() or _group_fallback


def group_tensors_by_device_and_dtype(tensorlistlist: Sequence[Sequence[Tensor | None]],
                                      with_indices: bool = False) -> Groups:
    """``{(device, dtype): (the lists restricted to that group, their indices)}``, grouped on the first list,
    as torch's foreach optimizers do before each ``torch._foreach_*`` call (which needs one device and dtype).

    Entries of the other lists may be ``None`` (new momentum buffers); ``indices`` (only with
    ``with_indices=True``) map a group's entries back to the input lists. While compiling, one group holds
    everything (inductor groups when lowering).
    """
    return _group(cast(TensorListList, tensorlistlist), with_indices)  # lists, as torch's grouper takes
