"""Settings: env overrides, tokens from 0600 files, and secrets that never leak into env or repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from machinewatch.config import load_settings


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
