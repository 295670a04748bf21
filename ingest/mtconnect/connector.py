"""MTConnect agent follower: follows an agent's /sample stream into canonical readings and device events.

Reads /probe for units and types, baselines with /current (or the whole buffer), then follows /sample
by streaming or polling. ``AgentFollower`` is the protocol engine; on the connector runtime it runs inside
``ingest.mtconnect.source.MTConnectSource``, which hands each document's records and the cursor after
them to the runner: the cursor is persisted only after the runner flushed everything before it, so a
crash can only cause a re-read, and re-reads are skipped by sequence and carry the same event ids.
An observation is identified by (instanceId, device, dataItemId, sequence); an agent that numbers
sequences per device is detected and then read per device. Problems in the envelope (header,
numbering, ids) never cost values: they are resolved by the rules in README.md and recorded as
data-quality notes (mw.quality). A wrapped agent buffer becomes a ``gap`` record; a new instanceId an
``agent_restarted`` record. Bad documents and unreadable observations are dead-lettered with their
exact bytes and never stop the connector.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from ingest.mtconnect.config import MTConnectSettings
from ingest.mtconnect.documents import (
    AgentError,
    Header,
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
from ingest.mtconnect.state import Cursor, DeviceCursor, load_cursor, save_cursor
from ingest.mtconnect.transport import AgentClient, BodyTooLarge, Response
from machinewatch.device_events import KIND_AGENT_RESTARTED, KIND_GAP, KIND_OBSERVATION, DeviceEvent
from machinewatch.kafka_io import PublishError
from machinewatch.record import Reading, RecordError, make_event_id

log = logging.getLogger(__name__)

SOURCE = "mtconnect"

# Kinds of the data-quality notes this connector writes (topic mw.quality).
NOTE_HEADER_DISAGREES = "header_disagrees"
NOTE_DUPLICATE_OBSERVATION = "duplicate_observation"
NOTE_PER_DEVICE_SEQUENCES = "per_device_sequences"
NOTE_DUPLICATE_ITEM_ID = "duplicate_item_id"


class RecordSink(Protocol):
    """Where the follower puts what it reads (``source.BatchingSink`` on the runtime; tests pass a double).

    ``flush`` ends a document: what was sent before it belongs to the batch the next cursor covers.
    """

    def send(self, reading: Reading) -> Any: ...

    def send_event(self, event: DeviceEvent) -> Any: ...

    def dead_letter(self, source: str, raw: bytes | str, reason: str, origin: str = "",
                    size: int | None = None) -> Any: ...

    def note(self, source: str, kind: str, raw: bytes | str, reason: str, origin: str = "",
             note_id: str = "") -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...


@dataclass
class Metrics:
    """Counters the connector keeps (logged every ``metrics_interval_s`` and on stop)."""

    documents: int = 0
    observations: int = 0
    readings: int = 0
    device_events: int = 0
    gaps: int = 0
    lost: int = 0
    agent_restarts: int = 0
    reread_skipped: int = 0
    duplicates: int = 0
    header_disagreements: int = 0
    notes: int = 0
    refused_documents: int = 0
    dead_lettered: int = 0
    reconnects: int = 0
    heartbeats: int = 0


class _Restarted(Exception):
    """The agent restarted; the cursor now points at sequence 1 of the new instance."""


def observation_event_id(instance: str, device: str, item: str, sequence: int) -> str:
    """The event id of an observation: (instanceId, device, dataItemId, sequence)."""
    return make_event_id(SOURCE, instance, device, item, sequence)


@dataclass(frozen=True, slots=True)
class HeaderCheck:
    """How a document's header compares with the sequence numbers of the items it carries."""

    problems: tuple[tuple[str, str], ...]  # (code, sentence)
    lo: int | None
    hi: int | None
    count: int

    @property
    def agrees(self) -> bool:
        return not self.problems

    def describe(self, header: Header) -> str:
        items = f"{self.count} items, sequences {self.lo}..{self.hi}" if self.count else "no items"
        return (f"header firstSequence={header.first_sequence} nextSequence={header.next_sequence} "
                f"lastSequence={header.last_sequence} vs {items}: " + "; ".join(text for _, text in self.problems))


