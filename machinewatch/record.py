"""The canonical reading: the one record every stage uses, with the helpers other records share.

Its columns are ``machinewatch.schema.READING``; the Flink DDL column list and ``READING_FIELDS`` are
derived from it, so the schema is never typed twice.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

from machinewatch.schema import READING

# (name, python type, Flink SQL type) of schema.READING. Order is the JSON/DDL order.
READING_FIELDS: tuple[tuple[str, type, str], ...] = tuple((c.name, c.json, c.sql) for c in READING.columns)

_OPTIONAL = {c.name for c in READING.columns if not c.required}
_MAX_TEXT = 256
# Event times outside this range are rejected: they would poison event-time watermarks.
_MIN_TS_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
_MAX_TS_MS = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)


class RecordError(ValueError):
    """A payload that is not a valid canonical reading; the message says which field and why."""


def make_event_id(*parts: object) -> str:
    """Stable id from the parts that identify an event at its source (file+row, device+seq...)."""
    joined = "\x1f".join(str(p) for p in parts)
    return hashlib.blake2b(joined.encode(), digest_size=16).hexdigest()


def to_epoch_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime; naive datetimes are refused (no guessing zones)."""
    if moment.tzinfo is None:
        msg = f"naive datetime {moment.isoformat()} has no time zone"
        raise RecordError(msg)
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value of one metric of one device at one event time (UTC ms)."""

    source: str
    device_id: str
    metric: str
    value: float
    unit: str
    ts: int
    event_id: str
    region: str = ""
    site: str = ""
    orig_value: float | None = None
    orig_unit: str | None = None

    def __post_init__(self) -> None:
        # Runs once per generated reading: the all-valid case is checked on the attributes directly
        # (dataclasses.asdict deep-copies every field and cost about as much as building the reading);
        # anything it does not accept goes through validate(), which decides and names the field.
        if not _plainly_valid(self):
            validate(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, _, _ in READING_FIELDS}

    def to_json(self) -> bytes:
        """The compact JSON of ``to_dict()``, byte for byte what ``json.dumps(..., separators=(",", ":"))`` gives.

        Written out field by field with json's own string escaper and number reprs because this runs once per
        published event: json.dumps builds a dict and, given options, a new encoder on every call (several times
        slower). Validation at construction guarantees the types (str, or None where optional; finite int or
        float, never bool); tests/unit/test_record.py proves the bytes equal on a spread of readings.
        """
        region, site, orig_value, orig_unit = self.region, self.site, self.orig_value, self.orig_unit
        return (
            f'{{"source":{_json_str(self.source)},'
            f'"region":{"null" if region is None else _json_str(region)},'
            f'"site":{"null" if site is None else _json_str(site)},'
            f'"device_id":{_json_str(self.device_id)},"metric":{_json_str(self.metric)},'
            f'"value":{_json_number(self.value)},"unit":{_json_str(self.unit)},'
            f'"orig_value":{"null" if orig_value is None else _json_number(orig_value)},'
            f'"orig_unit":{"null" if orig_unit is None else _json_str(orig_unit)},'
            f'"ts":{int.__repr__(self.ts)},"event_id":{_json_str(self.event_id)}}}'
        ).encode()

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.ts / 1000, tz=UTC)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reading:
        validate(data)
        return cls(**{name: data.get(name) for name, _, _ in READING_FIELDS})  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, payload: bytes | str) -> Reading:
        return cls.from_dict(json_object(payload))


_INF = math.inf


def _plainly_valid(r: Reading) -> bool:
    """True only for readings validate() accepts, written with exact types (a str subclass, a numpy float or a
    bool, an int takes the slow path, where validate() decides). Never True where validate() would refuse:
    tests/unit/test_record.py checks the two agree on a spread of good and bad readings."""
    source, device_id, metric, unit, event_id = r.source, r.device_id, r.metric, r.unit, r.event_id
    region, site, value, orig_value, orig_unit, ts = r.region, r.site, r.value, r.orig_value, r.orig_unit, r.ts
    return (
        type(source) is str and 0 < len(source) <= _MAX_TEXT
        and type(device_id) is str and 0 < len(device_id) <= _MAX_TEXT
        and type(metric) is str and 0 < len(metric) <= _MAX_TEXT
        and type(event_id) is str and 0 < len(event_id) <= _MAX_TEXT
        and type(unit) is str and len(unit) <= _MAX_TEXT
        and (region is None or (type(region) is str and len(region) <= _MAX_TEXT))
        and (site is None or (type(site) is str and len(site) <= _MAX_TEXT))
        and (orig_unit is None or (type(orig_unit) is str and len(orig_unit) <= _MAX_TEXT))
        # -inf < x < inf is False for NaN and the infinities: math.isfinite without the call.
        # Integers take the slow path: validate() alone decides what a huge one does.
        and type(value) is float and -_INF < value < _INF
        and (orig_value is None or (type(orig_value) is float and -_INF < orig_value < _INF))
        and type(ts) is int and _MIN_TS_MS <= ts < _MAX_TS_MS
    )


def _json_number(value: float) -> str:
    # What json's C encoder writes: float.__repr__ for floats (and subclasses such as numpy.float64), int.__repr__
    # for ints; validation already refused bools, NaN and infinities.
    return float.__repr__(value) if isinstance(value, float) else int.__repr__(value)


# What ``lookup`` returns for a field that is not there (None is a value: JSON null).
MISSING: Any = object()


def lookup(doc: Mapping[str, Any], path: str) -> Any:
    """A field by its exact name, else by dotted path into nested objects; ``MISSING`` if absent
    (shared by the collectors that map foreign documents onto readings)."""
    if path in doc:
        return doc[path]
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def json_object(payload: bytes | str) -> dict[str, Any]:
    """A JSON object from a payload, or RecordError saying why not (shared by every record type)."""
    try:
        data = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = f"not JSON: {exc}"
        raise RecordError(msg) from exc
    if not isinstance(data, dict):
        msg = f"expected a JSON object, got {type(data).__name__}"
        raise RecordError(msg)
    return data


def check_fields(
    data: dict[str, Any], fields: Iterable[tuple[str, type]], optional: Iterable[str], non_empty: Iterable[str],
    max_text: Callable[[str], int] = lambda _name: _MAX_TEXT,
) -> None:
    """Types, presence, text length and non-emptiness of a record's fields, and its event time range."""
    optional = set(optional)
    for name, kind in fields:
        value = data.get(name)
        if value is None:
            if name in optional:
                continue
            msg = f"field '{name}' is missing"
            raise RecordError(msg)
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                msg = f"field '{name}' must be a number, got {value!r}"
                raise RecordError(msg)
            if not math.isfinite(value):
                msg = f"field '{name}' must be finite, got {value!r}"
                raise RecordError(msg)
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                msg = f"field '{name}' must be an integer, got {value!r}"
                raise RecordError(msg)
        elif not isinstance(value, str):
            msg = f"field '{name}' must be a string, got {value!r}"
            raise RecordError(msg)
        elif len(value) > max_text(name):
            msg = f"field '{name}' is longer than {max_text(name)} characters"
            raise RecordError(msg)
    for name in non_empty:
        if not data[name]:
            msg = f"field '{name}' is empty"
            raise RecordError(msg)
    ts = data["ts"]
    if not _MIN_TS_MS <= ts < _MAX_TS_MS:
        msg = f"field 'ts' = {ts} is outside 2000-01-01..2100-01-01 (epoch ms expected)"
        raise RecordError(msg)


def validate(data: dict[str, Any]) -> None:
    """Raise RecordError naming the first field that is missing or wrong."""
    check_fields(data, ((name, kind) for name, kind, _ in READING_FIELDS), _OPTIONAL,
                 ("source", "device_id", "metric", "event_id"))


def flink_columns() -> str:
    """The physical column list of the canonical reading for a Flink CREATE TABLE."""
    return READING.sql_columns()
