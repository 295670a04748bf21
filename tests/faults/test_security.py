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
from tests.faults.harness import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scram_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
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


def test_kafka_scram_right_password_works_wrong_one_is_refused(scram_kafka: Kafka) -> None:
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
    print(f"\nwrong password refused: {wrong_error[:160]}\nno SASL refused: {plain_error[:160]}")  # noqa: T201


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


def _listening_inodes() -> dict[str, str]:
    """inode -> 'address:port' of every listening TCP socket (IPv4 and IPv6)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A":  # LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            if len(addr_hex) == 8:
                addr = ".".join(str(int(addr_hex[i:i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                words = [addr_hex[i:i + 8] for i in range(0, 32, 8)]
                raw = b"".join(bytes.fromhex(w)[::-1] for w in words)
                addr = "::ffff:" + ".".join(str(b) for b in raw[12:]) if raw[:12] == b"\0" * 10 + b"\xff" * 2 else (
                    raw.hex())
            out[inode] = f"{addr}:{int(port_hex, 16)}"
    return out


@pytest.mark.faults
def test_every_server_listens_on_loopback_only(fault_stack: Stack, fault_settings: Settings) -> None:
    sockets = _listening_inodes()
    pids = [p.pid() for p in (fault_stack.kafka.proc, fault_stack.influxdb.proc, fault_stack.flink.proc,
                              fault_stack.flink.taskmanager)]
    assert all(pids), pids
    seen = []
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            match = re.fullmatch(r"socket:\[(\d+)\]", target)
            if match and match[1] in sockets:
                seen.append((pid, sockets[match[1]]))
    assert len(seen) >= 5, seen  # kafka 2, influxdb 1, flink REST + RPC at least
    public = [(pid, addr) for pid, addr in seen if not addr.startswith(("127.", "::ffff:127."))]
    assert not public, f"listening beyond loopback: {public}"
    print(f"\nlistening sockets of the stack: {sorted(a for _, a in seen)}")  # noqa: T201
