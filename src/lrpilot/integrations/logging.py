"""One small logging hook for every lrpilot method: the LR actually applied, the angular velocity, drop events.

:func:`lrpilot_metrics` reads what a logger should show from an optimizer and (optionally) a scheduler:

* ``lr/group{i}``: each param group's LR; for ActiveLR optimizers the *effective* LR, ``lr x`` the mean
  multiplier, plus ``lr_min/group{i}`` and ``lr_max/group{i}`` (``effective_lr()``), since the base LR alone
  says nothing about the rate applied;
* ``autodrop/omega`` (the last angular velocity, when measured this epoch), ``autodrop/drops`` (count so far),
  ``autodrop/threshold``.

:class:`MetricsLogger` sends those numbers to any number of sinks: :class:`TensorBoardSink` (a
``torch.utils.tensorboard.SummaryWriter``), :class:`CSVSink` (a file, one row per call, columns grown as new
names appear), :class:`CallableSink` (any ``f(metrics, step)``, e.g. Lightning's ``self.log_dict``). Drop
events are also written as text to the TensorBoard sink. The Lightning and Hugging Face callbacks use it, so
the methods themselves contain no logging code.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from torch.optim import Optimizer

from ..telemetry import lrpilot_metrics

__all__ = ["CSVSink", "CallableSink", "MetricsLogger", "Sink", "TensorBoardSink", "event_rows", "lrpilot_metrics"]


class Sink(Protocol):
    """Where metrics go."""

    def write(self, metrics: Mapping[str, float], step: int) -> None: ...

    def event(self, text: str, step: int) -> None: ...


class CallableSink:
    """Forward metrics to ``fn(metrics, step)`` (e.g. ``lambda m, s: pl_module.log_dict(m)``); events are ignored."""

    def __init__(self, fn: Callable[[dict[str, float], int], Any]) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        self.fn(dict(metrics), step)

    def event(self, text: str, step: int) -> None:
        pass


class TensorBoardSink:
    """Scalars to a ``SummaryWriter`` (``add_scalar``), drop events as text (``add_text('lrpilot/events')``)."""

    def __init__(self, writer: Any) -> None:
        if not (hasattr(writer, "add_scalar") and hasattr(writer, "add_text")):
            raise TypeError(f"writer must be a SummaryWriter (add_scalar, add_text), got {type(writer).__name__}")
        self.writer = writer

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def event(self, text: str, step: int) -> None:
        self.writer.add_text("lrpilot/events", text, step)


class CSVSink:
    """One CSV row per call: ``step`` then the metrics. New metric names (e.g. omega once it is measured) add
    columns: the file is rewritten with the wider header, earlier rows get empty cells."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.columns: list[str] = ["step"]
        self.rows: list[dict[str, Any]] = []

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        row = {"step": step, **metrics}
        new = [name for name in metrics if name not in self.columns]
        self.rows.append(row)
        if new or not self.path.exists():
            self.columns.extend(new)
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, self.columns).writerow(row)

    def _rewrite(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def event(self, text: str, step: int) -> None:
        pass


def event_rows(events: Iterable[Any], prefix: str = "") -> list[dict[str, float]]:
    """Pilot events (:class:`~lrpilot.PilotEvent`) as rows of metrics, ``{prefix}pilot/event_<kind>: value``; a kind
    seen twice starts a new row (the Hugging Face and Lightning ``PilotCallback`` log each row once)."""
    rows: list[dict[str, float]] = [{}]
    for event in events:
        key = f"{prefix}pilot/event_{event.kind}"
        if key in rows[-1]:
            rows.append({})
        rows[-1][key] = float(event.value)
    return [row for row in rows if row]


class MetricsLogger:
    """Read :func:`lrpilot_metrics` and send them to every sink; report each new AutoDrop drop, and each new
    decision of a :class:`~lrpilot.Pilot` optimizer (its ``events``), once as an event.

    Call :meth:`log` wherever the training loop logs (once per epoch for AutoDrop's omega, or per step).
    """

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = list(sinks)
        if not self.sinks:
            raise ValueError("MetricsLogger needs at least one sink")
        for sink in self.sinks:
            if not (hasattr(sink, "write") and hasattr(sink, "event")):
                raise TypeError(f"a sink needs write() and event(), got {type(sink).__name__}")
        self._drops_seen = 0
        self._events_seen: dict[int, int] = {}

    def log(self, step: int, optimizer: Optimizer, scheduler: Any = None) -> dict[str, float]:
        """Log the metrics of ``optimizer``/``scheduler`` at ``step``; returns them."""
        metrics = lrpilot_metrics(optimizer, scheduler)
        for sink in self.sinks:
            sink.write(metrics, step)
        drops = getattr(scheduler, "drops", None) or []
        for drop in drops[self._drops_seen:]:
            omega = "n/a" if drop.omega is None else f"{drop.omega:.2f} deg"
            text = (f"AutoDrop dropped the LR at epoch {drop.epoch} (omega {omega}): "
                    f"{[round(v, 8) for v in drop.old_lrs]} -> {[round(v, 8) for v in drop.new_lrs]}")
            for sink in self.sinks:
                sink.event(text, step)
        self._drops_seen = len(drops)
        events = getattr(optimizer, "events", None)  # Pilot's decisions
        if isinstance(events, list):
            seen = self._events_seen.get(id(optimizer), 0)
            for ev in events[seen:]:
                for sink in self.sinks:
                    sink.event(f"Pilot {ev.kind} at step {ev.step} ({ev.value:.4g}): {ev.why}", step)
            self._events_seen[id(optimizer)] = len(events)
        return metrics
