"""Specification: a checkpoint written in the middle of an epoch and restored in a *new process* continues
bitwise identically to an uninterrupted run (CPU), for AutoDrop and every Active optimizer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("resume_worker.py")
METHODS = ["autodrop", "ActiveSGD", "ActiveAdamW", "ActiveRAdam", "ActiveAdaBelief"]
TOTAL = 60  # 12 epochs of 5 steps


def worker(out: Path, phase: str, *extra: str) -> None:
    subprocess.run([sys.executable, str(WORKER), ",".join(METHODS), str(TOTAL), str(out), phase, *extra],
                   check=True, capture_output=True, timeout=300)


def test_mid_epoch_checkpoint_resumed_in_a_new_process_is_bitwise_identical(tmp_path):
    worker(tmp_path, "full")
    # stop before step 42: in the middle of epoch 9; AutoDrop detected saturation at the end of epoch 8 and
    # drops at the end of epoch 10 (extra_epochs=2), so the checkpoint holds its weight-averaging window
    worker(tmp_path, "stop", "--stop-at", "42")
    worker(tmp_path, "resume")
    for method in METHODS:
        full = torch.load(tmp_path / f"{method}.full.pt", weights_only=False)
        resumed = torch.load(tmp_path / f"{method}.resume.pt", weights_only=False)
        assert all(torch.equal(a, b) for a, b in zip(full["params"], resumed["params"])), method
        assert full["drops"] == resumed["drops"] and full["epoch"] == resumed["epoch"], method
    autodrop = torch.load(tmp_path / "autodrop.full.pt", weights_only=False)
    assert autodrop["drops"] == [10], "the scenario above (drop at the end of epoch 10) must hold"
