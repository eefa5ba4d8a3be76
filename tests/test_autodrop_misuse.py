"""Specification: the ways users misuse or compose AutoDrop either work correctly or warn at the moment they
happen; none of them leaves a silently different learning rate.

Covers issue 14's cases 1 (step() per batch / twice per epoch), 2 (inside SequentialLR / ChainedScheduler after
a warmup), 5 (add_param_group after construction), 9 (parameters unfrozen later), 10 (no drop event at the
floor), 12 (load_state_dict keeps the measurement's settings), and siblings: GradScaler-skipped steps,
``zero_grad(set_to_none=False)``, gradient accumulation, a resume after a restart at a milestone.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch.optim.lr_scheduler import ChainedScheduler, LinearLR, SequentialLR

from lrpilot import AutoDrop

FAST = {"threshold": 10.0, "rise_threshold": -10.0, "window": 6}  # saturated as soon as 6 angles exist


def model_and_opt(lr=0.2, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def batch(g):
    return torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)


def train_step(model, opt, g):
    x, y = batch(g)
    loss = ((model(x) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def epochs(model, opt, sched, n, steps=4, seed=0, after_batch=None):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        for _ in range(steps):
            train_step(model, opt, g)
            if after_batch is not None:
                after_batch()
        sched.step()


def lr0(opt):
    return float(opt.param_groups[0]["lr"])


# ----------------------------------------------------------------------------- case 1: the stepping rate
def test_step_called_after_every_optimizer_step_warns_before_any_drop_and_names_the_fix():
    """step() inside the batch loop: the third consecutive single-step call warns (once), long before the
    window of angles a drop needs, and the message says what to do."""
    model, opt = model_and_opt()
    sched = AutoDrop(opt, **FAST)
    g = torch.Generator().manual_seed(0)
    with pytest.warns(UserWarning, match="once per epoch") as record:
        for _ in range(3):
            train_step(model, opt, g)
            sched.step()
    assert sched.drops == []
    assert "interval=" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once
        for _ in range(3):
            train_step(model, opt, g)
            sched.step()


def test_full_batch_training_says_so_with_interval_1_and_gets_no_warning():
    """One optimizer step per epoch is legitimate (full-batch training): interval=1 measures every step, the
    per-epoch step() call then only counts epochs, and nothing warns."""
    model, opt = model_and_opt()
    sched = AutoDrop(opt, interval=1, **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        epochs(model, opt, sched, 12, steps=1)
    assert sched.drops and len(sched.omega_history) >= 8


def test_a_second_step_call_without_optimizer_steps_warns_and_changes_nothing():
    """step() called in both the training and the validation loop: the second call of each epoch warns and is
    ignored, so the schedule is exactly the one of a loop that calls it once."""
    model, opt = model_and_opt()
    once = AutoDrop(opt, **FAST)
    epochs(model, opt, once, 12)
    model2, opt2 = model_and_opt()
    twice = AutoDrop(opt2, **FAST)
    g = torch.Generator().manual_seed(0)
    with pytest.warns(UserWarning, match="no optimizer.step"):
        for _ in range(12):
            for _ in range(4):
                train_step(model2, opt2, g)
            twice.step()
            twice.step()  # the validation loop's call
    assert twice.drops and twice.drop_epochs == once.drop_epochs
    assert twice.omega_history == once.omega_history
    assert lr0(opt2) == lr0(opt)


# ----------------------------------------------------------------------------- case 2: inside torch's composers
def warmup_then_autodrop(opt, warmup=5, **options):
    warm = LinearLR(opt, start_factor=0.1, total_iters=warmup)
    drop = AutoDrop(opt, **options)
    return SequentialLR(opt, [warm, drop], milestones=[warmup]), drop


def test_after_a_sequential_lr_warmup_the_lr_reaches_the_base_lr_and_autodrop_measures_from_the_milestone():
    """SequentialLR([LinearLR warmup, AutoDrop], milestones=[5]): the warmup ramps to the full LR (0.2, not the
    warmup's last value 0.164), AutoDrop measures nothing during the warmup, its epochs count from the
    milestone, and it drops exactly as a plain AutoDrop started at the milestone would."""
    model, opt = model_and_opt()
    seq, drop = warmup_then_autodrop(opt, **FAST)
    seen = []
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        for _ in range(4):
            train_step(model, opt, g)
        seq.step()
        seen.append(lr0(opt))
    assert seen == pytest.approx([0.056, 0.092, 0.128, 0.164, 0.2])
    assert drop.omega_history == [] and drop.global_step == 0
    state = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = {k: v.clone() for k, v in opt.state_dict()["state"].items() for k, v in [(k, v["momentum_buffer"])]}
    for _ in range(12):
        for _ in range(4):
            train_step(model, opt, g)
        seq.step()
    assert drop.drops, "the scenario needs a drop after the warmup"
    assert drop.drops[0].old_lrs == (pytest.approx(0.2),)

    # the reference: the same model and momentum at the milestone, a fresh AutoDrop, the same batches
    ref_model, ref_opt = model_and_opt()
    ref_model.load_state_dict(state)
    for p, buf in zip(ref_model.parameters(), momentum.values()):
        ref_opt.state[p]["momentum_buffer"] = buf.clone()
    ref = AutoDrop(ref_opt, **FAST)
    g = torch.Generator().manual_seed(0)
    for _ in range(5 * 4):
        batch(g)  # the warmup's batches
    for _ in range(12):
        for _ in range(4):
            train_step(ref_model, ref_opt, g)
        ref.step()
    assert drop.drop_epochs == ref.drop_epochs
    assert drop.omega_history == ref.omega_history
    assert lr0(opt) == pytest.approx(lr0(ref_opt))


def test_uai_mode_measures_nothing_inside_the_warmup_and_cannot_drop_there():
    """The step-interval mode measures from its optimizer hook; before SequentialLR's milestone it is idle."""
    model, opt = model_and_opt()
    seq, drop = warmup_then_autodrop(opt, warmup=6, mode="uai", interval=1, threshold=50.0, min_buffer=3)
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        for _ in range(4):
            train_step(model, opt, g)
        seq.step()
    assert drop.omega_history == [] and drop.drops == []
    assert lr0(opt) == pytest.approx(0.2)


def test_sequential_lr_state_dict_round_trips_with_autodrop_inside():
    """SequentialLR's state_dict holds AutoDrop's; a resume in the middle of the AutoDrop phase continues with
    the same drops."""
    model, opt = model_and_opt()
    seq, drop = warmup_then_autodrop(opt, **FAST)
    epochs(model, opt, seq, 8)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "seq": seq.state_dict()}, buf)
    epochs(model, opt, seq, 10, seed=1)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    model2, opt2 = model_and_opt()
    seq2, drop2 = warmup_then_autodrop(opt2, **FAST)
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    seq2.load_state_dict(ckpt["seq"])
    epochs(model2, opt2, seq2, 10, seed=1)
    assert drop.drops and drop2.drop_epochs == drop.drop_epochs
    assert lr0(opt2) == lr0(opt)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_chained_scheduler_with_a_warmup_reaches_the_base_lr_and_drops_compose_with_it():
    """ChainedScheduler([LinearLR warmup, AutoDrop]): both step every epoch; the warmup reaches the full LR and
    AutoDrop's drops multiply it (torch's chaining semantics). AutoDrop measures from epoch 1 here: use
    SequentialLR to keep the warmup out of the measurement."""
    model, opt = model_and_opt()
    warm = LinearLR(opt, start_factor=0.1, total_iters=5)
    drop = AutoDrop(opt, **FAST)
    chained = ChainedScheduler([warm, drop])
    epochs(model, opt, chained, 5)
    assert drop.drops == [] or drop.drops[0].epoch > 5
    assert lr0(opt) == pytest.approx(0.2)
    epochs(model, opt, chained, 10, seed=1)
    assert drop.drops
    assert lr0(opt) == pytest.approx(0.2 * 0.1 ** len(drop.drops))


