"""README figures are quoted from bench/RESULTS.md with its run id, never typed: the check behind that rule.

A README paragraph that quotes the benchmark names ``bench/RESULTS.md`` and the run (``run 2026-11-23 16:24
UTC``, the start in RESULTS.md's ``- date:`` line) and puts each figure in backticks; every backticked figure (one
with a digit) must then stand in a cell of RESULTS.md's tables. ``tests/unit/test_readme_figures.py`` runs it on
the real files, so a new RESULTS.md fails the tests until the README quotes its figures.
"""

from __future__ import annotations

import re

_RUN_IN_RESULTS = re.compile(r"^- date: (\d{4}-\d\d-\d\d \d\d:\d\d) ", re.MULTILINE)
_RUN_IN_README = re.compile(r"\brun (\d{4}-\d\d-\d\d \d\d:\d\d) UTC")
_QUOTED = re.compile(r"`([^`]*)`")


def run_id(results: str) -> str | None:
    m = _RUN_IN_RESULTS.search(results)
    return m.group(1) if m else None


def cells(results: str) -> list[str]:
    """Every cell of RESULTS.md's Markdown tables."""
    return [c.strip() for line in results.splitlines() if line.startswith("|") for c in line.strip("|").split("|")]


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, a list item starting a new one."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        parts = re.split(r"\n(?=- )", block)
        out.extend(p for p in parts if p.strip())
    return out


def quoting_paragraphs(readme: str) -> list[tuple[str, str]]:
    """(run id, paragraph) of each README paragraph that quotes RESULTS.md by run id."""
    found = []
    for block in paragraphs(readme):
        para = " ".join(block.split())  # a quote may wrap across lines
        m = _RUN_IN_README.search(para)
        if m and "RESULTS.md" in para:
            found.append((m.group(1), para))
    return found


def problems(readme: str, results: str) -> list[str]:
    """What is wrong with the README's quotes of RESULTS.md (empty: every quoted figure stands there)."""
    rid = run_id(results)
    if rid is None:
        return ["RESULTS.md has no '- date:' line (its run id)"]
    table = cells(results)
    out = []
    quotes = quoting_paragraphs(readme)
    if not quotes:
        out.append("the README quotes no figure of bench/RESULTS.md by run id")
    for quoted_run, para in quotes:
        if quoted_run != rid:
            out.append(f"the README quotes run {quoted_run} UTC, RESULTS.md is run {rid} UTC")
        figures = [q for q in _QUOTED.findall(para) if any(ch.isdigit() for ch in q)]
        if not figures:
            out.append(f"a paragraph naming run {quoted_run} quotes no figure: {para[:80]!r}")
        for fig in figures:
            # The figure as a whole cell or a whole part of one (not "0.0" inside "10.05").
            pattern = re.compile(r"(?<![\w.,])" + re.escape(fig) + r"(?![\w.,]*\d)")
            if not any(pattern.search(cell) for cell in table):
                out.append(f"`{fig}` is not a figure of RESULTS.md run {rid}")
    return out
