"""Specification of lrpilot.AutoDrop: when it drops, by how much, what it keeps, and how it fails."""

from __future__ import annotations

import copy
import io
import math
from itertools import pairwise

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler

from lrpilot import AutoDrop


class ScriptedOmega:
    """Stands in for AngularVelocity: update() returns the scripted omega values in order."""

    def __init__(self, params, omegas, warmup=2):
        self.params = list(params)
        self.values = [None] * warmup + list(omegas)
        self.calls = 0
        self.resets = 0
        self.eps = 0.0

    def update(self, tensors=None):
        value = self.values[self.calls] if self.calls < len(self.values) else self.values[-1]
        self.calls += 1
        return value

    def reset(self):
        self.resets += 1

    def state_dict(self):
        return {"calls": self.calls}


def setup(lr=0.1, groups=None, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    params = groups(model) if groups else model.parameters()
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    return model, opt


def run_epoch(model, opt, sched, steps=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 4, generator=g)
        y = torch.randn(16, 2, generator=g)
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    sched.step()


def lrs(opt):
    return [g["lr"] for g in opt.param_groups]


# ----------------------------------------------------------------------------- basics
def test_is_an_lr_scheduler_on_any_optimizer():
    for cls in (torch.optim.SGD, torch.optim.AdamW, torch.optim.Adagrad):
        opt = cls(torch.nn.Linear(2, 2).parameters(), lr=0.01)
        assert isinstance(AutoDrop(opt), LRScheduler)


def test_lr_unchanged_until_a_drop_and_get_last_lr_reports_it():
    model, opt = setup()
    sched = AutoDrop(opt)
    for e in range(3):
        run_epoch(model, opt, sched, seed=e)
    assert sched.get_last_lr() == [0.1] and lrs(opt) == [0.1]
    assert [e for e, _ in sched.omega_history] == [3]  # first angle needs three epoch snapshots


# ----------------------------------------------------------------------------- "code" mode, step for step
def code_scheduler(omegas, **options):
    model, opt = setup()
    sched = AutoDrop(opt, mode="code", **options)
    sched.angular_velocity = ScriptedOmega(sched.angular_velocity.params, omegas)
    return model, opt, sched


def test_code_mode_first_test_at_epoch_4_and_drop_19_epochs_after_detection():
    model, opt, sched = code_scheduler([50.0] * 100)  # flat from the first angle: saturated at once
    for e in range(1, 24):
        run_epoch(model, opt, sched, seed=e)
        if e < 4:
            assert sched.saturation_epochs == []
    assert sched.saturation_epochs == [4]
    assert sched.drop_epochs == [23]  # the code's k == E == 20 counts the detecting epoch
    assert sched.drops[0].step == 22 * 3 + 2  # after the second optimizer step of epoch 23
    assert sched.get_last_lr() == [pytest.approx(0.02)]
    assert sched.threshold == pytest.approx(0.05)


def test_code_mode_test_is_two_sided_strict_and_not_run_while_counting():
    # angles exist from epoch 3; deltas: +0.5 (== theta: no), -0.25 (yes at epoch 5)
    model, opt, sched = code_scheduler([50.0, 50.5, 50.25] + [90.0, 10.0] * 50, threshold=0.5)
    for e in range(1, 10):
        run_epoch(model, opt, sched, seed=e)
    assert sched.saturation_epochs == [5]
    assert sched.should_drop  # counting towards the drop; the wild omegas after it are not tested


def test_code_mode_threshold_adaptation_and_lr_floor_across_drops():
    """Drops of 0.2x down to the floor 1e-4, theta / rho capped at 1, retested at once; once every LR sits at its
    floor a saturation changes no LR and is not recorded as a drop (it still counts as a saturation)."""
    model, opt, sched = code_scheduler([50.0] * 1000, extra_epochs=1)
    seen = []
    for e in range(1, 40):
        run_epoch(model, opt, sched, seed=e)
        if sched.drops and (not seen or seen[-1][0] != sched.drops[-1].epoch):
            seen.append((sched.drops[-1].epoch, sched.get_last_lr()[0], sched.threshold))
    lr_seq = [round(lr, 10) for _, lr, _ in seen]
    theta_seq = [theta for _, _, theta in seen[:5]]
    assert lr_seq == [0.02, 0.004, 0.0008, 0.00016, 0.0001]  # 0.2x, floored at 1e-4, then no more events
    assert len(sched.drops) == 5
    assert len(sched.saturation_epochs) > 10  # saturations at the floor go on being detected
    assert theta_seq == pytest.approx([0.05, 0.25, 1.0, 1.0, 1.0])  # theta / rho, capped at 1
    epochs = [e for e, _, _ in seen]
    assert all(b - a == 2 for a, b in pairwise(epochs))  # retested at once, no cooldown


def test_code_mode_weight_average_is_linearly_weighted_over_the_window():
    model, opt = setup()
    before, after = [], []
    opt.register_step_post_hook(lambda o, a, k: before.append([p.detach().clone() for p in model.parameters()]))
    sched = AutoDrop(opt, mode="code", extra_epochs=2)  # window of E = 3 epochs
    sched.angular_velocity = ScriptedOmega(sched.angular_velocity.params, [50.0] * 100)
    opt.register_step_post_hook(lambda o, a, k: after.append([p.detach().clone() for p in model.parameters()]))
    for e in range(1, 7):
        run_epoch(model, opt, sched, seed=e)
    # detected at epoch 4 (k = 1), k = 2 in epoch 5, k = 3 = E in epoch 6: drop after step 2 of epoch 6
    assert sched.saturation_epochs == [4] and sched.drop_epochs == [6]
    z = [before[i] for i in (3 * 3 + 1, 3 * 4 + 1, 3 * 5 + 1)]  # after the 2nd step of epochs 4, 5, 6
    for got, a, b, c in zip(after[3 * 5 + 1], *z):
        torch.testing.assert_close(got, (1 * a + 2 * b + 3 * c) / 6)
    for i in range(len(after)):  # weights are replaced only at the drop
        if i != 3 * 5 + 1:
            assert all(torch.equal(x, y) for x, y in zip(before[i], after[i]))


# ----------------------------------------------------------------------------- "trend" mode
def trend_scheduler(omegas, **options):
    model, opt = setup()
    sched = AutoDrop(opt, **options)
    sched.angular_velocity = ScriptedOmega(sched.angular_velocity.params, omegas)
    return model, opt, sched


RISE_THEN_FLAT = [40.0 + 3 * i for i in range(12)] + [76.0, 75.0, 77.0, 75.5, 76.5, 75.8, 76.2, 75.1, 76.9, 75.4] * 5


def test_trend_mode_drops_once_omega_rises_then_plateaus_and_restarts_measuring():
    model, opt, sched = trend_scheduler(RISE_THEN_FLAT)
    for e in range(1, 30):
        run_epoch(model, opt, sched, seed=e)
        if sched.drops:
            break
    # first angle at epoch 3; rise to epoch 14; flat from 15: the window of 10 saturates within ~10 epochs
    assert 18 <= sched.drop_epochs[0] <= 26
    assert sched.saturation_epochs == sched.drop_epochs  # no extra epochs by default: drop at once
    assert sched.get_last_lr() == [pytest.approx(0.01)]
    assert sched.angular_velocity.resets == 1  # snapshots straddling the drop are discarded
    assert sched.drops[0].omega == sched.omega_history[-1][1]


def test_trend_mode_drops_again_after_patience_when_omega_stays_flat_after_a_drop():
    """After a drop omega may settle without rising again; after `patience` angles of no upward trend
    the series counts as saturated and the LR drops again. patience=None keeps the LR instead."""
    drops = {}
    for patience in (20, 30, None):
        model, opt, sched = trend_scheduler(RISE_THEN_FLAT, patience=patience)
        for e in range(1, 81):
            run_epoch(model, opt, sched, steps=1, seed=e)
        drops[patience] = sched.drop_epochs
    first = drops[None][0]
    assert drops[None] == [first]
    # the scripted angles continue one per epoch after the reset, so the patience counts epochs exactly
    assert drops[20][:2] == [first, first + 20]
    assert drops[30][:2] == [first, first + 30]


def test_trend_mode_min_lr_floor_defaults_to_1e_3_of_the_initial_lr():
    _, opt = setup(lr=0.1)
    sched = AutoDrop(opt, rho=0.1)
    assert sched.min_lrs == [pytest.approx(1e-4)]
    for _ in range(6):
        sched._drop(50.0)
    assert lrs(opt) == [pytest.approx(1e-4)]


def test_multiple_param_groups_each_dropped_from_their_own_lr_and_floor():
    def groups(m):
        return [{"params": m[0].parameters(), "lr": 0.5}, {"params": m[2].parameters(), "lr": 0.01}]

    _, opt = setup(groups=groups)
    sched = AutoDrop(opt, rho=0.5, min_lr=[0.2, 0.001])
    sched._drop(60.0)
    assert lrs(opt) == [0.25, 0.005]
    sched._drop(60.0)
    assert lrs(opt) == [0.2, 0.0025]  # group 0 floored at its min_lr
    assert sched.drops[-1].old_lrs == (0.25, 0.005)


def test_group_already_below_its_floor_is_not_raised():
    _, opt = setup(lr=1e-5)
    sched = AutoDrop(opt, min_lr=1e-4)
    sched._drop(60.0)
    assert lrs(opt) == [1e-5]


def test_tensor_lr_is_dropped_in_place():
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=torch.tensor(0.1))
    lr_tensor = opt.param_groups[0]["lr"]
    sched = AutoDrop(opt)
    sched._drop(60.0)
    assert opt.param_groups[0]["lr"] is lr_tensor
    assert lr_tensor.item() == pytest.approx(0.01)


