"""Fixtures shared by several test files (none is autouse here: a file opts in)."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest on one torch thread (the machine is shared: 15x faster than two threads on a
    loaded 2-core machine, measured); the thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
