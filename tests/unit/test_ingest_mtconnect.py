"""The MTConnect collector on the connector runtime: the follower's records in batches, the cursor saved only
after the runner flushed them, and its settings (TOML, the key of the release before, MW_MTCONNECT_*)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ingest.mtconnect import plugin
from ingest.mtconnect.source import MTConnectSource
from ingest.mtconnect.state import load_cursor
from machinewatch.device_events import DeviceEvent
from machinewatch.record import Reading
from machinewatch.runtime import Rejected, Runner, RunOptions, TransientError
from simulators.mtconnect_agent import MTConnectAgentSimulator
from tests.unit.test_mtconnect_connector import config, id_index, sim_event_id


class FlakySink:
    """Keeps what it was given; ``fail`` flushes raise TransientError; ``durable`` is what a flush made so."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.pending: list[Any] = []
        self.durable: list[Any] = []
        self.flushed = threading.Event()

    def write(self, records: Sequence[Any]) -> list[Rejected]:
        self.pending.extend(records)
        return []

    def flush(self) -> None:
        if self.fail:
            self.fail -= 1
            msg = "broker away (simulated)"
            raise TransientError(msg)
        self.durable.extend(self.pending)
        self.pending = []
        self.flushed.set()

    def close(self) -> None:
        pass


class Letters:
    def __init__(self) -> None:
        self.sent: list[Rejected] = []

    def send(self, source: str, rejected: Rejected) -> None:
        self.sent.append(rejected)

    def flush(self) -> None:
        pass


def _run(cfg: Any, sink: FlakySink, until: Any, timeout: float = 20, options: RunOptions | None = None
         ) -> MTConnectSource:
    source = MTConnectSource(cfg)
    runner = Runner("mtconnect", source, sink, Letters(),
                    options or RunOptions(flush_interval_s=0.05, retry_min_s=0.05, retry_max_s=0.1))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not until(source) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert until(source), "the collector did not get there"
    finally:
        runner.stop()
        thread.join(20)
    assert not thread.is_alive()
    return source


def test_cursor_is_saved_only_after_the_flush_and_a_restart_repeats_and_loses_nothing(tmp_path: Path) -> None:
    with MTConnectAgentSimulator(devices=2, buffer_size=4000, seed=3) as sim:
        sim.serve()
        sim.step(5)
        cfg = config(sim.url, tmp_path, start="buffer")
        sink = FlakySink(fail=3)
        seen_before_flush: list[object] = []

        def caught_up(src: MTConnectSource) -> bool:
            if not sink.flushed.is_set():
                seen_before_flush.append(load_cursor(cfg.state_path))
            cursor = load_cursor(cfg.state_path)
            return cursor is not None and cursor.next_sequence == sim.next_sequence

        _run(cfg, sink, caught_up)
        # While Kafka refused every flush, nothing was saved.
        assert seen_before_flush and all(c is None for c in seen_before_flush)
        sim.step(4)
        sim.machine_unavailable(1)
        sim.fault(0, "SERVO ALARM 414")
        _run(cfg, sink, caught_up)  # a second run resumes from the saved cursor
    index = id_index(sim)
    got = [index[r.event_id] for r in sink.durable if isinstance(r, Reading | DeviceEvent) and r.event_id in index]
    assert len(got) == len(set(got)), "an observation was written twice"
    assert set(got) == set(index.values())
    assert all(isinstance(r, Reading | DeviceEvent) for r in sink.durable if getattr(r, "event_id", "") in index)
    events = {r.event_id for r in sink.durable if isinstance(r, DeviceEvent)}
    unavailable = [o for o in sim.produced if o.item.type == "AVAILABILITY" and o.value == "UNAVAILABLE"]
    assert unavailable and {sim_event_id(sim, o) for o in unavailable} <= events


def test_settings_take_the_older_readings_topic_key_and_the_environment(tmp_path: Path) -> None:
    conf = tmp_path / "mtc.toml"
    conf.write_text('[mtconnect]\nagent_url = "http://127.0.0.1:5999"\nstate_path = "state/a.json"\n'
                    'readings_topic = "old.readings"\nalerts_topic = "mw.alerts"\n')
    cfg: Any = plugin.load_settings(conf, {"mode": None}, {"MW_MTCONNECT_MODE": "poll"})
    assert cfg.topic == "old.readings" and cfg.mode == "poll"
    assert cfg.state_path == tmp_path / "state" / "a.json"
    cfg = plugin.load_settings(conf, {"mode": "stream"}, {"MW_MTCONNECT_MODE": "poll"})
    assert cfg.mode == "stream"  # a flag overrides the environment
    with pytest.raises(ValueError, match="mode"):
        plugin.load_settings(conf, {}, {"MW_MTCONNECT_MODE": "push"})


def test_an_unreadable_state_file_is_refused_before_the_run(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    cfg = config("http://127.0.0.1:1", tmp_path, state_path=str(state))
    with pytest.raises(ValueError, match="unreadable"):
        plugin.make_source(cfg, None)  # type: ignore[arg-type]


class PerFlush(FlakySink):
    """Counts the records each flush made durable."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def flush(self) -> None:
        self.sizes.append(len(self.pending))
        super().flush()


def test_by_default_each_document_is_flushed_and_checkpointed_on_its_own(tmp_path: Path) -> None:
    with MTConnectAgentSimulator(devices=2, buffer_size=4000, seed=5) as sim:
        sim.serve()
        sim.step(30)  # many documents of count (40) observations waiting
        cfg = config(sim.url, tmp_path, start="buffer", mode="poll")
        assert cfg.runner.max_batch == 1
        sink = PerFlush()

        def caught_up(_src: MTConnectSource) -> bool:
            cursor = load_cursor(cfg.state_path)
            return cursor is not None and cursor.next_sequence == sim.next_sequence

        _run(cfg, sink, caught_up, options=cfg.runner)
    # A crash repeats what was sent since the last checkpoint: at most one document, <= count observations.
    assert max(sink.sizes) <= cfg.count and len([n for n in sink.sizes if n]) >= sim.next_sequence // cfg.count