def test_step_with_epoch_0_restarts_autodrop_as_older_torch_sequential_lr_does():
    """torch < 2.5's SequentialLR calls ``scheduler.step(0)`` at the milestone: the same restart as
    ``_update_lr(0)``; any other epoch argument is still refused."""
    model, opt = model_and_opt()
    sched = AutoDrop(opt, **FAST)
    epochs(model, opt, sched, 10)
    assert sched.drops
    sched.step(0)
    assert lr0(opt) == pytest.approx(0.2) and sched.last_epoch == 0
    assert sched.angular_velocity.num_snapshots == 0
    with pytest.raises(ValueError, match="epoch"):
        sched.step(4)


# ----------------------------------------------------------------------------- cases 5 and 9: a growing optimizer
def test_a_param_group_added_later_is_dropped_with_the_others_and_warned_about():
    """add_param_group after AutoDrop was built: a warning when AutoDrop first sees the group, and the next drop
    lowers every group by rho (never group 0 alone, never a crash half-way through)."""
    model, opt = model_and_opt()
    head = torch.nn.Linear(2, 2)
    sched = AutoDrop(opt, **FAST)
    opt.add_param_group({"params": head.parameters(), "lr": 0.05})
    g = torch.Generator().manual_seed(0)
    with pytest.warns(UserWarning, match="param groups"):
        for _ in range(12):
            for _ in range(4):
                x, y = batch(g)
                loss = ((head(model(x)) - y) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
    assert sched.drops
    assert sched.drops[0].old_lrs == (pytest.approx(0.2), pytest.approx(0.05))
    assert sched.drops[0].new_lrs == (pytest.approx(0.02), pytest.approx(0.005))
    assert sched.min_lrs == [pytest.approx(2e-4), pytest.approx(5e-5)]
    assert len(sched.angular_velocity.params) == 6  # the head is measured too


def test_a_param_group_added_later_in_step_interval_mode_gets_its_floor_before_the_drop():
    model, opt = model_and_opt()
    sched = AutoDrop(opt, mode="uai", interval=2, threshold=50.0, min_buffer=3)
    extra = torch.zeros(3, requires_grad=True)
    opt.add_param_group({"params": [extra], "lr": 0.1})
    with pytest.warns(UserWarning, match="param groups"):
        epochs(model, opt, sched, 6)
    assert sched.drops and all(len(d.new_lrs) == 2 for d in sched.drops)


def test_parameters_unfrozen_later_join_the_measurement_with_a_warning():
    """A parameter frozen when AutoDrop was built and unfrozen later (fine-tuning recipes) is measured from then
    on; the measurement restarts on the larger vector and AutoDrop says so."""
    model, opt = model_and_opt()
    first = model[0]
    for p in first.parameters():
        p.requires_grad_(False)
    sched = AutoDrop(opt, **FAST)
    assert len(sched.angular_velocity.params) == 2
    epochs(model, opt, sched, 4)
    for p in first.parameters():
        p.requires_grad_(True)
    with pytest.warns(UserWarning, match="joined"):
        epochs(model, opt, sched, 1)
    assert len(sched.angular_velocity.params) == 4
    assert sched.angular_velocity.num_snapshots == 1  # restarted: this epoch's is the new set's first snapshot
    assert sched.omega_history[-1][0] == 4  # no angle from the epoch that straddles the change
    epochs(model, opt, sched, 3)
    assert sched.angular_velocity.num_snapshots == 4 and sched.omega_history[-1][0] == 8


def test_resume_after_unfreezing_restores_the_measured_set_even_if_autodrop_is_rebuilt_while_frozen():
    model, opt = model_and_opt()
    for p in model[0].parameters():
        p.requires_grad_(False)
    sched = AutoDrop(opt, **FAST)
    for p in model[0].parameters():
        p.requires_grad_(True)
    with pytest.warns(UserWarning, match="joined"):
        epochs(model, opt, sched, 5)
    state = sched.state_dict()
    model2, opt2 = model_and_opt()
    for p in model2[0].parameters():
        p.requires_grad_(False)  # the user's script freezes first, builds AutoDrop, loads, then unfreezes
    resumed = AutoDrop(opt2, **FAST)
    model2.load_state_dict(model.state_dict())
    resumed.load_state_dict(state)
    assert len(resumed.angular_velocity.params) == 4
    for p in model2[0].parameters():
        p.requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the set matches: no restart, no warning
        opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # a copy: load_state_dict aliases the tensors
        epochs(model, opt, sched, 6, seed=3)
        epochs(model2, opt2, resumed, 6, seed=3)
    assert resumed.omega_history == sched.omega_history
    assert resumed.drop_epochs == sched.drop_epochs


# ----------------------------------------------------------------------------- case 10: the floor
def test_a_saturation_at_the_floor_records_no_drop_event():
    """Once every group sits at its floor a saturation changes no LR, so no DropEvent is recorded (the
    ``autodrop/drops`` count logged is the number of LR changes)."""
    model, opt = model_and_opt()
    sched = AutoDrop(opt, min_lr=0.01, **FAST)
    epochs(model, opt, sched, 60)
    assert [round(d.new_lrs[0], 10) for d in sched.drops] == [0.02, 0.01]
    assert all(d.old_lrs != d.new_lrs for d in sched.drops)
    assert len(sched.saturation_epochs) > 2


# ----------------------------------------------------------------------------- siblings: the training loop
def test_steps_skipped_by_gradscaler_are_not_measured():
    """GradScaler skips optimizer.step() on inf/NaN gradients; AutoDrop's hook is not called then, so a skipped
    step leaves the epoch's parameter average untouched and the schedule equals the one without that step."""
    model, opt = model_and_opt()
    sched = AutoDrop(opt, **FAST)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for i in range(4):
            x, y = batch(g)
            loss = ((model(x) - y) ** 2).mean() * (float("inf") if i == 1 else 1.0)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        sched.step()
    assert sched.global_step == 9


def test_gradient_accumulation_and_zero_grad_without_none_change_nothing_for_autodrop():
    """AutoDrop counts optimizer steps, not backward passes: accumulating two micro-batches per step and
    zero_grad(set_to_none=False) give the same decisions as the plain loop over the same batches."""
    model, opt = model_and_opt()
    plain = AutoDrop(opt, **FAST)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        for _ in range(3):
            (x1, y1), (x2, y2) = batch(g), batch(g)
            x, y = torch.cat([x1, x2]), torch.cat([y1, y2])
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        plain.step()
    model2, opt2 = model_and_opt()
    accumulated = AutoDrop(opt2, **FAST)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        for _ in range(3):
            opt2.zero_grad(set_to_none=False)
            for x, y in (batch(g), batch(g)):
                (((model2(x) - y) ** 2).mean() / 2).backward()
            opt2.step()
        accumulated.step()
    assert plain.drops and accumulated.drop_epochs == plain.drop_epochs
    assert [o for _, o in accumulated.omega_history] == pytest.approx([o for _, o in plain.omega_history], abs=1e-3)


def test_load_state_dict_keeps_the_measurements_settings():
    """load_state_dict restores the measurement in place: eps, per_group and the sharding settings stay the ones
    AutoDrop was built with (a rebuild used to drop sharded/process_group; see test_distributed for FSDP)."""
    model, opt = model_and_opt()
    sched = AutoDrop(opt, **FAST)
    epochs(model, opt, sched, 4)
    av = sched.angular_velocity
    av.per_group = True
    sched.load_state_dict(sched.state_dict())
    assert sched.angular_velocity is av and av.per_group

