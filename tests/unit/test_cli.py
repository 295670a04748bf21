"""The CLI parses what the README shows and explains itself with --help."""

from __future__ import annotations

from datetime import timedelta

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


def test_stack_actions_parse() -> None:
    args = build_parser().parse_args(["stack", "logs", "kafka", "-n", "5"])
    assert (args.action, args.service, args.lines) == ("logs", "kafka", 5)
