"""Bad input through a collector into a real (private) Kafka: every bad item is dead-lettered with a
reason, the valid items beside it arrive, and memory stays bounded for a 500 MB line.

The TCP JSON-lines collector carries the corpus (it runs the same mapping code as the history loader
and the replay tool). MTConnect's entity-expansion / XXE / body-cap documents are covered end to end by
tests/integration/test_mtconnect_kafka.py; bad CSV/JSONL rows of the history loader by
tests/integration/test_ingest_collectors.py; PerfMon by tests/integration/test_perfmon_watcher.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.tcp.source import TcpSettings as TcpConfig
from ingest.tcp.source import TcpSource as TcpListener
from machinewatch import names, quality
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.stack.private import private_settings
from machinewatch.stack.services import Kafka
from tests.collector_support import kafka_runner
from tests.stack_support import read_topic

pytestmark = pytest.mark.integration

BIG_MB = int(os.environ.get("MW_FAULT_BIG_BODY_MB", "500"))


@pytest.fixture(scope="module")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    kafka = Kafka(private_settings(Path(tmp_path_factory.mktemp("mw-badinput"))))
    try:
        kafka.up(timeout=180)
        yield kafka.s
    finally:
        kafka.proc.stop()


def _serve(pub: Publisher, config: TcpConfig, chunks: Iterator[bytes]) -> TcpListener:
    """The listener on the runner with the Kafka sink; one connection sends ``chunks``, then the run stops."""
    listener = TcpListener(config.model_copy(update={"grace_s": 30}))
    runner = kafka_runner(listener, pub)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    assert listener.listening.wait(30)

    async def send() -> None:
        _reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    asyncio.run(send())
    runner.stop()
    thread.join(120)
    assert not thread.is_alive()
    return listener


def test_bad_input_corpus_is_dead_lettered_and_valid_data_arrives(kafka_settings: Settings) -> None:
    tag = uuid.uuid4().hex[:6]
    now = int(time.time())

    def line(host: str, **fields: Any) -> bytes:
        doc = {"feed": "dc-usa", "time": now - 120, "host": host, "temp_f": 95.0, "load": 0.25, "power_kw": 0.5}
        return (json.dumps({**doc, **fields}) + "\n").encode()

    good = [line(f"{tag}-ok{i}", time=now - 300 + i, temp_f=90.0 + i) for i in range(20)]
    # (line, host, substring of the reason, how many dead letters, how many readings still expected)
    bad: list[tuple[bytes, str, str, int, int]] = [
        (b'{"feed":"dc-usa","host":"' + f"{tag}-b0".encode() + b'",\n', f"{tag}-b0", "not JSON", 1, 0),
        (f'["{tag}-b1", 1, 2]\n'.encode(), f"{tag}-b1", "expected a JSON object", 1, 0),
        (line(f"{tag}-b2", temp_f=float("nan")), f"{tag}-b2", "not a finite number", 1, 2),
        (line(f"{tag}-b3", load=float("inf")), f"{tag}-b3", "not a finite number", 1, 2),
        (line(f"{tag}-b4", temp_f="warm"), f"{tag}-b4", "'warm'", 1, 2),
        (line(f"{tag}-b5", temp_f=True), f"{tag}-b5", "boolean", 1, 2),
        (line(f"{tag}-b6", time="soon"), f"{tag}-b6", "time field 'time'", 1, 0),
        (line(f"{tag}-b7", time=now + 86_400), f"{tag}-b7", "in the future", 3, 0),          # tomorrow
        (line(f"{tag}-b8", time=5_000_000_000), f"{tag}-b8", "outside 2000-01-01..2100", 3, 0),  # year 2128
        (line(f"{tag}-b9", time=100), f"{tag}-b9", "outside 2000-01-01..2100", 3, 0),           # 1970
        (line(f"{tag}-b10", time=now + 200), f"{tag}-b10", "", 0, 3),  # within the allowed clock skew
        (good[3], f"{tag}-ok3", "duplicate event_id", 3, 0),           # the same event sent twice
        (b'{"feed":"dc-usa","host":"' + f"{tag}-b12".encode() + b'","pad":"' + b"x" * 70_000 + b'"}\n',
         f"{tag}-b12", "line longer than max_line_bytes", 1, 0),
        # Not UTF-8 (a cp1251 word): the dead letter carries the bytes as they were (base64), not a lossy decode.
        (line(f"{tag}-b13")[:-2] + b',"site":"' + "цех".encode("cp1251") + b'"}\n', f"{tag}-b13", "not JSON", 1, 0),
    ]
    stream = good[:10] + [b[0] for b in bad] + good[10:]
    config = TcpConfig(port=0, mappings=["dc-usa"], max_line_bytes=64 * 1024)
    with Publisher(kafka_settings) as pub:
        listener = _serve(pub, config, iter(stream))
    assert listener.connections == 1

    readings = [r for r in read_topic(kafka_settings, names.TOPIC_READINGS) if r["device_id"].startswith(tag)]
    dead = [d for d in read_topic(kafka_settings, names.TOPIC_DEAD_LETTER) if tag.encode() in quality.raw_bytes(d)]
    # Valid data intact: every good line's three readings, converted as the mapping says, once each.
    ok = [r for r in readings if "-ok" in r["device_id"]]
    assert len(ok) == 60 and len({r["event_id"] for r in ok}) == 60
    temps = sorted(r["value"] for r in ok if r["metric"] == "temperature")
    assert temps == pytest.approx(sorted((90.0 + i - 32) * 5 / 9 for i in range(20)), abs=1e-6)
    assert {r["value"] for r in ok if r["metric"] == "load"} == {25.0}

    for sent, host, reason, n_dead, n_readings in bad:
        mine = [d for d in dead if f'"{host}"'.encode() in quality.raw_bytes(d)
                or quality.raw_bytes(d).startswith(f'["{host}"'.encode())]
        if host.endswith("-ok3"):  # the duplicate: its dead letters carry the reading, not the line
            mine = [d for d in dead if "duplicate" in d["reason"]]
        assert len(mine) == n_dead, (host, [d["reason"] for d in mine])
        assert all(reason in d["reason"] and d["source"] for d in mine), (host, [d["reason"] for d in mine])
        if n_dead == 1 and "max_line_bytes" not in reason:
            # A line refused whole: the dead letter holds exactly the bytes that came over the wire.
            assert quality.raw_bytes(mine[0]) == sent and mine[0]["size"] == len(sent), host
            assert mine[0]["truncated"] is False, host
        if not host.endswith("-ok3"):
            assert sum(r["device_id"] == host for r in readings) == n_readings, host
    # The future-dated reading never reached the readings topic, so it cannot move a watermark.
    assert max(r["ts"] for r in readings) <= (now + 300) * 1000
    print(f"\n{len(dead)} dead letters, {len(readings)} readings; reasons:")  # noqa: T201
    for d in dead:
        print(f"  - {d['reason'][:150]}")  # noqa: T201


def test_a_500_mb_line_is_refused_with_bounded_memory(kafka_settings: Settings) -> None:
    tag = uuid.uuid4().hex[:6]
    size = BIG_MB * 1024 * 1024
    block = b"9" * (1024 * 1024)
    valid = (json.dumps({"feed": "dc-usa", "time": int(time.time()) - 60, "host": f"{tag}-after", "temp_f": 98.6,
                         "load": 0.5, "power_kw": 0.3}) + "\n").encode()

    def chunks() -> Iterator[bytes]:
        # A body that exists only on the wire: the same 1 MiB block, BIG_MB times, then a valid line.
        yield f'{{"feed":"dc-usa","host":"{tag}-big","pad":"'.encode()
        for _ in range(BIG_MB):
            yield block
        yield b'"}\n'
        yield valid

    config = TcpConfig(port=0, mappings=["dc-usa"], max_line_bytes=64 * 1024)
    started = time.monotonic()
    tracemalloc.start()
    try:
        with Publisher(kafka_settings) as pub:
            listener = _serve(pub, config, chunks())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    assert listener.lines == 2
    # Python allocations stayed small although 500 MB went through (one chunk, one kept head).
    assert peak < 32 * 1024 * 1024, f"peak traced memory {peak / 2**20:.1f} MiB"
    dead = [d for d in read_topic(kafka_settings, names.TOPIC_DEAD_LETTER) if f"{tag}-big" in d["raw"]]
    assert len(dead) == 1 and "line longer than max_line_bytes" in dead[0]["reason"]
    # Only the head is kept, and the letter says so: cut, and how long the line really was.
    assert dead[0]["truncated"] is True and dead[0]["size"] >= size
    assert quality.raw_bytes(dead[0]).startswith(f'{{"feed":"dc-usa","host":"{tag}-big"'.encode())
    dropped = int(dead[0]["reason"].split("(")[1].split(" bytes dropped")[0])
    assert dropped >= size
    after = [r for r in read_topic(kafka_settings, names.TOPIC_READINGS) if r["device_id"] == f"{tag}-after"]
    assert len(after) == 3, "the valid line after the huge one must arrive"
    print(f"\n{BIG_MB} MB line refused in {elapsed:.1f}s, peak traced memory {peak / 2**20:.1f} MiB")  # noqa: T201
