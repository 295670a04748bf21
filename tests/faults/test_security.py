"""No one gets in: Kafka SASL/SCRAM, secrets kept out of logs, loopback-only listeners.

The SCRAM test starts its own broker (a few seconds) and runs with the integration tests. The log and
listener checks look at the private fault stack after the scenarios ran against it, so they are marked
``faults``. The token-permission tests (dashboard token cannot write; the pipeline token *can* delete
its buckets, a strict xfail tracking influxdata/influxdb#23170) live in tests/integration/test_stack.py.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaConfigurationError
from pydantic import SecretStr

from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.record import Reading, make_event_id
from machinewatch.stack import Stack
from machinewatch.stack.private import private_settings
from machinewatch.stack.services import Kafka
from machinewatch.stack.watchdog import stop_watchdog
from tests.process_support import CmdlineSampler, family, listening_sockets
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scram_cmdlines() -> Iterator[CmdlineSampler]:
    with CmdlineSampler() as sampler:
        yield sampler


@pytest.fixture(scope="module")
def scram_kafka(tmp_path_factory: pytest.TempPathFactory, scram_cmdlines: CmdlineSampler) -> Iterator[Kafka]:
    # Sampled while the storage tool formats the log with the SCRAM credential (a JVM that runs ~2 s).
    settings = private_settings(Path(tmp_path_factory.mktemp("mw-scram")), kafka_sasl_scram=True)
    kafka = Kafka(settings)
    try:
        kafka.up(timeout=180)
        yield kafka
    finally:
        kafka.proc.stop()


def _refused(config: dict[str, object]) -> str:
    """The error a client with this config gets; fails the test if the broker lets it in."""
    try:
        admin = KafkaAdminClient(**config, request_timeout_ms=5000, bootstrap_timeout_ms=8000)
    except KafkaConfigurationError:
        raise  # a mistake in the test, not a refusal
    except Exception as exc:  # noqa: BLE001 - kafka-python raises different classes for the same refusal
        return f"{type(exc).__name__}: {exc}"
    try:
        topics = admin.list_topics()
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    finally:
        admin.close()
    msg = f"the broker accepted a client it should refuse and listed {topics}"
    raise AssertionError(msg)


def test_kafka_scram_right_password_works_wrong_one_is_refused(scram_kafka: Kafka, scram_cmdlines: CmdlineSampler
                                                               ) -> None:
    settings = scram_kafka.s
    secret = settings.secrets_dir / "kafka_password"
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    assert oct((scram_kafka.dir / "server.properties").stat().st_mode & 0o777) == "0o600"
    password = settings.kafka_password()

    # The right password: the shared Publisher delivers and a consumer reads it back.
    ts = int(time.time() * 1000)
    reading = Reading(source="scram-test", device_id="scram-1", metric="temperature", value=21.5, unit="°C",
                      ts=ts, event_id=make_event_id("scram-test", ts))
    with Publisher(settings) as pub:
        pub.send(reading)
    consumer = KafkaConsumer("mw.readings", **settings.kafka_client_config(), auto_offset_reset="earliest",
                             consumer_timeout_ms=10_000)
    try:
        got = [m.value for m in consumer]
    finally:
        consumer.close()
    assert reading.to_json() in got

    # A wrong password and a client without SASL are both refused.
    wrong = settings.model_copy(update={"kafka_sasl_password": SecretStr(password + "x")})
    wrong_error = _refused(wrong.kafka_client_config())
    plain_error = _refused({"bootstrap_servers": settings.kafka_servers})
    log_text = scram_kafka.proc.logfile.read_text(errors="replace")
    assert re.search(r"Failed authentication with .*invalid credentials", log_text), wrong_error
    # The broker logs its JAAS config as [hidden]; the password itself appears nowhere.
    assert password not in log_text
    # Nor on any command line while the broker was formatted and started (ps, /proc/<pid>/cmdline).
    assert any("kafka.tools.StorageTool" in line or "format.args" in line for line in scram_cmdlines.seen), (
        "the sampler never saw the storage tool run")
    leaks = scram_cmdlines.leaks({"kafka_password": password})
    assert not leaks, leaks
    print(f"\nwrong password refused: {wrong_error[:160]}\nno SASL refused: {plain_error[:160]}")  # noqa: T201


def test_the_librdkafka_publisher_logs_in_with_scram_and_a_wrong_password_fails_its_flush(scram_kafka: Kafka
                                                                                            ) -> None:
    """MW_KAFKA_CLIENT=confluent-kafka keeps the login: delivered with the right password; with a wrong one nothing
    is acknowledged and flush raises (librdkafka retries until the delivery timeout, kept short here)."""
    from machinewatch.kafka_io import PublishError

    settings = scram_kafka.s.model_copy(update={"kafka_client": "confluent-kafka"})
    ts = int(time.time() * 1000)
    reading = Reading(source="scram-c", device_id="scram-c-1", metric="temperature", value=1.0, unit="°C", ts=ts,
                      event_id=make_event_id("scram-c", ts))
    with Publisher(settings) as pub:
        assert pub.send(reading).get(timeout=30).topic == "mw.readings"
    wrong = settings.model_copy(update={"kafka_sasl_password": SecretStr(settings.kafka_password() + "x")})
    pub = Publisher(wrong, delivery_timeout_ms=8000, request_timeout_ms=5000)
    try:
        pub.send(reading)  # a new publisher: not a repeat to it
        with pytest.raises(PublishError):
            pub.flush(timeout=30)
        assert pub.acked == 0
    finally:
        pub.close()


def _secrets(settings: Settings) -> dict[str, str]:
    found = {p.name: p.read_text().strip() for p in settings.secrets_dir.iterdir() if p.is_file()}
    assert {"influx_token", "influx_write_token", "influx_read_token"} <= set(found)
    return found


@pytest.mark.faults
def test_no_token_in_any_log(fault_stack: Stack, fault_settings: Settings) -> None:
    # The writer as its own process (as the demo runs it), so its log file is checked too.
    writer = fault_stack.writer
    writer.start([sys.executable, "-m", "machinewatch", "sink", "influxdb"],
                 env={**fault_settings.to_env(), "PYTHONPATH": os.getcwd()})
    try:
        wait_for(lambda: "writing" in writer.tail(200), 60, "the writer process to log")
    finally:
        writer.stop()
    secrets = _secrets(fault_settings)
    logs = [p for p in fault_settings.state_dir.rglob("*")
            if p.is_file() and (p.suffix in {".log", ".out"} or p.parent.name == "log")]
    assert any(p.name == "influx-writer.log" for p in logs)
    assert any("taskexecutor" in p.name or "taskmanager" in p.name for p in logs)
    leaks = []
    for path in logs:
        text = path.read_text(errors="replace")
        leaks += [f"{name} in {path}" for name, value in secrets.items() if len(value) >= 8 and value in text]
    assert not leaks, leaks
    print(f"\nchecked {len(logs)} log files for {len(secrets)} secrets: none found")  # noqa: T201


@pytest.mark.faults
def test_every_server_and_its_children_listen_on_loopback_only(fault_stack: Stack) -> None:
    roots = [p.pid() for p in (fault_stack.kafka.proc, fault_stack.influxdb.proc, fault_stack.flink.proc,
                               fault_stack.flink.taskmanager)]
    assert all(roots), roots
    # The servers and every process they started (the TaskManager's PyFlink workers among them).
    procs = family(r for r in roots if r is not None)
    seen = listening_sockets(procs)
    assert len(seen) >= 5, seen  # kafka 2, influxdb 1, flink REST + RPC at least
    public = [(pid, addr) for pid, addr in seen if not addr.startswith(("127.", "::ffff:127.", "::1:"))]
    assert not public, f"listening beyond loopback: {public}"
    print(f"\n{len(procs)} processes, listening sockets: {sorted(a for _, a in seen)}")  # noqa: T201


@pytest.mark.faults
def test_no_secret_on_any_command_line(fault_stack: Stack, fault_settings: Settings,
                                       fault_cmdlines: CmdlineSampler) -> None:
    """Every command line seen on the machine while the fault stack ran (its servers, jobs' clients,
    writers, notifiers and any short-lived tool) is free of the stack's tokens and passwords."""
    secrets = _secrets(fault_settings)
    assert fault_cmdlines.scans > 100 and len(fault_cmdlines.seen) > 10, "the sampler saw nothing"
    # The sampler did see the stack's own processes, so their command lines were looked at.
    assert any("kafka.Kafka" in line for line in fault_cmdlines.seen)
    assert any("sink influxdb" in line for line in fault_cmdlines.seen)
    leaks = fault_cmdlines.leaks(secrets)
    assert not leaks, leaks
    print(f"\n{len(fault_cmdlines.seen)} distinct command lines in {fault_cmdlines.scans} scans: no secret")  # noqa: T201


