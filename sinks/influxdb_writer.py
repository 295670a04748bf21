"""Writes the Flink jobs' results from Kafka into InfluxDB, idempotently, as a sink on the one runner.

Window aggregates, late events and alerts each become one point with a deterministic timestamp
(window end or event time) and tags, so a replay overwrites the same point. The window job's roll-ups (1-minute
and hourly windows of each device, and of each source, region and site: ``fleet_agg``) go to the roll-up buckets,
every other window to the aggregates bucket.
The runner (``machinewatch.runtime``, with ``kafka_io.KafkaSource``) commits offsets only after InfluxDB accepted the
points polled before: an InfluxDB outage leaves the results buffered in Kafka (back-pressure), never
dropped. What cannot land (not a result, refused by InfluxDB, older than the bucket keeps) comes back to
the runner as ``Rejected`` and goes to the dead-letter topic with its exact bytes.

Points are written as line protocol by the one encoder of each record kind (``machinewatch.line_protocol``,
derived from ``machinewatch.schema``; byte for byte what influxdb_client's ``Point`` gives, without its
per-point cost) in gzip-compressed requests of at most ~1 MB, as the ``influx write`` CLI does. Alerts are
encoded by their ``kind`` field (threshold, sustained_<rule>, derived). On the runner a thread of the writer
makes the requests while the next poll is decoded and converted (the two overlap: the request waits on
InfluxDB, not on the interpreter); a flush waits for those writes before the runner commits.

Results whose ``site`` is one of ``MW_INFLUX_SITES`` go to that site's own InfluxDB (the same buckets), all
others to ``MW_INFLUX_URL``: InfluxDB 2 OSS is a single node, so a large installation splits by site.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.rest import ApiException
from influxdb_client.service.write_service import WriteService
from pydantic import SecretStr

from machinewatch import names, quality, rollups
from machinewatch.config import Settings
from machinewatch.influx_admin import bucket_retention_s
from machinewatch.kafka_io import KafkaMessage, KafkaSource, message_origin, run_consumer
from machinewatch.line_protocol import aggregate_line, alert_line, late_line, window_label, window_line
from machinewatch.runtime import Counters, Rejected, RunOptions
from machinewatch.schema import BadRecord

log = logging.getLogger(__name__)

# The encoders of the result records, derived from their definitions (machinewatch.schema): one per kind,
# the same ones the tests use. Alerts are told apart by their kind field.
BadResult = BadRecord  # a message on a result topic that is not a result of its kind


__all__ = ["BadResult", "ByWindow", "InfluxWriter", "Topics", "aggregate_line", "alert_line", "late_line", "parse",
           "window_line"]

Converter = Callable[[Mapping[str, Any]], "str | Point"]


@dataclass(frozen=True)
class ByWindow:
    """The bucket of a window result by its ``window`` tag: a roll-up's rows (``1m``, ``1h``) go to that roll-up's
    bucket (machinewatch.rollups), every other window to ``default``."""

    default: str
    buckets: Mapping[str, str]

    def __call__(self, doc: Mapping[str, Any]) -> str:
        return self.buckets.get(window_label(doc), self.default)

    def __str__(self) -> str:
        rolled = ", ".join(f"window {label} -> '{bucket}'" for label, bucket in self.buckets.items())
        return f"'{self.default}' ({rolled})" if rolled else f"'{self.default}'"




# Request bodies of at most this many characters of line protocol (~1 MB, twice the CLI's 500 kB: one
# poll of 5,000 window results fits in one request), gzip-compressed at the cheapest level: the text
# repeats so much that level 1 already shrinks it ~10x, and a higher level costs the writer CPU the
# server would rather have.
_MAX_BODY = 1_000_000
_GZIP_LEVEL = 1


# Every digit a "0", everything else a space: a run of 19 digits in the result is a number orjson might not read as
# json does (see parse).
_DIGITS = bytes(48 if 48 <= c <= 57 else 32 for c in range(256))
_LONG_NUMBER = b"0" * 19


def parse(raw: bytes) -> dict[str, Any]:
    # orjson decodes a result several times faster than json (JSON decode was one of the writer's two largest
    # per-record costs). It reads integers beyond 64 bits as floats, so a result with a 19-digit run goes to
    # json.loads, as does what orjson refuses (NaN literals, lone surrogates, a BOM, UTF-16/32): every input gives
    # the same document or error as with json.loads alone.
    if _LONG_NUMBER not in raw.translate(_DIGITS):
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            if doc.__class__ is dict:
                return doc
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = f"not JSON: {exc}"
        raise BadResult(msg) from exc
    if not isinstance(doc, dict):
        msg = "not a JSON object"
        raise BadResult(msg)
    return doc


def _ms_line(point: Point) -> str:
    if point.write_precision != WritePrecision.MS:  # an int time is taken as it is: it must be ms already
        msg = f"points must have ms timestamps (as the line encoders write), not {point.write_precision}"
        raise ValueError(msg)
    return point.to_line_protocol()


class InfluxWriter:
    """The InfluxDB write path of the result topics, and ``run()``: the topics consumed into it on the runner.

    ``write(bucket, points)`` writes lines in requests of at most ~1 MB, each retried until InfluxDB is back
    (or the run stops); what cannot land is dead-lettered, never counted as written. ``handle(messages)``
    routes consumed results by topic to their bucket. ``InfluxResultSink`` is the runner's view of it.
    """

    name = "influx-writer"  # the dead letters' source
    # Site -> the writer of that site's own InfluxDB (MW_INFLUX_SITES); none unless __init__ sets them.
    sites: Mapping[str, InfluxWriter] = MappingProxyType({})

    def __init__(
        self, settings: Settings, group_id: str = "mw-influx-writer",
        routes: dict[str, tuple[Converter, str | ByWindow]] | None = None,
    ) -> None:
        self.s = settings
        self.group_id = group_id
        self.routes = routes or Topics().routes()
        # One poll of up to 5,000 results is one write, made by the writer thread while the next poll is decoded.
        # Offsets are committed every 2 s (or 100,000 results), once the writes before them landed: each commit
        # waits for the write in flight, so committing after every poll would undo the overlap. A crash repeats
        # at most those 2 s of results, which overwrite the same points.
        self.options = RunOptions(poll_timeout_s=1.0, max_batch=100_000, flush_interval_s=2.0)
        self.client = InfluxDBClient(url=settings.influx, token=settings.write_token(), org=settings.influx_org)
        # The write endpoint itself, not write_api: that one would re-encode every line and gzip at level 9.
        self.write_service = WriteService(self.client.api_client)
        self.org = settings.influx_org
        self.stop_event = threading.Event()
        self.written = 0
        self.rejected = 0
        self._refused: list[Rejected] = []
        self._lock = threading.Lock()  # counts and dead letters: the writer thread adds to them too
        self._retention: dict[str, tuple[float, int | None]] = {}  # bucket -> (read at, seconds; 0 = forever)
        self._writes: _BackgroundWrites | None = None  # the writer thread of handle(background=True)
        # The sites with an InfluxDB of their own: a writer each (routes unused), sharing the stop event.
        sites: dict[str, InfluxWriter] = {}
        for site, target in settings.influx_sites.items():
            token = SecretStr(target.token())
            site_settings = settings.model_copy(update={
                "influx_url": target.url, "influx_org": target.org or settings.influx_org, "influx_sites": {},
                "influx_write_token": token, "influx_read_token": token,
            })
            sites[site] = InfluxWriter(site_settings, group_id, self.routes)
            sites[site].stop_event = self.stop_event
        self.sites = sites

    def _dead_letter(self, raw: bytes, reason: str, origin: str) -> None:
        with self._lock:
            self._refused.append(Rejected(raw, reason, origin))

    def take_refused(self) -> list[Rejected]:
        """What was dead-lettered since the last call (for the runner's dead-letter output)."""
        with self._lock:
            refused, self._refused = self._refused, []
        return refused

    def _count(self, written: int = 0, rejected: int = 0) -> None:
        with self._lock:  # the runner's thread and the writer thread both count
            self.written += written
            self.rejected += rejected

    def _refuse(self, bucket: str, lines: Sequence[str], reason: str) -> int:
        """Dead-letter lines that cannot land, in letters of whole lines of at most MAX_RAW_BYTES each."""
        group: list[bytes] = []
        size = 0
        for line in lines:
            data = line.encode()
            if group and size + len(data) + 1 > quality.MAX_RAW_BYTES:
                self._dead_letter(b"\n".join(group), f"{reason} ({len(group)} points)", f"bucket {bucket}")
                group, size = [], 0
            group.append(data)
            size += len(data) + 1
        if group:
            self._dead_letter(b"\n".join(group), f"{reason} ({len(group)} points)", f"bucket {bucket}")
        self._count(rejected=len(lines))
        log.warning("InfluxDB bucket '%s': %d points dead-lettered: %s", bucket, len(lines), reason)
        return len(lines)

    def retention_s(self, bucket: str) -> int | None:
        """The bucket's retention (0 = forever, None = unknown), read again every 10 minutes."""
        now = time.monotonic()
        read_at, seconds = self._retention.get(bucket, (-1e9, None))
        if now - read_at > 600:
            seconds = bucket_retention_s(self.s, bucket)
            self._retention[bucket] = (now, seconds)
        return seconds

    def write(self, bucket: str, points: Sequence[str | Point]) -> int:
        """Write lines (or Points, at ms precision) in requests of at most ~1 MB, each until InfluxDB accepts it.

        Returns how many points could not land (dead-lettered with the reason): those older than the
        bucket's retention, found before writing, and those InfluxDB refused.
        """
        lines = [p if isinstance(p, str) else _ms_line(p) for p in points]
        refused = 0
        retention = self.retention_s(bucket)
        if retention:
            horizon_ms = int(time.time() * 1000) - retention * 1000
            old = [line for line in lines if line and int(line.rsplit(" ", 1)[1]) < horizon_ms]
            if old:
                refused += self._refuse(bucket, old, f"older than bucket '{bucket}' keeps ({retention} s retention); "
                                        "write history with 'machinewatch sink influxdb --history'")
                lines = [line for line in lines if line and int(line.rsplit(" ", 1)[1]) >= horizon_ms]
        chunk: list[str] = []
        size = 0
        for line in lines:
            if not line:
                continue  # a point without fields: influxdb_client sent a blank line, which InfluxDB skips
            if chunk and size + len(line) >= _MAX_BODY:
                refused += self._write_lines(bucket, chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line) + 1
        if chunk:
            refused += self._write_lines(bucket, chunk)
        return refused

    def _post(self, bucket: str, lines: list[str]) -> None:
        body = zlib.compress("\n".join(lines).encode(), _GZIP_LEVEL, wbits=31)  # wbits 31: gzip framing
        self.write_service.post_write(org=self.org, bucket=bucket, body=body, precision=WritePrecision.MS,
                                      content_encoding="gzip", content_type="text/plain; charset=utf-8")

    def _write_lines(self, bucket: str, lines: list[str]) -> int:
        """One request, retried with back-off on outages (the caller has not committed yet); returns how
        many of the points InfluxDB refused (they are dead-lettered, never counted as written).

        Rejections of the data itself (400/422) are never retried as they are: they would block every
        result behind them. A partial write stored the rest but does not say which points it dropped:
        if it dropped all, all are dead-lettered; otherwise the batch is written again in halves (the
        stored points are overwritten, unchanged) until only the refused points remain.
        """
        delay = 0.5
        while True:
            try:
                self._post(bucket, lines)
                return 0
            except ApiException as exc:
                if exc.status in (400, 422):
                    return self._rejected_by_server(bucket, lines, exc)
                if exc.status == 413 and len(lines) > 1:
                    return self._halves(bucket, lines)
                error: Exception = exc
            except Exception as exc:  # noqa: BLE001 - connection errors and the like: keep the data, retry
                error = exc
            if self.stop_event.is_set():
                raise error
            log.warning("InfluxDB write of %d points failed (%s); retrying in %.1fs",
                        len(lines), str(error).splitlines()[0][:200], delay)
            self.stop_event.wait(delay)
            delay = min(delay * 2, 30.0)

    def _halves(self, bucket: str, lines: list[str]) -> int:
        half = len(lines) // 2
        return self._write_lines(bucket, lines[:half]) + self._write_lines(bucket, lines[half:])

    def _rejected_by_server(self, bucket: str, lines: list[str], exc: ApiException) -> int:
        body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or exc.reason)
        if "partial write" in body:
            match = re.search(r"dropped[= ](\d+)", body)  # "dropped=1" (2.x) or "dropped 2 points"
            dropped = int(match[1]) if match else len(lines)
            if dropped >= len(lines) or len(lines) == 1:
                return self._refuse(bucket, lines, f"InfluxDB dropped them: {body[:300]}")
            return self._halves(bucket, lines)
        if len(lines) == 1:
            return self._refuse(bucket, lines, f"InfluxDB rejected the point: {body[:300]}")
        # Nothing of the batch was stored: halving finds the bad points in a few requests, not one per point.
        return self._halves(bucket, lines)

    def handle(self, messages: Iterable[KafkaMessage], background: bool = False) -> int:
        """Write consumed results to their buckets; returns how many points landed. Messages that are not
        results are dead-lettered with their bytes and ``topic/partition@offset``.

        ``background``: hand the converted points to the writer thread and return 0 at once (the points land,
        or are dead-lettered, before ``drain()`` returns): the next poll is decoded while InfluxDB writes.
        """
        by_bucket: dict[tuple[str | None, str], list[str | Point]] = {}  # (site with its own InfluxDB, bucket)
        for msg in messages:
            if msg.value is None:
                continue  # a tombstone of an upsert topic: the point it replaced stays as written
            convert, route = self.routes[msg.topic]
            try:
                doc = parse(msg.value)
                site = doc.get("site")
                target = site if isinstance(site, str) and site in self.sites else None
                point = convert(doc)  # first: a result that is not one is refused with the encoder's reason
                bucket = route if isinstance(route, str) else route(doc)
                by_bucket.setdefault((target, bucket), []).append(point)
            except (BadResult, ValueError, TypeError, OverflowError) as exc:  # Overflow: an int too big for float
                self._count(rejected=1)
                self._dead_letter(msg.value, str(exc), message_origin(msg))
        if background:
            for (target, bucket), points in by_bucket.items():
                self._background().submit(target, bucket, points)
            return 0
        return sum(self._write_group(target, bucket, points) for (target, bucket), points in by_bucket.items())

    def _write_group(self, target: str | None, bucket: str, points: Sequence[str | Point]) -> int:
        """Write one bucket's points to the main InfluxDB or a site's; count them; returns how many landed."""
        if target is None:
            refused = self.write(bucket, points)
        else:
            site_writer = self.sites[target]
            refused = site_writer.write(bucket, points)
            # Its dead letters and counts are this writer's: one runner, one dead-letter output.
            with self._lock:
                self._refused += site_writer.take_refused()
            self._count(rejected=site_writer.rejected)
            site_writer.rejected = 0
        self._count(written=len(points) - refused)
        return len(points) - refused

    def _background(self) -> _BackgroundWrites:
        if self._writes is None:
            self._writes = _BackgroundWrites(self)
        return self._writes

    def drain(self) -> None:
        """Wait until every background write landed (or was dead-lettered); raise ``WritesStopped`` if one could
        not be done (the writer stopped while InfluxDB was away): then nothing after it may be committed."""
        if self._writes is not None:
            self._writes.wait()

    def run(self, idle_exit_s: float | None = None) -> Counters:
        """Consume the routes' topics into InfluxDB until stopped (``stop_event``, SIGTERM/SIGINT in the main
        thread) or until no message came for ``idle_exit_s`` seconds."""
        for topic, (_, route) in self.routes.items():
            log.info("writing %s -> %s bucket %s", topic, self.s.influx, route if isinstance(route, ByWindow)
                     else f"'{route}'")
        for site, site_writer in self.sites.items():
            log.info("results of site '%s' -> %s", site, site_writer.s.influx)
        source = KafkaSource(self.s, list(self.routes), self.group_id, name=self.name,
                             client_id="machinewatch-influx-writer", max_poll_records=5000)
        return run_consumer(source, InfluxResultSink(self), self.s, self.options, stop_event=self.stop_event,
                            idle_exit_s=idle_exit_s)

    def close(self) -> None:
        if self._writes is not None:
            self._writes.close()
        self.client.close()
        for site_writer in self.sites.values():
            site_writer.close()


