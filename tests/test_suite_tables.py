"""benchmarks/suite_tables.py writes the full suite's results tables into the pages from summary.json: the
committed tables are what the committed summary.json gives (a figure cannot drift from the run), each table has
one home, a rewrite touches only the lines between the markers, and ``--check`` fails naming each stale page."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from _scripts import loaded_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "suite_tables.py"


@pytest.fixture(scope="module")
def suite_tables() -> Iterator[ModuleType]:
    with loaded_script(SCRIPT) as module:
        yield module


@pytest.fixture(scope="module")
def committed(suite_tables: ModuleType) -> dict[str, Any]:
    data: dict[str, Any] = suite_tables.load_summary(ROOT / suite_tables.SUMMARY)
    return data


def _blocks(suite_tables: ModuleType, root: Path) -> dict[str, list[str]]:
    """Table name -> the pages (relative to ``root``) that hold a block of it."""
    found: dict[str, list[str]] = {}
    for page in suite_tables.pages(root):
        for match in suite_tables.BLOCK.finditer(page.read_text()):
            found.setdefault(match["name"], []).append(page.relative_to(root).as_posix())
    return found


def _stats(final: list[float], metric: str = "accuracy") -> dict[str, Any]:
    return {"metric": metric, "final": final}


def _summary(gaps: dict[str, float], tasks: int, *, lrpilot: bool = False, needs_budget: bool = False
             ) -> dict[str, Any]:
    return {"gaps": gaps, "mean_gap": sum(gaps.values()) / len(gaps), "worst_gap": max(gaps.values()),
            "coverage": len(gaps), "tasks": tasks, "lrpilot": lrpilot, "needs_budget": needs_budget}


#: A two-task suite: an accuracy task and a loss task; ``ours`` is lrpilot's and told the budget, ``partial``
#: ran only on the first task.
TINY: dict[str, Any] = {
    "order": ["ours", "theirs", "partial"],
    "per_task": {
        "cls": {"ours": _stats([0.9, 0.92]), "theirs": _stats([0.95, 0.95]), "partial": _stats([0.5, 0.5])},
        "lm": {"ours": _stats([2.0, 2.0], "val_loss"), "theirs": _stats([2.2, 2.2], "val_loss")},
    },
    "summary": {
        "ours": _summary({"cls": 4.0, "lm": 0.0}, 2, lrpilot=True, needs_budget=True),
        "theirs": _summary({"cls": 0.0, "lm": 10.0}, 2),
        "partial": _summary({"cls": 45.0}, 2),
    },
}


# ------------------------------------------------------------------------------------- the committed pages
def test_the_committed_tables_are_what_the_committed_summary_json_gives(suite_tables: ModuleType) -> None:
    stale = suite_tables.update(ROOT, ROOT / suite_tables.SUMMARY, check=True)
    assert not stale, f"run python benchmarks/suite_tables.py: {[p.relative_to(ROOT).as_posix() for p in stale]}"


def test_each_table_has_one_home_and_every_block_names_a_known_table(suite_tables: ModuleType) -> None:
    blocks = _blocks(suite_tables, ROOT)
    assert blocks == {"full": ["docs/bench.md"], "compact": ["README.md"], "pilot": ["docs/pilot.md"]}
    assert set(blocks) == set(suite_tables.TABLES)


def test_the_full_table_has_every_method_of_the_suite_in_the_reports_order(suite_tables: ModuleType,
                                                                          committed: dict[str, Any]) -> None:
    rows = suite_tables.render(suite_tables.TABLES["full"], committed).splitlines()[2:]
    names = [row.split(" | ")[0].removeprefix("| ").split(" ")[0].strip("*") for row in rows]
    assert names == committed["order"]
    assert len(rows) == len(committed["summary"])


def test_the_shorter_tables_show_methods_of_the_suite_and_every_task(suite_tables: ModuleType,
                                                                    committed: dict[str, Any]) -> None:
    for name in ("compact", "pilot"):
        table = suite_tables.TABLES[name]
        assert set(table.methods) <= set(committed["summary"]), name
        assert list(table.methods)[:2] == ["pilot", "pilot-anytime"], name
        header = suite_tables.render(table, committed).splitlines()[0]
        assert header.count(" | ") == len(committed["per_task"]) + 2, name


# --------------------------------------------------------------------------------------------- the cells
def test_cells_are_the_mean_final_and_the_summarys_gaps_in_the_reports_format(suite_tables: ModuleType) -> None:
    table = suite_tables.render(suite_tables.TABLES["full"], TINY)
    assert table.splitlines() == [
        "| method | cls | lm | mean gap | worst gap |",
        "|---|---|---|---|---|",
        "| **ours** (budget) | 91.0 | 2.000 | 2.0 | 4.0 |",
        "| theirs | 95.0 | 2.200 | 5.0 | 10.0 |",
        "| partial | 50.0 | - | 45.0 (1 task) | 45.0 |",
    ]


def test_a_diverged_seed_is_left_out_of_the_mean_final(suite_tables: ModuleType) -> None:
    data = json.loads(json.dumps(TINY))
    data["per_task"]["cls"]["theirs"]["final"] = [0.95, float("nan")]
    data["per_task"]["cls"]["partial"]["final"] = [float("nan"), float("nan")]
    rows = suite_tables.render(suite_tables.TABLES["full"], data).splitlines()
    assert rows[3].startswith("| theirs | 95.0 |") and rows[4].startswith("| partial | n/a |")


def test_bold_marks_the_suites_best_of_each_column_even_when_its_row_is_not_shown(
        suite_tables: ModuleType) -> None:
    table = suite_tables.Table(methods={"ours": "ours", "partial": "partial"}, headings={"lm": "GPT"},
                               bold_best=True)
    # theirs is best on cls but not shown: no cell of cls is bold; partial's 45.0 over one task is not a
    # comparable mean, so the lowest mean and worst gap over every task (ours) are bold.
    assert suite_tables.render(table, TINY).splitlines() == [
        "| method | cls | GPT | mean gap | worst gap |",
        "|---|---|---|---|---|",
        "| ours | 91.0 | **2.000** | **2.0** | **4.0** |",
        "| partial | 50.0 | - | 45.0 (1 task) | 45.0 |",
    ]


def test_a_table_naming_a_method_not_in_summary_json_is_an_error(suite_tables: ModuleType) -> None:
    with pytest.raises(KeyError, match="nope"):
        suite_tables.render(suite_tables.Table(methods={"nope": None}), TINY)


# ------------------------------------------------------------------------------------------- the rewrite
PAGE = """# A page

