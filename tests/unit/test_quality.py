"""Dead letters and notes keep the exact bytes, say whether they were cut and how big the original was."""

from __future__ import annotations

import json

import pytest

from machinewatch import quality


@pytest.mark.parametrize("data", [
    b"plain ascii line",
    "Процесс(_Total)\\% загруженности процессора".encode(),
    "Процесс(_Total)\\байт в сек".encode("cp1251"),  # not UTF-8: base64
    "\ufeff(PDH-CSV 4.0)".encode("utf-16-le"),
    b"",
    bytes(range(256)),
])
def test_bytes_round_trip_exactly(data: bytes) -> None:
    doc = json.loads(json.dumps(quality.letter("perfmon", data, "why", "origin")))
    assert quality.raw_bytes(doc) == data
    assert doc["size"] == len(data) and doc["truncated"] is False
    assert doc["raw_encoding"] == ("utf-8" if _utf8(data) else "base64")


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_a_cut_is_flagged_with_the_original_size_and_keeps_a_prefix() -> None:
    data = ("ж" * 1000).encode()  # 2 bytes a character: a cut at an odd limit lands inside one
    doc = quality.raw_fields(data, limit=101)
    assert doc["truncated"] is True and doc["size"] == 2000
    assert doc["raw_encoding"] == "utf-8" and doc["raw"] == "ж" * 50
    binary = bytes(range(128, 256)) * 8
    doc = quality.raw_fields(binary, limit=100)
    assert doc["truncated"] is True and doc["size"] == 1024 and doc["raw_encoding"] == "base64"
    assert quality.raw_bytes(doc) == binary[:100]


def test_str_is_taken_as_utf8_and_notes_carry_their_kind_and_id() -> None:
    doc = quality.letter("mtconnect", "<Temperature/>", "repeated sequence", "agent", kind="duplicate",
                         note_id="n1", received_ms=5)
    assert doc == {"source": "mtconnect", "kind": "duplicate", "origin": "agent", "reason": "repeated sequence",
                   "note_id": "n1", "raw": "<Temperature/>", "raw_encoding": "utf-8", "size": 14,
                   "truncated": False, "received_ms": 5}