class WritesStopped(RuntimeError):
    """A background write could not be done (``__cause__`` says why): nothing after it was written or committed."""


class _BackgroundWrites:
    """The writer thread of ``InfluxWriter.handle(background=True)``: one bucket's points at a time, in the order
    handed over (a later point of a series overwrites an earlier one, as without the thread). At most one batch
    waits while another is written, so the converted points held are bounded and a slow InfluxDB slows the polls.

    A write that could not be done (the writer stopped while InfluxDB was away, or an unexpected error) stops all
    writes after it: ``wait`` raises it from then on, so the runner commits nothing past it and those results are
    consumed again on the next start.
    """

    def __init__(self, writer: InfluxWriter) -> None:
        self.writer = writer
        self._queue: queue.Queue[tuple[str | None, str, Sequence[str | Point]] | None] = queue.Queue(maxsize=1)
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="influx-writes", daemon=True)
        self._thread.start()

    def submit(self, target: str | None, bucket: str, points: Sequence[str | Point]) -> None:
        """Queue one bucket's points; waits while the previous batch still waits for the thread."""
        self._raise_failure()
        self._queue.put((target, bucket, points))

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._failed is None:
                    self.writer._write_group(*job)  # noqa: SLF001 - the writer's own thread
            except BaseException as exc:  # noqa: BLE001 - kept and raised on the runner's thread by wait()
                self._failed = exc
            finally:
                self._queue.task_done()

    def _raise_failure(self) -> None:
        if self._failed is not None:
            # Not a TransientError: retrying cannot bring back what the thread gave up on; the run ends here.
            msg = f"InfluxDB writes stopped: {type(self._failed).__name__}: {str(self._failed)[:200]}"
            raise WritesStopped(msg) from self._failed

    def wait(self) -> None:
        """Until every queued write is done; raises the failure that stopped the writes, if one did."""
        self._queue.join()
        self._raise_failure()

    def close(self, timeout_s: float = 60.0) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout_s)


