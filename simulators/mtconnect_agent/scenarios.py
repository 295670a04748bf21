"""What can happen to the simulated shop floor, as methods tests and the CLI script: a machine goes away or
comes back, overheats, is emergency-stopped or faults; the agent's buffer overruns, it falls silent or serves
broken documents. ``KIND@SECONDS[:DEVICE]`` scripts (``parse_scenario``) play them on a clock."""

from __future__ import annotations

import logging
import re
import threading
import time

from simulators.mtconnect_agent.model import DeviceState, all_unavailable

log = logging.getLogger(__name__)

# CLI scenario names -> simulator methods taking a device.
SCENARIOS = {
    "unavailable": "machine_unavailable",
    "available": "machine_available",
    "overheat": "overheat",
    "estop": "emergency_stop",
    "release-estop": "release_emergency_stop",
    "fault": "fault",
}


def parse_scenario(text: str) -> tuple[float, str, str | int]:
    """``KIND@SECONDS[:DEVICE]`` (device = index or name, default 0), e.g. ``overheat@30:1``, ``restart@60``."""
    match = re.fullmatch(r"([a-z-]+)@(\d+(?:\.\d+)?)(?::(\S+))?", text.strip())
    kinds = (*SCENARIOS, "restart", "overrun")
    if not match or match[1] not in kinds:
        msg = f"scenario {text!r} is not KIND@SECONDS[:DEVICE] with KIND one of {', '.join(kinds)}"
        raise ValueError(msg)
    device: str | int = int(match[3]) if match[3] and match[3].isdigit() else (match[3] or 0)
    return float(match[2]), match[1], device


class Scenarios:
    """The scenario methods of ``MTConnectAgentSimulator`` (simulators/mtconnect_agent/agent.py), which
    provides the state and the primitives declared here; each change happens under the agent's lock, one step
    of the clock after the last, and wakes open streams."""

    _cond: threading.Condition
    _clock_ms: int
    _silent_until: float
    _injected: list[tuple[str, bytes, str]]
    _stream_injections: list[bytes]
    step_ms: int
    buffer_size: int

    def device(self, name_or_index: str | int) -> DeviceState:
        raise NotImplementedError

    def _emit(self, dev: DeviceState, role: str, value: str, level: str = "") -> None:
        raise NotImplementedError

    def step(self, rounds: int = 1) -> int:
        raise NotImplementedError

    def restart(self) -> int:
        raise NotImplementedError

    @property
    def next_sequence(self) -> int:
        raise NotImplementedError

    def machine_unavailable(self, device: str | int) -> None:
        """The machine disconnects: AVAILABILITY and every value become UNAVAILABLE; steps skip it."""
        with self._cond:
            dev = self.device(device)
            self._clock_ms += self.step_ms
            dev.available = False
            self._emit(dev, "avail", "UNAVAILABLE")
            all_unavailable(dev, self._emit, skip="avail")
            self._cond.notify_all()

    def machine_available(self, device: str | int) -> None:
        with self._cond:
            dev = self.device(device)
            self._clock_ms += self.step_ms
            dev.available = True
            dev.temp_level = "NORMAL"
            self._emit(dev, "avail", "AVAILABLE")
            self._emit(dev, "system", "", "NORMAL")
            self._emit(dev, "temp_cond", "", "NORMAL")
            self._emit(dev, "execution", "READY")
            self._cond.notify_all()

    def overheat(self, device: str | int, rounds: int = 20, extra_c: float = 60.0) -> None:
        """The spindle heats by ``extra_c`` for the next ``rounds`` steps (WARNING, then FAULT condition)."""
        with self._cond:
            dev = self.device(device)
            dev.overheat_rounds, dev.overheat_extra = rounds, extra_c

    def emergency_stop(self, device: str | int) -> None:
        with self._cond:
            dev = self.device(device)
            self._clock_ms += self.step_ms
            dev.estop = True
            self._emit(dev, "estop", "TRIGGERED")
            self._emit(dev, "execution", "STOPPED")
            self._emit(dev, "system", "EMERGENCY STOP PUSHED", "FAULT")
            self._cond.notify_all()

    def release_emergency_stop(self, device: str | int) -> None:
        with self._cond:
            dev = self.device(device)
            self._clock_ms += self.step_ms
            dev.estop = False
            self._emit(dev, "estop", "ARMED")
            self._emit(dev, "system", "", "NORMAL")
            self._emit(dev, "execution", "READY")
            self._cond.notify_all()

    def fault(self, device: str | int, text: str = "SERVO ALARM", native_level: str = "FAULT") -> None:
        with self._cond:
            dev = self.device(device)
            self._clock_ms += self.step_ms
            self._emit(dev, "system", text, native_level)
            self._cond.notify_all()

    def overrun(self, extra: int = 10) -> int:
        """Produce more than the buffer holds at once, so a reader behind loses at least ``extra``."""
        target = self.next_sequence + self.buffer_size + extra
        produced = 0
        while self.next_sequence < target:
            produced += self.step(1)
        return produced

    def silence(self, seconds: float) -> None:
        """Open streams stop sending anything (data and heartbeats) for ``seconds``."""
        with self._cond:
            self._silent_until = time.monotonic() + seconds

    def inject(self, body: bytes, path: str = "/sample", content_type: str = "text/xml") -> None:
        """Serve ``body`` once, instead of the real answer, to the next request for ``path``."""
        with self._cond:
            self._injected.append((path, body, content_type))

    def inject_stream_bytes(self, raw: bytes) -> None:
        """Write ``raw`` into the next streaming response as it is (e.g. broken multipart framing)."""
        with self._cond:
            self._stream_injections.append(raw)
            self._cond.notify_all()

    def run_script(self, script: list[tuple[float, str, str | int]], stop: threading.Event) -> None:
        """Apply (seconds after start, scenario, device) steps in time order; used by the CLI."""
        begin = time.monotonic()
        for at, kind, device in sorted(script, key=lambda s: s[0]):
            if stop.wait(max(0.0, begin + at - time.monotonic())):
                return
            log.info("scenario %s%s", kind, "" if kind in ("restart", "overrun") else f" on device {device}")
            if kind == "restart":
                self.restart()
            elif kind == "overrun":
                self.overrun()
            elif kind in SCENARIOS:
                getattr(self, SCENARIOS[kind])(device)
            else:
                msg = f"unknown scenario {kind!r}"
                raise ValueError(msg)
