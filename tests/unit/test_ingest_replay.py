"""Replay pacing by event time (fake clock) and its sample config."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from ingest.formats import load_mapping
from ingest.replay.source import ReplaySettings as ReplayConfig
from ingest.replay.source import ReplaySource
from machinewatch.record import Reading
from machinewatch.runtime import RunOptions
from tests.collector_support import drive

# Polls long enough that a pacing wait of the fake clock is one sleep, as the old loop slept.
PACED = RunOptions(poll_timeout_s=60, flush_interval_s=60)


class Replayer:
    """The old test shape over the source: ``Replayer(sink, mapping, ...).run(path)`` runs it on the runner."""

    def __init__(self, sink: object, mapping: object, **kwargs: object) -> None:
        self.sink, self.mapping, self.kwargs = sink, mapping, kwargs

    def run(self, path: Path, limit_rows: int | None = None) -> object:
        source = ReplaySource(self.mapping, path, limit_rows=limit_rows, **self.kwargs)  # type: ignore[arg-type]
        return drive(source, self.sink, PACED).report

ROOT = Path(__file__).parents[2]


class Sink:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def send(self, reading: Reading) -> None:
        self.readings.append(reading)

    def dead_letter(self, *_: object, **__: object) -> None:
        raise AssertionError

    def flush(self, timeout: float | None = None) -> None:
        pass


def test_speed_scales_event_time_gaps(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("ts,server_id,cpu_pct\n10:00:00,a,1\n10:00:10,a,2\n10:00:30,a,3\n")
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    sink = Sink()
    report = Replayer(sink, load_mapping("servers"), speed=10, sleep=sleep, clock=lambda: now[0]).run(path)
    assert report.readings == 3
    assert [round(s, 6) for s in sleeps] == [1.0, 2.0]  # 10 s and 20 s of event time at 10x


def test_sample_conf_loads() -> None:
    with (ROOT / "ingest/replay/sample.conf").open("rb") as handle:
        config = ReplayConfig.model_validate(tomllib.load(handle)["replay"])
    sink = Sink()
    Replayer(sink, load_mapping(config.mapping), speed=0).run(ROOT / "ingest/replay/testdata/equipment-3.jsonl")
    assert len(sink.readings) == 3 and config.speed == 10.0


def test_speed_requested_during_a_replay_applies_from_that_row(tmp_path: Path) -> None:
    """The dashboard's speed control: a new speed re-anchors the pacing at the row where it is seen."""
    from ingest.formats import load_mapping

    lines = [json.dumps({"id_sensor": 1, "id_equipamento": 7, "sensor": "s",
                         "data_evento": f"2024-01-01 00:00:{i * 10:02d}", "padrao": {"leitura": {"temperatura": 20}}})
             for i in range(5)]
    path = tmp_path / "e.txt"
    path.write_text("\n".join(lines) + "\n")
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(round(s, 6))
        now[0] += s

    speeds = iter([None, None, 10.0, 10.0, 10.0])

    class Sink:
        def send(self, r: object) -> None: ...
        def dead_letter(self, *a: object) -> None: ...
        def flush(self) -> None: ...

    Replayer(Sink(), load_mapping("equipment"), speed=1.0, sleep=sleep, clock=lambda: now[0],
             speed_source=lambda: next(speeds)).run(path)
    # rows 10 s apart: 10 s at speed 1, then the switch at row 3 (no wait), then 1 s each at speed 10
    assert sleeps == [10.0, 1.0, 1.0]


def test_a_clock_step_back_replays_with_the_history_loaders_ids(tmp_path: Path) -> None:
    """A time repeated with another value is a further reading (the loader's occurrence id), the same value a
    duplicate: a replay and a history load of one file publish the same event ids."""
    from ingest.formats import RepeatTracker, RowMapper
    from ingest.formats.decoders import iter_rows

    rows = [{"time": 1717236000 + i, "host": "h1", "temp_f": 50.0 + i} for i in range(3)]
    rows += [{"time": 1717236001, "host": "h1", "temp_f": 99.0},   # stepped back, another value
             {"time": 1717236002, "host": "h1", "temp_f": 52.0}]   # stepped back, the same value: duplicate
    path = tmp_path / "usa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    class Recording(Sink):
        def __init__(self) -> None:
            super().__init__()
            self.dead: list[str] = []

        def dead_letter(self, source: str, raw: object, reason: str, origin: str = "", **_: object) -> None:
            self.dead.append(reason)

    sink = Recording()
    Replayer(sink, load_mapping("dc-usa"), speed=0).run(path)
    mapper, repeats, want = RowMapper(load_mapping("dc-usa")), RepeatTracker(), []
    for row in iter_rows(path, "jsonl"):
        for reading in mapper.map(row.data or {}, row.raw).readings:
            seen = repeats.check(reading, row.number)
            if seen.reading is not None:
                want.append(seen.reading.event_id)
    assert [r.event_id for r in sink.readings] == want and len(want) == 4
    assert len(set(want)) == 4 and len(sink.dead) == 1 and "the same value as row 3" in sink.dead[0]


def test_a_missing_file_or_mapping_is_a_usage_error(tmp_path: Path, capsys: object) -> None:
    from machinewatch.cli import main

    assert main(["ingest", "replay", str(tmp_path / "nope.csv"), "--mapping", "servers"]) == 1
    assert main(["ingest", "replay", str(ROOT / "ingest/replay/testdata/equipment-3.jsonl"),
                 "--mapping", "no-such-mapping"]) == 1
    assert main(["ingest", "replay", "--mapping", "servers"]) == 1  # no file at all
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "no such file" in err and "no-such-mapping" in err and "replay.file" in err