class InfluxResultSink:
    """``machinewatch.runtime.Sink`` of the writer: consumed results converted at once and written by the writer's
    thread (each request retried until InfluxDB took it); ``flush`` waits for those writes and returns what InfluxDB
    refused, so the runner dead-letters it before it commits; closing closes the writer."""

    def __init__(self, writer: InfluxWriter) -> None:
        self.writer = writer

    def write(self, records: Sequence[KafkaMessage]) -> list[Rejected]:
        # Decoded and converted here; written by the writer's thread while the runner polls the next batch.
        self.writer.handle(records, background=True)
        return self.writer.take_refused()

    def flush(self) -> list[Rejected]:
        self.writer.drain()
        # The line operators and tests read: points, not messages (a dead letter may hold many points).
        log.info("written %d points so far (%d dead-lettered, never written)", self.writer.written,
                 self.writer.rejected)
        return self.writer.take_refused()  # what InfluxDB refused in the background: dead-lettered before the commit

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True)
class Topics:
    """The result topics the writer reads (the defaults are the jobs' default topics)."""

    aggregates: str = names.TOPIC_AGGREGATES
    late: str = names.TOPIC_LATE
    alerts: str = names.TOPIC_ALERTS
    # A backfill (``history``) writes windows, late events and alerts into the history bucket, which
    # keeps data of any age; the live buckets' retention would drop it.
    history: bool = False

    def routes(self) -> dict[str, tuple[Converter, str | ByWindow]]:
        results = names.BUCKET_HISTORY if self.history else names.BUCKET_AGGREGATES
        alerts = names.BUCKET_HISTORY if self.history else names.BUCKET_ALERTS
        # The window job's roll-up rows (1m, 1h) go to the roll-up buckets; a backfill's stay in the history bucket.
        windows: str | ByWindow = results if self.history else ByWindow(results, rollups.by_label())
        return {
            self.aggregates: (aggregate_line, windows),
            self.late: (late_line, results),
            self.alerts: (alert_line, alerts),
        }


def main(settings: Settings, idle_exit_s: float | None = None, group_id: str = "mw-influx-writer",
         topics: Topics | None = None) -> None:
    InfluxWriter(settings, group_id=group_id, routes=(topics or Topics()).routes()).run(idle_exit_s)
