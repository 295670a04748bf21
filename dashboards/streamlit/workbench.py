"""The Flux workbench's logic: the query library as presets with typed inputs, Flux error positions, a chart.

Free of Streamlit so unit tests can call it; the page is ``pages/flux_workbench.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import altair as alt
import pandas as pd

from machinewatch import names
from machinewatch.query import FLUX_DIR

# Kinds of input, and how each becomes a Flux option value (influxdb-client turns the Python value into
# the Flux literal): string -> string, time -> time, duration -> duration, int, float, strings -> [string].
KINDS = ("string", "time", "duration", "int", "float", "strings")
# The library documents its inputs in prose and uses the same name for the same thing in every file, so a
# name says its kind; test_workbench checks every documented input against this table.
INPUT_KINDS: dict[str, str] = {
    "bucket": "string", "start": "time", "stop": "time", "every": "duration", "span": "duration",
    "n": "int", "binCount": "int", "binStart": "float", "binWidth": "float",
    "metrics": "strings", "devices": "strings",
    "metric": "string", "by": "string", "window": "string", "devicePrefix": "string", "region": "string",
    "site": "string", "label": "string", "rollup1m": "string", "rollup1h": "string", "measurement": "string",
}
# What a form field starts with; "" (all) for the filters not listed, and for the roll-up buckets (windows only).
DEFAULTS: dict[str, str] = {
    "bucket": names.BUCKET_AGGREGATES, "start": "-1h", "stop": "now", "every": "1m", "span": "1m", "n": "10",
    "binCount": "20", "binStart": "0", "binWidth": "5", "metrics": "temperature", "metric": "temperature",
    "by": "device_id", "window": "10s", "label": "1m", "measurement": "window_agg",
}
# A chart never draws more rows than this (the table and the CSV keep them all).
CHART_ROWS = 5000

_DURATION_PART = re.compile(r"(\d+)(ns|us|µs|ms|s|m|h|d|w)")
_UNIT = {"ns": timedelta(microseconds=0.001), "us": timedelta(microseconds=1), "µs": timedelta(microseconds=1),
         "ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
         "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


class InputError(ValueError):
    """A form field's text is not a value of its input's kind; the message names the input."""


@dataclass(frozen=True)
class Input:
    name: str
    kind: str
    default: str


@dataclass(frozen=True)
class Preset:
    """One file of the query library: its header comment, documented inputs and text."""

    name: str
    doc: str
    inputs: tuple[Input, ...]
    text: str

    @property
    def title(self) -> str:
        return self.doc.splitlines()[0] if self.doc else self.name


def header(text: str) -> str:
    """The leading ``//`` comment lines of a Flux file, without the markers."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("//"):
            break
        lines.append(line[2:].removeprefix(" "))
    return "\n".join(lines)


def documented_inputs(doc: str) -> list[str]:
    """The input names of a header's ``Inputs:`` paragraph, in order.

    The paragraph runs from ``Inputs`` to ``Rows:`` (or the end); each name stands before a comma, an
    "and" or a parenthesised note: ``bucket (string), start and stop (times), devicePrefix, site ("" = all)``.
    """
    found = re.search(r"^Inputs\b(.*?)(?=^Rows:|\Z)", doc, flags=re.MULTILINE | re.DOTALL)
    if found is None:
        return []
    text = found[1]
    # Parenthesised notes go first (innermost out): they hold commas and words that are not names.
    while True:
        stripped = re.sub(r"\([^()]*\)", " ", text)
        if stripped == text:
            break
        text = stripped
    text = re.sub(r"`[^`]*`", " ", text).replace(":", " ")
    result: list[str] = []
    for part in re.split(r",|\band\b|\n", text):
        word = part.strip().rstrip(".").strip()
        if re.fullmatch(r"[A-Za-z_]\w*", word) and word not in result:
            result.append(word)
    return result


def input_for(name: str, doc: str) -> Input:
    default = DEFAULTS.get(name, "")
    if name == "bucket" and "alerts bucket" in doc:
        default = names.BUCKET_ALERTS
    # The fleet rows are only in the roll-up buckets, tagged by the roll-up's length: the windows' defaults
    # would show nothing.
    if "a roll-up bucket" in doc:
        default = {"bucket": names.BUCKET_ROLLUP_1M, "window": "1m"}.get(name, default)
    return Input(name, INPUT_KINDS.get(name, "string"), default)


def load_preset(path: Path) -> Preset:
    text = path.read_text()
    doc = header(text)
    return Preset(path.stem, doc, tuple(input_for(n, doc) for n in documented_inputs(doc)), text)


def presets(directory: Path = FLUX_DIR) -> dict[str, Preset]:
    """Every file of the query library by name, sorted."""
    return {p.stem: load_preset(p) for p in sorted(directory.glob("*.flux"))}


def parse_duration(text: str) -> timedelta:
    """A Flux duration literal (``1h30m``, ``10s``, ``-5m``) as a timedelta."""
    s = text.strip()
    sign = -1 if s.startswith("-") else 1
    body = s.lstrip("+-")
    parts = _DURATION_PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        msg = f"{text!r} is not a duration (e.g. 10s, 5m, 1h30m, 7d)"
        raise ValueError(msg)
    return sign * sum((int(n) * _UNIT[u] for n, u in parts), timedelta())


