"""The PerfMon watcher's sample config loads into its typed model; bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.perfmon.config import ConfigError, load_config

SAMPLE = Path(__file__).resolve().parents[2] / "ingest" / "perfmon" / "sample.conf"


def test_sample_conf_loads() -> None:
    config = load_config(SAMPLE)
    assert config.watch_dir == Path("/var/lib/machinewatch/perfmon")
    assert config.done_path == config.watch_dir / "done"
    assert config.error_path == config.watch_dir / "error"
    assert (config.settle_s, config.batch_rows, config.legacy_encoding) == (30.0, 500, "auto")
    assert (config.region, config.site) == ("eu-west", "plant-1")


def test_errors_name_key_and_value(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text('[perfmon]\nwatch_dir = "in"\nbatch_rows = 0\nlegacy_encoding = "klingon"\ntypo = 1\n')
    with pytest.raises(ConfigError) as exc:
        load_config(conf)
    text = str(exc.value)
    assert "perfmon.batch_rows = 0" in text and "klingon" in text and "perfmon.typo" in text


def test_relative_dirs_are_relative_to_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "w.conf"
    conf.write_text('[perfmon]\nwatch_dir = "inbox"\ndone_dir = "/abs/done"\n')
    config = load_config(conf)
    assert config.watch_dir == tmp_path / "inbox" and config.done_path == Path("/abs/done")
    with pytest.raises(ConfigError, match=r"no \[perfmon\] table"):
        conf.write_text("[other]\n")
        load_config(conf)


def test_sample_conf_commented_settings_load(tmp_path: Path) -> None:
    """The settings sample.conf documents as comments (timezone, unit_rules) load as written there."""
    import re

    text = SAMPLE.read_text()
    uncommented = re.sub(r"(?m)^  # (timezone|\[\[perfmon|  patterns|  unit|  factor|  orig_unit)", r"  \1", text)
    assert uncommented != text
    conf = tmp_path / "sample.conf"
    conf.write_text(uncommented)
    config = load_config(conf)
    assert config.timezone == "Europe/Moscow"
    table = config.unit_table()
    assert table.unit("Processor Frequency") == ("MHz", 1.0, None)
    assert table.unit("Total GB") == ("bytes", 1073741824.0, "GB")
