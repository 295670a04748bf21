"""The MQTT collector end to end: a real mosquitto (Debian's binary, started by the stack's own code on 127.0.0.1 and
a free port, persistence on), the real collector command (``machinewatch ingest mqtt``) and a real Kafka broker,
private to this module (only Kafka: no Flink or InfluxDB is needed here).

What is checked is read back from the topics: every published message is a reading on the collector's topic,
bad payloads are dead letters with their reason and exact bytes while the collector goes on, and a collector
SIGKILLed mid-stream and started again loses nothing (QoS 1, persistent session, acknowledged only after Kafka
acknowledged), publishing a message twice only under the same event id.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machinewatch import names, quality
from machinewatch.config import Settings
from machinewatch.record import make_event_id
from machinewatch.stack.mosquitto import Mosquitto
from machinewatch.stack.private import private_settings
from machinewatch.stack.services import Kafka
from tests.mqtt_support import Collector, Sender, wait_for, write_conf
from tests.stack_support import create_topics, read_topic

pytestmark = pytest.mark.integration

# Six hours ago, 100 ms apart: far more messages than a test sends stay in the past (the publisher dead-letters a
# reading more than MW_MAX_FUTURE_SKEW_S ahead of its clock).
BASE_TS = int(time.time() * 1000) - 6 * 3_600_000
STEP_MS = 100


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A private Kafka and mosquitto, started by the stack's own service code; they die with this process."""
    settings = private_settings(Path(tmp_path_factory.mktemp("mw-mqtt")))
    kafka, broker = Kafka(settings), Mosquitto(settings)
    try:
        broker.up(timeout=60)
        kafka.up(timeout=180)
        yield settings
    finally:
        broker.proc.stop()
        kafka.proc.stop()


def good(prefix: str, n: int) -> tuple[str, bytes, str]:
    """(topic, payload, expected event id) of the n-th good message."""
    device, ts = f"dev{n % 3}", BASE_TS + n * STEP_MS
    payload = json.dumps({"value": 20.0 + n / 10, "ts": ts}).encode()
    return f"{prefix}/site1/{device}/temperature", payload, make_event_id("mqtt", device, ts, "temperature")


def readings(settings: Settings, topic: str) -> list[dict[str, Any]]:
    return read_topic(settings, topic)


def dead_letters(settings: Settings, origin_prefix: str) -> list[dict[str, Any]]:
    return [d for d in read_topic(settings, names.TOPIC_DEAD_LETTER) if d.get("origin", "").startswith(origin_prefix)]


