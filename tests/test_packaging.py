"""The package as it would be published: a wheel built from this checkout carries the package's data files and
typing marker, takes its version from ``lrpilot.__version__``, and works when installed into a fresh virtual
environment (``import lrpilot``, the ``lrpilot`` console script) -- the wheel's copy, not this checkout's.

Offline: the wheel is built with the installed hatchling (no build isolation, so nothing is downloaded). The new
venv sees torch and numpy through a ``.pth`` file that names this environment's site-packages directories: not
``--system-site-packages``, which inherits the *base* interpreter's packages, and when the tests themselves run
in a venv (as ``.ci/run`` does) the base interpreter has no torch. Lines of a ``.pth`` file are appended to
``sys.path`` after the venv's own site-packages, so the installed wheel, not this checkout, is what imports. The
wheel itself is installed with ``--no-deps --no-index``.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import lrpilot

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(*cmd: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling", reason="the build backend is needed offline: pip install -e '.[dev]'")
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", out, ROOT, cwd=out)
    wheels = list(out.glob("lrpilot-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contents_and_metadata(wheel):
    """The wheel holds the shipped text of the shakespeare-char task and py.typed, no tests or benchmark results,
    and its version and metadata come from the one place they are defined."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"lrpilot/py.typed", "lrpilot/bench/data/tinyshakespeare.txt", "lrpilot/__init__.py"} <= names
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/")) or "__pycache__" in n for n in names)
    assert wheel.name == f"lrpilot-{lrpilot.__version__}-py3-none-any.whl"
    metadata = zipfile.ZipFile(wheel).read(f"lrpilot-{lrpilot.__version__}.dist-info/METADATA").decode()
    assert f"Version: {lrpilot.__version__}\n" in metadata
    for field in ("Project-URL: Documentation, ", "Project-URL: Changelog, ", "Classifier: Typing :: Typed",
                  "Provides-Extra: docs", "Requires-Dist: torch>=2.2"):
        assert field in metadata, field
    size = (ROOT / "src/lrpilot/bench/data/tinyshakespeare.txt").stat().st_size
    assert zipfile.ZipFile(wheel).getinfo("lrpilot/bench/data/tinyshakespeare.txt").file_size == size


def test_wheel_installs_into_a_fresh_venv_and_runs_from_there(wheel, tmp_path):
    """In a new venv the installed wheel is what ``import lrpilot`` finds (not the editable checkout), and the
    ``lrpilot`` console script the wheel declares runs and lists its commands."""
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    venv_site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).stdout
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    (Path(venv_site.strip()) / "_lrpilot_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    probe = ("import importlib.resources, lrpilot; print(lrpilot.__file__); print(lrpilot.__version__); "
             "print(importlib.resources.files('lrpilot.bench').joinpath('data/tinyshakespeare.txt').stat().st_size)")
    path, version, size = run(python, "-c", probe, cwd=tmp_path).stdout.split()
    assert Path(path).resolve().is_relative_to(venv.resolve()), f"imported {path}, not the venv's copy"
    assert version == lrpilot.__version__
    assert int(size) == (ROOT / "src/lrpilot/bench/data/tinyshakespeare.txt").stat().st_size
    helped = run(bindir / "lrpilot", "--help", cwd=tmp_path)
    assert "bench" in helped.stdout and "late-decay" in helped.stdout