def test_averaging_option_in_trend_mode_uses_the_detection_and_extra_epochs():
    model, opt, sched = trend_scheduler(RISE_THEN_FLAT, extra_epochs=2, weight_average=True)
    ends = {}
    for e in range(1, 40):
        run_epoch(model, opt, sched, seed=e)
        if not sched.drops:
            ends[e] = [p.detach().clone() for p in model.parameters()]
        else:
            break
    detect = sched.saturation_epochs[0]
    assert sched.drop_epochs == [detect + 2]
    # the 3rd snapshot is the end of the drop epoch, before averaging: reconstruct it from the others
    averaged = [p.detach() for p in model.parameters()]
    z1, z2 = ends[detect], ends[detect + 1]
    z3 = [(6 * a - 1 * b - 2 * c) / 3 for a, b, c in zip(averaged, z1, z2)]
    for p, r in zip(averaged, [(1 * a + 2 * b + 3 * c) / 6 for a, b, c in zip(z1, z2, z3)]):
        torch.testing.assert_close(p, r)
    assert all((x - y).abs().max() > 0 for x, y in zip(z3, z2))  # z3 really is a later point


def test_uai_mode_measures_every_interval_steps_and_drops_by_095():
    model, opt = setup()
    sched = AutoDrop(opt, mode="uai", interval=2)
    sched.angular_velocity = ScriptedOmega(sched.angular_velocity.params, [60.0] * 100)
    for e in range(1, 9):
        run_epoch(model, opt, sched, steps=3, seed=e)  # 24 steps = 12 windows
    # angles from window 3 on; C computed at the 10th angle (window 12), compared from the 11th: none yet
    assert sched.drops == []
    for e in range(9, 11):
        run_epoch(model, opt, sched, steps=3, seed=e)
    # the 11th angle is measured at window 13 = optimizer step 26
    assert [d.step for d in sched.drops] == [26] and lrs(opt) == [pytest.approx(0.095)]
    assert len(sched.test.buffer) == 2  # Algorithm 1: B <- {} after the drop; windows 14 and 15 since


