"""``lrpilot._torch_compat``: the one place that reaches into torch's private optimizer helpers.

Every wrapper answers what its torch counterpart answers, and its fallback (taken on a torch version where the
private name is missing or has moved) answers the same; the ActiveLR optimizers step bit for bit alike on both
paths; and no other module of the package imports a private torch name.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.optim.optimizer as torch_optimizer
from torch.optim.lr_scheduler import LRScheduler

import lrpilot._torch_compat as compat
from lrpilot import TEXP, ActiveAdaBelief, ActiveAdamW, ActiveRAdam, ActiveSGD

try:
    import torch.utils._foreach_utils as torch_foreach_utils
except ImportError:  # moved on this torch
    torch_foreach_utils = None

SRC = Path(__file__).resolve().parents[1] / "src" / "lrpilot"
PRIVATE = re.compile(r"torch\.optim\.optimizer import|_default_to_fused_or_foreach|_get_value|_get_scalar_dtype"
                     r"|_group_tensors_by_device_and_dtype|torch\._dynamo|torch\._(?!foreach_)[A-Za-z]")


class Subclass(torch.Tensor):
    """A tensor subclass: torch's optimizers never default to foreach for one."""


def torch_private(owner, name):
    """The private torch helper a wrapper is compared with; on a torch without it only the fallback is tested."""
    found = getattr(owner, name, None)
    if found is None:
        pytest.skip(f"this torch has no {name}")
    return found


def compiled(fn):
    return torch.compile(fn, backend="eager", fullgraph=True)  # dynamo only: cheap, and enough to trace


# ---------------------------------------------------------------------------------------------- the package
def test_no_module_but_the_compat_module_names_a_private_torch_helper():
    offenders = [f"{path.relative_to(SRC)}:{i}: {line.strip()}"
                 for path in sorted(SRC.rglob("*.py")) if path.name != "_torch_compat.py"
                 for i, line in enumerate(path.read_text().splitlines(), 1) if PRIVATE.search(line)]
    assert offenders == []


# ---------------------------------------------------------------------------------------------- is_compiling
def test_is_compiling_is_false_in_eager_mode_and_true_under_torch_compile():
    assert compat.is_compiling() is False
    assert compat._dynamo_is_compiling() is False  # the torch < 2.3 fallback
    assert compiled(lambda x: x + 1 if compat.is_compiling() else x)(torch.zeros(1)).item() == 1.0


def test_is_compiling_is_the_public_torch_compiler_function():
    assert compat._is_compiling is torch.compiler.is_compiling


# ---------------------------------------------------------------------------------------------- step_value
@pytest.mark.parametrize("step", [torch.tensor(3.0), torch.tensor(7.0, dtype=torch.float64), 5.0, 2],
                         ids=["float32 tensor", "float64 tensor", "float", "int"])
def test_step_value_is_torchs_get_value_in_eager_mode(step):
    get_value = torch_private(torch_optimizer, "_get_value")
    value = compat.step_value(step)
    assert type(value) is type(get_value(step))
    assert value == get_value(step)


def test_step_value_is_a_python_float_in_eager_mode():
    assert type(compat.step_value(torch.tensor(4.0))) is float


def test_step_value_passes_the_tensor_through_while_compiling(monkeypatch):
    step = torch.tensor(3.0)
    assert compiled(lambda s: compat.step_value(s) * 2)(step).item() == 6.0
    monkeypatch.setattr(compat, "_is_compiling", lambda: True)
    assert compat.step_value(step) is step


# ---------------------------------------------------------------------------------------------- scalar_dtype
@pytest.mark.parametrize("default", [torch.float32, torch.float64])
def test_scalar_dtype_follows_the_default_dtype_as_torchs(default):
    before = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        assert compat.scalar_dtype() == torch_private(torch_optimizer, "_get_scalar_dtype")() == default
    finally:
        torch.set_default_dtype(before)


def test_scalar_dtype_is_float32_under_a_half_precision_default():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        assert compat.scalar_dtype() == torch_private(torch_optimizer, "_get_scalar_dtype")() == torch.float32
    finally:
        torch.set_default_dtype(before)


# ---------------------------------------------------------------------------------------------- foreach_by_default
def foreach_cases():
    return {
        "no tensors": [],
        "cpu tensors": [torch.zeros(2), torch.zeros(3, dtype=torch.float64)],
        "cpu parameters": [torch.nn.Parameter(torch.zeros(2))],
        "meta tensors": [torch.zeros(2, device="meta")],
        "a tensor subclass": [torch.zeros(2).as_subclass(Subclass)],
    }


def torch_rule(params):
    rule = torch_private(torch_optimizer, "_default_to_fused_or_foreach")
    return rule(params, differentiable=False, use_fused=False)[1]


@pytest.mark.parametrize("case", list(foreach_cases()))
def test_foreach_by_default_and_its_fallback_agree_with_torch(case):
    params = foreach_cases()[case]
    assert compat.foreach_by_default(params) == torch_rule(params)
    assert compat._foreach_by_default_fallback(params) == torch_rule(params)


@pytest.mark.parametrize("case", list(foreach_cases()))
def test_on_a_foreach_device_both_rules_pick_foreach_for_plain_tensors_only(monkeypatch, case):
    """No CUDA here: the CPU stands in for a device with foreach kernels, for torch's rule and the fallback."""
    monkeypatch.setattr(torch_optimizer, "_get_foreach_kernels_supported_devices", lambda: ["cpu"], raising=False)
    monkeypatch.setattr(compat, "FOREACH_DEVICES", ("cpu",))
    params = foreach_cases()[case]
    assert compat.foreach_by_default(params) == compat._foreach_by_default_fallback(params) == torch_rule(params)
    if case in ("cpu tensors", "cpu parameters"):
        assert compat.foreach_by_default(params) is True


