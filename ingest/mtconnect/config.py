"""Settings of the MTConnect collector: a TOML file (``[mtconnect]`` table) into a typed model.

Checked once at start-up, without network calls; a bad value is reported with its key, the value
and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from machinewatch import names
from machinewatch.config import read_toml_table, validation_problems
from machinewatch.plugins import CollectorSettings, env_overrides
from machinewatch.runtime import RunOptions


class ConfigError(ValueError):
    """The connector configuration is invalid; the message names the key."""


class MTConnectSettings(CollectorSettings):
    """One MTConnect agent to follow (``topic``, the readings topic, may also be given as ``readings_topic``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_url: str = Field(description="base URL of the agent, e.g. http://agent:5000 (a device path is allowed)")
    agent_id: str = Field("", description="name for agent-level records (gaps, restarts); default host:port")
    mode: Literal["stream", "poll"] = "stream"
    interval_ms: int = Field(1000, ge=0, le=600_000, description="stream interval / poll period")
    heartbeat_ms: int = Field(10_000, ge=100, le=600_000)
    silence_timeout_ms: int = Field(0, ge=0, description="reconnect after this long without bytes; 0 = 2x heartbeat")
    count: int = Field(1000, ge=1, le=100_000, description="observations per request or stream part")
    start: Literal["current", "buffer"] = Field(
        "current", description="first run without state: 'current' baselines with /current and follows from "
        "nextSequence; 'buffer' reads everything still in the agent's buffer")
    devices: list[str] = Field(default_factory=list, description="device names/uuids to keep; empty = all")
    device_id_from: Literal["name", "uuid"] = "name"
    metric_from: Literal["id", "name"] = "id"
    state_path: Path = Field(description="file holding (instanceId, nextSequence); written atomically")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024)
    request_timeout_s: float = Field(10.0, gt=0, le=600)
    reconnect_min_s: float = Field(0.2, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)
    metrics_interval_s: float = Field(60.0, gt=0)
    region: str = ""
    site: str = ""
    # Flush and checkpoint after every document (a crash repeats at most one, <= count observations); a
    # [mtconnect.runner] table sets its own max_batch (a larger one trades that bound for fewer flushes).
    runner: RunOptions = Field(default_factory=lambda: RunOptions(max_batch=1),
                               description="batching, retries, stats ([mtconnect.runner]); max_batch defaults to 1")
    device_events_topic: str = names.TOPIC_DEVICE_EVENTS
    alerts_topic: str = Field(names.TOPIC_ALERTS, description="unused: alerts are derived by the device-alerts "
                              "job from the device events (kept so older config files still load)")

    @model_validator(mode="before")
    @classmethod
    def _readings_topic(cls, data: Any) -> Any:
        # The key of the release before the runtime; ``topic`` is every collector's name for it.
        if isinstance(data, dict) and "readings_topic" in data:
            data = dict(data)
            topic = data.pop("readings_topic")
            data.setdefault("topic", topic)
        return data

    @field_validator("agent_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = f"must be an http:// or https:// URL with a host, got {value!r}"
            raise ValueError(msg)
        if parts.query or parts.fragment:
            msg = f"must not carry a query or fragment (the connector adds its own), got {value!r}"
            raise ValueError(msg)
        return value.rstrip("/")

    @model_validator(mode="after")
    def _defaults(self) -> MTConnectSettings:
        if self.reconnect_min_s > self.reconnect_max_s:
            msg = f"reconnect_min_s ({self.reconnect_min_s}) is larger than reconnect_max_s ({self.reconnect_max_s})"
            raise ValueError(msg)
        if not self.agent_id:
            parts = urlsplit(self.agent_url)
            object.__setattr__(self, "agent_id", f"mtconnect-agent:{parts.hostname}:{parts.port or 80}")
        return self

    @property
    def silence_timeout_s(self) -> float:
        ms = self.silence_timeout_ms or max(2 * self.heartbeat_ms, self.heartbeat_ms + 1000)
        return ms / 1000


def load_config(path: Path | str | None, environ: Mapping[str, str] | None = None,
                **overrides: object) -> MTConnectSettings:
    """Read ``[mtconnect]`` from a TOML file, then ``MW_MTCONNECT_<KEY>`` variables (``environ``, default none),
    then ``overrides`` (tests, command-line flags; None decides nothing)."""
    table: Mapping[str, Any] = {}
    if path is not None:
        path = Path(path)
        table = read_toml_table(path, "mtconnect", "MTConnect", ConfigError)
    data = {**table, **env_overrides("mtconnect", MTConnectSettings, environ or {}),
            **{k: v for k, v in overrides.items() if v is not None}}
    state = data.get("state_path")
    if isinstance(state, str) and path is not None and not Path(state).expanduser().is_absolute():
        # A relative state path is relative to the config file, not to wherever the CLI was started.
        data["state_path"] = str(path.parent / state)
    elif isinstance(state, str):
        data["state_path"] = str(Path(state).expanduser())
    return settings_from_dict(data, origin=str(path) if path is not None else "environment")


def settings_from_dict(data: dict[str, object], origin: str = "config") -> MTConnectSettings:
    try:
        return MTConnectSettings.model_validate(data)
    except ValidationError as exc:
        msg = f"invalid MTConnect config in {origin}: {validation_problems(exc, 'mtconnect')}"
        raise ConfigError(msg) from exc
