"""The Streamlit app on a free port and a headless Chromium driven over the DevTools protocol.

Shared by the dashboard integration test and the first-render benchmark (bench/dashboard_render.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from machinewatch.config import Settings

REPO = Path(__file__).resolve().parents[2]
# Flags that keep Chromium off the network it would otherwise call home to, and runnable as root in a container.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    msg = f"{url} did not answer within {timeout:.0f}s"
    raise RuntimeError(msg)


@contextlib.contextmanager
def serve(argv: list[str], env: dict[str, str], port: int, timeout: float = 60) -> Iterator[str]:
    """Run ``argv`` (a Streamlit server on ``port``) from the repository; yields its base URL once it is
    healthy and stops it on exit. Its output is kept in a temporary file, whose end a start failure quotes."""
    # a file, not a pipe: nobody reads Streamlit's output while it runs, and a full pipe would block it
    log = tempfile.NamedTemporaryFile(prefix="streamlit-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - ours
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/_stcore/health", timeout)
        except RuntimeError as exc:
            tail = Path(log.name).read_text(errors="replace")[-2000:]
            msg = f"{exc}; its output ({log.name}) ends: {tail!r}"
            raise RuntimeError(msg) from exc
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@contextlib.contextmanager
def dashboard(settings: Settings, timeout: float = 60) -> Iterator[str]:
    """``machinewatch dashboard`` on a free port for these settings; yields its base URL and stops it on exit."""
    port = free_port()
    env = {**os.environ, **settings.to_env(), "MW_INFLUX_READ_TOKEN": settings.read_token()}
    # our own CLI with the current interpreter
    with serve([sys.executable, "-m", "machinewatch.cli", "dashboard", "--port", str(port)], env, port,
               timeout) as url:
        yield url


class Chromium:
    """Headless Debian chromium driven over the DevTools protocol (Streamlit renders client-side over a
    websocket, which --dump-dom's virtual time does not wait for)."""

    def __init__(self, profile: str, timeout: float = 30, width: int = 1400, height: int = 2000) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            msg = "Debian's chromium is not installed (./run installs it; apt-get install chromium)"
            raise RuntimeError(msg)
        self.proc = subprocess.Popen(  # noqa: S603 - the system's chromium, fixed flags
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.next_id = 0
        deadline = time.monotonic() + timeout
        port = None
        assert self.proc.stderr is not None
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = int(found[1]) if found else None
        if port is None:
            self.close()
            msg = "chromium did not open its DevTools port"
            raise RuntimeError(msg)
        # keep draining its log: a full stderr pipe would stall the browser in a long session
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        pages = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
        ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        from websockets.sync.client import connect  # streamlit's own dependency

        self.ws = connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=10)
        # Page events on, and the viewport the window size promised (headless ignores --window-size for it).
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    err = f"{method}: {msg['error']}"
                    raise RuntimeError(err)
                return dict(msg.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        if hasattr(self, "ws"):
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