# ----------------------------------------------------------------------------- robustness
def test_non_finite_parameters_warn_and_never_drop():
    model, opt = setup()
    sched = AutoDrop(opt, threshold=10.0, rise_threshold=-10.0, window=6)  # would drop on any finite window
    for e in range(1, 4):
        run_epoch(model, opt, sched, seed=e)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="not finite"):
        for e in range(4, 12):
            run_epoch(model, opt, sched, seed=e)
    assert sched.drops == []
    assert all(math.isnan(w) for _, w in sched.omega_history[1:])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"rho": 0.0}, ValueError, "rho"),
        ({"rho": 1.0}, ValueError, "rho"),
        ({"rho": 1.5}, ValueError, "rho"),
        ({"rho": float("nan")}, ValueError, "rho"),
        ({"rho": "0.1"}, TypeError, "rho"),
        ({"threshold": -0.1}, ValueError, "threshold"),
        ({"min_lr": -1e-4}, ValueError, "min_lr"),
        ({"min_lr": [1e-4, 1e-4]}, ValueError, "min_lr"),
        ({"extra_epochs": -1}, ValueError, "extra_epochs"),
        ({"extra_epochs": 1.5}, TypeError, "extra_epochs"),
        ({"window": 3}, ValueError, "window"),
        ({"interval": 0}, ValueError, "interval"),
        ({"mode": "fast"}, ValueError, "mode"),
        ({"m": 10}, ValueError, "do not apply"),
        ({"gamma": 3}, TypeError, "unexpected keyword"),
        ({"patience": 5}, ValueError, "patience"),
        ({"patience": 2.5}, TypeError, "patience"),
        ({"mode": "code", "patience": 20}, ValueError, "do not apply"),
        ({"mode": "code", "interval": 5}, ValueError, "interval"),
    ],
)
def test_bad_arguments_are_named_and_leave_the_optimizer_untouched(kwargs, error, match):
    _, opt = setup()
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(error, match=match):
        AutoDrop(opt, **kwargs)
    assert opt.state_dict() == before
    assert "initial_lr" not in opt.param_groups[0]
    assert not opt._optimizer_step_post_hooks


