"""Write the full suite's results tables into the docs from ``benchmarks/results/bench_full/summary.json``.

    python benchmarks/suite_tables.py            # rewrite every marked table
    python benchmarks/suite_tables.py --check    # exit 1, naming each file whose table differs

Run it after ``lrpilot bench --suite full`` has rewritten the committed ``summary.json``. Every table lives in a
block of a markdown page (``README.md`` and ``docs/**/*.md``)::

    <!-- suite-table: NAME -->
    | method | ... |
    <!-- /suite-table -->

``NAME`` is one of :data:`TABLES`: which methods, in which order, with which labels and column headings. Only the
lines between the two markers are rewritten; the rest of the page is left byte for byte. Each cell is read from
``summary.json``: the final metric is the mean over seeds of the finite finals of the method's default-LR runs
(``per_task``; accuracy in %, one decimal; the GPT's validation loss, three decimals), as the report's *final*
column; the gaps (points of accuracy, or % above the best loss, behind the best method of each task) and their
mean and worst are the report's *Summary over tasks* (``summary``), one decimal. A method run on fewer tasks
shows ``-`` for the others and says over how many tasks its mean is. lrpilot's methods are in bold and "(budget)"
marks a method told the training length (``summary``'s ``lrpilot`` and ``needs_budget``) unless the table gives
its own label.

Standard library only, and no import of lrpilot (which imports torch): the test that keeps the pages in step
with ``summary.json`` (``tests/test_suite_tables.py``) runs in well under a second.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = Path("benchmarks/results/bench_full/summary.json")

#: How each task's final metric is shown: the scale applied to summary.json's value and the digits.
DISPLAY = {"accuracy": (100.0, 1), "val_loss": (1.0, 3)}


@dataclass(frozen=True)
class Table:
    """One table of the suite's results.

    Attributes:
        methods: the rows, in order, each method name mapped to its label (``None``: the default label, the name
            in bold for lrpilot's methods and " (budget)" when told the training length); empty: every method of
            ``summary.json``, in its ``order`` (the report's ranking).
        headings: per task, its column heading (a task not given: its name).
        bold_best: bold each column's best cell: the task's best method of the whole suite (gap 0), and the
            lowest mean and worst gap among the methods run on every task (a mean over fewer tasks is not
            comparable), whether or not those rows are shown.
    """

    methods: Mapping[str, str | None] = field(default_factory=dict)
    headings: Mapping[str, str] = field(default_factory=dict)
    bold_best: bool = False


#: The tables the pages hold. ``full``, every method, lives in docs/bench.md only (one home); README.md shows the
#: ``compact`` one (the Pilot rows and the strongest methods after them) and docs/pilot.md the ``pilot`` one.
TABLES: dict[str, Table] = {
    "full": Table(),
    "compact": Table(methods=dict.fromkeys(["pilot", "pilot-anytime", "prodigy", "active-adamw", "dog",
                                            "warmup-cosine", "multistep", "autodrop-sgd"])),
    "pilot": Table(
        methods={"pilot": "**pilot** (`total_steps` given)", "pilot-anytime": "**pilot-anytime**",
                 "prodigy": "prodigy (no schedule)", "active-adamw": "active-adamw", "dog": "dog",
                 "multistep": "multistep", "autodrop-sgd": "autodrop-sgd",
                 "adamw-wsd": "adamw-wsd (AdamW 1e-3, WSD with a 5% warmup)",
                 "adamw-cosine": "adamw-cosine (best on noisy digits)"},
        headings={"mnist1d-cnn": "MNIST-1D CNN", "mnist1d-bncnn": "BN CNN", "mnist1d-resnet-bn": "BN ResNet",
                  "digits-mlp": "digits MLP", "mnist1d-cnn-noisy": "noisy CNN", "digits-mlp-noisy": "noisy digits",
                  "shakespeare-char": "char GPT"},
        bold_best=True),
}

BLOCK = re.compile(r"(?P<open><!-- suite-table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /suite-table -->)",
                   re.S)


def load_summary(path: Path) -> dict[str, Any]:
    """``summary.json`` as ``lrpilot bench`` writes it."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _gap(value: float) -> str:
    """A gap as the report prints it: one decimal, ``inf`` for a diverged mean."""
    return "inf" if math.isinf(value) else f"{value:.1f}"


def _final(stats: Mapping[str, Any]) -> str:
    """The mean final metric over the finite finals (diverged runs are NaN), as the report's *final* column."""
    scale, digits = DISPLAY[stats["metric"]]
    finals = [v for v in stats["final"] if v is not None and math.isfinite(v)]
    return f"{statistics.fmean(scale * v for v in finals):.{digits}f}" if finals else "n/a"


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def default_label(method: str, summary: Mapping[str, Any]) -> str:
    """The method's name, in bold when it is lrpilot's, with " (budget)" when it is told the training length."""
    s = summary[method]
    return _bold(method, bool(s.get("lrpilot"))) + (" (budget)" if s.get("needs_budget") else "")


def render(table: Table, data: Mapping[str, Any]) -> str:
    """The markdown table (header, rule, one line per method, each ending in a newline)."""
    per_task, summary = data["per_task"], data["summary"]
    tasks = list(per_task)
    methods = table.methods or dict.fromkeys(data["order"])
    missing = [m for m in methods if m not in summary]
    if missing:
        raise KeyError(f"methods not in summary.json: {missing}")
    everywhere = [m for m in summary if summary[m]["coverage"] == summary[m]["tasks"]]
    lowest_mean = min((summary[m]["mean_gap"] for m in everywhere), default=None)
    lowest_worst = min((summary[m]["worst_gap"] for m in everywhere), default=None)
    lines = ["| method | " + " | ".join(table.headings.get(t, t) for t in tasks) + " | mean gap | worst gap |",
             "|---|" + "---|" * (len(tasks) + 2)]
    for method, label in methods.items():
        s = summary[method]
        cells = [label if label is not None else default_label(method, summary)]
        for task in tasks:
            if method not in per_task[task]:
                cells.append("-")
                continue
            cells.append(_bold(_final(per_task[task][method]), table.bold_best and s["gaps"][task] == 0.0))
        full = s["coverage"] == s["tasks"]
        mean = _gap(s["mean_gap"]) + ("" if full else f" ({s['coverage']} task{'s' * (s['coverage'] != 1)})")
        cells.append(_bold(mean, table.bold_best and full and s["mean_gap"] == lowest_mean))
        cells.append(_bold(_gap(s["worst_gap"]), table.bold_best and full and s["worst_gap"] == lowest_worst))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pages(root: Path) -> list[Path]:
    """The markdown pages that may hold a table: README.md and docs/**/*.md (docs/_ext is the build's code)."""
    found = [root / "README.md"] if (root / "README.md").exists() else []
    return found + sorted(p for p in (root / "docs").rglob("*.md") if "_ext" not in p.relative_to(root).parts)


def rewrite(text: str, data: Mapping[str, Any]) -> str:
    """``text`` with the body of every suite-table block replaced by its table; nothing outside them changes."""

    def table(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in TABLES:
            raise KeyError(f"unknown suite-table {name!r}; known: {', '.join(TABLES)}")
        return match["open"] + render(TABLES[name], data) + match["close"]

    if text.count("<!-- suite-table:") != len(BLOCK.findall(text)):
        raise ValueError("a <!-- suite-table: NAME --> marker without its <!-- /suite-table --> (or nested)")
    return BLOCK.sub(table, text)


def update(root: Path, summary_path: Path, *, check: bool) -> list[Path]:
    """Rewrite (or, with ``check``, only compare) every page's blocks; the pages whose blocks differed."""
    data = load_summary(summary_path)
    changed = []
    for page in pages(root):
        text = page.read_text()
        new = rewrite(text, data)
        if new != text:
            changed.append(page)
            if not check:
                page.write_text(new)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 naming each page whose tables differ from summary.json")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository root (default: this checkout)")
    parser.add_argument("--summary", type=Path, default=None,
                        help=f"the suite's summary.json (default: ROOT/{SUMMARY.as_posix()})")
    args = parser.parse_args(argv)
    summary_path = args.summary if args.summary is not None else args.root / SUMMARY
    changed = update(args.root, summary_path, check=args.check)
    for page in changed:
        name = page.relative_to(args.root) if page.is_relative_to(args.root) else page
        if args.check:
            print(f"{name}: its suite tables differ from {summary_path}; run python benchmarks/suite_tables.py",
                  file=sys.stderr)
        else:
            print(f"rewrote {name}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