@pytest.mark.parametrize("mechanism", ["PLAIN"])
def test_kafka_sasl_mechanism_is_the_one_every_client_uses(tmp_path_factory: pytest.TempPathFactory,
                                                           mechanism: str) -> None:
    """MW_KAFKA_SASL_MECHANISM: a broker asking for it lets our clients in, and a client logging in with
    another mechanism is refused. (SCRAM-SHA-512, Strimzi's, is the broker of test_flink_scram.py, where the
    Flink jobs log in too; one broker here keeps the suite short.)"""
    settings = private_settings(Path(tmp_path_factory.mktemp("mw-sasl")), kafka_sasl_scram=True,
                                kafka_sasl_mechanism=mechanism)
    kafka = Kafka(settings)
    try:
        kafka.up(timeout=180)
        ts = int(time.time() * 1000)
        reading = Reading(source="sasl-test", device_id="sasl-1", metric="temperature", value=20.0, unit="°C",
                          ts=ts, event_id=make_event_id("sasl-test", ts))
        with Publisher(settings) as pub:
            pub.send(reading)
        consumer = KafkaConsumer("mw.readings", **settings.kafka_client_config(), auto_offset_reset="earliest",
                                 consumer_timeout_ms=10_000)
        try:
            assert reading.to_json() in [m.value for m in consumer]
        finally:
            consumer.close()
        other = "SCRAM-SHA-256" if mechanism == "PLAIN" else "PLAIN"
        error = _refused({**settings.kafka_client_config(), "sasl_mechanism": other})
        # kafka-python only says it could not bootstrap; the broker says why.
        log_text = kafka.proc.logfile.read_text(errors="replace")
        assert f"Unsupported SASL mechanism {other}" in log_text, error
    finally:
        kafka.proc.stop()
        stop_watchdog(settings.state_dir / "run")
