"""InfluxDB line protocol from the record definitions: one encoder per record kind.

``LineEncoder(defn)`` turns a JSON document of the definition into one line (ms precision): the
measurement and the ``tag`` columns, the ``field`` columns (under their InfluxDB names), the ``time``
column as the timestamp. ``parts(doc)`` gives the same as (measurement, tags, fields, time) for readers
that want the values (the tests compare the line with what influxdb_client's ``Point`` writes for them).
The lines are byte for byte what ``Point`` writes: tags and fields sorted by key, empty tags and None,
NaN and infinite fields left out, whole floats without ".0", ints as ``Ni``.

``aggregate_line`` (``window_line`` for a device's window, ``fleet_line`` for a fleet roll-up, told apart by its
``devices`` field), ``late_line`` and ``alert_line`` are the encoders of the result topics; the writer and every
test use these (no second encoder per kind). Alerts are found by their ``kind`` field (``schema.alert_def``).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from math import isfinite
from typing import Any

from machinewatch import names, schema
from machinewatch.schema import BadRecord, RecordDef

# The same escaping as influxdb_client's Point, so both give the same bytes (and so the same series).
_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})


@dataclass(frozen=True)
class Parts:
    """One point: measurement, tags (non-empty text), fields (typed; None is left out) and time (ms)."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, Any]
    time_ms: int


def _tag_value(value: object) -> str:
    escaped = str(value).translate(_ESCAPE_KEY)
    return escaped + " " if escaped.endswith("\\") else escaped  # else the backslash escapes the separator


def _float_field(name: str, value: float) -> str:
    text = str(value)
    if text.endswith(".0"):  # Point writes whole floats without ".0"
        text = text[:-2]
    return f"{name}={text}" if math.isfinite(value) else ""


def _fields(fields: Mapping[str, Any]) -> str:
    """Fields as Point writes them: sorted; None and NaN/inf left out; ints as ``Ni``; strings quoted."""
    out = []
    for key, value in sorted(fields.items()):
        if value is None:
            continue
        name = key.translate(_ESCAPE_KEY)
        if isinstance(value, float):
            if text := _float_field(name, value):
                out.append(text)
        elif isinstance(value, bool):
            out.append(f"{name}={'true' if value else 'false'}")
        elif isinstance(value, int):
            out.append(f"{name}={value}i")
        elif isinstance(value, str):
            out.append(f'{name}="{value.translate(_ESCAPE_STRING)}"')
        else:
            msg = f"field {key} has unsupported type {type(value).__name__}"
            raise BadRecord(msg)
    return ",".join(out)


def serialize(parts: Parts) -> str:
    """One line; "" for a point without fields (Point gives "" for it too, and the writer drops empty lines)."""
    tags = "".join(f",{k.translate(_ESCAPE_KEY)}={v}" for k, value in sorted(parts.tags.items())
                   if (v := _tag_value(value)))
    fields = _fields(parts.fields)
    return f"{parts.measurement.translate(_ESCAPE_MEASUREMENT)}{tags} {fields} {parts.time_ms}" if fields else ""


def _typed(column: schema.Column, value: Any) -> Any:
    """A closed record's field value as InfluxDB gets it: the column's type (text fields always written)."""
    if column.json is str:
        return str(value or "")
    if value is None:
        return None
    return float(value) if column.json is float else int(value)


