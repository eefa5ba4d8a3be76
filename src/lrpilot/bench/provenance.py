"""Where a benchmark's numbers came from: package versions and builds, the CPU, threads, lrpilot's version and git
commit, and the command line. Written into ``report.md`` and ``summary.json`` so that a result that does not
reproduce can be traced to what changed (the 2026-12-01 re-measurement found the committed tables made under an
older package set).
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import lrpilot

__all__ = ["provenance", "provenance_lines"]

_PACKAGES = ("torch", "numpy", "mnist1d", "scikit-learn", "schedulefree", "prodigyopt", "dadaptation", "dog-optimizer",
             "prodigy-plus-schedule-free", "mechanic-pytorch")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    """The commit of the checkout lrpilot is imported from (an editable install), with ``+dirty`` for local
    changes; None for an installed wheel or where git is missing."""
    source = Path(lrpilot.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance(argv: Sequence[str] | None = None, *, threads: int | None = None) -> dict[str, Any]:
    """What produced a benchmark run: versions, torch's build (CUDA version or CPU), the CPU, torch's thread count
    per process (``threads``, default: this process's), Python, lrpilot's version and commit, the command line."""
    return {
        "command": "lrpilot " + " ".join(argv) if argv is not None else " ".join(sys.argv),
        "lrpilot": lrpilot.__version__,
        "git_commit": _git_commit(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "torch_build": f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": torch.multiprocessing.cpu_count(),
        "torch_threads": torch.get_num_threads() if threads is None else threads,
    }


def provenance_lines(record: dict[str, Any]) -> list[str]:
    """The markdown section of :func:`provenance` for ``report.md``."""
    packages = ", ".join(f"{name} {version}" for name, version in record["packages"].items() if version)
    return [
        "\n### Provenance\n",
        f"- command: `{record['command']}`",
        f"- lrpilot {record['lrpilot']}, commit {record['git_commit'] or 'unknown (not a git checkout)'}",
        f"- packages: {packages}; torch build: {record['torch_build']}",
        f"- Python {record['python']} on {record['platform']}",
        f"- CPU: {record['cpu']} ({record['cpu_count']} logical cores), torch threads per run: "
        f"{record['torch_threads']}",
    ]
