"""The Flink jobs log in to a SCRAM-only Kafka like every other client: a private stack with
MW_KAFKA_SASL_SCRAM on (SCRAM-SHA-512), the window job consuming and producing through it, nothing readable without
the password. (Not marked `faults`: it runs with ./run test.)"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.errors import KafkaError

from machinewatch import jobs, names
from machinewatch.kafka_io import Publisher
from machinewatch.stack import Stack
from machinewatch.stack.private import private_settings
from simulators.temperature import TemperatureSimulator
from tests.process_support import CmdlineSampler


def test_window_job_reads_and_writes_through_a_scram_only_broker(tmp_path_factory: pytest.TempPathFactory) -> None:
    # SCRAM-SHA-512: what Strimzi's SCRAM listeners take (SCRAM-SHA-256, the default, is test_security.py's).
    settings = private_settings(Path(tmp_path_factory.mktemp("mw-scram")), kafka_sasl_scram=True,
                                kafka_sasl_mechanism="SCRAM-SHA-512")
    stack = Stack(settings)
    # Every command line while the stack starts and the job is submitted (the 'flink run' client gets the
    # Kafka login from settings, never as an argument).
    sampler = CmdlineSampler().__enter__()
    try:
        stack.up(timeout=300)
        job = jobs.submit(settings, "window-aggregates", ["--job-name", f"mw-scram-{uuid.uuid4().hex[:6]}"])
        start = datetime.now(tz=UTC) - timedelta(seconds=60)
        with Publisher(settings) as pub:
            pub.send_many(TemperatureSimulator(devices=3, seed=2, device_prefix="scram").readings(start, 50))
        consumer = KafkaConsumer(names.TOPIC_AGGREGATES, **settings.kafka_client_config(),
                                 auto_offset_reset="earliest", consumer_timeout_ms=2000)
        windows: list[dict[str, object]] = []
        deadline = time.monotonic() + 180
        want_devices = {f"scram-{i:04d}" for i in range(3)}
        # Until every device has its windows: results come out device by device as the watermark moves.
        while time.monotonic() < deadline and (len(windows) < 3 * 4
                                               or {w["device_id"] for w in windows} != want_devices):
            # the devices' windows (the topic also carries fleet roll-ups, which have no device)
            windows += [doc for m in consumer if "devices" not in (doc := json.loads(m.value))]
        consumer.close()
        assert jobs.job_detail(settings, job)["state"] == "RUNNING"
        assert len(windows) >= 3 * 4, f"only {len(windows)} windows came out of the SCRAM-only broker"
        assert {w["device_id"] for w in windows} == want_devices

        # Without the login the same broker gives nothing away.
        anonymous = {"bootstrap_servers": settings.kafka_servers, "request_timeout_ms": 8000,
                     "api_version_auto_timeout_ms": 8000}
        with pytest.raises(KafkaError):
            KafkaConsumer(names.TOPIC_AGGREGATES, **anonymous, consumer_timeout_ms=3000).topics()
        sampler.stop()
        assert any("flink" in line and "run" in line for line in sampler.seen), "the sampler missed 'flink run'"
        leaks = sampler.leaks({"kafka_password": settings.kafka_password()})
        assert not leaks, leaks
    finally:
        sampler.stop()
        stack.down()
