"""Counter name -> unit, from one data table (``units.toml``) plus the rules a watcher's config adds.

Rules are ordered; the first one whose patterns are found in the counter name wins. A name no rule
matches is reported as unknown (the parser publishes it as ``count`` and lists it in a note).
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILTIN_TABLE = Path(__file__).with_name("units.toml")
UNKNOWN_UNIT = "count"
_KEYS = {"name", "unit", "patterns", "also", "factor", "orig_unit"}


@dataclass(frozen=True, slots=True)
class UnitRule:
    """One row of the table: names matching ``patterns`` (and ``also``, if given) are in ``unit``."""

    unit: str
    patterns: tuple[re.Pattern[str], ...]
    also: tuple[re.Pattern[str], ...] = ()
    factor: float = 1.0
    orig_unit: str | None = None
    name: str = ""

    def matches(self, counter: str) -> bool:
        return any(p.search(counter) for p in self.patterns) and (
            not self.also or any(p.search(counter) for p in self.also))


def _compile(patterns: Iterable[str], where: str) -> tuple[re.Pattern[str], ...]:
    out = []
    for text in patterns:
        try:
            out.append(re.compile(text, re.IGNORECASE))
        except re.error as exc:
            msg = f"{where}: pattern {text!r} is not a regular expression: {exc}"
            raise ValueError(msg) from exc
    return tuple(out)


def rule_from_mapping(data: Mapping[str, Any], where: str) -> UnitRule:
    """A rule from a TOML table; ValueError names ``where``, the key and what is allowed."""
    unknown = set(data) - _KEYS
    if unknown:
        msg = f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}"
        raise ValueError(msg)
    unit = data.get("unit")
    if not isinstance(unit, str) or not unit.strip():
        msg = f"{where}: 'unit' must be a non-empty string, got {unit!r}"
        raise ValueError(msg)
    patterns = data.get("patterns")
    also = data.get("also", [])
    for key, value in (("patterns", patterns), ("also", also)):
        if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
            msg = f"{where}: '{key}' must be a list of non-empty regular expressions, got {value!r}"
            raise ValueError(msg)
    if not patterns:
        msg = f"{where}: 'patterns' must name at least one regular expression"
        raise ValueError(msg)
    factor = data.get("factor", 1.0)
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor > 0:
        msg = f"{where}: 'factor' must be a positive number, got {factor!r}"
        raise ValueError(msg)
    orig_unit = data.get("orig_unit")
    if orig_unit is not None and not isinstance(orig_unit, str):
        msg = f"{where}: 'orig_unit' must be a string, got {orig_unit!r}"
        raise ValueError(msg)
    return UnitRule(unit=unit, patterns=_compile(patterns, where), also=_compile(also, where),
                    factor=float(factor), orig_unit=orig_unit or None, name=str(data.get("name", "")))


class UnitTable:
    """An ordered list of rules: ``lookup`` gives the first rule matching a counter name, or None."""

    def __init__(self, rules: Sequence[UnitRule]) -> None:
        self.rules = tuple(rules)

    def lookup(self, counter: str) -> UnitRule | None:
        name = counter.strip()
        for rule in self.rules:
            if rule.matches(name):
                return rule
        return None

    def unit(self, counter: str) -> tuple[str, float, str | None]:
        """(unit, factor to it, original unit if the factor changes the value); unknown names are counts."""
        rule = self.lookup(counter)
        if rule is None:
            return UNKNOWN_UNIT, 1.0, None
        return rule.unit, rule.factor, rule.orig_unit if rule.factor != 1.0 else None

    def extended(self, extra: Sequence[Mapping[str, Any]], where: str = "unit_rules") -> UnitTable:
        """This table with ``extra`` rules (TOML tables) tried first."""
        if not extra:
            return self
        added = [rule_from_mapping(r, f"{where}[{i}]") for i, r in enumerate(extra)]
        return UnitTable([*added, *self.rules])


def load_table(path: Path) -> UnitTable:
    """The rules of a units TOML file (``[[rule]]`` tables, in order)."""
    with path.open("rb") as fh:
        doc = tomllib.load(fh)
    rules = doc.get("rule")
    if not isinstance(rules, list) or not rules:
        msg = f"{path}: no [[rule]] tables"
        raise ValueError(msg)
    return UnitTable([rule_from_mapping(r, f"{path.name} rule {i + 1}") for i, r in enumerate(rules)])


@functools.cache
def builtin_table() -> UnitTable:
    """The rules shipped in ``units.toml`` (read once)."""
    return load_table(BUILTIN_TABLE)
