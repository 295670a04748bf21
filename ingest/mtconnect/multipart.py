"""Incremental reader for an MTConnect ``multipart/x-mixed-replace`` stream (``/sample?interval=``).

Bytes go in as they arrive, whole parts come out. Framing that is broken (a missing or foreign
boundary, a header block that never ends, a part over the size cap) raises ``MultipartError``;
the caller treats that as recoverable: drop the connection and resume from the last sequence
it persisted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_MAX_HEADER_BYTES = 8192


class MultipartError(ValueError):
    """The stream's multipart framing is broken; the message says where."""


class PartTooLarge(MultipartError):
    """A part is bigger than the cap; it is refused without being read (``head``: what had arrived of it,
    ``size``: its declared length, or the least it can be)."""

    def __init__(self, msg: str, head: bytes = b"", size: int | None = None) -> None:
        super().__init__(msg)
        self.head = head
        self.size = size


def boundary_from_content_type(content_type: str) -> str:
    """The boundary parameter of a multipart Content-Type header."""
    if not content_type.lower().startswith("multipart/"):
        msg = f"Content-Type {content_type!r} is not multipart"
        raise MultipartError(msg)
    match = re.search(r'boundary\s*=\s*"?([^";,\s]+)"?', content_type, re.IGNORECASE)
    if not match:
        msg = f"Content-Type {content_type!r} names no boundary"
        raise MultipartError(msg)
    return match[1]


class MultipartReader:
    """Feed bytes with ``feed``; iterate complete part bodies with ``parts``."""

    def __init__(self, boundary: str, max_part_bytes: int) -> None:
        self._delim = b"--" + boundary.encode()
        self._max = max_part_bytes
        self._buf = bytearray()
        self._pending_length: int | None = None
        self._header_done = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    def parts(self) -> Iterator[bytes]:
        """Yield every part that is complete in the buffer so far."""
        while True:
            body = self._next_part()
            if body is None:
                return
            yield body

    def _next_part(self) -> bytes | None:
        if not self._header_done and not self._read_header():
            return None
        length = self._pending_length
        if length is None:
            # No Content-length (some agents): the part ends at the next boundary.
            end = self._buf.find(b"\r\n" + self._delim)
            if end < 0:
                if len(self._buf) > self._max:
                    msg = f"part without Content-length grew past the {self._max}-byte cap"
                    raise PartTooLarge(msg, bytes(self._buf[:4096]), len(self._buf))
                return None
            body = bytes(self._buf[:end])
            del self._buf[:end]
        else:
            if len(self._buf) < length:
                return None
            body = bytes(self._buf[:length])
            del self._buf[:length]
        self._header_done = False
        self._pending_length = None
        return body

    def _read_header(self) -> bool:
        # Skip the CRLFs that separate a body from the next boundary line.
        start = 0
        while self._buf[start:start + 2] == b"\r\n" or self._buf[start:start + 1] == b"\n":
            start += 2 if self._buf[start:start + 2] == b"\r\n" else 1
        if start:
            del self._buf[:start]
        if self._buf == b"\r":
            return False  # half of a CRLF; the rest is still on its way
        if len(self._buf) < len(self._delim):
            if self._buf and not self._delim.startswith(bytes(self._buf)):
                self._fail_boundary()
            return False
        if not self._buf.startswith(self._delim):
            self._fail_boundary()
        end = self._buf.find(b"\r\n\r\n")
        sep = 4
        if end < 0:
            end, sep = self._buf.find(b"\n\n"), 2
        if end < 0:
            if len(self._buf) > _MAX_HEADER_BYTES:
                msg = f"part header block is longer than {_MAX_HEADER_BYTES} bytes"
                raise MultipartError(msg)
            return False
        block = bytes(self._buf[len(self._delim):end]).decode("latin-1")
        del self._buf[:end + sep]
        if block.startswith("--"):
            msg = "stream ended with the closing boundary"
            raise MultipartError(msg)
        length = None
        for line in block.splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                try:
                    length = int(value.strip())
                except ValueError as exc:
                    msg = f"part has a Content-length that is not a number: {value.strip()!r}"
                    raise MultipartError(msg) from exc
                if length < 0 or length > self._max:
                    msg = f"part of {length} bytes is over the {self._max}-byte cap"
                    raise PartTooLarge(msg, bytes(self._buf[:4096]), max(length, len(self._buf)))
        self._pending_length = length
        self._header_done = True
        return True

    def _fail_boundary(self) -> None:
        seen = bytes(self._buf[:60])
        msg = f"expected boundary {self._delim.decode(errors='replace')!r}, got {seen!r}"
        raise MultipartError(msg)
