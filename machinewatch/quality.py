"""Dead letters and data-quality notes: one envelope for every stage, carrying the exact raw bytes.

A **dead letter** (topic ``mw.deadletter``) is input whose values did not become records: the reason
and the bytes, so nothing is lost for good. A **data-quality note** (topic ``mw.quality``) is input
whose values *were* published but whose envelope was repaired or is suspect — a header cut short, a
time zone taken from the config instead of the file, a counter name with no known unit, a sequence
number repeated by the agent. Both carry the raw bytes the same way:

* ``raw`` is the text when the bytes are valid UTF-8 (``raw_encoding = "utf-8"``), else their base64
  (``raw_encoding = "base64"``) — never a lossy decode;
* ``size`` is the length of the original bytes, ``truncated`` says whether ``raw`` holds fewer than
  that (at most ``MAX_RAW_BYTES``; a cut never splits a UTF-8 character of valid text).

``raw_bytes(doc)`` gives the bytes back exactly; tests and consumers use it instead of reading ``raw``.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any

# Bytes kept per letter: base64 of this (342 KiB) plus the envelope stays below Kafka's default 1 MiB
# message limit; the whole file or document is still kept by the collector where it has one (error/).
MAX_RAW_BYTES = 256 * 1024

KIND_DEAD_LETTER = "dead_letter"


def raw_fields(raw: bytes | str, limit: int = MAX_RAW_BYTES, size: int | None = None) -> dict[str, Any]:
    """``raw``, ``raw_encoding``, ``size`` and ``truncated`` for the given bytes (str is taken as UTF-8).

    ``size`` is the original's length when the caller holds only its head (e.g. a line too long to keep).
    """
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
    fields = _encoded(data, limit)
    if size is not None and size > fields["size"]:
        fields["size"], fields["truncated"] = size, True
    return fields


def _encoded(data: bytes, limit: int) -> dict[str, Any]:
    kept = data[:limit]
    try:
        text = kept.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Valid text cut inside a character: keep the whole characters before the cut, as text.
        if len(kept) < len(data) and exc.start >= len(kept) - 3 and _valid_utf8(kept[: exc.start]):
            kept = kept[: exc.start]
            text = kept.decode("utf-8")
        else:
            return {"raw": base64.b64encode(kept).decode("ascii"), "raw_encoding": "base64",
                    "size": len(data), "truncated": len(kept) < len(data)}
    return {"raw": text, "raw_encoding": "utf-8", "size": len(data), "truncated": len(kept) < len(data)}


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def raw_bytes(doc: dict[str, Any]) -> bytes:
    """The exact bytes a dead letter or note holds (a prefix of the original when ``truncated``)."""
    raw = doc.get("raw") or ""
    if doc.get("raw_encoding") == "base64":
        return base64.b64decode(raw)
    return str(raw).encode("utf-8", "surrogateescape")


def letter(source: str, raw: bytes | str, reason: str, origin: str = "", *, kind: str = KIND_DEAD_LETTER,
           note_id: str = "", size: int | None = None, received_ms: int | None = None) -> dict[str, Any]:
    """The JSON document of a dead letter (``kind="dead_letter"``) or a data-quality note (any other kind).

    ``note_id`` is a stable id for notes, so a collector that repeats work after a crash repeats the
    same id and consumers can count each note once.
    """
    doc: dict[str, Any] = {"source": source, "kind": kind, "origin": origin, "reason": reason}
    if note_id:
        doc["note_id"] = note_id
    doc.update(raw_fields(raw, size=size))
    doc["received_ms"] = int(time.time() * 1000) if received_ms is None else received_ms
    return doc


# Tokens holding a digit (counts, times, ids, offsets) and quoted values: what differs between two letters
# of the same kind. Taken out, the reasons group into few classes (metric labels, dead-letter summaries).
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_WITH_DIGIT = re.compile(r"[\w.:+-]*\d[\w.+-]*")
REASON_CLASS_CHARS = 100


def reason_class(reason: str) -> str:
    """The kind of a dead letter's reason: its first line with quoted values as '…', tokens holding digits
    as N, at most ``REASON_CLASS_CHARS`` characters — ``"value 12.5 of 'temp' out of range"`` and
    ``"value 99 of 'rpm' out of range"`` are both ``"value N of '…' out of range"``."""
    first = reason.strip().splitlines()[0] if reason.strip() else ""
    text = _WITH_DIGIT.sub("N", _QUOTED.sub("'…'", first))
    text = " ".join(text.split())
    return (text[: REASON_CLASS_CHARS - 1] + "…" if len(text) > REASON_CLASS_CHARS else text) or "(no reason)"
