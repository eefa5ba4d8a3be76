"""Specification of the logging hook: effective LR, omega and drop events, to CSV, TensorBoard and callables."""

from __future__ import annotations

import csv

import pytest
import torch

from lrpilot import ActiveSGD, AutoDrop
from lrpilot.integrations.logging import CallableSink, CSVSink, MetricsLogger, TensorBoardSink, lrpilot_metrics


def train_epoch(model, opt, seed, steps=3):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss = model(torch.randn(8, 4, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_active_optimizers_report_the_effective_lr_not_the_base_lr():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = ActiveSGD(model.parameters(), lr=0.1, momentum=0.9, steps_per_epoch=3)
    for e in range(4):
        train_epoch(model, opt, e)
    m = lrpilot_metrics(opt)
    eff = opt.effective_lr()[0]
    assert m["lr/group0"] == pytest.approx(eff.mean) and m["lr_min/group0"] == pytest.approx(eff.min)
    assert m["lr_max/group0"] > 0.1  # multipliers grew: the base lr alone would hide it


class FakeWriter:
    def __init__(self):
        self.scalars, self.texts = [], []

    def add_scalar(self, name, value, step):
        self.scalars.append((name, value, step))

    def add_text(self, tag, text, step):
        self.texts.append((tag, text, step))


def test_metrics_logger_writes_every_sink_and_reports_each_drop_once(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    sched = AutoDrop(opt, threshold=10.0, rise_threshold=-10.0, window=6)
    writer, seen = FakeWriter(), []
    logger = MetricsLogger([TensorBoardSink(writer), CSVSink(tmp_path / "m.csv"), CallableSink(
        lambda m, s: seen.append((s, m)))])
    for epoch in range(1, 13):
        train_epoch(model, opt, epoch)
        sched.step()
        logger.log(epoch, opt, sched)
    assert sched.drops, "the scenario needs a drop"
    assert len(writer.texts) == len(sched.drops)  # one event per drop, not one per call
    assert "dropped the LR at epoch" in writer.texts[0][1]
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert rows[0]["autodrop/omega"] == ""  # no angle before three snapshots, column added later
    assert float(rows[-1]["lr/group0"]) == pytest.approx(sched.get_last_lr()[0])
    omegas = [float(r["autodrop/omega"]) for r in rows if r["autodrop/omega"]]
    assert omegas == pytest.approx([w for _, w in sched.omega_history])
    assert seen[-1][1]["autodrop/drops"] == len(sched.drops)
    assert any(name == "autodrop/omega" for name, _, _ in writer.scalars)


def test_sinks_reject_what_they_cannot_use():
    with pytest.raises(TypeError, match="SummaryWriter"):
        TensorBoardSink(object())
    with pytest.raises(TypeError, match="callable"):
        CallableSink(3)
    with pytest.raises(ValueError, match="at least one sink"):
        MetricsLogger([])


def test_tensorboard_event_files_hold_the_effective_lr_omega_and_drops(tmp_path):
    """Through torch's real SummaryWriter: the event files, read back with TensorBoard's own reader, hold one
    effective-LR and omega scalar per measured epoch (equal to the scheduler's) and one text per drop."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    sched = AutoDrop(opt, threshold=10.0, rise_threshold=-10.0, window=6)
    writer = SummaryWriter(log_dir=str(tmp_path))
    logger = MetricsLogger([TensorBoardSink(writer)])
    for epoch in range(1, 13):
        train_epoch(model, opt, epoch)
        sched.step()
        logger.log(epoch, opt, sched)
    writer.close()
    assert sched.drops, "the scenario needs a drop"
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    lrs = events.Scalars("lr/group0")
    assert [e.step for e in lrs] == list(range(1, 13))
    assert lrs[-1].value == pytest.approx(sched.get_last_lr()[0])
    omegas = events.Scalars("autodrop/omega")
    assert [(e.step, e.value) for e in omegas] == [(s, pytest.approx(w)) for s, w in sched.omega_history]
    texts = [t for t in events.Tags()["tensors"] if "lrpilot/events" in t]
    assert texts and len(events.Tensors(texts[0])) == len(sched.drops)
