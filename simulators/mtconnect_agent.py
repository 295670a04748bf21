"""An MTConnect agent simulator: CNC devices shaped like the NIST SMS test bed's, served over HTTP.

Serves ``/probe``, ``/current``, ``/sample?from=&count=`` and streaming ``/sample?interval=``
(multipart/x-mixed-replace with heartbeats), MTConnectError documents (OUT_OF_RANGE,
INVALID_REQUEST, UNSUPPORTED), from a fixed-size ring buffer with first/next/lastSequence. A
restart starts a new ``instanceId`` at sequence 1. Scenarios are methods (machine unavailable,
overheat, emergency stop, fault, buffer overrun, agent restart, silence, injected bad documents)
so tests can script them; ``produced`` holds every observation ever made, the ground truth a
connector's output is checked against. Deterministic for a seed (timestamps follow ``start``).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape, quoteattr

log = logging.getLogger(__name__)

SCHEMA_NAMESPACES = {
    "streams": "urn:mtconnect.org:MTConnectStreams:{v}",
    "devices": "urn:mtconnect.org:MTConnectDevices:{v}",
    "error": "urn:mtconnect.org:MTConnectError:{v}",
}
STREAM_BOUNDARY = "mw-mtconnect-sim-boundary"
CONDITION_ELEMENTS = {"NORMAL": "Normal", "WARNING": "Warning", "FAULT": "Fault", "UNAVAILABLE": "Unavailable"}
OVERHEAT_WARNING_C = 60.0
OVERHEAT_FAULT_C = 75.0


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """One data item of a simulated device (the /probe declaration)."""

    id: str
    name: str
    category: str  # SAMPLE | EVENT | CONDITION
    type: str
    component: str  # name of the component it belongs to
    component_type: str  # Device, Controller, Path, Rotary, Linear
    sub_type: str = ""
    units: str = ""

    @property
    def element(self) -> str:
        return "".join(part.capitalize() for part in self.type.split("_"))


@dataclass(frozen=True, slots=True)
class Obs:
    """One observation in the agent's buffer."""

    instance_id: int
    sequence: int
    device: str
    item: ItemSpec
    ts: int  # epoch ms
    value: str  # text; for conditions the message
    level: str = ""  # condition level: NORMAL/WARNING/FAULT/UNAVAILABLE

    @property
    def unavailable(self) -> bool:
        return self.value == "UNAVAILABLE" or self.level == "UNAVAILABLE"


@dataclass
class _DeviceState:
    name: str
    uuid: str
    items: dict[str, ItemSpec]
    rpm: float = 0.0
    load: float = 0.0
    temp: float = 30.0
    pos: dict[str, float] = field(default_factory=lambda: {"X": 0.0, "Y": 0.0, "Z": 0.0})
    available: bool = True
    estop: bool = False
    overheat_rounds: int = 0
    overheat_extra: float = 0.0
    temp_level: str = "NORMAL"


def device_items(device: str) -> dict[str, ItemSpec]:
    """The data items of one simulated CNC, keyed by a short role name."""
    d = device
    specs = [
        ("avail", ItemSpec(f"{d}-avail", "avail", "EVENT", "AVAILABILITY", d, "Device")),
        ("estop", ItemSpec(f"{d}-estop", "estop", "EVENT", "EMERGENCY_STOP", "controller", "Controller")),
        ("system", ItemSpec(f"{d}-system", "system", "CONDITION", "SYSTEM", "controller", "Controller")),
        ("mode", ItemSpec(f"{d}-mode", "mode", "EVENT", "CONTROLLER_MODE", "path", "Path")),
        ("execution", ItemSpec(f"{d}-execution", "execution", "EVENT", "EXECUTION", "path", "Path")),
        ("rpm", ItemSpec(f"{d}-Srpm", "Srpm", "SAMPLE", "ROTARY_VELOCITY", "C", "Rotary", "ACTUAL",
                         "REVOLUTION/MINUTE")),
        ("load", ItemSpec(f"{d}-Sload", "Sload", "SAMPLE", "LOAD", "C", "Rotary", "", "PERCENT")),
        ("temp", ItemSpec(f"{d}-Stemp", "Stemp", "SAMPLE", "TEMPERATURE", "C", "Rotary", "", "CELSIUS")),
        ("temp_cond", ItemSpec(f"{d}-Stemp_cond", "Stemp_cond", "CONDITION", "TEMPERATURE", "C", "Rotary")),
    ]
    for axis in ("X", "Y", "Z"):
        specs.append((f"pos{axis}", ItemSpec(f"{d}-{axis}pos", f"{axis}position", "SAMPLE", "POSITION", axis,
                                             "Linear", "ACTUAL", "MILLIMETER")))
    return dict(specs)