def test_messages_become_readings_bad_payloads_are_dead_lettered_and_sigterm_stops_cleanly(
        servers: Settings, tmp_path: Path) -> None:
    prefix, topic = f"it{uuid.uuid4().hex[:6]}", f"mw.test-mqtt-{uuid.uuid4().hex[:6]}.readings"
    create_topics(servers, [topic])
    collector = Collector(servers, write_conf(tmp_path / "mqtt.conf", servers, f"mw-it-{prefix}", prefix, topic),
                          tmp_path / "collector.log")
    sender = Sender(servers)
    bad = {
        "not-json": b"\xff\xfe\x00 not json {",
        "no-value": b'{"ts": %d}' % BASE_TS,
        "bad-time": b'{"value": 1.5, "ts": "tuesday"}',
        "too-big": b'{"value": 1, "pad": "' + b"x" * 5000 + b'"}',
    }
    try:
        collector.start()
        expected = {}
        for n in range(40):
            topic_n, payload, event_id = good(prefix, n)
            expected[event_id] = payload
            sender.send(topic_n, payload)
            if n == 20:  # bad payloads in the middle of the stream: the collector goes on
                for name, raw in bad.items():
                    sender.send(f"{prefix}/site1/{name}/temperature", raw)
        wait_for("every reading", lambda: {r["event_id"] for r in readings(servers, topic)} >= set(expected),
                 alive=collector.proc)
        origin = f"mqtt://127.0.0.1:{servers.mosquitto_port}/{prefix}/"
        wait_for("the dead letters", lambda: len(dead_letters(servers, origin)) >= len(bad), alive=collector.proc)
        assert collector.terminate() == 0, collector.text()[-3000:]
    finally:
        sender.close()
        collector.close()
    got = readings(servers, topic)
    assert sorted(r["event_id"] for r in got) == sorted(expected)  # each once: no loss, no duplicate
    for r in got:
        sent = json.loads(expected[r["event_id"]])
        assert (r["value"], r["ts"], r["unit"], r["site"], r["source"]) == (sent["value"], sent["ts"], "°C", "site1",
                                                                              "mqtt")
    letters = {d["origin"].split("/")[-2]: d for d in dead_letters(servers, origin)}
    assert set(letters) == set(bad)
    for name, raw in bad.items():
        letter = letters[name]
        assert letter["source"] == "mqtt"
        if name == "too-big":
            assert (quality.raw_bytes(letter), letter["size"], letter["truncated"]) == (raw[:1024], len(raw), True)
        else:
            assert quality.raw_bytes(letter) == raw
    assert "not JSON" in letters["not-json"]["reason"]
    assert "value field 'value' is missing" in letters["no-value"]["reason"]
    assert "time 'tuesday' is not a number" in letters["bad-time"]["reason"]
    assert "larger than max_payload_bytes=4096" in letters["too-big"]["reason"]
    log = collector.text()
    assert "SIGTERM received" in log
    assert '"rejected": 4' in log and '"written": 40' in log


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_collector_killed_mid_stream_loses_nothing_and_repeats_only_identical_event_ids(
        servers: Settings, tmp_path: Path, protocol: str) -> None:
    prefix, topic = f"ik{uuid.uuid4().hex[:6]}", f"mw.test-mqtt-{uuid.uuid4().hex[:6]}.readings"
    create_topics(servers, [topic])
    collector = Collector(servers, write_conf(tmp_path / "mqtt.conf", servers, f"mw-it-{prefix}", prefix, topic,
                                              protocol), tmp_path / "collector.log")
    sender = Sender(servers)
    expected: dict[str, bytes] = {}
    stop_sending = threading.Event()

    def publish_until_stopped() -> None:
        n = 0
        while not stop_sending.is_set() and n < 5000:
            topic_n, payload, event_id = good(prefix, n)
            sender.send(topic_n, payload)
            expected[event_id] = payload
            n += 1
            time.sleep(0.005)

    stream = threading.Thread(target=publish_until_stopped, daemon=True)
    try:
        collector.start()
        stream.start()
        # Kill it hard while messages stream in and some batches are between Kafka's ack and the PUBACKs.
        wait_for("the first messages", lambda: len(expected) >= 300, alive=collector.proc)
        collector.kill()
        published_at_kill = len(expected)
        time.sleep(1.0)  # the stream goes on: the broker queues it in the collector's session
        collector.start()
        time.sleep(2.0)
        stop_sending.set()
        stream.join(60)
        assert not stream.is_alive()
        assert len(expected) < 5000, "the stream ended before the restart: nothing was published meanwhile"
        wait_for("every reading after the restart",
                 lambda: {r["event_id"] for r in readings(servers, topic)} >= set(expected), timeout=120,
                 alive=collector.proc)
        assert collector.terminate() == 0, collector.text()[-3000:]
    finally:
        stop_sending.set()
        sender.close()
        collector.close()
    got = readings(servers, topic)
    ids = [r["event_id"] for r in got]
    assert set(ids) == set(expected), "a message is missing or foreign"
    assert published_at_kill < len(expected), "nothing was published while the collector was down"
    by_id: dict[str, set[str]] = {}
    for r in got:
        by_id.setdefault(r["event_id"], set()).add(json.dumps(r, sort_keys=True))
    assert all(len(copies) == 1 for copies in by_id.values()), "a repeated event id carries other content"
    print(f"\nMQTT {protocol}: {len(expected)} messages, {published_at_kill} published before the kill, "  # noqa: T201
          f"{len(ids) - len(set(ids))} repeated with identical ids")