def test_not_an_optimizer_is_a_type_error():
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        AutoDrop(torch.nn.Linear(2, 2))


def test_step_with_an_epoch_argument_is_refused():
    _, opt = setup()
    sched = AutoDrop(opt)
    with pytest.raises(ValueError, match="epoch"):
        sched.step(3)


# ----------------------------------------------------------------------------- checkpoint / resume
def save(model, opt, sched):
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    return buf


def resume(buf, mode, options):
    state = torch.load(buf, weights_only=False)
    model, opt = setup(seed=123)  # different init: everything must come from the checkpoint
    sched = AutoDrop(opt, mode=mode, **options)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    return model, opt, sched


CHECKPOINT_CASES = [
    # trend: eager thresholds so that it drops several times in 24 epochs
    ("trend", {"threshold": 10.0, "rise_threshold": -10.0, "window": 6, "extra_epochs": 2, "weight_average": True}),
    # code: theta large enough to fire at epoch 4; 4-epoch post-saturation window with averaging
    ("code", {"threshold": 1000.0, "extra_epochs": 3}),
    ("uai", {"interval": 2, "threshold": 1000.0, "min_buffer": 4}),
]


@pytest.mark.parametrize("mode,options", CHECKPOINT_CASES)
def test_resume_after_any_epoch_continues_bitwise_identically(mode, options):
    epochs = 24
    model, opt = setup()
    sched = AutoDrop(opt, mode=mode, **options)
    checkpoints = {}
    for e in range(1, epochs + 1):
        run_epoch(model, opt, sched, seed=e)
        checkpoints[e] = save(model, opt, sched)
    reference = [p.detach().clone() for p in model.parameters()]
    assert len(sched.drops) >= 2
    window_epochs = {d.epoch - 1 for d in sched.drops}  # inside a post-saturation window where there is one
    for k in sorted({3, 5, 8, 13, 17, *window_epochs} & set(range(1, epochs))):
        checkpoints[k].seek(0)
        m2, o2, s2 = resume(checkpoints[k], mode, options)
        for e in range(k + 1, epochs + 1):
            run_epoch(m2, o2, s2, seed=e)
        for p, r in zip(m2.parameters(), reference):
            assert torch.equal(p.detach(), r), f"diverged after resuming from epoch {k}"
        assert s2.drops == sched.drops and s2.omega_history == sched.omega_history
        assert s2.get_last_lr() == sched.get_last_lr() and s2.threshold == sched.threshold


def test_load_state_dict_rejects_bad_checkpoints_without_changing_anything():
    """A checkpoint of another mode, one missing a part, one whose snapshot buffers do not fit the measured
    parameters: each raises, and the scheduler's state afterwards is exactly what it was."""
    model, opt = setup()
    sched = AutoDrop(opt)
    for e in range(1, 5):
        run_epoch(model, opt, sched, seed=e)
    before = sched.state_dict()
    good = sched.state_dict()

    bad_mode = dict(good, mode="code")
    with pytest.raises(ValueError, match="mode"):
        sched.load_state_dict(bad_mode)
    missing = {k: v for k, v in good.items() if k != "drops"}
    with pytest.raises(ValueError, match="missing"):
        sched.load_state_dict(missing)
    bad_meter = copy.deepcopy(good)
    bad_meter["meter"]["angular_velocity"]["prev"] = [torch.zeros(1)] * 4
    bad_meter["test"]["observed"] = 99  # would change the test if it were applied before the failure
    with pytest.raises(ValueError, match=r"shape|tracks|holds"):
        sched.load_state_dict(bad_meter)
    after = sched.state_dict()
    assert after["omega_history"] == before["omega_history"] and after["last_epoch"] == before["last_epoch"]
    assert after["test"] == before["test"]
    for a, b in zip(after["meter"]["angular_velocity"]["prev"], before["meter"]["angular_velocity"]["prev"]):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- the parts and the presets
