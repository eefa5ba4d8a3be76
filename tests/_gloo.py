"""The 2-process gloo launcher the distributed test files share (tests/test_distributed.py,
tests/test_pilot_distributed.py): forked CPU processes, one torch thread each, a fresh process group per call."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_on_ranks(worker: Callable[..., None], tmp_path: Path, *args: Any, world: int = WORLD) -> list[Any]:
    """Run ``worker(rank, out_dir, *args)`` on ``world`` forked processes in a fresh gloo group; return what each
    rank saved as ``out_dir/rank{r}.pt``."""
    port = free_port()

    def entry(rank: int) -> None:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        try:
            worker(rank, tmp_path, *args)
        finally:
            dist.destroy_process_group()

    mp.start_processes(entry, nprocs=world, start_method="fork", join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