def check_header(header: Header, sequences: Iterable[int], *, sample: bool = True, requested: int | None = None,
                 filtered: bool = False) -> HeaderCheck:
    """Compare the header's numbers with the items' sequence range (the rule is in README.md, "Cursor").

    ``sample`` is False for /current, whose items may be older than firstSequence (latest values kept
    after they left the buffer). ``requested`` is the ``from`` the document answers (None: no ``from``).
    ``filtered`` says the request named one device, so the agent may skip other devices' sequences; an
    unfiltered answer's nextSequence must be exactly the one after its last item (or ``from`` if empty).
    """
    seqs = list(sequences)
    lo, hi = (min(seqs), max(seqs)) if seqs else (None, None)
    first, nxt, last = header.first_sequence, header.next_sequence, header.last_sequence
    problems: list[tuple[str, str]] = []
    if hi is not None and nxt is not None and nxt <= hi:
        problems.append(("next_behind_items", f"nextSequence {nxt} is not above the highest item sequence {hi}"))
    elif requested is not None and nxt is not None and nxt < requested:
        problems.append(("next_behind_from", f"nextSequence {nxt} is below the requested from={requested}"))
    if sample and not filtered and nxt is not None and (hi is not None or requested is not None):
        after = max(hi + 1 if hi is not None else 0, requested or 0)
        if nxt > after:
            problems.append(("next_skips", f"nextSequence {nxt} would skip {after}..{nxt - 1}, which this "
                             "unfiltered answer should have carried"))
    if hi is not None and last is not None and last < hi:
        problems.append(("last_behind_items", f"lastSequence {last} is below the highest item sequence {hi}"))
    if sample and lo is not None and first is not None and first > lo:
        problems.append(("first_above_items", f"firstSequence {first} is above the lowest item sequence {lo}"))
    if nxt is not None and last is not None and nxt > last + 1:
        problems.append(("next_beyond_last", f"nextSequence {nxt} is beyond lastSequence {last} + 1"))
    if first is not None and nxt is not None and first > nxt:
        problems.append(("first_beyond_next", f"firstSequence {first} is beyond nextSequence {nxt}"))
    return HeaderCheck(tuple(problems), lo, hi, len(seqs))


def _sequences(doc: StreamsDoc) -> list[int]:
    return [o.sequence for o in doc.observations] + [b.sequence for b in doc.bad if b.sequence is not None]


def _bump(marks: dict[str, DeviceCursor], key: str, name: str, sequence: int) -> None:
    mark = marks.get(key)
    if mark is None or mark.next_sequence <= sequence:
        marks[key] = DeviceCursor(name=(mark.name if mark and mark.name else name), next_sequence=sequence + 1)


