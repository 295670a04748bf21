"""History loader with an in-memory sink: resume after a failed acknowledgement, no double loads."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from ingest.formats import load_mapping
from ingest.history.loader import HistoryConfig, HistoryLoader
from ingest.history.state import LoadState
from machinewatch import quality
from machinewatch.kafka_io import PublishError
from machinewatch.record import Reading

ROOT = Path(__file__).parents[2]


class MemorySink:
    def __init__(self, fail_on_flush: int | None = None) -> None:
        self.readings: list[Reading] = []
        self.dead: list[tuple[bytes, str, str]] = []
        self.flushes = 0
        self.fail_on_flush = fail_on_flush

    def send(self, reading: Reading) -> None:
        self.readings.append(reading)

    def dead_letter(self, source: str, raw: bytes | str, reason: str, origin: str = "",
                    size: int | None = None) -> None:
        self.dead.append((raw if isinstance(raw, bytes) else raw.encode(), reason, origin))

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        if self.flushes == self.fail_on_flush:
            msg = "1 of 10 records were not acknowledged"
            raise PublishError(msg)


def _usa_file(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / "usa.jsonl"
    path.write_text("".join(json.dumps({"time": 1717236000 + i, "host": f"h{i % 3}", "temp_f": 50 + i}) + "\n"
                            for i in range(rows)))
    return path


def test_resume_after_failed_ack_sends_each_row_at_least_once_and_state_is_exact(tmp_path: Path) -> None:
    path = _usa_file(tmp_path, 95)
    state_file = tmp_path / "state.json"
    failing = MemorySink(fail_on_flush=3)
    with pytest.raises(PublishError):
        HistoryLoader(failing, load_mapping("dc-usa"), LoadState(state_file), chunk_rows=20, progress=False).load(path)
    # Two chunks were acknowledged; the third was not, so the state stops at row 40.
    assert json.loads(state_file.read_text())[str(path.resolve())]["rows"] == 40
    resumed = MemorySink()
    report = HistoryLoader(resumed, load_mapping("dc-usa"), LoadState(state_file), chunk_rows=20,
                           progress=False).load(path)
    assert (report.skipped, report.rows) == (40, 55)
    assert [r.orig_value for r in resumed.readings] == [50.0 + i for i in range(40, 95)]
    # Nothing lost: every id of the file is in one of the two runs.
    everything = MemorySink()
    HistoryLoader(everything, load_mapping("dc-usa"), LoadState(tmp_path / "other.json"), progress=False).load(path)
    sent = {r.event_id for r in failing.readings} | {r.event_id for r in resumed.readings}
    assert sent == {r.event_id for r in everything.readings}


def test_second_run_sends_nothing_force_sends_same_ids_rewritten_file_starts_over(tmp_path: Path) -> None:
    path = _usa_file(tmp_path, 10)
    state = tmp_path / "state.json"
    first, second, forced = MemorySink(), MemorySink(), MemorySink()
    HistoryLoader(first, load_mapping("dc-usa"), LoadState(state), progress=False).load(path)
    HistoryLoader(second, load_mapping("dc-usa"), LoadState(state), progress=False).load(path)
    HistoryLoader(forced, load_mapping("dc-usa"), LoadState(state), progress=False).load(path, force=True)
    assert len(first.readings) == 10 and second.readings == []
    assert [r.event_id for r in forced.readings] == [r.event_id for r in first.readings]
    path.write_text(path.read_text().replace('"h0"', '"h9"'))  # content changed at the head
    rewritten = MemorySink()
    HistoryLoader(rewritten, load_mapping("dc-usa"), LoadState(state), progress=False).load(path)
    assert len(rewritten.readings) == 10


def test_jsonl_testdata_dead_letters_with_origin(tmp_path: Path) -> None:
    sink = MemorySink()
    path = ROOT / "ingest/history/testdata/usa.jsonl"
    report = HistoryLoader(sink, load_mapping("dc-usa"), LoadState(tmp_path / "s.json"), progress=False)
    result = report.load(path)
    assert result.readings == 3 + 2 + 3 and result.rejects == 2
    reasons = {origin: reason for _, reason, origin in sink.dead}
    assert "not JSON" in reasons[f"{path}:4"]
    assert "time field 'time' is missing" in reasons[f"{path}:5"]


def test_bad_lines_are_dead_lettered_with_their_exact_bytes_and_the_rest_is_published(tmp_path: Path) -> None:
    good = [json.dumps({"time": 1717236000 + i, "host": "h1", "temp_f": 50 + i}).encode() + b"\n" for i in range(4)]
    undecodable = b'{"time": 1717236100, "host": "h\xff", "temp_f": 60}\n'
    not_json = b"{oops\r\n"
    path = tmp_path / "usa.jsonl"
    path.write_bytes(good[0] + undecodable + good[1] + not_json + good[2] + good[3])
    sink = MemorySink()
    report = HistoryLoader(sink, load_mapping("dc-usa"), LoadState(tmp_path / "s.json"), progress=False).load(path)
    assert report.readings == 4 and report.rejects == 2 and len(sink.readings) == 4
    dead = {origin: (raw, reason) for raw, reason, origin in sink.dead}
    assert dead[f"{path}:2"][0] == undecodable and "byte 0xff" in dead[f"{path}:2"][1]
    assert dead[f"{path}:4"][0] == not_json and "not JSON" in dead[f"{path}:4"][1]
    for raw, _, _ in sink.dead:  # what the publisher sends round-trips byte for byte
        assert quality.raw_bytes(json.loads(json.dumps(quality.letter("x", raw, "r")))) == raw


def test_parquet_resume_skips_batches(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "g.parquet"
    pd.DataFrame({"zeit": pd.date_range("2024-01-01", periods=30, freq="s", tz="UTC"), "rechner": "r1",
                  "temperatur_k": [300.0 + i for i in range(30)]}).to_parquet(path)
    state = LoadState(tmp_path / "s.json")
    state.mark(path, 25)
    sink = MemorySink()
    HistoryLoader(sink, load_mapping("dc-germany"), state, progress=False).load(path)
    assert [round(r.orig_value or 0) for r in sink.readings] == [325, 326, 327, 328, 329]


def test_sample_conf_loads() -> None:
    with (ROOT / "ingest/history/sample.conf").open("rb") as handle:
        config = HistoryConfig.model_validate(tomllib.load(handle)["history"])
    assert config.mapping == "servers" and config.chunk_rows == 5000
    assert load_mapping(config.mapping, base_date=config.base_date).base_date == config.base_date

