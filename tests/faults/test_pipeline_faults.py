"""Nothing is lost: the production pipeline under hard faults, checked in Kafka, InfluxDB and at the
notification receiver.

Each scenario streams readings with stable ids into its own instance of both jobs, the writer process
and the notifier process while a fault is injected, then requires every result to be exactly what
pandas and the reference state machine compute from the ledger of what left the source
(tests/faults/harness.py). Every wait is bounded. They run with ``./run test`` (and so in CI).
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
    repeat_transitions,
    wait_checkpoints,
)
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
log = logging.getLogger(__name__)

KILLS = int(os.environ.get("MW_FAULT_KILLS", "3"))
INFLUX_OUTAGE_S = float(os.environ.get("MW_FAULT_INFLUX_OUTAGE_S", "60"))
KAFKA_OUTAGE_S = float(os.environ.get("MW_FAULT_KAFKA_OUTAGE_S", "30"))
JOBS = ("window-aggregates", "sustained-overheat")


@pytest.fixture
def pipeline(fault_stack: Stack, fault_settings: Settings) -> Iterator[Pipeline]:
    # Every scenario starts on a whole cluster (a scenario may have left a TaskManager it killed).
    fault_stack.flink.up(timeout=120)
    p = Pipeline(fault_settings)
    try:
        yield p.start()
    finally:
        p.close()


def _feeder(settings: Settings, pipeline: Pipeline) -> Feeder:
    return Feeder(settings, pipeline.topics["readings"], pipeline.prefix).start()


def _report(name: str, summary: dict[str, int], started: float) -> None:
    print(f"\n[{name}] {time.monotonic() - started:.0f}s, nothing lost: {summary}")  # noqa: T201


def test_taskmanager_sigkill_repeatedly(fault_stack: Stack, fault_settings: Settings, pipeline: Pipeline) -> None:
    """Both jobs (SQL windows and the Python keyed overheat state) lose their TaskManager again and again."""
    started = time.monotonic()
    feeder = _feeder(fault_settings, pipeline)
    try:
        for kill in range(1, KILLS + 1):
            for job in JOBS:
                wait_checkpoints(fault_settings, pipeline.job_ids[job], 2, timeout=120)
            # Half a checkpoint interval later: the restore replays what came out since (duplicates).
            time.sleep(5)
            tm_pid = fault_stack.flink.taskmanager.pid()
            assert tm_pid is not None
            fault_stack.flink.taskmanager.kill()
            wait_for(lambda: fault_stack.flink.taskmanager.pid() is None, 30, "the TaskManager to die")
            log.info("kill %d: TaskManager %d SIGKILLed after %d ticks", kill, tm_pid, feeder.ticks)
            time.sleep(2)
            # A standalone cluster does not bring a TaskManager back: the harness is the supervisor.
            fault_stack.flink.up(timeout=120)
            assert fault_stack.flink.taskmanager.pid() not in (None, tm_pid)
            for job in JOBS:
                # Each job must go through a restore from its checkpoint, then run again.
                job_id = pipeline.job_ids[job]
                wait_for(lambda j=job_id, k=kill: checkpoint_counts(fault_settings, j)["restored"] >= k, 180,
                         f"{job}: restore #{kill} from a checkpoint")
                wait_for(lambda j=job_id: job_running(fault_settings, j), 180, f"{job} to run again")
        for job in JOBS:
            wait_checkpoints(fault_settings, pipeline.job_ids[job], 1, timeout=120)
    finally:
        ledger = feeder.stop()
    pipeline.processes_alive()
    # Whatever the restores happened to repeat, every transition is repeated once more.
    repeated = repeat_transitions(fault_settings, pipeline)
    summary = assert_nothing_lost(fault_settings, pipeline, ledger)
    restores = {job: checkpoint_counts(fault_settings, pipeline.job_ids[job])["restored"] for job in JOBS}
    assert all(n >= KILLS for n in restores.values()), restores
    _report("taskmanager sigkill", {**summary, "kills": KILLS, "transitions repeated": repeated,
                                    **{f"restores {j}": n for j, n in restores.items()}}, started)


def test_writer_sigkill_repeatedly(fault_stack: Stack, fault_settings: Settings, pipeline: Pipeline) -> None:
    """The InfluxDB writer process is killed mid-stream: it resumes from its last commit, rewriting some
    points (they overwrite), losing none."""
    started = time.monotonic()
    feeder = _feeder(fault_settings, pipeline)
    try:
        for kill in range(1, KILLS + 1):
            committed = pipeline.writer_committed()
            wait_for(lambda c=committed: pipeline.writer_committed() > c, 120, f"the writer to commit (kill {kill})")
            pid = pipeline.writer.pid()
            pipeline.writer.kill()
            wait_for(lambda: pipeline.writer.pid() is None, 30, "the writer to die")
            log.info("kill %d: writer %s SIGKILLed after %d ticks", kill, pid, feeder.ticks)
            time.sleep(3)  # results pile up in Kafka meanwhile
            pipeline.start_writer()
        time.sleep(5)
    finally:
        ledger = feeder.stop()
    pipeline.processes_alive()
    summary = assert_nothing_lost(fault_settings, pipeline, ledger)
    _report("writer sigkill", {**summary, "kills": KILLS}, started)


def test_influxdb_down_for_minutes(fault_stack: Stack, fault_settings: Settings, pipeline: Pipeline) -> None:
    started = time.monotonic()
    feeder = _feeder(fault_settings, pipeline)
    try:
        wait_for(lambda: pipeline.writer_committed() > 0, 120, "first points written")
        assert fault_stack.influxdb.proc.stop()
        down_at = time.monotonic()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{fault_settings.influx}/health", timeout=5)
        committed_at_stop = pipeline.writer_committed()
        time.sleep(INFLUX_OUTAGE_S)
        # While InfluxDB was away the writer acknowledged (committed) nothing, yet the jobs kept producing.
        assert pipeline.writer_committed() == committed_at_stop
        fault_stack.influxdb.up(timeout=120)
        log.info("InfluxDB was down for %.0fs", time.monotonic() - down_at)
        wait_for(lambda: pipeline.writer_committed() > committed_at_stop, 120, "the writer to resume")
        time.sleep(10)
    finally:
        ledger = feeder.stop()
    pipeline.processes_alive()
    summary = assert_nothing_lost(fault_settings, pipeline, ledger)
    _report("influxdb outage", {**summary, "outage_s": int(INFLUX_OUTAGE_S)}, started)


def test_kafka_broker_restart(fault_stack: Stack, fault_settings: Settings, pipeline: Pipeline) -> None:
    started = time.monotonic()
    feeder = _feeder(fault_settings, pipeline)
    try:
        for job in JOBS:
            wait_checkpoints(fault_settings, pipeline.job_ids[job], 1, timeout=120)
        assert fault_stack.kafka.proc.stop()
        ticks_at_stop = feeder.ticks
        time.sleep(KAFKA_OUTAGE_S)
        # The collector kept producing into its buffer while the broker was away.
        assert feeder.ticks > ticks_at_stop
        fault_stack.kafka.up(timeout=180)
        for job in JOBS:
            job_id = pipeline.job_ids[job]
            wait_for(lambda j=job_id: job_running(fault_settings, j), 240, f"{job} to run after the broker")
            wait_checkpoints(fault_settings, job_id, 2, timeout=240)
    finally:
        ledger = feeder.stop()
    pipeline.processes_alive()
    summary = assert_nothing_lost(fault_settings, pipeline, ledger)
    _report("kafka restart", {**summary, "outage_s": int(KAFKA_OUTAGE_S)}, started)


def test_savepoint_change_setting_restore(fault_stack: Stack, fault_settings: Settings, pipeline: Pipeline) -> None:
    """Both jobs stopped with a savepoint while readings keep coming, resubmitted with a changed setting."""
    started = time.monotonic()
    feeder = _feeder(fault_settings, pipeline)
    try:
        locations = {}
        for job in JOBS:
            wait_checkpoints(fault_settings, pipeline.job_ids[job], 1, timeout=120)
        for job in JOBS:
            old = pipeline.job_ids[job]
            locations[job] = jobs.savepoint(fault_settings, old, cancel=True, timeout=120)
            wait_for(lambda o=old: jobs.job_detail(fault_settings, o)["state"] == "FINISHED", 60, f"{job} to stop")
        # Stopping the jobs must not have cost the TaskManager (the other job's slot lives there too).
        assert fault_stack.flink.taskmanager.pid() is not None, fault_stack.flink.taskmanager.tail()
        time.sleep(5)  # readings keep arriving while no job runs
        # A setting that is not part of the state: the source idle timeout.
        changed = pipeline.job_settings.model_copy(update={"source_idle_timeout_ms": 3000})
        for job in JOBS:
            old = pipeline.job_ids[job]
            pipeline.submit(job, settings=changed, from_savepoint=locations[job])
            assert pipeline.job_ids[job] != old
        for job in JOBS:
            wait_checkpoints(fault_settings, pipeline.job_ids[job], 1, timeout=120)
            assert checkpoint_counts(fault_settings, pipeline.job_ids[job])["restored"] >= 1
    finally:
        ledger = feeder.stop()
    pipeline.processes_alive()
    summary = assert_nothing_lost(fault_settings, pipeline, ledger)
    _report("savepoint + setting change + restore", summary, started)
