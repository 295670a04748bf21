"""The canonical record: validation, serialisation and the Flink columns generated from it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from machinewatch.record import READING_FIELDS, Reading, RecordError, flink_columns, make_event_id, to_epoch_ms

TS = 1_795_000_000_000


def reading(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "source": "s", "device_id": "d1", "metric": "temperature", "value": 21.5, "unit": "°C",
        "ts": TS, "event_id": "e1", "region": "r", "site": "x",
    }
    base.update(overrides)
    return base


def test_json_round_trip_keeps_every_field() -> None:
    r = Reading.from_dict(reading(orig_value=70.7, orig_unit="°F"))
    back = Reading.from_json(r.to_json())
    assert back == r
    assert list(json.loads(r.to_json())) == [name for name, _, _ in READING_FIELDS]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"device_id": None}, "'device_id' is missing"),
        ({"value": float("nan")}, "'value' must be finite"),
        ({"value": float("inf")}, "'value' must be finite"),
        ({"value": True}, "'value' must be a number"),
        ({"value": "21.5"}, "'value' must be a number"),
        ({"ts": 1.5}, "'ts' must be an integer"),
        ({"ts": 1_795_000_000}, "outside 2000-01-01..2100-01-01"),
        ({"ts": 9_000_000_000_000}, "outside 2000-01-01..2100-01-01"),
        ({"metric": ""}, "'metric' is empty"),
        ({"device_id": "x" * 300}, "longer than 256"),
    ],
)
def test_invalid_readings_name_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(RecordError, match=message):
        Reading.from_dict(reading(**change))


def test_non_json_and_non_object_are_record_errors() -> None:
    with pytest.raises(RecordError, match="not JSON"):
        Reading.from_json(b"{broken")
    with pytest.raises(RecordError, match="expected a JSON object"):
        Reading.from_json(b"[1, 2]")


def test_event_id_is_stable_and_distinguishes_parts() -> None:
    # Pinned: ids already in Kafka and InfluxDB must come out the same from every later version, or a
    # replay would add duplicates. blake2b, 16 bytes, of the parts joined by U+001F (unit separator).
    assert make_event_id("f.csv", 7) == "4022138ed7a71b7834d579e0ac94a147"
    assert make_event_id("f.csv", "7") == make_event_id("f.csv", 7)  # parts are taken as text
    assert make_event_id("f.csv", 7) != make_event_id("f.csv", 8)
    # The separator keeps ("a", "bc") apart from ("ab", "c").
    assert make_event_id("a", "bc") != make_event_id("ab", "c")


def test_naive_datetimes_are_refused() -> None:
    assert to_epoch_ms(datetime(2026, 1, 1, tzinfo=UTC)) == 1_767_225_600_000
    with pytest.raises(RecordError, match="no time zone"):
        to_epoch_ms(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_flink_columns_come_from_the_record_definition() -> None:
    cols = flink_columns()
    for name, _, sql in READING_FIELDS:
        assert f"`{name}` {sql}" in cols
    assert cols.count(",") == len(READING_FIELDS) - 1


def _dumps(reading: Reading) -> bytes:
    # The serialisation to_json had before its hand-written fast path; the bytes on the topic must not change.
    return json.dumps(reading.to_dict(), separators=(",", ":"), allow_nan=False).encode()


def test_to_json_is_byte_identical_to_json_dumps_on_a_spread_of_readings() -> None:
    import random

    import numpy as np

    rng = random.Random(8)
    texts = ["", "plain", "°C", "m³/h", 'quote " and \\ backslash', "tab\tnew\nline\r\x00\x1f\x7f", "emoji 🔥 𝄞",
             "ünïcödé ✓", "</script>", "\u2028\u2029", "a" * 250]
    numbers: list[Any] = [0.0, -0.0, 1.0, -1.5, 0.1, 1 / 3, 1e16, 1e-7, 123456789.123, 5e-324,
                            1.7976931348623157e308, 0, 7, -42, 2**53 + 1, 10**30, np.float64(21.5), np.float64(1e-9)]
    base = dict(source="sim", device_id="dev-1", metric="temperature", value=21.5, unit="°C",
                ts=1_704_067_200_000, event_id=make_event_id("x", 1))
    cases = [Reading(**base)]  # type: ignore[arg-type]
    cases.append(Reading.from_dict({**base, "region": None, "site": None}))
    for _ in range(500):
        fields: dict[str, object] = {**base}
        for name in ("source", "device_id", "metric", "event_id"):
            fields[name] = rng.choice([t for t in texts if t]) + str(rng.randrange(1000))
        for name in ("unit", "region", "site"):
            fields[name] = rng.choice(texts)
        fields["value"] = rng.choice([*numbers, rng.uniform(-1e6, 1e6), rng.gauss(0, 1e-3)])
        fields["orig_value"] = rng.choice([None, *numbers])
        fields["orig_unit"] = rng.choice([None, *texts])
        fields["ts"] = rng.randrange(946_684_800_000, 4_102_444_800_000)
        cases.append(Reading(**fields))  # type: ignore[arg-type]
    for reading in cases:
        assert reading.to_json() == _dumps(reading), reading
        assert Reading.from_json(reading.to_json()) == reading


class _Text(str):
    """A str subclass: the fast check leaves it to validate()."""


_VARIANTS: list[dict[str, object]] = [
    {}, {"value": 3}, {"value": -0.0}, {"value": 1e308}, {"value": float("nan")}, {"value": float("-inf")},
    {"value": True}, {"value": "1"}, {"value": None}, {"orig_value": 70}, {"orig_value": float("nan")},
    {"orig_value": False}, {"orig_unit": 5}, {"orig_unit": "°F"}, {"region": None}, {"site": None},
    {"region": 3}, {"site": "x" * 256}, {"site": "x" * 257}, {"unit": ""}, {"unit": None}, {"source": ""},
    {"event_id": ""}, {"metric": _Text("m")}, {"device_id": _Text("")}, {"device_id": 7}, {"ts": TS + 0.0},
    {"ts": True}, {"ts": 946_684_800_000}, {"ts": 946_684_799_999}, {"ts": 4_102_444_800_000},
    {"ts": 4_102_444_799_999}, {"event_id": "e" * 257}, {"unit": "u" * 257},
]


@pytest.mark.parametrize("change", _VARIANTS, ids=repr)
def test_the_fast_construction_check_never_accepts_what_validate_refuses(change: dict[str, object]) -> None:
    # Reading() skips validate() when _plainly_valid says yes: that must never let through what validate() refuses,
    # and the constructor must then refuse exactly what validate() refuses.
    from machinewatch import record

    doc = reading(**change)
    try:
        record.validate(dict(doc))
        valid = True
    except RecordError:
        valid = False
    fields = {name: doc.get(name) for name, _, _ in READING_FIELDS}
    if valid:
        built = Reading(**fields)  # type: ignore[arg-type]
        assert built.to_dict() == fields
    else:
        with pytest.raises(RecordError):
            Reading(**fields)  # type: ignore[arg-type]
        probe = object.__new__(Reading)
        for name, value in fields.items():
            object.__setattr__(probe, name, value)
        assert not record._plainly_valid(probe)
