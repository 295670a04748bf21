"""``Settings`` in typed sections: every setting in one section, the flat names and the sections agree, every
``MW_*`` name the README documents still sets its value, secrets stay masked."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from machinewatch.config import SECTIONS, Settings, load_settings, section_of

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
ROWS = [line for line in README.splitlines() if line.startswith("| `MW_")]
DOCUMENTED = sorted({n for row in ROWS for n in re.findall(r"`MW_([A-Z0-9_]+)`", row.split("|")[1])})
FLAT = sorted(Settings.model_fields)


def test_every_setting_is_in_exactly_one_section_and_nothing_else_is() -> None:
    aliases = [str(info.alias) for model in SECTIONS.values() for info in model.model_fields.values()]
    assert sorted(aliases) == FLAT, "a setting in no section, in two, or a section field that is no setting"
    for name in SECTIONS:
        assert isinstance(getattr(load_settings(), name), SECTIONS[name]), name


def _changed(name: str, value: Any) -> str:
    """An environment value for setting ``name`` that differs from ``value`` (its default)."""
    annotation = str(Settings.model_fields[name].annotation)
    if name in ("overheat_max_gap_s", "overheat_silence_s"):  # kept apart by the start-up check
        return str(value + 5)
    if "Literal" in annotation:  # another of the allowed values
        return next(v for v in typing.get_args(Settings.model_fields[name].annotation) if v != value)
    if "dict" in annotation:  # MW_INFLUX_SITES: one site, as JSON
        return '{"changed": {"url": "http://127.0.0.1:9", "token_env": "CHANGED_TOKEN"}}'
    if "bool" in annotation:
        return str(not value).lower()
    if "list[int]" in annotation:  # MW_KAFKA_NODE_PORTS
        return "[19092, 19093]"
    if "list" in annotation:
        return '["changed-a", "changed-b"]'
    if "Path" in annotation:
        return f"/tmp/changed-{name}"  # noqa: S108 - only a value, never opened
    if isinstance(value, int | float):
        return str(value + 7)
    return f"changed-{name}"


# MW_METRICS_* belong to machinewatch/metrics.py's own settings (tests/unit/test_metrics.py), not to Settings.
@pytest.mark.parametrize("variable", [v for v in DOCUMENTED if not v.startswith("METRICS_")])
def test_every_documented_variable_sets_its_setting_and_its_section(variable: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    name = variable.lower()
    assert name in Settings.model_fields, f"README documents MW_{variable}, which sets nothing"
    default = getattr(load_settings(), name)
    text = _changed(name, default.get_secret_value() if isinstance(default, SecretStr) else default)
    monkeypatch.setenv(f"MW_{variable}", text)
    loaded = load_settings()
    flat = getattr(loaded, name)
    assert flat != default, f"MW_{variable}={text} did not change {name}"
    section, field = section_of(name)
    assert getattr(getattr(loaded, section), field) == flat


def test_the_readme_section_column_names_each_variables_section() -> None:
    for row in ROWS:
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = re.findall(r"`MW_([A-Z0-9_]+)`", cells[0])
        paths = re.findall(r"`([a-z_]+\.[a-z0-9_]+)`", cells[-1])
        expected = [".".join(section_of(n.lower())) for n in names if n.lower() in Settings.model_fields]
        assert paths == expected, row


def test_sections_agree_with_the_flat_names_for_every_value_and_after_a_copy(tmp_path: Path) -> None:
    given = load_settings(state_dir=tmp_path, kafka_port=12345, flink_parallelism=4, smtp_to=["ops@example.com"],
                          influx_write_token=SecretStr("w-token"), overheat_max_gap_s=20, overheat_silence_s=90)
    copied = given.model_copy(update={"kafka_port": 23456, "window_size_s": 30})
    for settings in (load_settings(), given, copied):
        for section, model in SECTIONS.items():
            view = getattr(settings, section)
            for field, info in model.model_fields.items():
                assert getattr(view, field) == getattr(settings, str(info.alias)), f"{section}.{field}"
    assert (given.kafka.port, copied.kafka.port, copied.jobs.window_size_s) == (12345, 23456, 30)
    assert given.stack.state_dir == tmp_path and given.notify.smtp_to == ["ops@example.com"]


def test_flat_names_and_sections_are_read_only() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.kafka_port = 1
    with pytest.raises(ValidationError, match="frozen"):
        settings.kafka.port = 1


def test_secrets_are_masked_when_settings_or_sections_are_printed() -> None:
    secrets = {"kafka_sasl_password": "k-secret-1", "influx_token": "i-secret-2", "influx_write_token": "i-secret-3",
               "influx_read_token": "i-secret-4", "smtp_password": "s-secret-5"}
    settings = load_settings(**{k: SecretStr(v) for k, v in secrets.items()})
    printed = " ".join([repr(settings), str(settings), *(f"{getattr(settings, s)!r} {getattr(settings, s)}"
                                                         for s in SECTIONS), str(settings.to_env())])
    for value in secrets.values():
        assert value not in printed
    assert settings.influxdb.write_token is not None
    assert settings.influxdb.write_token.get_secret_value() == "i-secret-3"
