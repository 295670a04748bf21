"""MTConnect source connector: follows an agent's /sample stream into canonical readings and device events.

Reads /probe for units and types, baselines with /current (or the whole buffer), then follows
/sample from nextSequence by streaming or polling. Every batch is published, acknowledged, and
only then is the cursor (instanceId, nextSequence) persisted, so a crash can only cause a re-read,
and re-reads are skipped by sequence and carry the same event ids. A wrapped agent buffer becomes a
``gap`` record that says exactly how many sequence numbers were lost; a new instanceId becomes an
``agent_restarted`` record. Bad documents are dead-lettered and never stop the connector.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ingest.mtconnect.config import MTConnectSettings
from ingest.mtconnect.documents import (
    AgentError,
    MTConnectParseError,
    Observation,
    Probe,
    StreamsDoc,
    element_to_type,
    normalise_unit,
    parse_probe,
    parse_streams,
    parse_timestamp_ms,
)
from ingest.mtconnect.multipart import MultipartError, PartTooLarge
from ingest.mtconnect.state import Cursor, load_cursor, save_cursor
from ingest.mtconnect.transport import AgentClient, BodyTooLarge, Response
from machinewatch.device_events import (
    KIND_AGENT_RESTARTED,
    KIND_DERIVED,
    KIND_GAP,
    KIND_OBSERVATION,
    DeviceEvent,
)
from machinewatch.kafka_io import PublishError
from machinewatch.record import Reading, RecordError, make_event_id

log = logging.getLogger(__name__)

SOURCE = "mtconnect"


class RecordSink(Protocol):
    """What the connector needs from ``machinewatch.kafka_io.Publisher`` (tests pass a double)."""

    def send(self, reading: Reading) -> Any: ...

    def send_json(self, key: str, value: bytes, topic: str | None = None) -> Any: ...

    def dead_letter(self, source: str, raw: bytes | str, reason: str, origin: str = "") -> None: ...

    def flush(self, timeout: float | None = None) -> None: ...


@dataclass
class Metrics:
    """Counters the connector keeps (logged every ``metrics_interval_s`` and on stop)."""

    documents: int = 0
    observations: int = 0
    readings: int = 0
    device_events: int = 0
    derived: int = 0
    gaps: int = 0
    lost: int = 0
    agent_restarts: int = 0
    reread_skipped: int = 0
    refused_documents: int = 0
    dead_lettered: int = 0
    reconnects: int = 0
    heartbeats: int = 0


class _Restarted(Exception):
    """The agent restarted; the cursor now points at sequence 1 of the new instance."""


def derive(obs: Observation, item_type: str) -> tuple[str, str] | None:
    """(rule, state) if this observation is alert-worthy: machine unavailable, e-stop, condition fault."""
    if item_type == "AVAILABILITY" and obs.value.upper() == "UNAVAILABLE":
        return "machine_unavailable", "UNAVAILABLE"
    if item_type == "EMERGENCY_STOP" and obs.value.upper() == "TRIGGERED":
        return "emergency_stop", "TRIGGERED"
    if obs.category == "CONDITION" and obs.level == "FAULT":
        return "condition_fault", "FAULT"
    return None


class MTConnectSource:
    """Follow one MTConnect agent: ``setup()``, then ``run()`` until ``stop()``."""

    def __init__(self, config: MTConnectSettings, sink: RecordSink) -> None:
        self.config = config
        self.sink = sink
        self.client = AgentClient(config.agent_url, config.request_timeout_s, config.max_body_bytes)
        self.metrics = Metrics()
        self.probe: Probe | None = None
        self.cursor: Cursor | None = None
        self._stop = threading.Event()
        self._probe_instance = ""
        self._last_metrics = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    def setup(self) -> None:
        """Load the persisted cursor; /probe is fetched lazily (the agent may not be up yet)."""
        self.cursor = load_cursor(self.config.state_path)
        if self.cursor:
            log.info("resuming %s at instanceId %s, sequence %d (state %s)", self.config.agent_url,
                     self.cursor.instance_id, self.cursor.next_sequence, self.config.state_path)
        else:
            log.info("no state at %s: first run, start=%s", self.config.state_path, self.config.start)

    def stop(self) -> None:
        self._stop.set()
        self.client.abort()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Follow the agent until ``stop()``; every error is logged and followed by a bounded back-off."""
        backoff = self.config.reconnect_min_s
        log.info("following MTConnect agent %s (%s mode)", self.config.agent_url, self.config.mode)
        while not self._stop.is_set():
            try:
                if self.probe is None:
                    self._fetch_probe()
                if self.cursor is None:
                    self._baseline()
                if self.config.mode == "stream":
                    self._follow_stream()
                else:
                    progressed = self._poll_once()
                    if not progressed:
                        self._stop.wait(self.config.interval_ms / 1000)
                backoff = self.config.reconnect_min_s
                continue
            except _Restarted:
                backoff = self.config.reconnect_min_s
                continue
            except TimeoutError:
                if self._stop.is_set():
                    break
                log.warning("agent %s silent for %.1fs (no data, no heartbeat): reconnecting",
                            self.config.agent_url, self.config.silence_timeout_s)
            except PartTooLarge as exc:
                self._refuse(b"", f"stream part: {exc}")
            except MultipartError as exc:
                log.warning("broken multipart stream from %s: %s; reconnecting from sequence %s",
                            self.config.agent_url, exc, self.cursor.next_sequence if self.cursor else "?")
            except (OSError, http.client.HTTPException) as exc:
                if self._stop.is_set():
                    break
                log.warning("agent %s unreachable or connection lost: %s", self.config.agent_url, exc)
            except AgentError as exc:
                log.warning("agent %s answered with an error: %s", self.config.agent_url, exc)
            except _Refused:
                pass  # already logged and dead-lettered
            except PublishError as exc:
                # Nothing was persisted for the failed batch: it is read again after the back-off.
                log.error("Kafka did not acknowledge records from %s: %s", self.config.agent_url, exc)
            self.metrics.reconnects += 1
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.config.reconnect_max_s)
            self._maybe_log_metrics()
        self._log_metrics()

    # ------------------------------------------------------------------ requests

    def _fetch_probe(self) -> None:
        resp = self._get("probe")
        if resp is None:
            raise _Refused
        try:
            self.probe = parse_probe(resp.body, self.config.max_body_bytes)
        except MTConnectParseError as exc:
            self._refuse(resp.body, f"/probe: {exc}")
            raise _Refused from exc
        self._probe_instance = self.probe.instance_id
        if self.probe.duplicate_ids:
            log.warning("agent /probe declares duplicate data item ids (first one kept): %s",
                        ", ".join(sorted(set(self.probe.duplicate_ids))[:20]))
        log.info("probe of %s: %d devices, %d data items", self.config.agent_url, len(self.probe.devices),
                 sum(len(d.items) for d in self.probe.devices))

    def _get(self, endpoint: str, **params: int | str | None) -> Response | None:
        try:
            return self.client.get(endpoint, **params)
        except BodyTooLarge as exc:
            self._refuse(exc.head, f"/{endpoint}: {exc}")
            return None

    def _refuse(self, body: bytes, reason: str) -> None:
        self.metrics.refused_documents += 1
        self.metrics.dead_lettered += 1
        log.error("refused a document from MTConnect agent %s: %s", self.config.agent_url, reason)
        self.sink.dead_letter(SOURCE, body[:65536], reason, origin=self.config.agent_url)
        self.sink.flush()

    def _parse(self, resp: Response, what: str) -> StreamsDoc:
        try:
            return parse_streams(resp.body, self.config.max_body_bytes)
        except MTConnectParseError as exc:
            self._refuse(resp.body, f"{what}: {exc}")
            raise _Refused from exc

    def _baseline(self) -> None:
        if self.config.start == "buffer":
            # No cursor: the first /sample without 'from' starts at the agent's firstSequence.
            return
        resp = self._get("current")
        if resp is None:
            raise _Refused
        doc = self._parse(resp, "/current")
        self.metrics.documents += 1
        nxt = doc.header.next_sequence
        if nxt is None:
            nxt = (doc.max_sequence or 0) + 1
        self._publish(doc, instance=doc.header.instance_id, expected=0, next_sequence=nxt)
        log.info("baselined with /current: instanceId %s, following from sequence %d", doc.header.instance_id, nxt)

    def _poll_once(self) -> bool:
        """One /sample request; True if it returned observations (poll again at once)."""
        frm = self.cursor.next_sequence if self.cursor else None
        resp = self._get("sample", **{"from": frm, "count": self.config.count})
        if resp is None:
            raise _Refused
        try:
            doc = self._parse(resp, "/sample")
        except AgentError as exc:
            self._on_agent_error(exc)
            return True
        return self._handle(doc) > 0

    def _follow_stream(self) -> None:
        frm = self.cursor.next_sequence if self.cursor else None
        params = {"from": frm, "count": self.config.count, "interval": self.config.interval_ms,
                  "heartbeat": self.config.heartbeat_ms}
        # closing(): leaving the loop by an exception must drop the connection at once.
        with contextlib.closing(self.client.stream("sample", self.config.silence_timeout_s, **params)) as parts:
            for resp in parts:
                if self._stop.is_set():
                    return
                try:
                    doc = self._parse(resp, "stream part")
                except AgentError as exc:
                    self._on_agent_error(exc)
                    return
                if not doc.observations and not doc.bad:
                    self.metrics.heartbeats += 1
                self._handle(doc)
                self._maybe_log_metrics()
        # The agent ended the stream (restart, shutdown): reconnect from the cursor.
        if not self._stop.is_set():
            log.info("stream from %s ended; reconnecting from sequence %s", self.config.agent_url,
                     self.cursor.next_sequence if self.cursor else "?")

    def _on_agent_error(self, exc: AgentError) -> None:
        if "OUT_OF_RANGE" not in exc.doc.codes:
            raise exc
        # Our 'from' is outside the buffer: read the header to tell a wrapped buffer from a restart.
        log.info("agent says OUT_OF_RANGE (%s); reading from its firstSequence", exc)
        resp = self._get("sample", count=self.config.count)
        if resp is None:
            raise _Refused
        self._handle(self._parse(resp, "/sample"), recovering=True)

    # ------------------------------------------------------------------ documents -> records

    def _handle(self, doc: StreamsDoc, recovering: bool = False) -> int:
        """Turn one streams document into records; returns how many observations were new."""
        self.metrics.documents += 1
        header = doc.header
        instance = header.instance_id or (self.cursor.instance_id if self.cursor else "")
        if self.cursor is None:
            # First run with start=buffer: everything the agent still holds is new.
            expected = header.first_sequence if header.first_sequence is not None else 0
            return self._publish(doc, instance, expected, self._next_after(doc, expected))
        expected = self.cursor.next_sequence
        if instance and instance != self.cursor.instance_id:
            self._agent_restarted(doc, instance, f"instanceId changed from {self.cursor.instance_id} to {instance}")
        if (recovering and header.next_sequence is not None and header.next_sequence < expected):
            # Same instanceId but the agent's sequence numbers went back: it restarted without saying so.
            self._agent_restarted(doc, instance, f"nextSequence went back from {expected} to "
                                  f"{header.next_sequence} with the same instanceId {instance}")
        gap: DeviceEvent | None = None
        if header.first_sequence is not None and header.first_sequence > expected:
            gap = self._gap(doc, instance, expected, header.first_sequence)
            expected = header.first_sequence
        return self._publish(doc, instance, expected, self._next_after(doc, expected), gap)

    def _next_after(self, doc: StreamsDoc, expected: int) -> int:
        nxt = expected
        top = doc.max_sequence
        if top is not None:
            nxt = max(nxt, top + 1)
        h = doc.header
        # The header's nextSequence also covers items filtered out of this document, but only when it
        # agrees with lastSequence; real agents sometimes send headers that disagree with the items.
        if h.next_sequence is not None and (h.last_sequence is None or h.next_sequence <= h.last_sequence + 1):
            nxt = max(nxt, h.next_sequence)
        elif h.next_sequence is not None:
            log.warning("inconsistent header from %s: nextSequence %s > lastSequence %s + 1; using the items",
                        self.config.agent_url, h.next_sequence, h.last_sequence)
        return nxt

    def _doc_ts(self, doc: StreamsDoc) -> int:
        try:
            return parse_timestamp_ms(doc.header.creation_time)
        except MTConnectParseError:
            return int(datetime.now(tz=UTC).timestamp() * 1000)

    def _agent_restarted(self, doc: StreamsDoc, instance: str, why: str) -> None:
        assert self.cursor is not None
        old = self.cursor
        event = DeviceEvent(
            source=SOURCE, device_id=self.config.agent_id, kind=KIND_AGENT_RESTARTED, ts=self._doc_ts(doc),
            event_id=make_event_id(SOURCE, "restart", old.instance_id, old.next_sequence, instance),
            instance_id=instance, sequence=1, region=self.config.region, site=self.config.site,
            detail=f"{why}; observations of instance {old.instance_id} from sequence {old.next_sequence} on "
            "that were not read before the restart cannot be recovered",
        )
        log.warning("MTConnect agent %s restarted: %s", self.config.agent_url, why)
        self.sink.send_json(event.device_id, event.to_json(), self.config.device_events_topic)
        self.sink.flush()
        self.metrics.agent_restarts += 1
        self._persist(Cursor(instance, 1))
        # Units and items may differ in the new instance.
        self.probe = None
        raise _Restarted

    def _gap(self, doc: StreamsDoc, instance: str, expected: int, first: int) -> DeviceEvent:
        lost = first - expected
        detail = (f"agent buffer wrapped: sequences {expected}..{first - 1} of instance {instance} were "
                  f"overwritten before they were read ({lost} lost)")
        if self.config.devices:
            detail += "; some may have belonged to devices this connector does not follow"
        log.warning("MTConnect agent %s: %s", self.config.agent_url, detail)
        return DeviceEvent(
            source=SOURCE, device_id=self.config.agent_id, kind=KIND_GAP, ts=self._doc_ts(doc),
            event_id=make_event_id(SOURCE, instance, "gap", expected, first - 1), instance_id=instance,
            sequence=expected, lost_count=lost, detail=detail, region=self.config.region, site=self.config.site,
        )

    def _publish(self, doc: StreamsDoc, instance: str, expected: int, next_sequence: int,
                 gap: DeviceEvent | None = None) -> int:
        """Publish the new part of ``doc``, wait for the acks, then persist the cursor."""
        if gap is not None:
            self.sink.send_json(gap.device_id, gap.to_json(), self.config.device_events_topic)
            self.metrics.gaps += 1
            self.metrics.lost += gap.lost_count or 0
        seen: set[int] = set()
        new = 0
        for obs in doc.observations:
            if obs.sequence < expected:
                self.metrics.reread_skipped += 1
                continue
            if obs.sequence in seen:
                self._dead_letter(repr(asdict(obs)), f"duplicate sequence {obs.sequence} in one document",
                                  instance, obs.sequence)
                continue
            seen.add(obs.sequence)
            new += 1
            if self.config.devices and not {obs.device_name, obs.device_uuid} & set(self.config.devices):
                continue
            self._emit(obs, instance)
        for bad in doc.bad:
            if bad.sequence is not None and bad.sequence < expected:
                continue
            self._dead_letter(bad.raw, bad.reason, instance, bad.sequence)
        self.sink.flush()  # raises PublishError: then nothing is persisted and the batch is re-read
        if self.cursor is None or self.cursor != Cursor(instance, next_sequence):
            self._persist(Cursor(instance, next_sequence))
        return new

    def _persist(self, cursor: Cursor) -> None:
        save_cursor(self.config.state_path, cursor, self.config.agent_url)
        self.cursor = cursor

    def _dead_letter(self, raw: str, reason: str, instance: str, sequence: int | None) -> None:
        self.metrics.dead_lettered += 1
        self.sink.dead_letter(SOURCE, raw, reason, origin=f"{self.config.agent_url} {instance}/{sequence}")

    def _emit(self, obs: Observation, instance: str) -> None:
        self.metrics.observations += 1
        item = self.probe.item(obs.device_name or obs.device_uuid, obs.item_id) if self.probe else None
        if item is None and self.probe is not None and obs.device_uuid:
            item = self.probe.item(obs.device_uuid, obs.item_id)
        device_id = (obs.device_uuid if self.config.device_id_from == "uuid" else obs.device_name) or \
            obs.device_name or obs.device_uuid or self.config.agent_id
        name = (item.name if item else "") or obs.name
        metric = (name if self.config.metric_from == "name" and name else obs.item_id)
        item_type = (item.type if item else "") or obs.type or element_to_type(obs.element)
        if obs.category == "CONDITION":
            item_type = obs.type or (item.type if item else "") or item_type
        event_id = make_event_id(SOURCE, instance, obs.sequence)
        try:
            value = _number(obs.value) if obs.category == "SAMPLE" else None
            if value is not None:
                reading = Reading(source=SOURCE, device_id=device_id, metric=metric, value=value,
                                  unit=normalise_unit(item.units if item else ""), ts=obs.ts, event_id=event_id,
                                  region=self.config.region, site=self.config.site)
                self.sink.send(reading)
                self.metrics.readings += 1
            else:
                event = DeviceEvent(
                    source=SOURCE, device_id=device_id, kind=KIND_OBSERVATION, category=obs.category,
                    item=metric, item_type=item_type, value=obs.value, state=obs.level or None,
                    sequence=obs.sequence, instance_id=instance, ts=obs.ts, event_id=event_id,
                    detail=f"nativeCode={obs.native_code}" if obs.native_code else "",
                    region=self.config.region, site=self.config.site,
                )
                self.sink.send_json(device_id, event.to_json(), self.config.device_events_topic)
                self.metrics.device_events += 1
            rule = derive(obs, item_type)
            if rule is not None:
                derived = DeviceEvent(
                    source=SOURCE, device_id=device_id, kind=KIND_DERIVED, category=obs.category, item=metric,
                    item_type=rule[0], value=obs.value, state=rule[1], sequence=obs.sequence,
                    instance_id=instance, ts=obs.ts, event_id=make_event_id(SOURCE, instance, obs.sequence, rule[0]),
                    detail=f"{rule[0]}: {item_type} {obs.element} {obs.value}".strip(),
                    region=self.config.region, site=self.config.site,
                )
                self.sink.send_json(device_id, derived.to_json(), self.config.alerts_topic)
                self.metrics.derived += 1
        except RecordError as exc:
            self._dead_letter(repr(asdict(obs)), f"observation {obs.item_id}: {exc}", instance, obs.sequence)

    # ------------------------------------------------------------------ metrics

    def _maybe_log_metrics(self) -> None:
        if time.monotonic() - self._last_metrics >= self.config.metrics_interval_s:
            self._log_metrics()

    def _log_metrics(self) -> None:
        self._last_metrics = time.monotonic()
        log.info("mtconnect %s: %s", self.config.agent_id,
                 " ".join(f"{k}={v}" for k, v in asdict(self.metrics).items()))


class _Refused(Exception):
    """A document was refused (logged and dead-lettered); back off and retry from the cursor."""


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
