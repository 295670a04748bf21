"""TCP listener with an in-memory sink: concurrent clients, oversize lines, back-pressure, config."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path

import pytest

from ingest.tcp.source import TcpSettings as TcpConfig
from ingest.tcp.source import TcpSource as TcpListener
from machinewatch.record import Reading
from tests.collector_support import run_in_thread

ROOT = Path(__file__).parents[2]


class MemorySink:
    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.dead: list[tuple[str, str, str]] = []

    def send(self, reading: Reading) -> None:
        self.readings.append(reading)

    def dead_letter(self, source: str, raw: bytes | str, reason: str, origin: str = "",
                    size: int | None = None) -> None:
        self.dead.append((raw.decode() if isinstance(raw, bytes) else raw, reason, origin))

    def flush(self, timeout: float | None = None) -> None:
        pass


def _usa(host: str, i: int) -> bytes:
    return json.dumps({"feed": "dc-usa", "time": 1717236000 + i, "host": host, "temp_f": 50.0 + i}).encode() + b"\n"


async def _client(port: int, payload: list[bytes]) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    for chunk in payload:
        writer.write(chunk)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


def _run(config: TcpConfig, clients: list[list[bytes]]) -> tuple[TcpListener, MemorySink]:
    sink = MemorySink()
    listener = TcpListener(config)
    runner, thread = run_in_thread(listener, sink)
    assert listener.listening.wait(10)

    async def scenario() -> None:
        await asyncio.wait_for(asyncio.gather(*(_client(listener.port, c) for c in clients)), timeout=30)

    asyncio.run(scenario())
    runner.stop()
    thread.join(30)
    assert not thread.is_alive()
    return listener, sink


def test_concurrent_clients_and_back_pressure() -> None:
    clients = [[_usa(f"h{c}", i) for i in range(300)] for c in range(6)]
    listener, sink = _run(TcpConfig(port=0, mappings=["dc-usa"], queue_size=4), clients)
    assert listener.connections == 6 and listener.lines == 1800
    assert len(sink.readings) == 1800 and not sink.dead
    assert listener.queue_full_waits > 0  # readers had to wait instead of buffering everything
    for c in range(6):  # each connection's lines arrive in order
        values = [r.orig_value for r in sink.readings if r.device_id == f"h{c}"]
        assert values == [50.0 + i for i in range(300)]


def test_oversize_line_is_dead_lettered_and_the_connection_kept() -> None:
    big = b'{"feed":"dc-usa","pad":"' + b"y" * 5000 + b'"}\n'
    payload = [_usa("a", 1), big, _usa("a", 2), b"[1,2]\n", b'{"feed":"nope"}\n', _usa("a", 3)[:-1]]
    _, sink = _run(TcpConfig(port=0, mappings=["dc-usa"], max_line_bytes=1024), [payload])
    # the last line has no newline: taken at end of stream
    assert [r.orig_value for r in sink.readings] == [51.0, 52.0, 53.0]
    reasons = [reason for _, reason, _ in sink.dead]
    assert len(reasons) == 3
    assert "line longer than max_line_bytes=1024" in reasons[0]
    assert len(sink.dead[0][0]) <= 1024
    assert "expected a JSON object" in reasons[1] and "no mapping" in reasons[2]
    assert all(origin.startswith("tcp://127.0.0.1:") for _, _, origin in sink.dead)


def test_sample_conf_loads_and_bad_config_names_the_key() -> None:
    with (ROOT / "ingest/tcp/sample.conf").open("rb") as handle:
        config = TcpConfig.model_validate(tomllib.load(handle)["tcp"])
    assert config.port == 9988 and config.default_mapping == "equipment"
    with pytest.raises(ValueError, match="default_mapping"):
        TcpConfig(mappings=["dc-usa"], default_mapping="equipment")


def test_feed_testdata_dispatches_by_feed() -> None:
    lines = (ROOT / "ingest/tcp/testdata/feed.jsonl").read_bytes().splitlines(keepends=True)
    _, sink = _run(TcpConfig(port=0), [lines])
    assert {r.source for r in sink.readings} == {"dc-usa", "dc-india"}
    assert {r.unit for r in sink.readings} == {"°C", "%", "kW"}


def test_on_stop_a_connection_still_sending_is_read_to_its_end_and_an_idle_one_is_cut() -> None:
    """Graceful stop: the listener closes, what a live connection still sends arrives; a silent one is closed."""
    import threading
    import time

    sink = MemorySink()
    listener = TcpListener(TcpConfig(port=0, mappings=["dc-usa"], grace_s=1.0))
    runner, thread = run_in_thread(listener, sink)
    assert listener.listening.wait(10)
    first_sent = threading.Event()
    idle_closed: list[bool] = []

    async def slow() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        for i in range(8):
            writer.write(_usa("slow", i))
            await writer.drain()
            first_sent.set()
            await asyncio.sleep(0.3)  # under grace_s between lines: not idle
        writer.close()
        await writer.wait_closed()

    async def idle() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(_usa("idle", 0))
        await writer.drain()
        idle_closed.append(await asyncio.wait_for(reader.read(), timeout=20) == b"")  # EOF: the listener cut it
        writer.close()

    async def scenario() -> None:
        await asyncio.gather(slow(), idle())

    client = threading.Thread(target=asyncio.run, args=(scenario(),))
    client.start()
    assert first_sent.wait(10)
    time.sleep(0.2)
    runner.stop()
    thread.join(30)
    client.join(30)
    assert not thread.is_alive()
    assert sorted(r.orig_value for r in sink.readings if r.device_id == "slow") == [50.0 + i for i in range(8)]
    assert [r.device_id for r in sink.readings].count("idle") == 1
    assert idle_closed == [True]