def parse_time(text: str, now: datetime) -> datetime:
    """``now``, a duration from now (``-1h``, ``+1m``) or an ISO 8601 time (UTC when it names no zone)."""
    s = text.strip()
    if s == "now":
        return now
    if s[:1] in "+-" and s[1:2].isdigit():
        return now + parse_duration(s)
    try:
        when = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        msg = f"{text!r} is not a time (now, -1h, +1m or 2026-01-31T12:00:00Z)"
        raise ValueError(msg) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def to_value(item: Input, given: object, now: datetime) -> Any:
    """The Flux option value of one form field; InputError names the input when the text does not fit."""
    text = str(given).strip()
    try:
        if item.kind == "time":
            return parse_time(text, now)
        if item.kind == "duration":
            return parse_duration(text)
        if item.kind == "int":
            return int(float(text)) if isinstance(given, float) else int(text)
        if item.kind == "float":
            return float(text)
        if item.kind == "strings":
            return [v.strip() for v in text.split(",") if v.strip()]
    except ValueError as exc:
        msg = f"input {item.name} ({item.kind}): {exc}"
        raise InputError(msg) from None
    return str(given)


def option_values(inputs: tuple[Input, ...], given: dict[str, object], now: datetime) -> dict[str, Any]:
    """Every input's value for ``params``; all problems at once, one per line."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for item in inputs:
        try:
            values[item.name] = to_value(item, given.get(item.name, item.default), now)
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        raise InputError("\n".join(problems))
    return values


# --- Flux errors ---------------------------------------------------------------------------------

# Flux names a source span as @line:col-line:col (older releases: "loc line:col-line:col").
_POSITION = re.compile(r"(?:@|\bloc\s)(\d+):(\d+)(?:-(\d+):(\d+))?")


@dataclass(frozen=True)
class FluxError:
    """One error InfluxDB reported, with the query position it names (1-based), if any."""

    message: str
    line: int | None = None
    column: int | None = None
    end_line: int | None = None
    end_column: int | None = None

    def where(self) -> str:
        if self.line is None:
            return ""
        return f"line {self.line}, column {self.column}"


def flux_errors(server_message: str) -> list[FluxError]:
    """The errors in InfluxDB's message, each with its position: a message may list several
    (``error @1:5-1:6: ...; error @3:1-3:4: ...``)."""
    found = list(_POSITION.finditer(server_message))
    if not found:
        return [FluxError(server_message.strip())]
    errors = []
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(server_message)
        text = server_message[m.end():end].lstrip(": ").strip()
        # what follows the next position's own prefix ("error ", "runtime error ") belongs to that one
        text = re.sub(r"(?:[;,]?\s*(?:compilation failed:\s*)?(?:\w+\s)?error(?: at)?\s*)$", "", text).strip()
        end_line, end_col = (int(m[3]), int(m[4])) if m[3] else (None, None)
        errors.append(FluxError(text or server_message.strip(), int(m[1]), int(m[2]), end_line, end_col))
    return errors


def excerpt(flux: str, error: FluxError) -> str:
    """The query line an error names with a caret under its column, as plain text (empty without a position)."""
    lines = flux.splitlines()
    if error.line is None or not 1 <= error.line <= len(lines):
        return ""
    source = lines[error.line - 1]
    col = max(1, error.column or 1)
    width = 1
    if error.end_line == error.line and error.end_column and error.end_column > col:
        width = error.end_column - col
    return f"{error.line:>4} | {source}\n     | {' ' * (col - 1)}{'^' * width}"


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartChoice:
    x: str
    y: str
    color: str | None
    mark: str  # "line" over time, else "bar"


def choose_chart(frame: pd.DataFrame) -> ChartChoice | None:
    """A chart that fits the result: a numeric column over a time column (one line per series), or
    bars of a numeric column per label; None when there is nothing numeric to draw."""
    if frame.empty:
        return None
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c])]
    if not numeric:
        return None
    preferred = [c for c in ("_value", "value", "per_second", "mean", "peak_avg", "avg") if c in numeric]
    # the last number when none is a known value column: results put their measures after their keys
    y = preferred[0] if preferred else numeric[-1]
    times = [c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c])]
    labels = [c for c in frame.columns if c not in numeric and c not in times
              and frame[c].nunique(dropna=True) > 1 and not c.startswith("_start") and not c.startswith("_stop")]
    if "_time" in times and frame["_time"].nunique() > 1:
        return ChartChoice("_time", y, labels[0] if labels else None, "line")
    if labels:
        return ChartChoice(labels[0], y, None, "bar")
    numeric_x = [c for c in numeric if c != y]
    if numeric_x:  # e.g. a histogram's le against its counts
        return ChartChoice(numeric_x[0], y, None, "bar")
    return None


def chart(frame: pd.DataFrame, choice: ChartChoice) -> alt.Chart:
    rows = frame.head(CHART_ROWS)
    x_type: Literal["temporal", "quantitative", "nominal"] = "temporal" if choice.mark == "line" else (
        "quantitative" if pd.api.types.is_numeric_dtype(rows[choice.x]) else "nominal")
    base = alt.Chart(rows)
    mark = base.mark_line(point=len(rows) <= 200) if choice.mark == "line" else base.mark_bar()
    enc: dict[str, Any] = {"x": alt.X(choice.x, type=x_type), "y": alt.Y(choice.y, type="quantitative"),
                           "tooltip": list(rows.columns[:8])}
    if choice.color:
        enc["color"] = alt.Color(choice.color, type="nominal")
    return mark.encode(**enc)


def to_csv(frame: pd.DataFrame) -> bytes:
    """The result as CSV, times in ISO 8601 UTC."""
    return frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ").encode()
