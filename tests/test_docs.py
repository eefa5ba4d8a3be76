"""The documentation site (``mkdocs.yml``, ``docs/``): it builds with ``mkdocs build --strict`` and no warning, every
```python block of its pages runs, and the API reference documents every public name, each with a docstring.

The code blocks run the way ``tests/test_readme.py`` runs the README's: found by a regular expression, one test
each, inside a temporary directory; here in this process (a fresh namespace per block, one torch thread) rather
than a new one, which keeps the whole file well under a minute on 2 cores. A block that cannot run here (a GPU,
a multi-process launch) is marked on the line before it with ``<!-- docs-test: skip (reason) -->``: it is
reported as a skipped test with its reason, and ``test_skipped_blocks_are_rare_and_say_why`` keeps them rare.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_ext" not in p.parts)
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*$")
SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
NEEDS = {"lightning": "lightning", "transformers": "transformers", "sklearn": "scikit-learn"}
MAX_SKIPPED = 3

# Where the public names are: lrpilot's top level and the public modules the API reference must cover.
PUBLIC_MODULES = ["lrpilot", "lrpilot.exponential", "lrpilot.late_decay", "lrpilot.integrations.logging",
                  "lrpilot.integrations.lightning", "lrpilot.integrations.huggingface"]


def python_blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """(line number, code, skip reason or None) of every ```python (or ```py) block of ``page``."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, start = fence["indent"], i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{page.name}:{i + 1}: code fence never closed"
        if fence["lang"] in ("python", "py"):
            code = "\n".join(line.removeprefix(indent) for line in lines[start + 1:end]) + "\n"
            before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            skip = SKIP.match(before)
            blocks.append((start + 1, code, skip["reason"] if skip else None))
        i = end + 1
    return blocks


BLOCKS = [(page, line, code, reason) for page in PAGES for line, code, reason in python_blocks(page)]


def test_the_pages_have_runnable_blocks():
    """The collection works: the getting-started loop and the method pages' examples are found."""
    pages = {page.name for page, *_ in BLOCKS}
    assert {"getting-started.md", "autodrop.md", "activelr.md", "exponential.md", "late_decay.md",
            "integrations.md", "checkpointing.md", "faq.md"} <= pages, pages
    assert len(BLOCKS) >= 10


def test_skipped_blocks_are_rare_and_say_why():
    """At most MAX_SKIPPED blocks are marked not runnable, each with a reason; the markers are listed."""
    skipped = [f"{page.relative_to(ROOT)}:{line} ({reason})" for page, line, _, reason in BLOCKS if reason]
    print(f"{len(skipped)} of {len(BLOCKS)} docs code blocks are marked docs-test: skip: {skipped}")
    assert len(skipped) <= MAX_SKIPPED, skipped
    assert all(reason.strip() for _, _, _, reason in BLOCKS if reason is not None)


def test_every_skip_marker_sits_before_a_python_block():
    """A marker that does not precede a python block (a typo, a moved block) would silently run nothing."""
    for page in PAGES:
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if "docs-test" in line:
                assert SKIP.match(line), f"{page.name}:{i + 1}: malformed marker {line!r}"
                after = next((lines[j] for j in range(i + 1, len(lines)) if lines[j].strip()), "")
                assert after.strip() in ("```python", "```py"), f"{page.name}:{i + 1}: marker not before a block"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A temp working directory, one torch thread; the environment variables and torch's global settings are
    restored afterwards (the blocks run in this process: torchrun-style variables, frameworks' settings)."""
    monkeypatch.chdir(tmp_path)
    environ = dict(os.environ)
    threads, dtype, grad = torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled()
    rng = torch.random.get_rng_state()
    torch.set_num_threads(1)
    yield tmp_path
    os.environ.clear()
    os.environ.update(environ)
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)
    torch.random.set_rng_state(rng)


@pytest.mark.parametrize("page,line,code,reason", BLOCKS,
                         ids=[f"{page.relative_to(DOCS)}:{line}" for page, line, _, _ in BLOCKS])
