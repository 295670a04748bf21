"""Nothing is lost on the multi-node stack: a 3-node KRaft cluster (replication 3, min.insync.replicas 2)
and two TaskManagers, with the production pipeline of the single-node scenarios (tests/faults/harness.py).

One scenario, one pipeline, three faults in a row while the feeder streams (one cluster and one run keep
CI time down): SIGKILL the leader broker of the readings partition, SIGKILL one of the two TaskManagers,
restart the active KRaft controller. Then the same oracle as every fault scenario: every window, threshold
alert and overheat transition exactly as computed from the ledger, nothing extra, each notification once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from machinewatch.config import Settings
from machinewatch.stack import Stack
from machinewatch.stack.private import private_settings
from tests.faults.harness import (
    Feeder,
    Pipeline,
    assert_nothing_lost,
    checkpoint_counts,
    job_running,
    wait_checkpoints,
)
from tests.stack_support import running_stack
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
log = logging.getLogger(__name__)
JOBS = ("window-aggregates", "sustained-overheat")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Both jobs at parallelism 2 fill the four slots, so each TaskManager runs part of them.
    settings = private_settings(Path(tmp_path_factory.mktemp("mw-cluster-faults")), kafka_brokers=3,
                                flink_taskmanagers=2, flink_taskmanager_slots=2, flink_parallelism=2)
    with running_stack(settings) as stack:
        yield stack


def partition_leader(settings: Settings, topic: str) -> int:
    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        (described,) = admin.describe_topics([topic])
        return int(described["partitions"][0]["leader_id"])
    finally:
        admin.close()


def quorum_leader(cluster: Stack) -> int:
    """The node id of the active KRaft controller: the leader in the newest epoch any voter has recorded
    (each voter keeps its view in ``__cluster_metadata-0/quorum-state``; the provisioned libs have no tools)."""
    views = []
    for node in cluster.kafka.nodes:
        path = node.dir / "data" / "__cluster_metadata-0" / "quorum-state"
        with contextlib.suppress(FileNotFoundError, ValueError):
            state = json.loads(path.read_text())
            views.append((int(state["leaderEpoch"]), int(state["leaderId"])))
    epoch, leader = max(views)
    assert leader > 0, f"no controller leader in epoch {epoch}"
    return leader


def test_broker_taskmanager_and_controller_faults_lose_nothing(cluster: Stack) -> None:
    s = cluster.settings
    started = time.monotonic()
    pipeline = Pipeline(s).start()
    try:
        feeder = Feeder(s, pipeline.topics["readings"], pipeline.prefix).start()
        try:
            for job in JOBS:
                wait_checkpoints(s, pipeline.job_ids[job], 2, timeout=180)

            # 1. The leader of the readings partition dies mid-stream; the feeder (acks=all) goes on with the
            # two in-sync replicas left, the jobs' sources and sinks move to the new leader.
            leader = partition_leader(s, pipeline.topics["readings"])
            node = cluster.kafka.nodes[leader - 1]
            node.proc.kill()
            wait_for(lambda: node.proc.pid() is None, 30, f"{node.name} to die")
            wait_for(lambda: partition_leader(s, pipeline.topics["readings"]) not in (-1, leader), 120,
                     "a new leader of the readings partition")
            ticks = feeder.ticks
            wait_for(lambda: feeder.ticks >= ticks + 20, 120, "the feeder to go on without the old leader")
            log.info("killed %s, the leader of the readings partition", node.name)
            cluster.kafka.up(timeout=240)
            for job in JOBS:
                wait_checkpoints(s, pipeline.job_ids[job], 1, timeout=180)

            # 2. One of the two TaskManagers dies: the jobs restore from their checkpoints once it is back
            # (a standalone cluster does not restart it; the harness is the supervisor).
            restored = {job: checkpoint_counts(s, pipeline.job_ids[job])["restored"] for job in JOBS}
            tm = cluster.flink.taskmanagers[1]
            tm.kill()
            wait_for(lambda: tm.pid() is None, 30, "the second TaskManager to die")
            time.sleep(2)
            cluster.flink.up(timeout=180)
            wait_for(lambda: any(checkpoint_counts(s, pipeline.job_ids[j])["restored"] > restored[j] for j in JOBS),
                     180, "a job to restore from its checkpoint")
            for job in JOBS:
                wait_for(lambda j=job: job_running(s, pipeline.job_ids[j]), 180, f"{job} to run again")
                wait_checkpoints(s, pipeline.job_ids[job], 1, timeout=180)

            # 3. The active controller restarts (SIGTERM, then started again): another voter takes over.
            active = quorum_leader(cluster)
            controller = cluster.kafka.nodes[active - 1]
            controller.proc.stop()
            cluster.kafka.up(timeout=240)
            assert controller.proc.pid() is not None
            for job in JOBS:
                wait_checkpoints(s, pipeline.job_ids[job], 1, timeout=180)
        finally:
            ledger = feeder.stop()
        pipeline.processes_alive()
        summary = assert_nothing_lost(s, pipeline, ledger)
    finally:
        pipeline.close()
    print(f"\n[cluster faults] {time.monotonic() - started:.0f}s, nothing lost: {summary}")  # noqa: T201
