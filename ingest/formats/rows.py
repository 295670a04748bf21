"""Mapping one decoded row to canonical Readings, with every problem returned as data.

The event id is ``make_event_id(source, device, ts_ms, metric, *id_fields)``: it depends only on what
the row says, not on the file name, the row number or the transport, so the same event read from a
file, replayed, or received over TCP gets the same id, and a forced re-load overwrites nothing new.
A time repeated with a different value (a clock stepped back) is a different event: ``RepeatTracker``
gives it an id of its own, numbered by its occurrence within the file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Any

from ingest.formats.mapping import Mapping
from ingest.formats.units import normalise
from machinewatch.record import MISSING as _MISSING
from machinewatch.record import Reading, RecordError, make_event_id, to_epoch_ms
from machinewatch.record import lookup as _lookup

log = logging.getLogger(__name__)



# Dead-letter reason kinds, for counting (the reason text says the details).
UNDECODABLE = "undecodable"      # the decoder could not make a row of it (not JSON, bad bytes, extra cells)
NO_DEVICE = "no_device"          # device field missing, empty, or not a string/integer
NO_TIME = "no_time"              # time field missing or empty
BAD_TIME = "bad_time"            # time field unreadable in the mapping's time format
BAD_VALUE = "bad_value"          # a metric value that is not a finite number
MISSING_METRIC = "missing_metric"  # a required metric field is absent
NO_METRICS = "no_metrics"        # the row has none of the metric fields
DUPLICATE = "duplicate"          # the same reading (device, metric, time, value) again


@dataclass(frozen=True, slots=True)
class Reject:
    """Something that goes to the dead-letter topic: the raw payload (its exact bytes where known) and why."""

    raw: bytes | str
    reason: str
    kind: str = "invalid"


@dataclass(slots=True)
class MapResult:
    readings: list[Reading] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def _blank(value: Any) -> bool:
    return value is _MISSING or value is None or (isinstance(value, str) and not value.strip())


class RowMapper:
    """Turns dict rows of one mapping into Readings; stateful only for time-of-day day rollover."""

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self._zone = mapping.zone
        self._known = mapping.known_top_fields()
        self._warned: set[str] = set()
        # time_of_day sources: days added after the clock went backwards past midnight.
        self._day_offset = 0
        self._last_tod: time | None = None

    # -- time ----------------------------------------------------------------------------------
    def _aware(self, moment: datetime) -> datetime:
        return moment.replace(tzinfo=self._zone) if moment.tzinfo is None else moment

    def parse_time(self, value: Any) -> int:
        """Event time in UTC epoch ms; ValueError says what was wrong."""
        fmt = self.mapping.time_format
        if isinstance(value, datetime):  # Parquet timestamp columns arrive decoded
            return to_epoch_ms(self._aware(value))
        if fmt in ("epoch_s", "epoch_ms"):
            number = float(value)
            if not math.isfinite(number):
                msg = f"time {value!r} is not finite"
                raise ValueError(msg)
            return round(number * 1000) if fmt == "epoch_s" else round(number)
        text = str(value).strip()
        if fmt == "time_of_day":
            tod = time.fromisoformat(text)
            # Rows are in time order; a jump back of more than 12 h is the next day, not disorder.
            if self._last_tod is not None and _seconds(self._last_tod) - _seconds(tod) > 12 * 3600:
                self._day_offset += 1
            self._last_tod = tod
            assert self.mapping.base_date is not None  # checked by the model
            day = self.mapping.base_date + timedelta(days=self._day_offset)
            return to_epoch_ms(datetime.combine(day, tod, tzinfo=self._zone))
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        return to_epoch_ms(self._aware(datetime.fromisoformat(text)))

    # -- rows ----------------------------------------------------------------------------------
    def _note_unknown(self, data: AnyMapping[str, Any]) -> None:
        for key in data:
            if key not in self._known and key not in self._warned:
                self._warned.add(key)
                log.info("mapping %s: ignoring unknown field %r (logged once)", self.mapping.name, key)

    def map(self, data: AnyMapping[str, Any], raw: bytes | str) -> MapResult:
        """Readings for every metric present in the row; rejects for what is wrong."""
        m = self.mapping
        out = MapResult()
        self._note_unknown(data)
        if m.device_field is None:
            device: Any = m.device  # a single-device source: the mapping's constant, taken as it is
        else:
            device = _lookup(data, m.device_field)
            if _blank(device):
                out.rejects.append(Reject(raw, f"{m.name}: device field '{m.device_field}' is missing or empty",
                                          NO_DEVICE))
                return out
            if isinstance(device, bool) or not isinstance(device, str | int):
                # A type flip (object, list, number with a fraction...) must not become a device id.
                out.rejects.append(Reject(
                    raw, f"{m.name}: device field '{m.device_field}' must be a string or an integer, "
                         f"got {device!r:.80}", NO_DEVICE))
                return out
        stamp = _lookup(data, m.time_field)
        if _blank(stamp):
            out.rejects.append(Reject(raw, f"{m.name}: time field '{m.time_field}' is missing or empty", NO_TIME))
            return out
        try:
            ts = self.parse_time(stamp)
        except (ValueError, TypeError, OverflowError, RecordError) as exc:
            out.rejects.append(Reject(raw, f"{m.name}: time field '{m.time_field}' = {stamp!r} unreadable "
                                           f"as {m.time_format}: {exc}", BAD_TIME))
            return out
        device_id = m.device if m.device_field is None else f"{m.device_prefix}{str(device).strip()}"
        region = str(_lookup(data, m.region_field)) if m.region_field and not _blank(
            _lookup(data, m.region_field)) else m.region
        site = str(_lookup(data, m.site_field)) if m.site_field and not _blank(
            _lookup(data, m.site_field)) else m.site
        extra = [str(_lookup(data, f)) for f in m.id_fields]
        for spec in m.metrics:
            value = _lookup(data, spec.field)
            if _blank(value):
                if spec.required:
                    out.rejects.append(Reject(raw, f"{m.name}: required metric field '{spec.field}' is missing",
                                              MISSING_METRIC))
                continue  # optional metric absent in this row: schema evolution, not an error
            try:
                number = _number(value)
                converted, unit, orig_value, orig_unit = normalise(number, spec.unit)
                out.readings.append(Reading(
                    source=m.source, region=region, site=site, device_id=device_id, metric=spec.metric,
                    value=converted, unit=unit, orig_value=orig_value, orig_unit=orig_unit, ts=ts,
                    event_id=make_event_id(m.source, device_id, ts, spec.metric, *extra),
                ))
            except (ValueError, RecordError) as exc:
                out.rejects.append(Reject(raw, f"{m.name}: metric '{spec.metric}' from field '{spec.field}' "
                                               f"= {value!r}: {exc}", BAD_VALUE))
        if not out.readings and not out.rejects:
            fields = ", ".join(s.field for s in m.metrics)
            out.rejects.append(Reject(raw, f"{m.name}: row carries none of the metric fields ({fields})", NO_METRICS))
        return out


def _seconds(moment: time) -> float:
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


def _number(value: Any) -> float:
    if isinstance(value, bool):
        msg = "a boolean is not a measurement"
        raise ValueError(msg)
    number = float(value) if isinstance(value, int | float) else float(str(value).strip())
    if not math.isfinite(number):
        msg = f"{value!r} is not a finite number"
        raise ValueError(msg)
    return number


@dataclass(frozen=True, slots=True)
class Seen:
    """What ``RepeatTracker.check`` made of one reading.

    ``reading`` is what to publish (None for a true duplicate); ``occurrence`` is 0 the first time a time is
    seen for that device and metric, k for the k-th *different* value at that same time (then ``reading``
    carries an id of its own); ``earlier_row`` is the row of the first reading at that time, or for a
    duplicate the row with the same value.
    """

    reading: Reading | None
    occurrence: int
    earlier_row: int


class RepeatTracker:
    """Finds readings whose event (source, device, metric, time, id fields) was already read from this file.

    A repeat with a *different* value is kept: a clock stepped back, or two values recorded at one time, are
    data, not a duplicate; it gets the id ``make_event_id(<first id>, "occurrence", k)``, k counting the
    different values in file order, so the ids are the same on every run and after a resume (the loader
    passes the skipped rows through ``check`` again). A repeat with the *same* value is a duplicate.
    Memory: one entry per distinct event of the file (a few hundred bytes each).
    """

    def __init__(self) -> None:
        self._first: dict[str, tuple[float, int]] = {}       # first id -> (value, row)
        self._more: dict[str, list[tuple[float, int]]] = {}  # first id -> later different values, in order

    def check(self, reading: Reading, row: int) -> Seen:
        first = self._first.get(reading.event_id)
        if first is None:
            self._first[reading.event_id] = (reading.value, row)
            return Seen(reading, 0, row)
        more = self._more.setdefault(reading.event_id, [])
        for value, earlier in (first, *more):
            if value == reading.value:
                return Seen(None, 0, earlier)
        more.append((reading.value, row))
        occurrence = len(more)
        unique = replace(reading, event_id=make_event_id(reading.event_id, "occurrence", occurrence))
        return Seen(unique, occurrence, first[1])


class FeedMapper:
    """Maps records of several named feeds (mapping names), one RowMapper each, loaded on first use."""

    def __init__(self, overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self._overrides = overrides or {}
        self._mappers: dict[str, RowMapper] = {}

    def mapper(self, feed: str) -> RowMapper:
        if feed not in self._mappers:
            from ingest.formats.mapping import load_mapping

            self._mappers[feed] = RowMapper(load_mapping(feed, **self._overrides.get(feed, {})))
        return self._mappers[feed]

    def map(self, feed: str, data: AnyMapping[str, Any], raw: bytes | str) -> MapResult:
        return self.mapper(feed).map(data, raw)
