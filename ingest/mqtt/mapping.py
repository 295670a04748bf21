"""One MQTT message (topic, payload bytes, receive time) to canonical readings, every problem returned as data.

No client library here: the mapping is tested without a broker. The event id is
``make_event_id(source, device_id, ts, metric)`` when the payload carries its time (the same shape as the
file and TCP collectors, so a redelivered message gets the same id), ``make_event_id(source, device_id,
metric, "id", <id_field>)`` when the subscription names an id field, and only with neither is it made from
the receive time (then a message redelivered after a crash is not recognised: README, "Delivery").
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ingest.mqtt.config import Subscription
from machinewatch.record import MISSING as _MISSING
from machinewatch.record import Reading, RecordError, json_object, make_event_id
from machinewatch.record import lookup as _lookup
from machinewatch.runtime import Rejected


@dataclass(slots=True)
class Mapped:
    readings: list[Reading] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def match(subscription: Subscription, topic: str) -> dict[str, str] | None:
    """The captured levels if ``topic`` matches the subscription's filter, else None (MQTT's rules: '+' one
    level, '#' the rest; a wildcard first level does not match a '$' topic)."""
    levels = topic.split("/")
    pattern = subscription.topic.split("/")
    first = pattern[0]
    if topic.startswith("$") and (first in ("+", "#") or first.startswith("{")):
        return None
    captured: dict[str, str] = {}
    for n, want in enumerate(pattern):
        if want == "#":
            return captured
        if n >= len(levels):
            return None
        if want == "+":
            continue
        if want.startswith("{") and want.endswith("}"):
            captured[want[1:-1]] = levels[n]
        elif want != levels[n]:
            return None
    return captured if len(levels) == len(pattern) else None


class MessageMapper:
    """Turns messages into readings by the first subscription whose filter matches the topic."""

    def __init__(self, subscriptions: list[Subscription], max_payload_bytes: int,
                 origin_prefix: str = "mqtt://") -> None:
        self.subscriptions = subscriptions
        self.max_payload_bytes = max_payload_bytes
        self.origin_prefix = origin_prefix

    def map(self, topic: str, payload: bytes, received_ms: int) -> Mapped:
        origin = f"{self.origin_prefix}{topic}"
        out = Mapped()

        def reject(reason: str) -> Mapped:
            if len(payload) > self.max_payload_bytes:
                out.rejected.append(Rejected(payload[:1024], reason, origin, size=len(payload)))
            else:
                out.rejected.append(Rejected(payload, reason, origin))
            return out

        if len(payload) > self.max_payload_bytes:
            return reject(f"payload of {len(payload)} bytes is larger than max_payload_bytes={self.max_payload_bytes}")
        for sub in self.subscriptions:
            captured = match(sub, topic)
            if captured is not None:
                break
        else:
            return reject(f"topic {topic!r} matches no subscription "
                          f"({', '.join(s.topic for s in self.subscriptions)})")
        try:
            self._map(sub, captured, topic, payload, received_ms, out)
        except _Bad as exc:
            return reject(f"{sub.topic}: {exc}")
        return out

    def _map(self, sub: Subscription, captured: Mapping[str, str], topic: str, payload: bytes, received_ms: int,
             out: Mapped) -> None:
        def text(template: str, default_level: str = "") -> str:
            if not template:
                return captured.get(default_level, "") if default_level else ""
            return template.format_map(captured)

        device_id = text(sub.device_id, "device_id")
        doc: dict[str, Any] = {}
        if sub.format == "number":
            values = {text(sub.metric, "metric"): _number_text(payload)}
        else:
            try:
                doc = json_object(payload)
            except RecordError as exc:
                raise _Bad(str(exc)) from exc
            if sub.fields:
                values = {metric: _lookup(doc, path) for metric, path in sub.fields.items()}
                values = {metric: value for metric, value in values.items() if value is not _MISSING}
                if not values:
                    msg = f"none of the fields {sorted(sub.fields.values())} is in the payload"
                    raise _Bad(msg)
            else:
                value = _lookup(doc, sub.value)
                if value is _MISSING:
                    msg = f"value field {sub.value!r} is missing"
                    raise _Bad(msg)
                values = {text(sub.metric, "metric"): value}
        ts = _event_time(doc, sub) if sub.time else received_ms
        unit = text(sub.unit)
        if sub.unit_field:
            given = _lookup(doc, sub.unit_field)
            if isinstance(given, str) and given:
                unit = given
        message_id = ""
        if sub.id_field:
            given = _lookup(doc, sub.id_field)
            if given is _MISSING or isinstance(given, dict | list) or given in (None, ""):
                msg = f"id field {sub.id_field!r} is missing or not a plain value"
                raise _Bad(msg)
            message_id = json.dumps(given)
        digest = "" if sub.time or message_id else hashlib.blake2b(payload, digest_size=8).hexdigest()
        for metric, raw_value in values.items():
            try:
                value = _value(raw_value, metric)
                if message_id:
                    event_id = make_event_id(sub.source, device_id, metric, "id", message_id)
                elif sub.time:
                    event_id = make_event_id(sub.source, device_id, ts, metric)
                else:
                    event_id = make_event_id(sub.source, device_id, ts, metric, "received", digest)
                out.readings.append(Reading(
                    source=sub.source, device_id=device_id, metric=metric, value=value, unit=unit, ts=ts,
                    event_id=event_id, site=text(sub.site, "site"), region=text(sub.region, "region")))
            except (_Bad, RecordError) as exc:
                # One bad field of several: the others still become readings; the whole payload is kept.
                out.rejected.append(Rejected(payload, f"{sub.topic}: metric {metric!r}: {exc}",
                                             f"{self.origin_prefix}{topic}"))


class _Bad(ValueError):
    """The message cannot become a reading; the text says why."""


def _number_text(payload: bytes) -> float:
    try:
        return float(payload.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        msg = f"payload is not a number: {exc}"
        raise _Bad(msg) from exc


def _value(raw: Any, metric: str) -> float:
    if isinstance(raw, bool) or raw is None:
        msg = f"value {raw!r} is not a number"
        raise _Bad(msg)
    if isinstance(raw, str):
        try:
            raw = float(raw.strip())
        except ValueError as exc:
            msg = f"value {raw!r} is not a number"
            raise _Bad(msg) from exc
    if not isinstance(raw, int | float):
        msg = f"value {raw!r} is not a number"
        raise _Bad(msg)
    value = float(raw)
    if not math.isfinite(value):
        msg = f"value {raw!r} is not finite"
        raise _Bad(msg)
    return value


def _event_time(doc: Mapping[str, Any], sub: Subscription) -> int:
    raw = _lookup(doc, sub.time)
    if raw is _MISSING or raw is None or raw == "":
        msg = f"time field {sub.time!r} is missing"
        raise _Bad(msg)
    if sub.time_format == "iso8601":
        if not isinstance(raw, str):
            msg = f"time {raw!r} is not an ISO-8601 string"
            raise _Bad(msg)
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError as exc:
            msg = f"time {raw!r} is not ISO-8601: {exc}"
            raise _Bad(msg) from exc
        if moment.tzinfo is None:
            msg = f"time {raw!r} has no time zone (give Z or an offset)"
            raise _Bad(msg)
        return round(moment.timestamp() * 1000)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        msg = f"time {raw!r} is not a number ({sub.time_format})"
        raise _Bad(msg)
    return round(raw * 1000) if sub.time_format == "epoch_s" else round(raw)