def test_docs_block_runs(page, line, code, reason, isolated):
    """The block runs as written, in a fresh namespace (as if it were the whole script) and a temp directory."""
    if reason:
        pytest.skip(f"marked docs-test: skip ({reason})")
    for module, package in NEEDS.items():
        if re.search(rf"^\s*(from|import) {module}\b", code, flags=re.M):
            pytest.importorskip(module, reason=f"needs {package}")
    exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), {"__name__": "__main__"})


# ------------------------------------------------------------------------------------------------ the site
def require(module: str):
    """Import a tool of the ``docs`` extra: skip without it, except in CI (``CI`` set), where it must be there."""
    if os.environ.get("CI"):
        try:
            return importlib.import_module(module)
        except ImportError:
            pytest.fail(f"{module} is missing in CI: the dev extra must install the docs extra")
    return pytest.importorskip(module, reason="the docs extra is missing: pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """``mkdocs build --strict`` into a temp directory: (return code, output, site directory)."""
    require("mkdocs")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                             str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    return result.returncode, result.stdout + result.stderr, out


def test_site_builds_strict_without_warnings(site):
    """``mkdocs build --strict`` succeeds and prints no warning or error (broken links, anchors, pages missing
    from the nav, docstring problems griffe reports all count)."""
    code, output, out = site
    problems = [line for line in output.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert code == 0 and not problems, output[-5000:]
    assert (out / "index.html").exists() and (out / "api" / "autodrop" / "index.html").exists()


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(value for name, value in attrs if name == "id" and value)


@pytest.fixture(scope="module")
def package():
    """lrpilot as the API reference reads it: griffe, statically (no framework imported), with the site's
    griffe extension (so ``#:`` comments count as the constants' docstrings)."""
    griffe = require("griffe")
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from griffe_sphinx_roles import SphinxRolesToMarkdown
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return griffe.load("lrpilot", search_paths=[str(ROOT / "src")],
                       extensions=griffe.load_extensions(SphinxRolesToMarkdown))


def public_names(package) -> dict[str, object]:
    """Every public name (``__all__`` of PUBLIC_MODULES) -> its griffe object (aliases resolved)."""
    names = {}
    for module_path in PUBLIC_MODULES:
        module = package if module_path == "lrpilot" else package[module_path.removeprefix("lrpilot.")]
        assert module.exports, f"{module_path} has no __all__"
        for name in module.exports:
            names[f"{module_path}.{name}"] = module[name]
    return names


def test_every_public_name_has_a_docstring(package):
    """Each name in ``__all__`` of lrpilot, lrpilot.exponential, lrpilot.late_decay and the integrations has a
    docstring as the API reference reads it (constants: a ``#:`` comment or a string after the assignment)."""
    missing = [path for path, obj in public_names(package).items()
               if obj.docstring is None or not obj.docstring.value.strip()]
    assert not missing, f"public names without a docstring: {missing}"


def test_every_public_name_is_in_the_api_reference(site, package):
    """The built API pages have an entry (an HTML anchor with the object's path) for every public name; a name
    re-exported elsewhere counts when the same object is documented under any of its public paths."""
    code, output, out = site
    assert code == 0, output[-3000:]
    parser = _Ids()
    for page in (out / "api").rglob("*.html"):
        parser.feed(page.read_text())
    documented = set()  # canonical paths of the objects the anchors name
    for anchor in parser.ids:
        if anchor == "lrpilot" or anchor.startswith("lrpilot."):
            try:
                obj = package if anchor == "lrpilot" else package[anchor.removeprefix("lrpilot.")]
            except Exception:  # anchors of headings and parameters ("lrpilot.AutoDrop(mode)"), not objects
                continue
            documented.add(obj.canonical_path)
    missing = [path for path, obj in public_names(package).items() if obj.canonical_path not in documented]
    assert not missing, f"public names missing from docs/api/*.md: {missing}"
