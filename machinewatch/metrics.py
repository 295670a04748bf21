"""Prometheus metrics of the long-running processes: every Runner's counters, served on 127.0.0.1.

Off unless ``MW_METRICS_PORT`` is set for the process: ``0`` takes a free port the system picks (logged at
INFO, and on ``Runner.metrics_url``), a number takes that port. It is read from the process's environment
only (not the ``.env`` file and not handed down by the stack), so processes started side by side never ask
for the same port by accident. One HTTP server per process (``prometheus-client``'s), started by the first
runner and stopped when the last one ends; each runner is a set of series labelled ``runner="<name>"``.

Part of the core: it imports nothing above it, and ``prometheus_client`` only when the port is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from machinewatch.runtime import Runner

log = logging.getLogger(__name__)

# Transient failures the runner retries, by step: always exported (0 until one happens), so a rate works.
STEPS = ("open", "poll", "flush")


class MetricsSettings(BaseSettings):
    """``MW_METRICS_PORT`` (unset: no endpoint; 0: any free port) and ``MW_METRICS_HOST``."""

    # No env_file on purpose: one .env shared by several processes would give them all one port.
    model_config = SettingsConfigDict(env_prefix="MW_METRICS_", extra="ignore")

    port: int | None = Field(default=None, ge=0, le=65535)
    host: str = "127.0.0.1"


def load_metrics_settings() -> MetricsSettings:
    """The settings, or a RuntimeError naming the variable and its bad value (not a pydantic trace)."""
    try:
        return MetricsSettings()
    except ValidationError as exc:
        problems = "; ".join(f"MW_METRICS_{'_'.join(str(p) for p in e['loc']).upper()}={e.get('input')!r}: "
                             f"{e['msg']}" for e in exc.errors())
        msg = f"invalid setting {problems} (unset: no metrics endpoint; 0: any free port)"
        raise RuntimeError(msg) from None


class RunnerCollector:
    """Reads the counters of the registered runners at scrape time (``prometheus_client`` custom collector).

    The runner thread only ever adds to its counters; the scrape thread copies each dict before reading it.
    """

    def __init__(self) -> None:
        self._runners: dict[int, Runner] = {}
        self._lock = threading.Lock()

    def add(self, runner: Runner) -> None:
        with self._lock:
            self._runners[id(runner)] = runner

    def remove(self, runner: Runner) -> None:
        with self._lock:
            self._runners.pop(id(runner), None)

    def __len__(self) -> int:
        return len(self._runners)

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        received = CounterMetricFamily("machinewatch_records_received",
                                       "Records (and rejects) the source produced: records in", labels=["runner"])
        written = CounterMetricFamily("machinewatch_records_written",
                                      "Records the sink accepted and made durable: records out", labels=["runner"])
        rejected = CounterMetricFamily("machinewatch_records_rejected",
                                       "Dead letters (rejected by the source or refused by the sink) by reason "
                                       "class: numbers, ids and quoted values taken out", labels=["runner", "reason"])
        checkpoints = CounterMetricFamily("machinewatch_checkpoints",
                                          "Checkpoints committed to the source (offsets, acks, cursors)",
                                          labels=["runner"])
        errors = CounterMetricFamily("machinewatch_errors", "Transient failures retried, by step",
                                     labels=["runner", "step"])
        lag = GaugeMetricFamily("machinewatch_lag_records",
                                "What the source says is waiting (Kafka: messages after the last one polled)",
                                labels=["runner"])
        success = GaugeMetricFamily("machinewatch_last_success_timestamp_seconds",
                                    "When records were last flushed and checkpointed (Unix time)", labels=["runner"])
        last_input = GaugeMetricFamily("machinewatch_last_input_timestamp_seconds",
                                       "When the source last delivered anything (Unix time)", labels=["runner"])
        started = GaugeMetricFamily("machinewatch_runner_start_timestamp_seconds",
                                    "When the runner started (Unix time)", labels=["runner"])
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            c, name = runner.counters, runner.name
            received.add_metric([name], c.received)
            written.add_metric([name], c.written)
            checkpoints.add_metric([name], c.checkpoints)
            for reason, count in dict(c.rejected_by_reason).items():
                rejected.add_metric([name, reason], count)
            failures = dict(c.failures)
            for step in sorted({*STEPS, *failures}):
                errors.add_metric([name, step], failures.get(step, 0))
            if c.lag is not None:
                lag.add_metric([name], c.lag)
            if c.last_success is not None:
                success.add_metric([name], c.last_success)
            if c.last_input is not None:
                last_input.add_metric([name], c.last_input)
            started.add_metric([name], runner.started_at or 0.0)
        yield from (received, written, rejected, checkpoints, errors, lag, success, last_input, started)


class Exporter:
    """The process's metrics endpoint: a registry with one ``RunnerCollector`` and prometheus-client's server."""

    def __init__(self, host: str, port: int) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        self.collector = RunnerCollector()
        # A registry of our own, not the library's global one: nothing else of the process leaks into it.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            msg = (f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); set MW_METRICS_PORT to a free "
                   "port, or 0 for any")
            raise OSError(exc.errno, msg) from exc
        self.host = host
        self.port = int(self.server.server_port)
        self.url = f"http://{host}:{self.port}/metrics"
        log.info("metrics on %s", self.url)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


_lock = threading.Lock()
_exporter: Exporter | None = None


def current() -> Exporter | None:
    """The process's endpoint while a runner exports to it."""
    return _exporter


@contextmanager
def exporting(runner: Runner) -> Iterator[None]:
    """While the block runs, ``runner``'s counters are on the process's endpoint (when MW_METRICS_PORT is set);
    ``runner.metrics_url`` names it."""
    global _exporter
    runner.started_at = time.time()
    settings = load_metrics_settings()
    if settings.port is None:
        yield
        return
    with _lock:
        if _exporter is None:
            _exporter = Exporter(settings.host, settings.port)
        exporter = _exporter
        exporter.collector.add(runner)
    runner.metrics_url = exporter.url
    try:
        yield
    finally:
        with _lock:
            exporter.collector.remove(runner)
            if not len(exporter.collector) and _exporter is exporter:
                _exporter = None
                exporter.close()
