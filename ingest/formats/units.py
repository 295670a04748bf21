"""Unit normalisation: every source unit maps to one canonical unit (°C, %, kW, bytes/s ...).

A mapping only declares the unit the source uses; the conversion is looked up here, so a new
source never re-implements Fahrenheit.
"""

from __future__ import annotations

from collections.abc import Callable

# source unit -> (canonical unit, conversion). Identity entries name the canonical units themselves.
_TABLE: dict[str, tuple[str, Callable[[float], float]]] = {
    "°C": ("°C", lambda v: v),
    "°F": ("°C", lambda v: (v - 32.0) * 5.0 / 9.0),
    "K": ("°C", lambda v: v - 273.15),
    "%": ("%", lambda v: v),
    "fraction": ("%", lambda v: v * 100.0),
    "kW": ("kW", lambda v: v),
    "W": ("kW", lambda v: v / 1000.0),
    "bytes/s": ("bytes/s", lambda v: v),
    "KB/s": ("bytes/s", lambda v: v * 1000.0),
    "MB/s": ("bytes/s", lambda v: v * 1_000_000.0),
    "bytes": ("bytes", lambda v: v),
    "count": ("count", lambda v: v),
    # The source does not say what its numbers measure: keep them exactly as recorded rather than
    # guess a unit (a wrong guess would silently scale values and break thresholds set on them).
    "unspecified": ("unspecified", lambda v: v),
}
# Aliases seen in real files, spelled the canonical way once.
_ALIASES = {"C": "°C", "degC": "°C", "celsius": "°C", "F": "°F", "degF": "°F", "fahrenheit": "°F",
            "kelvin": "K", "pct": "%", "percent": "%", "watt": "W", "B/s": "bytes/s"}

KNOWN_UNITS = tuple(_TABLE) + tuple(_ALIASES)


def canonical_unit(unit: str) -> str:
    """The canonical unit a source unit normalises to; ValueError names the allowed units."""
    unit = _ALIASES.get(unit, unit)
    if unit not in _TABLE:
        msg = f"unknown unit {unit!r}; known units: {', '.join(KNOWN_UNITS)}"
        raise ValueError(msg)
    return _TABLE[unit][0]


def normalise(value: float, unit: str) -> tuple[float, str, float | None, str | None]:
    """(value, unit, orig_value, orig_unit): orig_* are set only when normalisation changed something."""
    unit = _ALIASES.get(unit, unit)
    target, convert = _TABLE[unit]
    if target == unit:
        return value, unit, None, None
    # Rounding keeps float noise such as 37.000000000000001 out of the stored value.
    return round(convert(value), 9), target, value, unit
