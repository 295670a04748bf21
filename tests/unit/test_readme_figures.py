"""The README quotes benchmark figures from bench/RESULTS.md by run id, never types them (issue 18)."""

from __future__ import annotations

from bench.common import REPO
from bench.readme_figures import problems, run_id

RESULTS = """# Benchmark results

- date: 2026-11-23 16:24 – 16:43 UTC

| goal | measured | met? |
|---|---|---|
| … window job alone | 0.09× | no |
| kafka-python publisher | 24,360/CPU-s | no |
| confluent | 207,267 (231,587) | |
"""


def test_the_readme_quotes_the_current_results() -> None:
    readme = (REPO / "README.md").read_text()
    results = (REPO / "bench" / "RESULTS.md").read_text()
    assert problems(readme, results) == []


def test_quoted_figures_pass_and_typed_or_stale_ones_fail() -> None:
    assert run_id(RESULTS) == "2026-11-23 16:24"
    good = "- Short of goals (bench/RESULTS.md, run 2026-11-23 16:24 UTC): `0.09×`, `24,360/CPU-s` and `231,587`.\n"
    assert problems(good, RESULTS) == []
    # A figure typed from memory, a figure that is only part of a cell, and a quote of another run.
    assert problems(good.replace("`0.09×`", "`0.1×`"), RESULTS) == [
        "`0.1×` is not a figure of RESULTS.md run 2026-11-23 16:24"]
    assert problems(good.replace("`231,587`", "`231`"), RESULTS) == [
        "`231` is not a figure of RESULTS.md run 2026-11-23 16:24"]
    assert problems(good.replace("16:24 UTC", "09:00 UTC"), RESULTS) == [
        "the README quotes run 2026-11-23 09:00 UTC, RESULTS.md is run 2026-11-23 16:24 UTC"]
    # Dropping the quotes altogether does not pass either.
    assert problems("Short of goals: about 0.1× (see bench/RESULTS.md).\n", RESULTS) == [
        "the README quotes no figure of bench/RESULTS.md by run id"]
