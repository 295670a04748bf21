"""Checking the work, not only the speed: the two engines' outputs of one backlog run compared record for record,
and the percentile summary (with its sample count) every latency row reports.

Pure functions (no Kafka, no servers): the phases read the topics and hand the documents here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Averages are computed in different orders by the two engines: equal to this many significant digits.
_SIG = 9


def significant(x: Any) -> Any:
    """A finite non-zero float to 9 significant digits (engines sum in different orders); anything else as is."""
    if isinstance(x, float) and math.isfinite(x) and x != 0.0:
        return float(f"{x:.{_SIG}g}")
    return x


def window_key(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """What identifies a window result: device, metric, size and end (the same window from either engine)."""
    return (doc.get("device_id"), doc.get("metric"), doc.get("window_ms"), doc.get("window_end_ms"))


def window_value(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    return (significant(doc.get("avg_value")), significant(doc.get("min_value")), significant(doc.get("max_value")),
            doc.get("count"))


def transition_key(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """An alert transition: which device, which state, at which event time (replays repeat it exactly)."""
    return (doc.get("device_id"), doc.get("kind"), doc.get("state"), doc.get("ts"), doc.get("started_ms"))


@dataclass
class Comparison:
    """The outcome of comparing two engines' outputs: equal, or what differs (a few examples of each kind)."""

    what: str
    left: str
    right: str
    left_count: int = 0
    right_count: int = 0
    only_left: list[Any] = field(default_factory=list)
    only_right: list[Any] = field(default_factory=list)
    differ: list[Any] = field(default_factory=list)
    missing_left: int = 0
    missing_right: int = 0
    mismatched: int = 0

    @property
    def equal(self) -> bool:
        return not (self.missing_left or self.missing_right or self.mismatched) and self.left_count > 0

    def summary(self) -> str:
        if self.equal:
            return f"{self.what}: same {self.left_count:,} on both"
        if not self.left_count and not self.right_count:
            return f"{self.what}: neither engine wrote any, nothing was compared"
        return (f"{self.what} DIFFER: {self.left} {self.left_count:,}, {self.right} {self.right_count:,}; only in "
                f"{self.left}: {self.missing_right:,}, only in {self.right}: {self.missing_left:,}, different "
                f"values: {self.mismatched:,}")

    def as_dict(self) -> dict[str, Any]:
        return {"equal": self.equal, "summary": self.summary(), "left_count": self.left_count,
                "right_count": self.right_count, "only_left": self.only_left[:5], "only_right": self.only_right[:5],
                "differ": self.differ[:5]}


def compare(what: str, left: tuple[str, Iterable[Mapping[str, Any]]], right: tuple[str, Iterable[Mapping[str, Any]]],
            key: Any, value: Any = None) -> Comparison:
    """Distinct records by ``key`` on each side (a record repeated by a replay counts once); equal when both sides
    hold the same keys and, with ``value``, the same value for each. A key written twice with different values
    on one side is a difference too."""
    out = Comparison(what, left[0], right[0])
    sides: list[dict[Any, Any]] = []
    for _, docs in (left, right):
        seen: dict[Any, Any] = {}
        for doc in docs:
            k, v = key(doc), value(doc) if value else None
            if k in seen and seen[k] != v:
                out.mismatched += 1
                out.differ.append({"key": k, "values": [seen[k], v], "on": "one side, twice"})
            seen[k] = v
        sides.append(seen)
    a, b = sides
    out.left_count, out.right_count = len(a), len(b)
    only_a = sorted((k for k in a if k not in b), key=repr)
    only_b = sorted((k for k in b if k not in a), key=repr)
    out.missing_right, out.missing_left = len(only_a), len(only_b)
    out.only_left, out.only_right = only_a[:5], only_b[:5]
    for k in a.keys() & b.keys():
        if a[k] != b[k]:
            out.mismatched += 1
            if len(out.differ) < 5:
                out.differ.append({"key": k, left[0]: a[k], right[0]: b[k]})
    return out


def tumbling_windows(docs: Iterable[dict[str, Any]], window_ms: int) -> list[dict[str, Any]]:
    """A device's tumbling windows of one size among a window job's results (its topic also carries sliding ones,
    and fleet roll-ups, which count ``devices``)."""
    return [d for d in docs if d.get("window_ms") == window_ms and d.get("slide_ms", window_ms) == window_ms
            and "devices" not in d]


@dataclass(frozen=True)
class Percentiles:
    """p50/p95/p99 of a sample, with the sample's size: a p99 of 10 values is their maximum, and says so."""

    count: int
    p50: float
    p95: float
    p99: float

    def text(self, unit: str = "ms") -> str:
        if not self.count:
            return "no samples"
        return f"{self.p50:,.0f} / {self.p95:,.0f} / {self.p99:,.0f} {unit} (n={self.count:,})"

    def enough(self, minimum: int) -> bool:
        return self.count >= minimum


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (the smallest value with at least ``q`` of the sample at or below it)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def percentiles(values: Sequence[float]) -> Percentiles:
    return Percentiles(len(values), percentile(values, 0.50), percentile(values, 0.95), percentile(values, 0.99))
