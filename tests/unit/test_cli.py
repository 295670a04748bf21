"""The CLI parses what the README shows and explains itself with --help."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from machinewatch.cli import _duration, build_parser


@pytest.mark.parametrize("command", [[], ["stack"], ["simulate"], ["jobs"], ["sink"], ["query"], ["demo"]])
def test_help_exits_zero(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*command, "--help"])
    assert exc.value.code == 0
    assert "usage: machinewatch" in capsys.readouterr().out


def test_durations() -> None:
    assert _duration("90s") == timedelta(seconds=90)
    assert _duration("2h") == timedelta(hours=2)
    with pytest.raises(Exception, match="not a duration"):
        _duration("soon")


@pytest.mark.parametrize("given", ["0", "-5", "3601", "nan", "soon"])
def test_archive_max_age_out_of_range_is_a_usage_error(given: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["sink", "archive", "--max-age", given])
    assert exc.value.code == 2
    assert f"'{given}' is not a number of seconds in (0, 3600]" in capsys.readouterr().err


def test_archive_max_age_in_range() -> None:
    assert build_parser().parse_args(["sink", "archive", "--max-age", "3600"]).max_age == 3600


def test_stack_actions_parse() -> None:
    args = build_parser().parse_args(["stack", "logs", "kafka", "-n", "5"])
    assert (args.action, args.service, args.lines) == ("logs", ["kafka"], 5)
    args = build_parser().parse_args(["stack", "provision", "kafka", "flink"])
    assert (args.action, args.service) == ("provision", ["kafka", "flink"])


def test_stack_serve_runs_the_command_up_would_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """'stack serve' (the compose demo's containers) execs exactly the server command of 'stack up'."""
    from machinewatch import cli
    from machinewatch.config import load_settings
    from machinewatch.stack import SERVERS, Stack, services

    settings = load_settings(state_dir=tmp_path)
    expected = {"kafka": (["java", "kafka.Kafka"], {}), "influxdb": (["influxd", "run"], {}),
                "flink-jobmanager": (["jobmanager.sh"], {"FLINK_CONF_DIR": "c"}),
                "flink-taskmanager": (["taskmanager.sh"], {"FLINK_CONF_DIR": "c"})}
    for cls in (services.Kafka, services.InfluxDB, services.Flink):
        monkeypatch.setattr(cls, "provision", lambda self: None)
    monkeypatch.setattr(services.Kafka, "command", lambda self: expected["kafka"])
    monkeypatch.setattr(services.InfluxDB, "command", lambda self: expected["influxdb"])
    monkeypatch.setattr(services.Flink, "command", lambda self: expected["flink-jobmanager"])
    monkeypatch.setattr(services.Flink, "taskmanager_command", lambda self: expected["flink-taskmanager"])
    execs: list[tuple[str, list[str], dict[str, str]]] = []

    def fake_exec(path: str, argv: list[str], env: dict[str, str]) -> None:
        execs.append((path, argv, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execvpe", fake_exec)
    for name in SERVERS:
        with pytest.raises(SystemExit):
            Stack(settings).serve(name)
        path, argv, env = execs[-1]
        cmd, extra = expected[name]
        assert (path, argv) == (cmd[0], cmd) and extra.items() <= env.items()
    args = build_parser().parse_args(["stack", "serve", "kafka", "influxdb"])
    assert cli.cmd_stack(args, settings) == 2  # one server per container
    with pytest.raises(Exception, match="unknown server"):
        Stack(settings).serve("zookeeper")