def _open_value(value: Any) -> Any:
    """An open record's field value: strings and bools as they are, numbers as floats, the rest as JSON."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return json.dumps(value, sort_keys=True)


class LineEncoder:
    """The line protocol encoder of one record definition (ms timestamps)."""

    def __init__(self, defn: RecordDef, computed_tags: Mapping[str, Callable[[Mapping[str, Any]], object]]
                 | None = None) -> None:
        if not defn.measurement:
            msg = f"record {defn.name} is not written to InfluxDB"
            raise ValueError(msg)
        self.defn = defn
        (self.time_column,) = defn.with_role("time")
        tag_names = defn.open_tags if defn.open_fields else tuple(c.name for c in defn.with_role("tag"))
        # A tag is read from its key, or computed from the document (the window label).
        getters: dict[str, str | Callable[[Mapping[str, Any]], object]] = {name: name for name in tag_names}
        getters.update(computed_tags or {})
        self._tag_names = tuple(sorted(getters))  # Point sorts tags by key
        self._tag_getters = tuple(getters[name] for name in self._tag_names)
        # The hot path reads every tag with one map(doc.get) and then puts the computed ones in their places.
        self._computed = tuple((i, g) for i, g in enumerate(self._tag_getters) if not isinstance(g, str))
        self._required = (*defn.required, *(() if self.time_column.required else (self.time_column.name,)))
        # Closed records: (InfluxDB name, column or None, constant) in the order Point sorts fields.
        specs: list[tuple[str, schema.Column | None, int]] = [(c.influx_name, c, 0) for c in defn.with_role("field")]
        specs += [(name, None, value) for name, value in defn.constant_fields.items()]
        self._field_specs = tuple(sorted(specs, key=lambda spec: spec[0]))
        self._formatters = tuple(_formatter(name, column, const) for name, column, const in self._field_specs)
        self._measurement = defn.measurement.translate(_ESCAPE_MEASUREMENT)
        prefixes = tuple(f",{name.translate(_ESCAPE_KEY)}=" for name in self._tag_names)

        @functools.lru_cache(maxsize=65_536, typed=True)  # typed: 1, 1.0 and True are equal keys but different tags
        def series(*values: object) -> str:
            # The same for every point of one device, so cached. Falsy tags are left out: InfluxDB has no empty
            # tag values.
            return self._measurement + "".join(p + v for p, value in zip(prefixes, values, strict=True)
                                               if value and (v := _tag_value(value)))

        self._series = series

    def _check(self, doc: Mapping[str, Any]) -> None:
        if None in map(doc.get, self._required):
            self.defn.check(doc)
            msg = f"{self.defn.name} lacks its time ({self.time_column.name})"
            raise BadRecord(msg)

    def _tag_values(self, doc: Mapping[str, Any]) -> list[object]:
        values: list[object] = list(map(doc.get, self._tag_names))
        for i, compute in self._computed:
            values[i] = compute(doc)
        return values

    def parts(self, doc: Mapping[str, Any]) -> Parts:
        self._check(doc)
        tags = {name: str(value) for name, value in zip(self._tag_names, self._tag_values(doc), strict=True) if value}
        fields: dict[str, Any]
        if self.defn.open_fields:  # every key but the tags, the time included (as the writer always did)
            fields = {k: _open_value(v) for k, v in doc.items() if k not in self._tag_names}
        else:
            fields = {name: _typed(c, doc.get(c.name)) if c else const for name, c, const in self._field_specs}
        return Parts(self.defn.measurement, tags, fields, int(doc[self.time_column.name]))

    def __call__(self, doc: Mapping[str, Any]) -> str:
        """``serialize(self.parts(doc))``; for closed records built without the dicts (the writer's hot path)."""
        if self.defn.open_fields:
            return serialize(self.parts(doc))
        self._check(doc)
        values = self._tag_values(doc)
        try:
            series = self._series(*values)
        except TypeError:  # an unhashable tag value (a JSON list): written as Point would, just not cached
            series = self._series.__wrapped__(*values)
        text = ",".join([f for format_field in self._formatters if (f := format_field(doc))])
        return f"{series} {text} {int(doc[self.time_column.name])}" if text else ""


def _formatter(name: str, column: schema.Column | None, const: int) -> Callable[[Mapping[str, Any]], str]:
    """``key=value`` of one field of a closed record, as ``_fields`` writes it ("" when left out)."""
    key = name.translate(_ESCAPE_KEY)
    if column is None:
        constant = f"{key}={const}i"
        return lambda _doc: constant
    source = column.name
    if column.json is str:
        return lambda doc: f'{key}="{str(doc.get(source) or "").translate(_ESCAPE_STRING)}"'
    if column.json is float:
        prefix = f"{key}="

        def number(doc: Mapping[str, Any]) -> str:
            # _float_field inlined: this runs for every float field of every result the writer writes.
            value = doc.get(source)
            if value is None:
                return ""
            value = float(value)
            if not isfinite(value):
                return ""
            text = repr(value)  # a float's str is its repr
            return prefix + text[:-2] if text.endswith(".0") else prefix + text
        return number

    def integer(doc: Mapping[str, Any]) -> str:
        value = doc.get(source)
        return "" if value is None else f"{key}={int(value)}i"
    return integer


def duration_text(seconds: int) -> str:
    """A whole number of seconds in Flux's notation, as window tags and roll-up schedules write it: 10s, 90s, 1m, 1h."""
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _window_label(window_ms: Any, slide_ms: Any) -> str:
    size_s = int(window_ms) // 1000
    slide_s = int(slide_ms or window_ms) // 1000
    return duration_text(size_s) if slide_s == size_s else f"{size_s}s@{slide_s}s"


# A job writes a few window shapes only: the label of each is computed once (it depends on the two values alone).
_cached_window_label = functools.lru_cache(maxsize=256)(_window_label)


def window_label(doc: Mapping[str, Any]) -> str:
    """The ``window`` tag of a window result: its size in Flux's notation for tumbling windows (``10s``; the roll-ups'
    ``1m`` and ``1h``), ``60s@20s`` for sliding ones."""
    window_ms, slide_ms = doc["window_ms"], doc.get("slide_ms")
    try:
        return _cached_window_label(window_ms, slide_ms)
    except TypeError:  # an unhashable value (a JSON list): the same error or label as without the cache
        return _window_label(window_ms, slide_ms)


window_line = LineEncoder(schema.WINDOW_RESULT, {"window": window_label})
fleet_line = LineEncoder(schema.FLEET_RESULT, {"window": window_label})


def aggregate_line(doc: Mapping[str, Any]) -> str:
    """A result of the aggregates topic: a fleet roll-up (it counts ``devices``) or a device's window."""
    return fleet_line(doc) if "devices" in doc else window_line(doc)
late_line = LineEncoder(schema.LATE_EVENT)
_ALERT_ENCODERS = {d.name: LineEncoder(d) for d in (schema.THRESHOLD_ALERT, schema.SUSTAINED_ALERT,
                                                    schema.DERIVED_ALERT)}


def alert_encoder(doc: Mapping[str, Any]) -> LineEncoder | None:
    """The encoder of an alert by its ``kind``; None for an alert without one (see ``alert_parts``)."""
    defn = schema.alert_def(doc)
    return _ALERT_ENCODERS[defn.name] if defn else None


def alert_parts(doc: Mapping[str, Any]) -> Parts:
    encoder = alert_encoder(doc)
    if encoder is not None:
        if not doc.get("device_id"):
            msg = f"{encoder.defn.name} lacks device_id"
            raise BadRecord(msg)
        return encoder.parts(doc)
    # An alert without a kind was written by a release before the kind field: threshold alerts had a
    # rule_group, device alerts a ts. Read by that shape for one release (issue 16), then refused; what has
    # neither a kind nor that shape is refused now (the writer dead-letters it).
    when = doc.get("window_end_ms", doc.get("ts"))
    if not doc.get("device_id") or when is None:
        msg = "alert lacks device_id or a time (window_end_ms / ts)"
        raise BadRecord(msg)
    measurement = names.MEASUREMENT_THRESHOLD_ALERT if doc.get("rule_group") else names.MEASUREMENT_DEVICE_ALERT
    tags = {tag: str(doc[tag]) for tag in schema.ALERT_TAGS if doc.get(tag)}
    fields = {k: _open_value(v) for k, v in doc.items() if k not in schema.ALERT_TAGS}
    return Parts(measurement, tags, fields, int(when))


def alert_line(doc: Mapping[str, Any]) -> str:
    """The line of any alert on the alerts topic, by its kind (or, for one release, by its old shape)."""
    return serialize(alert_parts(doc))


def lines(encoder: Callable[[Mapping[str, Any]], str], docs: Iterable[Mapping[str, Any]]) -> list[str]:
    return [encoder(doc) for doc in docs]
