"""Nothing is lost: the pipeline under hard faults, end to end through InfluxDB.

Each scenario streams readings with stable ids into its own job instance while a fault is injected,
then requires InfluxDB to hold exactly what pandas computes from the ledger of what left the source
(tests/faults/harness.py). Every wait is bounded. Run with ``./run faults``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import pytest
import requests

from machinewatch import jobs
from machinewatch.config import Settings
from machinewatch.stack import Stack
from tests.faults.harness import (
    Feeder,
    Pipeline,
    assert_nothing_lost,
    checkpoint_counts,
    job_running,
    wait_checkpoints,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]
log = logging.getLogger(__name__)

KILLS = int(os.environ.get("MW_FAULT_KILLS", "3"))
INFLUX_OUTAGE_S = float(os.environ.get("MW_FAULT_INFLUX_OUTAGE_S", "75"))
KAFKA_OUTAGE_S = float(os.environ.get("MW_FAULT_KAFKA_OUTAGE_S", "30"))


@pytest.fixture
def pipeline(fault_stack: Stack, fault_settings: Settings) -> Iterator[Pipeline]:
    p = Pipeline(fault_settings)
    p.create_topics()
    p.submit()
    p.start_writer()
    try:
        yield p
    finally:
        p.close()


def _report(name: str, summary: dict[str, int], started: float) -> None:
    # Printed so that ./run faults records it in tests/faults/LAST_RUN.md.
    print(f"\n[{name}] {time.monotonic() - started:.0f}s, nothing lost: {summary}")  # noqa: T201


def test_taskmanager_sigkill_repeatedly(fault_stack: Stack, fault_settings: Settings, pipeline: Pipeline) -> None:
    started = time.monotonic()
    feeder = Feeder(fault_settings, pipeline.topics["readings"], pipeline.prefix).start()
    try:
        for kill in range(1, KILLS + 1):
            wait_checkpoints(fault_settings, pipeline.job_id, 2, timeout=120)
            tm_pid = fault_stack.flink.taskmanager.pid()
            assert tm_pid is not None
            fault_stack.flink.taskmanager.kill()
            wait_for(lambda: fault_stack.flink.taskmanager.pid() is None, 30, "the TaskManager to die")
            log.info("kill %d: TaskManager %d SIGKILLed after %d ticks", kill, tm_pid, feeder.ticks)
            time.sleep(2)
            # A standalone cluster does not bring a TaskManager back: the harness is the supervisor.
            fault_stack.flink.up(timeout=120)
            assert fault_stack.flink.taskmanager.pid() not in (None, tm_pid)
            # The job must go through a restore from its checkpoint, then run again.
            wait_for(lambda k=kill: checkpoint_counts(fault_settings, pipeline.job_id)["restored"] >= k, 180,
                     f"restore #{kill} from a checkpoint")
            wait_for(lambda: job_running(fault_settings, pipeline.job_id), 180, "the job to run again")
        wait_checkpoints(fault_settings, pipeline.job_id, 1, timeout=120)
    finally:
        ledger = feeder.stop()
    assert pipeline.writer_alive(), f"the writer died: {pipeline.writer_error!r}"
    summary = assert_nothing_lost(fault_settings, pipeline, ledger)
    counts = checkpoint_counts(fault_settings, pipeline.job_id)
    assert counts["restored"] >= KILLS
    _report("taskmanager sigkill", {**summary, "kills": KILLS, "restores": counts["restored"]}, started)


def test_influxdb_down_for_minutes(fault_stack: Stack, fault_settings: Settings, pipeline: Pipeline) -> None:
    started = time.monotonic()
    assert pipeline.writer is not None
    feeder = Feeder(fault_settings, pipeline.topics["readings"], pipeline.prefix).start()
    try:
        wait_for(lambda: pipeline.writer is not None and pipeline.writer.written > 0, 120, "first points written")
        assert fault_stack.influxdb.proc.stop()
        down_at = time.monotonic()
        written_at_stop = pipeline.writer.written
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{fault_settings.influx}/health", timeout=5)
        time.sleep(INFLUX_OUTAGE_S)
        # While InfluxDB was away nothing was acknowledged as written, yet the job kept producing.
        assert pipeline.writer.written == written_at_stop
        fault_stack.influxdb.up(timeout=120)
        log.info("InfluxDB was down for %.0fs", time.monotonic() - down_at)
        wait_for(lambda: pipeline.writer is not None and pipeline.writer.written > written_at_stop, 120,
                 "the writer to resume")
        time.sleep(10)
    finally:
        ledger = feeder.stop()
    assert pipeline.writer_alive(), f"the writer died: {pipeline.writer_error!r}"
    summary = assert_nothing_lost(fault_settings, pipeline, ledger)
    _report("influxdb outage", {**summary, "outage_s": int(INFLUX_OUTAGE_S)}, started)


def test_kafka_broker_restart(fault_stack: Stack, fault_settings: Settings, pipeline: Pipeline) -> None:
    started = time.monotonic()
    feeder = Feeder(fault_settings, pipeline.topics["readings"], pipeline.prefix).start()
    try:
        wait_checkpoints(fault_settings, pipeline.job_id, 1, timeout=120)
        assert fault_stack.kafka.proc.stop()
        ticks_at_stop = feeder.ticks
        time.sleep(KAFKA_OUTAGE_S)
        # The collector kept producing into its buffer while the broker was away.
        assert feeder.ticks > ticks_at_stop
        fault_stack.kafka.up(timeout=180)
        wait_for(lambda: job_running(fault_settings, pipeline.job_id), 240, "the job to run after the broker")
        wait_checkpoints(fault_settings, pipeline.job_id, 2, timeout=240)
    finally:
        ledger = feeder.stop()
    assert pipeline.writer_alive(), f"the writer died: {pipeline.writer_error!r}"
    summary = assert_nothing_lost(fault_settings, pipeline, ledger)
    _report("kafka restart", {**summary, "outage_s": int(KAFKA_OUTAGE_S)}, started)


def test_savepoint_change_setting_restore(fault_stack: Stack, fault_settings: Settings, pipeline: Pipeline) -> None:
    started = time.monotonic()
    feeder = Feeder(fault_settings, pipeline.topics["readings"], pipeline.prefix).start()
    try:
        wait_checkpoints(fault_settings, pipeline.job_id, 1, timeout=120)
        location = jobs.savepoint(fault_settings, pipeline.job_id, cancel=True, timeout=120)
        old = pipeline.job_id
        wait_for(lambda: jobs.job_detail(fault_settings, old)["state"] == "CANCELED", 60, "the old job to stop")
        time.sleep(5)  # readings keep arriving while no job runs
        # A setting that is not part of the state: the source idle timeout.
        changed = fault_settings.model_copy(update={"source_idle_timeout_ms": 3000})
        pipeline.submit(settings=changed, from_savepoint=location)
        assert pipeline.job_id != old
        wait_checkpoints(fault_settings, pipeline.job_id, 1, timeout=120)
        assert checkpoint_counts(fault_settings, pipeline.job_id)["restored"] >= 1
    finally:
        ledger = feeder.stop()
    summary = assert_nothing_lost(fault_settings, pipeline, ledger)
    _report("savepoint + setting change + restore", summary, started)
