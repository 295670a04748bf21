"""An HTTP stand-in for an MTConnect agent that answers with recorded documents (tests, debugging).

Serves files byte for byte, chosen by request: a route is ``"/probe"``, ``"/current"``,
``"/LATHE1/sample?from=132011"`` (path and ``from``), ``"/GRIND3/sample"`` (that path without ``from``)
or ``"*/sample"`` (any other request whose path ends in ``/sample``). Unrouted requests get an
MTConnectError ``UNSUPPORTED`` (404). Every request is recorded in ``requests``; routes may be changed
while serving. Loopback only by default.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?>\n<MTConnectError xmlns="urn:mtconnect.org:MTConnectError:1.3">'
          b'<Header creationTime="2024-01-01T00:00:00Z" instanceId="0" version="1.3.0" bufferSize="0"/>'
          b'<Errors><Error errorCode="UNSUPPORTED">no recorded document for this request</Error></Errors>'
          b"</MTConnectError>")


class RecordedAgent:
    """Answer MTConnect requests with the files ``routes`` names (relative to ``directory``)."""

    def __init__(self, directory: Path, routes: dict[str, str]) -> None:
        self.directory = directory
        self._routes = dict(routes)
        self._lock = threading.Lock()
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, key: str, filename: str) -> None:
        with self._lock:
            self._routes[key] = filename

    def answer(self, target: str) -> tuple[int, bytes]:
        """(status, body) for a request target such as ``/MILL2/sample?from=10&count=1000``."""
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        frm = parse_qs(url.query).get("from")
        candidates = [f"{path}?from={frm[-1]}" if frm else path, "*/" + path.rsplit("/", 1)[-1]]
        with self._lock:
            self.requests.append(target)
            name = next((self._routes[c] for c in candidates if c in self._routes), None)
        if name is None:
            return 404, _ERROR
        return 200, (self.directory / name).read_bytes()

    @property
    def url(self) -> str:
        if self._server is None:
            msg = "the recorded agent is not serving; call serve() first"
            raise RuntimeError(msg)
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start answering in a background thread; returns the base URL."""
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                status, body = agent.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
                log.debug("%s " + format, self.address_string(), *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="mtconnect-recorded", daemon=True)
        self._thread.start()
        log.info("recorded MTConnect agent serving %s on %s", self.directory, self.url)
        return self.url

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> RecordedAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
