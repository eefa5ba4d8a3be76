"""MkDocs hook: publish files that live outside docs/ as pages of the site, read at build time.

* ``CHANGELOG.md`` becomes ``changelog.md``.
* Every ``benchmarks/results/*.md`` becomes ``results/<name>.md``.
* Every ``benchmarks/results/<run>/report.md`` (the ``lrpilot bench`` reports) becomes ``results/<run>/index.md``,
  and the PNGs beside it are published beside it, so the report's own image links work.

Nothing is copied into docs/: the measured files stay where the benchmarks write them, and a re-run benchmark
shows up on the site at the next build. Registered in ``mkdocs.yml`` under ``hooks:``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def generated_sources() -> dict[str, Path]:
    """Site path (``src_uri``) -> the file it is built from."""
    sources = {"changelog.md": ROOT / "CHANGELOG.md"}
    for path in sorted(RESULTS.glob("*.md")):
        sources[f"results/{path.name}"] = path
    for report in sorted(RESULTS.glob("*/report.md")):
        run = report.parent.name
        sources[f"results/{run}/index.md"] = report
        for png in sorted(report.parent.glob("*.png")):
            sources[f"results/{run}/{png.name}"] = png
    return sources


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for src_uri, path in generated_sources().items():
        files.append(File.generated(config, src_uri, abs_src_path=str(path)))
    return files
