"""The agent over HTTP: ``/probe``, ``/current``, ``/sample?from=&count=`` and streaming
``/sample?interval=`` (multipart/x-mixed-replace with heartbeats), MTConnectError documents for bad
requests, and the CLI's serve-until-stopped loop."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from simulators.mtconnect_agent.rendering import STREAM_BOUNDARY

if TYPE_CHECKING:
    from simulators.mtconnect_agent.agent import MTConnectAgentSimulator

log = logging.getLogger(__name__)


class AgentHandler(BaseHTTPRequestHandler):
    simulator: MTConnectAgentSimulator
    server_version = "machinewatch-mtconnect-sim/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, ctype: str = "text/xml") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        sim = self.simulator
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        sim.requests.append(self.path)
        injected = sim.take_injection(path)
        if injected is not None:
            self._send(200, injected[0], injected[1])
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if path.endswith("/probe"):
            self._send(200, sim.probe_xml())
        elif path.endswith("/current"):
            self._send(200, sim.current_xml())
        elif path.endswith("/sample"):
            self._sample(query)
        else:
            self._send(404, sim.error_xml("UNSUPPORTED", f"the request {url.path!r} is not supported"))

    def _sample(self, query: dict[str, str]) -> None:
        sim = self.simulator
        try:
            start = int(query["from"]) if "from" in query else None
            count = int(query.get("count", "100"))
            interval = int(query["interval"]) if "interval" in query else None
            heartbeat = int(query.get("heartbeat", "10000"))
            if count < 1 or count > 10_000 or (interval is not None and interval < 0) or heartbeat < 10:
                raise ValueError
        except ValueError:
            self._send(400, sim.error_xml("INVALID_REQUEST", f"bad query parameters {query}"))
            return
        if interval is None:
            body, _, ok = sim.sample_xml(start, count)
            self._send(200 if ok else 404, body)
            return
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={STREAM_BOUNDARY}")
        self.end_headers()
        try:
            for chunk in sim.stream(start, count, interval, heartbeat):
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return


# The name it had when the simulator was one module.
_AgentHandler = AgentHandler


class AgentServer:
    """A threading HTTP server answering for one simulator, in a background thread."""

    def __init__(self, sim: MTConnectAgentSimulator, host: str, port: int) -> None:
        class Handler(AgentHandler):
            simulator = sim

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            msg = f"the MTConnect agent simulator cannot listen on {host}:{port}: {exc.strerror or exc}"
            raise OSError(exc.errno, msg) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="mtconnect-sim", daemon=True)
        self._thread.start()
        log.info("MTConnect agent simulator listening on %s", self.url)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{host_text}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_forever(sim: MTConnectAgentSimulator, host: str, port: int, interval_s: float,
                  script: list[tuple[float, str, str | int]], duration_s: float | None) -> None:
    """Serve ``sim`` over HTTP, step it every ``interval_s`` and play ``script`` until ``duration_s`` or Ctrl-C."""
    url = sim.serve(host, port)
    print(f"MTConnect agent simulator: {url}/probe  {url}/current  {url}/sample?from=1&count=100  "
          f"(stream: {url}/sample?interval=1000)", flush=True)
    stop = threading.Event()
    sim.start_ticking(interval_s)
    player = threading.Thread(target=sim.run_script, args=(script, stop), daemon=True)
    player.start()
    try:
        stop.wait(duration_s)
    finally:
        stop.set()
        sim.close()
