"""Settings: env overrides, tokens from 0600 files, and secrets that never leak into env or repr."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from machinewatch.config import Settings, load_settings


def test_env_overrides_and_derived_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MW_KAFKA_PORT", "19092")
    monkeypatch.setenv("MW_FLINK_REST_ADDRESS", "http://flink.example:8081")
    s = load_settings()
    assert s.kafka_servers == "127.0.0.1:19092"
    assert s.flink_rest == "http://flink.example:8081"
    assert s.influx == "http://127.0.0.1:8086"


def test_tokens_come_from_files_or_env_and_stay_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(state_dir=tmp_path)
    with pytest.raises(RuntimeError, match="MW_INFLUX_READ_TOKEN"):
        s.read_token()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "influx_read_token").write_text("file-token\n")
    assert s.read_token() == "file-token"
    monkeypatch.setenv("MW_INFLUX_WRITE_TOKEN", "env-token-123")
    s2 = load_settings(state_dir=tmp_path)
    assert s2.write_token() == "env-token-123"
    assert "env-token-123" not in repr(s2)
    assert "env-token-123" not in str(s2.to_env())


def test_to_env_round_trips_through_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(state_dir=tmp_path, kafka_port=12345, window_size_s=30, smtp_to=["ops@example.com", "b@x.org"])
    for key, value in s.to_env().items():
        monkeypatch.setenv(key, value)
    again = load_settings()
    assert again.kafka_port == 12345 and again.window_size_s == 30 and again.state_dir == tmp_path
    assert again.smtp_to == ["ops@example.com", "b@x.org"]


def test_every_setting_is_documented_in_the_readme_table() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = "\n".join(line for line in readme.splitlines() if line.startswith("| `MW_"))
    undocumented = [f"MW_{name.upper()}" for name in Settings.model_fields if f"`MW_{name.upper()}`" not in rows]
    assert not undocumented, f"settings missing from the README's configuration table: {undocumented}"


@pytest.mark.parametrize(("overrides", "named"), [
    ({"overheat_silence_s": 10, "overheat_max_gap_s": 10}, "MW_OVERHEAT_SILENCE_S (10) must exceed"),
    ({"overheat_max_gap_s": 1, "overheat_bucket_s": 2}, "MW_OVERHEAT_MAX_GAP_S (1) is shorter than"),
    ({"overheat_bucket_s": 0.1005}, "MW_OVERHEAT_BUCKET_S (0.1005) must be a whole number of milliseconds"),
    ({"overheat_bucket_s": 0}, "MW_OVERHEAT_BUCKET_S (0.0) must be a whole number of milliseconds"),
])
def test_contradictory_overheat_times_are_refused_at_start_up(overrides: dict[str, float], named: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(named)):
        load_settings(**overrides)
    load_settings(overheat_max_gap_s=600, overheat_silence_s=900)  # 5-minute data: fine
