"""griffe extension for the API reference: read lrpilot's Sphinx-flavoured docstrings as Markdown.

The docstrings are Google style ("Args:", "Returns:", "Attributes:") with three Sphinx conventions that
Markdown does not have, so mkdocstrings would print them literally or miss them:

* cross-reference roles (``:class:`~lrpilot.saturation.TrendTest```, ``:meth:`update```) become code spans
  (``~`` keeps the last dotted component, as in Sphinx);
* a paragraph ending in ``::`` ends in ``:`` (the indented block after it is already a code block in Markdown);
* ``#:`` comments right above a module constant (``#: File name of ...``) become that constant's docstring.

Loaded by ``mkdocs.yml`` (``plugins: mkdocstrings: handlers: python: options: extensions``) and by
``tests/test_docs.py``, which checks every public name's docstring as the site sees it.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")
LITERAL_INTRO = re.compile(r"(\S)::$", flags=re.M)


def markdown_docstring(text: str) -> str:
    """``text`` with Sphinx cross-reference roles turned into code spans and ``::`` literal intros into ``:``."""

    def code_span(match: re.Match[str]) -> str:
        tilde, target = match.groups()
        return f"`{target.rsplit('.', 1)[-1] if tilde else target.lstrip('.')}`"

    return LITERAL_INTRO.sub(r"\1:", ROLE.sub(code_span, text))


def doc_comment(lines: list[str], lineno: int) -> str | None:
    """The ``#:`` comment lines directly above line ``lineno`` (1-based) of ``lines``, joined; None if none."""
    found: list[str] = []
    i = lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        found.append(lines[i].lstrip()[2:].strip())
        i -= 1
    return " ".join(reversed(found)) or None


class SphinxRolesToMarkdown(griffe.Extension):
    """Rewrite every docstring of the loaded package with :func:`markdown_docstring`; give module constants
    documented with ``#:`` comments their docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None and obj.is_attribute and obj.lineno is not None and obj.parent is not None:
            text = doc_comment(obj.lines_collection[obj.filepath], obj.lineno) if obj.filepath else None
            if text:
                obj.docstring = griffe.Docstring(text, lineno=obj.lineno - 1, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