def test_without_torchs_foreach_rule_the_fallback_is_taken(monkeypatch):
    monkeypatch.delattr(torch_optimizer, "_default_to_fused_or_foreach", raising=False)
    assert compat._torch_foreach_by_default() is None


def test_with_torchs_foreach_rule_it_is_the_one_used():
    assert compat._foreach_by_default is not compat._foreach_by_default_fallback


# ---------------------------------------------------------------------------------------------- grouping
def mixed_lists():
    """Params of three dtypes interleaved, a second list with None entries, CPU step counters."""
    dtypes = [torch.float32, torch.float64, torch.float32, torch.float16, torch.float64]
    params = [torch.zeros(i + 1, dtype=d) for i, d in enumerate(dtypes)]
    bufs = [None if i % 2 else torch.ones(i + 1, dtype=d) for i, d in enumerate(dtypes)]
    steps = [torch.tensor(float(i)) for i in range(len(dtypes))]
    return [params, bufs, steps]


def same_groups(a, b):
    assert set(a) == set(b)
    for key in a:
        (lists_a, idx_a), (lists_b, idx_b) = a[key], b[key]
        assert idx_a == idx_b
        assert [[id(t) for t in lst] for lst in lists_a] == [[id(t) for t in lst] for lst in lists_b]


@pytest.mark.parametrize("with_indices", [False, True])
def test_grouping_and_its_fallback_agree_with_torch(with_indices):
    lists = mixed_lists()
    expected = torch_private(torch.optim.Optimizer, "_group_tensors_by_device_and_dtype")(lists, with_indices)
    same_groups(compat.group_tensors_by_device_and_dtype(lists, with_indices=with_indices), expected)
    same_groups(compat._group_fallback(lists, with_indices), expected)


def test_grouping_keys_are_the_first_lists_device_and_dtype_with_indices_back_into_the_input():
    groups = compat._group_fallback(mixed_lists(), with_indices=True)
    assert {key: idx for key, (_, idx) in groups.items()} == {
        (torch.device("cpu"), torch.float32): [0, 2],
        (torch.device("cpu"), torch.float64): [1, 4],
        (torch.device("cpu"), torch.float16): [3],
    }


def test_while_compiling_everything_is_one_group_as_in_torch(monkeypatch):
    lists = mixed_lists()
    monkeypatch.setattr(compat, "_is_compiling", lambda: True)
    assert compat._group_fallback(lists, with_indices=True) == {(None, None): (lists, [0, 1, 2, 3, 4])}


def test_without_the_optimizer_staticmethod_the_foreach_utils_grouper_is_taken(monkeypatch):
    monkeypatch.delattr(torch.optim.Optimizer, "_group_tensors_by_device_and_dtype", raising=False)
    assert compat._torch_group() is torch_private(torch_foreach_utils, "_group_tensors_by_device_and_dtype")


def test_without_either_grouper_the_fallback_is_taken(monkeypatch):
    monkeypatch.delattr(torch.optim.Optimizer, "_group_tensors_by_device_and_dtype", raising=False)
    if torch_foreach_utils is not None:
        monkeypatch.delattr(torch_foreach_utils, "_group_tensors_by_device_and_dtype", raising=False)
    assert compat._torch_group() is None


# ---------------------------------------------------------------------------------------------- end to end
def train(cls, **kwargs):
    """Six steps over two epochs of a float32 and a float64 parameter, on the foreach path."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5, dtype=torch.float64))]
    opt = cls(params, lr=0.01, foreach=True, steps_per_epoch=3, **kwargs)
    for _ in range(6):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("cls, kwargs", [(ActiveSGD, {"momentum": 0.9}), (ActiveAdamW, {}), (ActiveRAdam, {}),
                                         (ActiveAdaBelief, {})], ids=lambda v: getattr(v, "__name__", ""))
def test_the_optimizers_step_bitwise_alike_on_the_fallback_paths(monkeypatch, cls, kwargs):
    expected = train(cls, **kwargs)
    monkeypatch.setattr(compat, "_group", compat._group_fallback)
    monkeypatch.setattr(compat, "_foreach_by_default", compat._foreach_by_default_fallback)
    for got, want in zip(train(cls, **kwargs), expected):
        assert torch.equal(got, want)


# ---------------------------------------------------------------------------------------------- LRScheduler
def texp_lrs(steps=5):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = TEXP(opt, lr=0.1, weight_decay=5e-4, momentum=0.9, milestones=[3])
    lrs = []
    for _ in range(steps):
        model(torch.randn(4, 3)).square().sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs, sched.state_dict()["_step_count"]


def test_the_exponential_schedulers_count_their_own_steps_without_torchs_initial_count(monkeypatch):
    """``LRScheduler._step_count`` is torch's private attribute: TEXP/ExpLR set it themselves, so a torch whose
    ``LRScheduler.__init__`` no longer initialises it schedules the same LRs."""
    expected = texp_lrs()
    monkeypatch.setattr(LRScheduler, "_initial_step", lambda self: self.step())
    assert texp_lrs() == expected
    assert expected[1] == 6  # the call LRScheduler.__init__ makes, then one per optimizer step
