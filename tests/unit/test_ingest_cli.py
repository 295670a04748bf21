"""``machinewatch ingest ...`` and the source-format ``simulate`` kinds explain themselves and run offline."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from machinewatch.cli import build_parser, main


@pytest.mark.parametrize("command", [["ingest"], ["ingest", "history"], ["ingest", "tcp"], ["ingest", "replay"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*command, "--help"])
    assert exc.value.code == 0
    assert "usage: machinewatch" in capsys.readouterr().out


def test_simulate_kinds_parse() -> None:
    for kind in ("equipment", "servers", "datacenter"):
        args = build_parser().parse_args(["simulate", kind, "--count", "3", "--overheat", "1:0:10:30"])
        assert args.kind == kind and args.overheat == ["1:0:10:30"]


def test_simulate_servers_to_a_file_in_the_course_format(tmp_path: Path) -> None:
    out = tmp_path / "servers.csv"
    assert main(["simulate", "servers", "--devices", "3", "--count", "4", "--interval-ms", "5000",
                 "--output", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["ts", "server_id", "cpu_pct", "mem_pct", "net_in", "net_out", "disk_io"]
    assert len(frame) == 12 and frame.server_id.nunique() == 3


def test_simulate_datacenter_history_files(tmp_path: Path) -> None:
    assert main(["simulate", "datacenter", "--devices", "2", "--count", "3", "--output", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["germany.parquet", "india.csv", "usa.jsonl"]


def test_bad_anomaly_spec_is_an_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "equipment", "--count", "1", "--overheat", "bad", "--output", "/dev/null"]) == 1
    assert "DEVICE:START_S" in capsys.readouterr().err