Text before, with a table that is not generated:

| a | b |
|---|---|

<!-- suite-table: full -->
| stale | table |
<!-- /suite-table -->
Text between.
<!-- suite-table: full -->
<!-- /suite-table -->

Text after, no newline at the end"""


def _tree(tmp_path: Path, page: str = PAGE) -> tuple[Path, Path]:
    """A repository root with README.md and docs/page.md holding ``page``, and TINY as its summary.json."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(page)
    (tmp_path / "docs" / "page.md").write_text(page)
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(TINY))
    return tmp_path, summary


def test_the_rewrite_changes_only_the_lines_between_the_markers(suite_tables: ModuleType, tmp_path: Path) -> None:
    root, summary = _tree(tmp_path)
    assert suite_tables.main(["--root", str(root), "--summary", str(summary)]) == 0
    table = suite_tables.render(suite_tables.TABLES["full"], TINY)
    expected = PAGE.replace("| stale | table |\n", table).replace(
        "<!-- suite-table: full -->\n<!-- /suite-table -->\n\n",
        f"<!-- suite-table: full -->\n{table}<!-- /suite-table -->\n\n")
    for page in ("README.md", "docs/page.md"):
        assert (root / page).read_text() == expected, page


def test_the_rewrite_is_a_fixed_point(suite_tables: ModuleType) -> None:
    once = suite_tables.rewrite(PAGE, TINY)
    assert suite_tables.rewrite(once, TINY) == once


def test_a_page_without_markers_is_left_as_it_is(suite_tables: ModuleType, tmp_path: Path) -> None:
    root, summary = _tree(tmp_path, "# No table\n\n| a | b |\n|---|---|\n")
    assert suite_tables.update(root, summary, check=False) == []
    assert (root / "README.md").read_text() == "# No table\n\n| a | b |\n|---|---|\n"


@pytest.mark.parametrize("page", ["<!-- suite-table: nope -->\n<!-- /suite-table -->\n",
                                  "<!-- suite-table: full -->\n| never closed |\n"],
                         ids=["unknown table", "unclosed marker"])
def test_an_unknown_table_or_an_unclosed_marker_is_an_error(suite_tables: ModuleType, page: str) -> None:
    with pytest.raises((KeyError, ValueError)):
        suite_tables.rewrite(page, TINY)


# -------------------------------------------------------------------------------------------- --check
def _check(root: Path, summary: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--check", "--root", str(root), "--summary", str(summary)],
                          capture_output=True, text=True, timeout=60)


def test_check_fails_on_a_changed_block_names_the_page_and_changes_nothing(suite_tables: ModuleType,
                                                                          tmp_path: Path) -> None:
    root, summary = _tree(tmp_path)
    suite_tables.update(root, summary, check=False)
    page = root / "docs" / "page.md"
    changed = page.read_text().replace("| 91.0 |", "| 91.1 |")
    page.write_text(changed)
    result = _check(root, summary)
    assert result.returncode == 1
    assert "docs/page.md" in result.stderr and "README.md" not in result.stderr
    assert page.read_text() == changed


def test_check_fails_when_summary_json_changes_under_the_pages(suite_tables: ModuleType, tmp_path: Path) -> None:
    root, summary = _tree(tmp_path)
    suite_tables.update(root, summary, check=False)
    rerun = json.loads(summary.read_text())
    rerun["summary"]["ours"]["mean_gap"] = 1.0
    summary.write_text(json.dumps(rerun))
    result = _check(root, summary)
    assert result.returncode == 1
    assert "README.md" in result.stderr and "docs/page.md" in result.stderr


def test_check_passes_when_the_pages_are_in_step(suite_tables: ModuleType, tmp_path: Path) -> None:
    root, summary = _tree(tmp_path)
    suite_tables.update(root, summary, check=False)
    result = _check(root, summary)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
