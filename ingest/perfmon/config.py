"""Typed configuration of the PerfMon folder watcher, loaded once from a TOML file (see sample.conf).

Kafka and the rest of the stack come from the shared ``machinewatch.config.Settings`` (MW_* env);
this file only says which folder to watch and how to treat its files. Every key can be overridden by
``MW_PERFMON_<KEY>``; ``[perfmon.runner]`` is the runner's batching (``machinewatch.runtime.RunOptions``).
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ingest.perfmon.units import UnitTable, builtin_table, rule_from_mapping
from ingest.perfmon.zones import table_fingerprint
from machinewatch.config import read_toml_table, validation_problems
from machinewatch.plugins import CollectorSettings, PluginConfigError, env_overrides
from machinewatch.record import make_event_id


class ConfigError(PluginConfigError):
    """The configuration file is missing or invalid; the message names the key, the value and what is allowed."""


class PerfmonConfig(CollectorSettings):
    """The ``[perfmon]`` table of the watcher's TOML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Set by ``load_config``: the file it came from (re-read when it changes) and the flags given on top.
    _source_file: Path | None = PrivateAttr(default=None)
    _flags: dict[str, Any] = PrivateAttr(default_factory=dict)

    watch_dir: Path = Field(description="folder the data collector set writes its .csv files into")
    done_dir: Path | None = Field(None, description="where fully acknowledged files go (default <watch_dir>/done)")
    error_dir: Path | None = Field(
        None, description="where unusable files go, with a .reason.txt (default <watch_dir>/error)")
    state_file: Path | None = Field(None, description="progress per file (default <watch_dir>/.perfmon-state.json)")
    pattern: str = Field("*.csv", min_length=1, description="file name glob")
    recursive: bool = Field(True, description="also look in sub-folders (PerfMon writes HOST_yyyymmdd-NNNNNN/ per run)")
    settle_s: float = Field(30.0, ge=0, description="a file is finished once unmodified for this long")
    poll_interval_s: float = Field(5.0, gt=0, description="seconds between folder scans")
    once: bool = Field(False, description="process the files that are finished now, then exit (--once)")
    batch_rows: int = Field(500, ge=1, description="rows sent before waiting for the broker's acknowledgement")
    region: str = ""
    site: str = ""
    default_host: str = Field("", description="device id for counter paths without \\\\HOST")
    legacy_encoding: str = Field(
        "auto", description="code page of files that are not UTF-8/UTF-16: auto, cp1251, cp1252 ...")
    max_file_mb: float = Field(512.0, gt=0, description="larger files go to error/ instead of being read into memory")
    ack_timeout_s: float = Field(120.0, gt=0, description="how long to wait for the broker to acknowledge a batch")
    state_retention_days: float = Field(30.0, ge=0, description="forget finished files after this long")
    timezone: str | None = Field(
        None, description="IANA zone (e.g. Europe/Moscow) of files whose header has neither a usable offset "
        "nor a known zone name")
    unit_rules: list[dict[str, Any]] = Field(
        default_factory=list, description="extra counter-name -> unit rules, tried before units.toml")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            msg = f"unknown time zone {value!r}; use an IANA name such as Europe/Moscow or America/New_York"
            raise ValueError(msg) from exc
        return value

    @field_validator("unit_rules")
    @classmethod
    def _valid_rules(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, rule in enumerate(value):
            rule_from_mapping(rule, f"rule {i + 1}")  # ValueError names the key and what is allowed
        return value

    def unit_table(self) -> UnitTable:
        """units.toml with this config's ``unit_rules`` tried first."""
        return builtin_table().extended(self.unit_rules, "perfmon.unit_rules")

    @property
    def zone_fingerprint(self) -> str:
        """Changes whenever a file parked for want of a time zone might now resolve: the ``timezone``
        setting, or the zone-name table (zones.toml, tzlocal's CLDR table) after an upgrade."""
        return make_event_id("perfmon-zone", self.timezone or "", table_fingerprint())[:16]

    @field_validator("legacy_encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        if value != "auto":
            try:
                codecs.lookup(value)
            except LookupError as exc:
                msg = f"unknown encoding {value!r}; use 'auto' or a Python codec name such as cp1251 or cp1252"
                raise ValueError(msg) from exc
        return value

    @property
    def source_file(self) -> Path | None:
        """The TOML file this config was loaded from (None: built in code)."""
        return self._source_file

    @property
    def flags(self) -> dict[str, Any]:
        """The command-line flags ``load_config`` applied over the file (applied again when it is re-read)."""
        return dict(self._flags)

    @property
    def done_path(self) -> Path:
        return self.done_dir or self.watch_dir / "done"

    @property
    def error_path(self) -> Path:
        return self.error_dir or self.watch_dir / "error"

    @property
    def state_path(self) -> Path:
        return self.state_file or self.watch_dir / ".perfmon-state.json"


def load_config(path: Path | str, overrides: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> PerfmonConfig:
    """Read and validate the ``[perfmon]`` table, then ``MW_PERFMON_<KEY>`` variables, then ``overrides`` (flags);
    ConfigError says which key is wrong and why."""
    import os

    path = Path(path)
    table = dict(read_toml_table(path, "perfmon", "PerfMon", ConfigError))
    try:
        table.update(env_overrides("perfmon", PerfmonConfig, os.environ if environ is None else environ))
    except PluginConfigError as exc:
        raise ConfigError(str(exc)) from exc
    table.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        config = PerfmonConfig(**table)
    except ValidationError as exc:
        msg = f"invalid PerfMon config {path}: {validation_problems(exc, 'perfmon')}"
        raise ConfigError(msg) from exc
    # Relative folders are relative to the config file, not to wherever the service was started.
    base = path.resolve().parent
    update = {
        name: base / value
        for name in ("watch_dir", "done_dir", "error_dir", "state_file")
        if isinstance(value := getattr(config, name), Path) and not value.is_absolute()
    }
    config = config.model_copy(update=update) if update else config
    config._source_file = path
    config._flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    return config
