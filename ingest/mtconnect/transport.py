"""HTTP transport to an MTConnect agent: capped GETs and a multipart stream reader.

Only moves bytes; ``documents`` parses them. Uses ``http.client`` directly so a stream can be read
as bytes arrive (``read1``) with a socket timeout that detects a silent agent, and so another
thread can cut a connection to stop promptly.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections.abc import Generator
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from ingest.mtconnect.multipart import MultipartReader, boundary_from_content_type


class BodyTooLarge(ValueError):
    """The agent sent more than the configured cap; the rest was not read."""

    def __init__(self, cap: int, head: bytes, size: int | None = None) -> None:
        super().__init__(f"response body is larger than the {cap}-byte cap (refused without reading the rest)")
        self.head = head
        # The body's length when the agent said it (Content-Length), else the least it can be.
        self.size = size if size is not None else cap + 1


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes


class AgentClient:
    """GET requests against one agent base URL (which may include a device path)."""

    def __init__(self, base_url: str, timeout_s: float, max_body_bytes: int) -> None:
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._lock = threading.Lock()
        self._active: http.client.HTTPConnection | None = None

    def url(self, endpoint: str, **params: int | str | None) -> str:
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return f"{self._prefix}/{endpoint}" + (f"?{query}" if query else "")

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=timeout)
        with self._lock:
            self._active = conn
        return conn

    def get(self, endpoint: str, **params: int | str | None) -> Response:
        """One capped GET; the body is read up to ``max_body_bytes`` and refused beyond it."""
        conn = self._connect(self.timeout_s)
        try:
            conn.request("GET", self.url(endpoint, **params), headers={"Accept": "application/xml, text/xml"})
            resp = conn.getresponse()
            length = resp.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                raise BodyTooLarge(self.max_body_bytes, resp.read(4096), int(length))
            body = resp.read(self.max_body_bytes + 1)
            if len(body) > self.max_body_bytes:
                raise BodyTooLarge(self.max_body_bytes, body[:4096])
            if length is not None and length.isdigit() and len(body) < int(length):
                # The connection was cut (or abort() was called): a short body is not a document.
                raise http.client.IncompleteRead(body, int(length) - len(body))
            return Response(resp.status, resp.getheader("Content-Type", ""), body)
        finally:
            conn.close()

    def stream(
        self, endpoint: str, silence_timeout_s: float, **params: int | str | None
    ) -> Generator[Response, None, None]:
        """Yield each part of a multipart ``/sample?interval=`` stream as it completes.

        A plain (non-multipart) answer, e.g. an MTConnectError, is yielded once. A silent socket
        raises ``TimeoutError``; broken framing raises ``MultipartError``; end of stream just ends.
        """
        conn = self._connect(silence_timeout_s)
        try:
            conn.request("GET", self.url(endpoint, **params), headers={"Accept": "multipart/x-mixed-replace"})
            resp = conn.getresponse()
            ctype = resp.getheader("Content-Type", "")
            if not ctype.lower().startswith("multipart/"):
                body = resp.read(self.max_body_bytes + 1)
                if len(body) > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes, body[:4096])
                yield Response(resp.status, ctype, body)
                return
            reader = MultipartReader(boundary_from_content_type(ctype), self.max_body_bytes)
            while True:
                data = resp.read1(65536)
                if not data:
                    return
                reader.feed(data)
                for part in reader.parts():
                    yield Response(resp.status, "text/xml", part)
        finally:
            conn.close()
            with self._lock:
                self._active = None

    def abort(self) -> None:
        """Cut the connection in use (from another thread) so a blocked read returns at once."""
        with self._lock:
            conn = self._active
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(2)
