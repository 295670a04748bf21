"""The multipart stream reader: parts out of arbitrarily split bytes, broken framing refused."""

from __future__ import annotations

import pytest

from ingest.mtconnect.multipart import MultipartError, MultipartReader, boundary_from_content_type


def part(body: bytes, boundary: str = "B0UND", length: bool = True) -> bytes:
    head = f"--{boundary}\r\nContent-type: text/xml\r\n"
    if length:
        head += f"Content-length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body + b"\r\n"


BODIES = [b"<a>1</a>", b"<b>" + b"x" * 300 + b"</b>", b"", b"<c>--B0UND inside the body</c>"]


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 10_000])
def test_parts_survive_any_split(chunk: int) -> None:
    stream = b"".join(part(b) for b in BODIES)
    reader = MultipartReader("B0UND", 1024)
    got: list[bytes] = []
    for i in range(0, len(stream), chunk):
        reader.feed(stream[i:i + chunk])
        got.extend(reader.parts())
    assert got == BODIES


def test_part_without_content_length_ends_at_next_boundary() -> None:
    reader = MultipartReader("B0UND", 1024)
    reader.feed(part(b"<x/>", length=False) + part(b"<y/>"))
    assert list(reader.parts()) == [b"<x/>", b"<y/>"]


@pytest.mark.parametrize(("stream", "reason"), [
    (part(b"<a/>", boundary="OTHER"), "expected boundary"),
    (b"garbage before any boundary\r\n", "expected boundary"),
    (part(b"<a/>") + b"<stray/>" + part(b"<b/>"), "expected boundary"),
    (b"--B0UND\r\nContent-length: 99999\r\n\r\n", "over the 1024-byte cap"),
    (b"--B0UND\r\nContent-length: twelve\r\n\r\n", "not a number"),
    (b"--B0UND\r\n" + b"X-Header: y\r\n" * 1000, "header block is longer"),
    (b"--B0UND\r\n\r\n" + b"x" * 2000, "grew past"),
])
def test_broken_framing_is_refused(stream: bytes, reason: str) -> None:
    reader = MultipartReader("B0UND", 1024)
    reader.feed(stream)
    with pytest.raises(MultipartError, match=reason):
        list(reader.parts())


def test_boundary_from_content_type() -> None:
    assert boundary_from_content_type("multipart/x-mixed-replace;boundary=abc123") == "abc123"
    assert boundary_from_content_type('multipart/x-mixed-replace; boundary="q q"'.replace(" q", "q")) == "qq"
    with pytest.raises(MultipartError, match="not multipart"):
        boundary_from_content_type("text/xml")
    with pytest.raises(MultipartError, match="no boundary"):
        boundary_from_content_type("multipart/x-mixed-replace")