def test_help_lists_every_hyperparameter_with_its_default():
    """The constructor spells every argument with a type and a default (no **options), so help() and IDEs show
    them; a keyword that does not exist is Python's own TypeError."""
    import inspect

    signature = inspect.signature(AutoDrop)
    expected = {"mode": "trend", "test": None, "threshold": 1.28, "window": 10, "rise_threshold": 2.33,
                "patience": 20, "m": 10, "min_buffer": 10, "kernel": "value", "rho": 0.1, "min_lr": None,
                "extra_epochs": 0, "weight_average": False, "adapt_threshold": False, "threshold_max": math.inf,
                "snapshot": "average", "interval": None, "restart_measurement": True, "eps": 0.0}
    for name, default in expected.items():
        parameter = signature.parameters[name]
        assert parameter.default == default, name
        assert parameter.annotation is not inspect.Parameter.empty, name
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


def test_presets_fill_the_defaults_and_explicit_keywords_win():
    """AutoDrop.official / AutoDrop.uai (= mode "code" / "uai") put the paper's values in place of the defaults;
    a keyword passed explicitly wins over the preset, even when it equals the trend default."""
    _, opt = setup()
    code = AutoDrop.official(opt)
    assert type(code.test).__name__ == "DeltaTest" and code.threshold == 0.01 and code.rho == 0.2
    assert code.action.extra_epochs == 19 and code.action.weight_average and code.meter.snapshot == "first_steps"
    code.remove_hook()
    _, opt = setup()
    explicit = AutoDrop(opt, "code", rho=0.1, extra_epochs=0)
    assert explicit.rho == 0.1 and explicit.action.extra_epochs == 0 and explicit.threshold == 0.01
    explicit.remove_hook()
    _, opt = setup()
    uai = AutoDrop.uai(opt, interval=8)
    assert type(uai.test).__name__ == "GaussianSmoothedTest" and uai.interval == 8 and uai.rho == 0.95


def test_a_users_own_saturation_test_drives_the_drops():
    """Any SaturationTest object can be passed as test=; AutoDrop feeds it the angles and drops when it says so.
    The built-in test's keywords are then refused (they would be ignored)."""
    from lrpilot.saturation import SaturationTest

    class AfterFour(SaturationTest):
        def __init__(self):
            self.threshold, self.seen = 0.0, 0

        def observe(self, omega):
            self.seen += 1

        def saturated(self):
            return self.seen >= 4

        def reset(self):
            self.seen = 0

    model, opt = setup()
    sched = AutoDrop(opt, test=AfterFour())
    for e in range(1, 16):
        run_epoch(model, opt, sched, seed=e)
    assert sched.drop_epochs == [6, 12]  # angles from epoch 3; four of them; snapshots restart after a drop
    _, opt = setup()
    with pytest.raises(ValueError, match="window"):
        AutoDrop(opt, test=AfterFour(), window=12)


def test_a_bad_averaging_buffer_is_refused_before_the_measurement_changes():
    """In a post-saturation window with weight averaging, a checkpoint whose averaging buffers do not fit the
    measured parameters raises, and the measurement's snapshots are those from before the call."""
    model, opt = setup()
    sched = AutoDrop(opt, threshold=10.0, rise_threshold=-10.0, window=6, extra_epochs=30, weight_average=True)
    for e in range(1, 12):
        run_epoch(model, opt, sched, seed=e)
    assert sched.action.pending, "the scenario needs an open averaging window"
    good = sched.state_dict()
    bad = copy.deepcopy(good)
    bad["action"]["average"] = [torch.zeros(1)] * len(bad["action"]["average"])
    run_epoch(model, opt, sched, seed=99)  # the live state moves on from the checkpoint
    before = sched.state_dict()
    with pytest.raises(ValueError, match="average"):
        sched.load_state_dict(bad)
    after = sched.state_dict()
    for a, b in zip(after["meter"]["angular_velocity"]["prev"], before["meter"]["angular_velocity"]["prev"]):
        assert torch.equal(a, b)
    assert after["meter"]["steps_in_interval"] == before["meter"]["steps_in_interval"]
    assert after["action"]["counting"] == before["action"]["counting"]