class AgentFollower:
    """Follow one MTConnect agent: ``setup()``, then ``run()`` until ``stop()``.

    ``commit(cursor)`` receives each new cursor after the sink was flushed for the records before it (the
    runtime source turns it into a checkpoint); without it the cursor is saved at once (tests in-process).
    """

    def __init__(self, config: MTConnectSettings, sink: RecordSink,
                 commit: Callable[[Cursor], None] | None = None) -> None:
        self.config = config
        self.sink = sink
        self._commit = commit
        self.client = AgentClient(config.agent_url, config.request_timeout_s, config.max_body_bytes)
        # An agent URL with a device path already names one device: no /<device>/sample below it.
        self._device_paths = not urlsplit(config.agent_url).path.strip("/")
        self.metrics = Metrics()
        self.probe: Probe | None = None
        self.cursor: Cursor | None = None
        self._stop = threading.Event()
        self._probe_instance = ""
        self._last_metrics = time.monotonic()
        # Per stream ("" = whole agent, else a device): the header problems last noted, so a header that
        # disagrees in the same way in every document is noted once per run, and counted every time.
        self._header_noted: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ lifecycle

    def setup(self) -> None:
        """Load the persisted cursor; /probe is fetched lazily (the agent may not be up yet)."""
        self.cursor = load_cursor(self.config.state_path)
        if self.cursor:
            log.info("resuming %s at instanceId %s, sequence %d%s (state %s)", self.config.agent_url,
                     self.cursor.instance_id, self.cursor.next_sequence,
                     f", per device: {len(self.cursor.devices)} devices" if self.cursor.per_device else "",
                     self.config.state_path)
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
                if self.cursor is not None and self.cursor.per_device and self._device_paths:
                    # One stream has one 'from'; an agent numbering per device is polled device by device.
                    progressed = self._poll_devices()
                    if not progressed:
                        self._stop.wait(self.config.interval_ms / 1000)
                elif self.config.mode == "stream" and not (self.cursor and self.cursor.per_device):
                    self._follow_stream()
                else:
                    progressed = self._poll_once()
                    if not progressed:
                        self._stop.wait(self.config.interval_ms / 1000)
                backoff = self.config.reconnect_min_s
                self._maybe_log_metrics()
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
                self._refuse(exc.head, f"stream part: {exc}", size=exc.size)
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
        if self.probe.duplicates:
            self._note_duplicate_ids(self.probe)
        log.info("probe of %s: %d devices, %d data items", self.config.agent_url, len(self.probe.devices),
                 sum(len(d.items) for d in self.probe.devices))

    def _note_duplicate_ids(self, probe: Probe) -> None:
        """One note per repeated ``<DataItem>`` declaration, with its exact bytes."""
        log.warning("agent /probe declares duplicate data item ids: %s",
                    ", ".join(sorted({f"{d}/{i}" for d, i in probe.duplicates})[:20]))
        done: set[tuple[str, str]] = set()
        for device, item_id in probe.duplicates:
            if (device, item_id) in done:
                continue
            done.add((device, item_id))
            decls = probe.declarations(device, item_id)
            for n, raw in enumerate(decls[1:], start=1):
                self._note(NOTE_DUPLICATE_ITEM_ID, raw,
                           f"device {device} declares data item id {item_id!r} {len(decls)} times; declaration "
                           f"{n + 1} is kept for observations of its own type, the first one for all others "
                           "(units and types are taken from it)",
                           note_id=make_event_id(SOURCE, probe.instance_id, device, item_id, n,
                                                 NOTE_DUPLICATE_ITEM_ID),
                           origin=f"{self.config.agent_url}/probe")
        self.sink.flush()

    def _get(self, endpoint: str, **params: int | str | None) -> Response | None:
        try:
            return self.client.get(endpoint, **params)
        except BodyTooLarge as exc:
            self._refuse(exc.head, f"/{endpoint}: {exc}", size=exc.size)
            return None

    def _refuse(self, body: bytes, reason: str, size: int | None = None) -> None:
        self.metrics.refused_documents += 1
        self.metrics.dead_lettered += 1
        log.error("refused a document from MTConnect agent %s: %s", self.config.agent_url, reason)
        # The whole document: the shared envelope keeps the first MAX_RAW_BYTES and says if it cut; ``size``
        # when only a head was read (a body over the cap).
        self.sink.dead_letter(SOURCE, body, reason, origin=self.config.agent_url, size=size)
        self.sink.flush()

    def _parse(self, resp: Response, what: str) -> StreamsDoc:
        try:
            return parse_streams(resp.body, self.config.max_body_bytes)
        except MTConnectParseError as exc:
            if self._stop.is_set():
                raise _Refused from exc  # stop() cut the connection: not the agent's document
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
        instance = doc.header.instance_id
        check = check_header(doc.header, _sequences(doc), sample=False)
        self._publish(doc, instance, Cursor(instance, 0), check, current=True)
        assert self.cursor is not None
        log.info("baselined with /current: instanceId %s, following from sequence %d%s", instance,
                 self.cursor.next_sequence, " (per device)" if self.cursor.per_device else "")

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

    def _followed_devices(self) -> list[tuple[str, str]]:
        """(key, name) of every device to read: the probe's and those in the cursor, minus filtered ones."""
        found: dict[str, str] = {}
        for dev in self.probe.devices if self.probe else []:
            found.setdefault(dev.uuid or dev.name, dev.name or dev.uuid)
        for key, mark in (self.cursor.devices if self.cursor else {}).items():
            found.setdefault(key, mark.name or key)
        wanted = set(self.config.devices)
        return [(k, n) for k, n in found.items() if not wanted or {k, n} & wanted]

    def _poll_devices(self) -> bool:
        """One ``/<device>/sample?from=<that device's mark>`` per device; True if any returned something new."""
        progressed = False
        for key, name in self._followed_devices():
            if self._stop.is_set():
                break
            assert self.cursor is not None
            mark = self.cursor.devices.get(key)
            endpoint = f"{quote(name, safe='')}/sample"
            resp = self._get(endpoint, **{"from": mark.next_sequence if mark else None, "count": self.config.count})
            if resp is None:
                raise _Refused
            try:
                doc = self._parse(resp, f"/{endpoint}")
            except AgentError as exc:
                self._on_agent_error(exc, endpoint, key)
                progressed = True
                continue
            progressed = self._handle(doc, device=key) > 0 or progressed
        return progressed

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
                if self.cursor is not None and self.cursor.per_device:
                    return  # per-device numbering found: read device by device from now on
        # The agent ended the stream (restart, shutdown): reconnect from the cursor.
        if not self._stop.is_set():
            log.info("stream from %s ended; reconnecting from sequence %s", self.config.agent_url,
                     self.cursor.next_sequence if self.cursor else "?")

    def _on_agent_error(self, exc: AgentError, endpoint: str = "sample", device: str = "") -> None:
        if "OUT_OF_RANGE" not in exc.doc.codes:
            raise exc
        # Our 'from' is outside the buffer: read the header to tell a wrapped buffer from a restart.
        log.info("agent says OUT_OF_RANGE for /%s (%s); reading from its firstSequence", endpoint, exc)
        resp = self._get(endpoint, count=self.config.count)
        if resp is None:
            raise _Refused
        self._handle(self._parse(resp, f"/{endpoint}"), recovering=True, device=device)

    # ------------------------------------------------------------------ documents -> records

    def _handle(self, doc: StreamsDoc, recovering: bool = False, device: str = "") -> int:
        """Turn one streams document into records; returns how many observations were new.

        ``device`` is the device key when the document answers ``/<device>/sample``.
        """
        self.metrics.documents += 1
        header = doc.header
        instance = header.instance_id or (self.cursor.instance_id if self.cursor else "")
        filtered = bool(device) or not self._device_paths
        if self.cursor is None:
            # First run with start=buffer: everything the agent still holds is new. A firstSequence that
            # disagrees with the items is not used (it could skip the items below it).
            check = check_header(header, _sequences(doc), filtered=filtered)
            first = header.first_sequence if check.agrees and header.first_sequence is not None else 0
            return self._publish(doc, instance, Cursor(instance, first), check)
        base = self.cursor
        if instance and instance != base.instance_id:
            self._agent_restarted(doc, instance, f"instanceId changed from {base.instance_id} to {instance}")
        gap: DeviceEvent | None = None
        if base.per_device:
            # The agent's header cannot describe every device's numbering: it is checked, never used.
            # A gap is known only when the agent said OUT_OF_RANGE, from the device's own items.
            mark = base.devices.get(device)
            requested = mark.next_sequence if mark and not recovering else None
            check = check_header(header, _sequences(doc), requested=requested, filtered=filtered)
            expected = base.device_next(device)
            own = [o.sequence for o in doc.observations if o.device_key == device] + \
                [b.sequence for b in doc.bad if b.device_key == device and b.sequence is not None]
            if recovering and device and own and min(own) > expected:
                gap = self._gap(doc, instance, expected, min(own), device)
                marks = dict(base.devices)
                marks[device] = DeviceCursor(marks[device].name if device in marks else device, min(own))
                base = Cursor(base.instance_id, base.next_sequence, True, marks)
            return self._publish(doc, instance, base, check, device=device, gap=gap)
        expected = base.next_sequence
        check = check_header(header, _sequences(doc), requested=None if recovering else expected, filtered=filtered)
        if recovering:
            # Same instanceId but the agent's sequence numbers went back: it restarted without saying so.
            # Told by the header when it agrees with the items, else by the items alone.
            top = doc.max_sequence
            if check.agrees and header.next_sequence is not None and header.next_sequence < expected:
                self._agent_restarted(doc, instance, f"nextSequence went back from {expected} to "
                                      f"{header.next_sequence} with the same instanceId {instance}")
            if not check.agrees and top is not None and top + 1 < expected:
                self._agent_restarted(doc, instance, f"its items went back from {expected} to {top} (its header "
                                      f"disagrees with them) with the same instanceId {instance}")
        if check.agrees and header.first_sequence is not None and header.first_sequence > expected:
            gap = self._gap(doc, instance, expected, header.first_sequence)
            base = Cursor(base.instance_id, header.first_sequence, False, base.devices)
        return self._publish(doc, instance, base, check, gap=gap)

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
        self.sink.send_event(event)
        self.sink.flush()
        self.metrics.agent_restarts += 1
        # Every device starts over; an agent that numbered per device keeps doing so.
        self._persist(Cursor(instance, 1, old.per_device, {}))
        # Units and items may differ in the new instance.
        self.probe = None
        raise _Restarted

    def _record_device_id(self, name: str, uuid: str) -> str:
        return (uuid if self.config.device_id_from == "uuid" else name) or name or uuid or self.config.agent_id

    def _gap(self, doc: StreamsDoc, instance: str, expected: int, first: int, device: str = "") -> DeviceEvent:
        lost = first - expected
        whose = f" of device {device}" if device else ""
        detail = (f"agent buffer wrapped: sequences {expected}..{first - 1}{whose} of instance {instance} were "
                  f"overwritten before they were read ({lost} lost)")
        if self.config.devices and not device:
            detail += "; some may have belonged to devices this connector does not follow"
        log.warning("MTConnect agent %s: %s", self.config.agent_url, detail)
        if device:
            mark = self.cursor.devices.get(device) if self.cursor else None
            name = mark.name if mark else device
            device_id = self._record_device_id(name, device if device != name else "")
            event_id = make_event_id(SOURCE, instance, device, "gap", expected, first - 1)
        else:
            device_id = self.config.agent_id
            event_id = make_event_id(SOURCE, instance, "gap", expected, first - 1)
        return DeviceEvent(
            source=SOURCE, device_id=device_id, kind=KIND_GAP, ts=self._doc_ts(doc), event_id=event_id,
            instance_id=instance, sequence=expected, lost_count=lost, detail=detail, region=self.config.region,
            site=self.config.site,
        )

    def _per_device_numbering(self, doc: StreamsDoc, base: Cursor, current: bool) -> str:
        """Why ``doc`` shows that the agent numbers sequences per device ("" if it does not)."""
        owner: dict[int, str] = {}
        items = [(o.sequence, o.device_key) for o in doc.observations] + \
            [(b.sequence, b.device_key) for b in doc.bad if b.sequence is not None]
        for seq, key in items:
            other = owner.setdefault(seq, key)
            if other != key:
                return f"sequence {seq} is used by device {other} and by device {key} in one document"
        if not current and base.next_sequence > 0:
            # A whole-agent /sample from N never holds sequences below N, unless they count per device.
            for seq, key in items:
                if base.device_next(key) <= seq < base.next_sequence:
                    return (f"device {key} sent sequence {seq}, below the requested from={base.next_sequence}, "
                            f"that it had not sent before (its next was {base.device_next(key)})")
        return ""

    def _publish(self, doc: StreamsDoc, instance: str, base: Cursor, check: HeaderCheck, device: str = "",
                 gap: DeviceEvent | None = None, current: bool = False) -> int:
        """Publish the new part of ``doc``, wait for the acks, then persist the cursor.

        ``base`` is the cursor the document is read against: in per-device mode an observation is new when
        its sequence is at or above its own device's mark, otherwise when it is at or above
        ``base.next_sequence``.
        """
        if not base.per_device:
            why = self._per_device_numbering(doc, base, current)
            if why:
                base = self._switch_to_per_device(doc, instance, base, why)
        if gap is not None:
            self.sink.send_event(gap)
            self.metrics.gaps += 1
            self.metrics.lost += gap.lost_count or 0
        marks = dict(base.devices)

        def is_reread(key: str, sequence: int) -> bool:
            return sequence < (base.device_next(key) if base.per_device else base.next_sequence)

        first_of: dict[tuple[str, str, int], Observation] = {}
        new = 0
        for obs in doc.observations:
            key = obs.device_key
            if is_reread(key, obs.sequence):
                self.metrics.reread_skipped += 1
                continue
            ident = (key, obs.item_id, obs.sequence)
            if ident in first_of:
                self._duplicate(doc, obs, first_of[ident], instance)
                continue
            first_of[ident] = obs
            new += 1
            _bump(marks, key, obs.device_name or key, obs.sequence)
            if self.config.devices and not {obs.device_name, obs.device_uuid} & set(self.config.devices):
                continue
            self._emit(doc, obs, instance)
        for bad in doc.bad:
            if bad.sequence is not None:
                if is_reread(bad.device_key, bad.sequence):
                    continue
                _bump(marks, bad.device_key, bad.device_name or bad.device_key, bad.sequence)
            self._dead_letter(doc.element_bytes(bad.index), bad.reason, instance,
                              f"{bad.device_key}/{bad.item_id}/{bad.sequence}")
        next_sequence = self._next_sequence(doc, base, check, marks)
        if not check.agrees:
            self._header_disagrees(doc, instance, check, device, next_sequence, base.per_device)
        self.sink.flush()  # raises PublishError (a double): then nothing is persisted and the batch is re-read
        cursor = Cursor(instance, next_sequence, base.per_device, marks)
        if self.cursor != cursor:
            self._persist(cursor)
        return new

    def _next_sequence(self, doc: StreamsDoc, base: Cursor, check: HeaderCheck,
                       marks: dict[str, DeviceCursor]) -> int:
        """The cursor's ``next_sequence`` after ``doc`` (the rule is in README.md, "Cursor")."""
        if base.per_device:
            # The 'from' of a whole-agent request that cannot skip any device's unread items.
            return min((m.next_sequence for m in marks.values()), default=base.next_sequence)
        nxt = base.next_sequence
        top = doc.max_sequence
        if top is not None:
            nxt = max(nxt, top + 1)
        # The header's nextSequence also covers items filtered out of this document, but only when it
        # agrees with the items and with itself; max(): it never moves the cursor back.
        if check.agrees and doc.header.next_sequence is not None:
            nxt = max(nxt, doc.header.next_sequence)
        return nxt

    def _switch_to_per_device(self, doc: StreamsDoc, instance: str, base: Cursor, why: str) -> Cursor:
        log.warning("MTConnect agent %s numbers sequences per device (%s): reading each device from its own "
                    "sequence from now on", self.config.agent_url, why)
        self._note(NOTE_PER_DEVICE_SEQUENCES, doc.data,
                   f"the agent numbers sequences per device: {why}. Observations are identified by "
                   "(instanceId, device, dataItemId, sequence); each device is read from its own next sequence "
                   "(/<device>/sample?from=...), and the header's sequence numbers are no longer used",
                   note_id=make_event_id(SOURCE, instance, "", "", "", NOTE_PER_DEVICE_SEQUENCES))
        return Cursor(base.instance_id, base.next_sequence, True, base.devices)

    def _header_disagrees(self, doc: StreamsDoc, instance: str, check: HeaderCheck, device: str,
                          next_sequence: int, per_device: bool) -> None:
        self.metrics.header_disagreements += 1
        codes = tuple(code for code, _ in check.problems)
        if self._header_noted.get(device) == codes:
            return
        self._header_noted[device] = codes
        h = doc.header
        if per_device:
            rule = "per-device numbering: the header is not used; each device goes on from its own items"
        else:
            rule = (f"the header is not used: the cursor goes on from the items (next {next_sequence}) "
                    "and no gap is inferred from it")
        where = f" (device {device})" if device else ""
        self._note(NOTE_HEADER_DISAGREES, doc.header_bytes(), f"{check.describe(h)}{where}; {rule}",
                   note_id=make_event_id(SOURCE, instance, device, "",
                                         f"{h.first_sequence}/{h.next_sequence}/{h.last_sequence}"
                                         f":{check.lo}-{check.hi}", NOTE_HEADER_DISAGREES))
        log.warning("MTConnect agent %s: %s%s", self.config.agent_url, check.describe(h), where)

    def _duplicate(self, doc: StreamsDoc, obs: Observation, first: Observation, instance: str) -> None:
        """A second element with the identity of one already in this document: dropped, noted with its bytes."""
        self.metrics.duplicates += 1
        same = "the same value" if (obs.value, obs.element) == (first.value, first.element) else \
            f"a different value ({obs.element} {obs.value!r}; kept: {first.element} {first.value!r})"
        self._note(NOTE_DUPLICATE_OBSERVATION, doc.element_bytes(obs.index),
                   f"device {obs.device_key} item {obs.item_id} sequence {obs.sequence} appears again in one "
                   f"document with {same}: the first one was published, this one is dropped as a duplicate",
                   note_id=make_event_id(SOURCE, instance, obs.device_key, obs.item_id, obs.sequence,
                                         NOTE_DUPLICATE_OBSERVATION))

    def _note(self, kind: str, raw: bytes, reason: str, note_id: str, origin: str = "") -> None:
        self.metrics.notes += 1
        self.sink.note(SOURCE, kind, raw, reason, origin=origin or self.config.agent_url, note_id=note_id)

    def _persist(self, cursor: Cursor) -> None:
        if self._commit is not None:
            self._commit(cursor)
        else:
            save_cursor(self.config.state_path, cursor, self.config.agent_url)
        self.cursor = cursor

    def _dead_letter(self, raw: bytes, reason: str, instance: str, where: str) -> None:
        self.metrics.dead_lettered += 1
        self.sink.dead_letter(SOURCE, raw, reason, origin=f"{self.config.agent_url} {instance}/{where}")

    def _emit(self, doc: StreamsDoc, obs: Observation, instance: str) -> None:
        self.metrics.observations += 1
        hint = obs.type if obs.category == "CONDITION" and obs.type else element_to_type(obs.element)
        item = None
        if self.probe is not None:
            item = self.probe.item(obs.device_name or obs.device_uuid, obs.item_id, hint)
            if item is None and obs.device_uuid:
                item = self.probe.item(obs.device_uuid, obs.item_id, hint)
        device_id = self._record_device_id(obs.device_name, obs.device_uuid)
        name = (item.name if item else "") or obs.name
        metric = (name if self.config.metric_from == "name" and name else obs.item_id)
        item_type = (item.type if item else "") or obs.type or element_to_type(obs.element)
        if obs.category == "CONDITION":
            item_type = obs.type or (item.type if item else "") or item_type
        key = obs.device_key
        event_id = observation_event_id(instance, key, obs.item_id, obs.sequence)
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
                # Alerts are derived from these by the analytics job (flink_jobs/device_alerts.py).
                self.sink.send_event(event)
                self.metrics.device_events += 1
        except RecordError as exc:
            self._dead_letter(doc.element_bytes(obs.index), f"observation {obs.item_id}: {exc}", instance,
                              f"{key}/{obs.item_id}/{obs.sequence}")

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