class MTConnectAgentSimulator:
    """A simulated MTConnect agent for ``devices`` CNC machines with a ring buffer of ``buffer_size``."""

    def __init__(self, devices: int = 2, seed: int = 1, buffer_size: int = 1024, device_prefix: str = "CNC",
                 step_ms: int = 100, start: datetime | None = None, schema_version: str = "1.3",
                 sloppy: bool = False, instance_id: int | None = None) -> None:
        if buffer_size < 8:
            msg = f"buffer_size must be at least 8, got {buffer_size}"
            raise ValueError(msg)
        self.buffer_size = buffer_size
        self.step_ms = step_ms
        self.schema_version = schema_version
        # Real agents in the wild: timestamps without 'Z' and a sloppy encoding declaration.
        self.sloppy = sloppy
        self._rng = random.Random(seed)
        start = start or datetime.now(tz=UTC)
        if start.tzinfo is None:
            msg = "start must be timezone-aware (UTC)"
            raise ValueError(msg)
        self._clock_ms = int(start.timestamp() * 1000)
        self.instance_id = instance_id if instance_id is not None else 1_700_000_000 + seed * 1000
        self._cond = threading.Condition()
        self._buffer: deque[Obs] = deque(maxlen=buffer_size)
        # Like a real agent's checkpoint: /current shows every item's latest value, even one that left the buffer.
        self._latest: dict[str, Obs] = {}
        self._next_seq = 1
        self._generation = 0  # bumped by restart(): open streams end, as a real agent's would
        self._silent_until = 0.0
        self._injected: list[tuple[str, bytes, str]] = []
        self._stream_injections: list[bytes] = []
        self._streams_opened = 0
        self.produced: list[Obs] = []
        self.requests: list[str] = []
        self.devices = [
            _DeviceState(name=f"{device_prefix}{i + 1:02d}", uuid=f"mtc-{device_prefix.lower()}-{i + 1:03d}",
                         items=device_items(f"{device_prefix}{i + 1:02d}"))
            for i in range(devices)
        ]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stop_ticking = threading.Event()
        with self._cond:
            self._power_on()

    # ------------------------------------------------------------------ buffer and ground truth

    @property
    def first_sequence(self) -> int:
        with self._cond:
            return self._buffer[0].sequence if self._buffer else self._next_seq

    @property
    def next_sequence(self) -> int:
        with self._cond:
            return self._next_seq

    def produced_keys(self, instance_id: int | None = None) -> list[tuple[str, int]]:
        """(instanceId, sequence) of every observation produced (optionally of one instance), in order."""
        with self._cond:
            return [(str(o.instance_id), o.sequence) for o in self.produced
                    if instance_id is None or o.instance_id == instance_id]

    def device(self, name_or_index: str | int) -> _DeviceState:
        if isinstance(name_or_index, int):
            return self.devices[name_or_index]
        for dev in self.devices:
            if name_or_index in (dev.name, dev.uuid):
                return dev
        msg = f"no simulated device {name_or_index!r}"
        raise KeyError(msg)

    def _emit(self, dev: _DeviceState, role: str, value: str, level: str = "") -> None:
        obs = Obs(self.instance_id, self._next_seq, dev.name, dev.items[role], self._clock_ms, value, level)
        self._next_seq += 1
        self._buffer.append(obs)
        self._latest[obs.item.id] = obs
        self.produced.append(obs)

    def _power_on(self) -> None:
        # A starting agent reports every item UNAVAILABLE, then the adapter's first values arrive.
        for dev in self.devices:
            for role, spec in dev.items.items():
                if spec.category == "CONDITION":
                    self._emit(dev, role, "", "UNAVAILABLE")
                else:
                    self._emit(dev, role, "UNAVAILABLE")
        self._clock_ms += self.step_ms
        for dev in self.devices:
            dev.rpm, dev.load, dev.temp = 0.0, 0.0, 30.0 + self._rng.uniform(-2, 2)
            dev.available, dev.estop, dev.temp_level = True, False, "NORMAL"
            self._emit(dev, "avail", "AVAILABLE")
            self._emit(dev, "estop", "ARMED")
            self._emit(dev, "system", "", "NORMAL")
            self._emit(dev, "mode", "AUTOMATIC")
            self._emit(dev, "execution", "ACTIVE")
            self._emit(dev, "temp", f"{dev.temp:.2f}")
            self._emit(dev, "temp_cond", "", "NORMAL")
        self._cond.notify_all()

    def step(self, rounds: int = 1) -> int:
        """Advance the machines by ``rounds`` steps of ``step_ms``; returns observations produced."""
        with self._cond:
            before = self._next_seq
            for _ in range(rounds):
                self._clock_ms += self.step_ms
                for dev in self.devices:
                    if dev.available:
                        self._step_device(dev)
            self._cond.notify_all()
            return self._next_seq - before

    def _step_device(self, dev: _DeviceState) -> None:
        rng = self._rng
        target_rpm = 0.0 if dev.estop or rng.random() >= 0.7 else 8000.0
        dev.rpm = max(0.0, dev.rpm + (target_rpm - dev.rpm) * 0.2 + rng.gauss(0, 40))
        self._emit(dev, "rpm", f"{dev.rpm:.1f}")
        dev.load = min(100.0, max(0.0, dev.rpm / 120 + rng.gauss(0, 3)))
        self._emit(dev, "load", f"{dev.load:.1f}")
        extra = 0.0
        if dev.overheat_rounds > 0:
            dev.overheat_rounds -= 1
            extra = dev.overheat_extra
        dev.temp += (30.0 + dev.load * 0.2 + extra - dev.temp) * 0.3 + rng.gauss(0, 0.2)
        self._emit(dev, "temp", f"{dev.temp:.2f}")
        level = "FAULT" if dev.temp >= OVERHEAT_FAULT_C else "WARNING" if dev.temp >= OVERHEAT_WARNING_C else "NORMAL"
        if level != dev.temp_level:
            dev.temp_level = level
            text = "" if level == "NORMAL" else f"SPINDLE TEMPERATURE {dev.temp:.1f} C"
            self._emit(dev, "temp_cond", text, level)
        if not dev.estop:
            axis = rng.choice(("X", "Y", "Z"))
            dev.pos[axis] = round(dev.pos[axis] + rng.uniform(-5, 5), 3)
            self._emit(dev, f"pos{axis}", f"{dev.pos[axis]:.3f}")
        if rng.random() < 0.05 and not dev.estop:
            self._emit(dev, "execution", rng.choice(("ACTIVE", "READY", "FEED_HOLD", "ACTIVE")))

    # ------------------------------------------------------------------ scenarios

    def machine_unavailable(self, device: str | int) -> None:
        """The machine disconnects: AVAILABILITY and every value become UNAVAILABLE; steps skip it."""
        with self._cond:
            dev = self.device(device)
            self._clock_ms += self.step_ms
            dev.available = False
            self._emit(dev, "avail", "UNAVAILABLE")
            for role, spec in dev.items.items():
                if role == "avail":
                    continue
                if spec.category == "CONDITION":
                    self._emit(dev, role, "", "UNAVAILABLE")
                else:
                    self._emit(dev, role, "UNAVAILABLE")
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
        target = self._next_seq + self.buffer_size + extra
        produced = 0
        while self.next_sequence < target:
            produced += self.step(1)
        return produced

    def restart(self) -> int:
        """Restart the agent: new instanceId, empty buffer, sequences from 1; open streams are cut."""
        with self._cond:
            self.instance_id += 1
            self._buffer.clear()
            self._latest.clear()
            self._next_seq = 1
            self._generation += 1
            self._clock_ms += self.step_ms
            self._power_on()
            return self.instance_id

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

    # ------------------------------------------------------------------ documents

    def _ns(self, kind: str) -> str:
        return SCHEMA_NAMESPACES[kind].format(v=self.schema_version)

    def _timestamp(self, ms: int) -> str:
        text = datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        return text if self.sloppy else text + "Z"

    def _decl(self) -> str:
        return f'<?xml version="1.0" encoding="{"UTF8" if self.sloppy else "UTF-8"}"?>\n'

    def _header(self, extra: str = "") -> str:
        now = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (f'<Header creationTime="{now}" sender="mw-sim" instanceId="{self.instance_id}" '
                f'version="{self.schema_version}.0.0" bufferSize="{self.buffer_size}"{extra}/>')

    def probe_xml(self) -> bytes:
        with self._cond:
            parts = [self._decl(), f'<MTConnectDevices xmlns="{self._ns("devices")}">',
                     self._header(' assetBufferSize="0" assetCount="0"'), "<Devices>"]
            for dev in self.devices:
                parts.append(f'<Device id="{dev.name}" name="{dev.name}" uuid="{dev.uuid}">'
                             f'<Description manufacturer="machinewatch" model="sim">simulated CNC</Description>')
                by_component: dict[tuple[str, str], list[ItemSpec]] = {}
                for spec in dev.items.values():
                    by_component.setdefault((spec.component_type, spec.component), []).append(spec)
                top = by_component.pop(("Device", dev.name), [])
                parts.append("<DataItems>" + "".join(self._item_xml(s) for s in top) + "</DataItems><Components>")
                for (ctype, cname), specs in by_component.items():
                    parts.append(f'<{ctype} id="{dev.name}-{cname}" name="{cname}"><DataItems>'
                                 + "".join(self._item_xml(s) for s in specs) + f"</DataItems></{ctype}>")
                parts.append("</Components></Device>")
            parts.append("</Devices></MTConnectDevices>")
            return "".join(parts).encode()

    @staticmethod
    def _item_xml(spec: ItemSpec) -> str:
        attrs = f'category="{spec.category}" id="{spec.id}" name="{spec.name}" type="{spec.type}"'
        if spec.sub_type:
            attrs += f' subType="{spec.sub_type}"'
        if spec.units:
            attrs += f' units="{spec.units}" nativeUnits="{spec.units}"'
        return f"<DataItem {attrs}/>"

    def _streams_xml(self, observations: list[Obs], next_seq: int) -> bytes:
        first = self._buffer[0].sequence if self._buffer else self._next_seq
        extra = (f' nextSequence="{next_seq}" firstSequence="{first}" lastSequence="{self._next_seq - 1}"')
        parts = [self._decl(), f'<MTConnectStreams xmlns="{self._ns("streams")}">', self._header(extra), "<Streams>"]
        by_device: dict[str, list[Obs]] = {}
        for obs in observations:
            by_device.setdefault(obs.device, []).append(obs)
        for dev in self.devices:
            obs_list = by_device.get(dev.name, [])
            if not obs_list:
                continue
            parts.append(f'<DeviceStream name="{dev.name}" uuid="{dev.uuid}">')
            by_comp: dict[tuple[str, str], list[Obs]] = {}
            for obs in obs_list:
                by_comp.setdefault((obs.item.component_type, obs.item.component), []).append(obs)
            for (ctype, cname), comp_obs in by_comp.items():
                parts.append(f'<ComponentStream component="{ctype}" name="{cname}" componentId="{dev.name}-{cname}">')
                for group, category in (("Samples", "SAMPLE"), ("Events", "EVENT"), ("Condition", "CONDITION")):
                    chosen = [o for o in comp_obs if o.item.category == category]
                    if chosen:
                        parts.append(f"<{group}>" + "".join(self._obs_xml(o) for o in chosen) + f"</{group}>")
                parts.append("</ComponentStream>")
            parts.append("</DeviceStream>")
        parts.append("</Streams></MTConnectStreams>")
        return "".join(parts).encode()

    def _obs_xml(self, obs: Obs) -> str:
        spec = obs.item
        attrs = (f'dataItemId="{spec.id}" name="{spec.name}" sequence="{obs.sequence}" '
                 f'timestamp="{self._timestamp(obs.ts)}"')
        if spec.sub_type:
            attrs += f' subType="{spec.sub_type}"'
        if spec.category == "CONDITION":
            element = CONDITION_ELEMENTS[obs.level]
            return f'<{element} {attrs} type="{spec.type}">{escape(obs.value)}</{element}>'
        return f"<{spec.element} {attrs}>{escape(obs.value)}</{spec.element}>"

    def error_xml(self, code: str, text: str) -> bytes:
        return (f'{self._decl()}<MTConnectError xmlns="{self._ns("error")}">{self._header()}'
                f"<Errors><Error errorCode={quoteattr(code)}>{escape(text)}</Error></Errors></MTConnectError>"
                ).encode()

    def current_xml(self) -> bytes:
        with self._cond:
            latest = sorted(self._latest.values(), key=lambda o: o.sequence)
            return self._streams_xml(latest, self._next_seq)

    def sample_xml(self, start: int | None, count: int) -> tuple[bytes, int, bool]:
        """(document, next sequence, ok) for /sample; an MTConnectError document when out of range."""
        with self._cond:
            first = self._buffer[0].sequence if self._buffer else self._next_seq
            begin = first if start is None else start
            if begin < first or begin > self._next_seq:
                text = (f"'from' must be between firstSequence {first} and nextSequence {self._next_seq}, "
                        f"got {begin}")
                return self.error_xml("OUT_OF_RANGE", text), begin, False
            chosen = [o for o in self._buffer if o.sequence >= begin][:count]
            nxt = chosen[-1].sequence + 1 if chosen else self._next_seq
            return self._streams_xml(chosen, nxt), nxt, True

    # ------------------------------------------------------------------ HTTP

    @property
    def url(self) -> str:
        if self._server is None:
            msg = "the simulator is not serving; call serve() first"
            raise RuntimeError(msg)
        host, port = self._server.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{host_text}:{port}"

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start the HTTP agent in a background thread; returns its base URL."""
        sim = self

        class Handler(_AgentHandler):
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
        return self.url

    def start_ticking(self, interval_s: float) -> None:
        """Step the machines every ``interval_s`` of wall-clock time in a background thread."""
        def tick() -> None:
            while not self._stop_ticking.wait(interval_s):
                self.step(1)

        self._ticker = threading.Thread(target=tick, name="mtconnect-sim-ticker", daemon=True)
        self._ticker.start()

    def close(self) -> None:
        self._stop_ticking.set()
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> MTConnectAgentSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take_injection(self, path: str) -> tuple[bytes, str] | None:
        with self._cond:
            for i, (p, body, ctype) in enumerate(self._injected):
                if path.endswith(p):
                    del self._injected[i]
                    return body, ctype
        return None

    def stream(self, start: int | None, count: int, interval_ms: int, heartbeat_ms: int) -> Iterator[bytes]:
        """Multipart parts of a /sample stream until the agent restarts or closes (or an error part)."""
        with self._cond:
            generation = self._generation
            self._streams_opened += 1
            stream_id = self._streams_opened  # injections go to the newest stream, not to a dead client's
            nxt = start
        while True:
            with self._cond:
                deadline = time.monotonic() + heartbeat_ms / 1000
                # Wait for new data, a heartbeat deadline, a restart or an injection.
                while (generation == self._generation
                       and not (self._stream_injections and stream_id == self._streams_opened)
                       and (nxt is not None and nxt >= self._next_seq) and time.monotonic() < deadline):
                    self._cond.wait(max(0.0, deadline - time.monotonic()))
                if generation != self._generation:
                    return
                silent_for = self._silent_until - time.monotonic()
                if self._stream_injections and stream_id == self._streams_opened:
                    injected = self._stream_injections.pop(0)
                else:
                    injected = None
            if injected is not None:
                yield injected
                continue
            if silent_for > 0:
                time.sleep(min(silent_for, 0.5))
                continue
            body, after, ok = self.sample_xml(nxt, count)
            yield _part(body)
            if not ok:
                return
            nxt = after
            time.sleep(interval_ms / 1000)


def _part(body: bytes) -> bytes:
    return (f"--{STREAM_BOUNDARY}\r\nContent-type: text/xml\r\nContent-length: {len(body)}\r\n\r\n"
            ).encode() + body + b"\r\n"


class _AgentHandler(BaseHTTPRequestHandler):
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
        injected = sim._take_injection(path)
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
