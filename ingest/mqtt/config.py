"""Settings of the MQTT collector: the ``[mqtt]`` table (broker, session) and its ``[[mqtt.subscription]]`` tables
(topic filter with named levels -> device/metric, JSON payload fields -> value and event time).

Checked once at start-up, without network calls: a template naming a level the filter does not have, a
subscription that says neither which metric nor which fields, a persistent session without a client id are
refused with the key and the value.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from machinewatch.plugins import CollectorSettings

# A named level of a topic filter: "{device_id}" stands for MQTT's "+" and captures that level.
_NAMED = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TEMPLATED = ("device_id", "metric", "site", "region", "unit")


class Subscription(BaseModel):
    """One ``[[mqtt.subscription]]``: which topics, and how their messages become readings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field(description="topic filter; '{name}' is one level captured by name ('+' uncaptured), "
                       "a last '#' any number of levels")
    format: Literal["json", "number"] = Field("json", description="payload: a JSON object, or a bare number")
    value: str = Field("value", description="JSON field (dotted path) holding the value (format json)")
    fields: dict[str, str] = Field(default_factory=dict,
                                   description="several readings per message: metric name -> JSON field")
    time: str = Field("", description="JSON field of the event time; empty: the time the collector received it")
    time_format: Literal["epoch_ms", "epoch_s", "iso8601"] = "epoch_ms"
    id_field: str = Field("", description="JSON field that identifies the message at its source (a sequence "
                          "number): part of the event id, so a redelivery is recognised even without a time field")
    device_id: str = Field("", description="template, e.g. '{line}-{device}'; default '{device_id}'")
    metric: str = Field("", description="template or name; default '{metric}' (unless 'fields' is given)")
    unit: str = Field("", description="template or unit text, e.g. '°C'")
    unit_field: str = Field("", description="JSON field holding the unit (wins over 'unit' when present)")
    site: str = ""
    region: str = ""
    source: str = Field("mqtt", min_length=1, description="the 'source' of the readings")

    @field_validator("topic")
    @classmethod
    def _filter(cls, topic: str) -> str:
        levels = topic.split("/")
        if not topic:
            msg = "must not be empty"
            raise ValueError(msg)
        for n, level in enumerate(levels):
            if level == "#" and n != len(levels) - 1:
                msg = f"'#' must be the last level of {topic!r}"
                raise ValueError(msg)
            if level in ("+", "#") or _NAMED.match(level):
                continue
            if any(c in level for c in "+#{}"):
                msg = (f"level {level!r} of {topic!r} mixes text and a wildcard: a level is literal text, '+', "
                       "'{name}', or a last '#'")
                raise ValueError(msg)
        names = [m[1] for m in map(_NAMED.match, levels) if m]
        if len(names) != len(set(names)):
            msg = f"{topic!r} names a level twice"
            raise ValueError(msg)
        return topic

    @model_validator(mode="after")
    def _templates(self) -> Subscription:
        captured = set(self.captured())
        for key in _TEMPLATED:
            for name in _PLACEHOLDER.findall(getattr(self, key)):
                if name not in captured:
                    msg = (f"{key} = {getattr(self, key)!r} names level {{{name}}}, which topic {self.topic!r} does "
                           f"not capture (it captures: {', '.join(sorted(captured)) or 'nothing'})")
                    raise ValueError(msg)
        if not self.device_id and "device_id" not in captured:
            msg = f"device_id is not set and topic {self.topic!r} has no {{device_id}} level"
            raise ValueError(msg)
        if self.format == "number" and (self.fields or self.time or self.id_field or self.unit_field):
            msg = "format 'number' (a bare number payload) takes no fields, time, id_field or unit_field"
            raise ValueError(msg)
        if not self.fields and not self.metric and "metric" not in captured:
            msg = f"metric is not set, topic {self.topic!r} has no {{metric}} level and no fields are given"
            raise ValueError(msg)
        if self.fields and (self.metric or "metric" in captured):
            msg = "give either fields (metric -> JSON field) or one metric (set, or a {metric} level), not both"
            raise ValueError(msg)
        return self

    def captured(self) -> list[str]:
        """The level names the filter captures, in order."""
        return [m[1] for m in map(_NAMED.match, self.topic.split("/")) if m]

    def mqtt_filter(self) -> str:
        """The filter sent to the broker: every named level is '+'."""
        return "/".join("+" if _NAMED.match(level) else level for level in self.topic.split("/"))


class MqttSettings(CollectorSettings):
    """``[mqtt]`` of a collector config (see sample.conf)."""

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = Field(min_length=1, max_length=200,
                           description="the broker keeps the session (subscriptions, unacknowledged and queued "
                           "messages) under this id: one id per collector instance, stable across restarts")
    protocol: Literal["5", "3.1.1"] = "5"
    qos: Literal[0, 1] = Field(1, description="1: at least once, acknowledged only after Kafka acknowledged; "
                               "0: at most once (messages can be lost)")
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0, le=0xFFFFFFFF,
                                  description="MQTT 5: how long the broker keeps the session while the collector "
                                  "is away (3.1.1 sessions do not expire)")
    max_inflight: int = Field(1000, ge=1, le=65535,
                              description="MQTT 5 Receive Maximum: unacknowledged messages the broker may send")
    keepalive_s: int = Field(30, ge=5, le=65535)
    username: str = ""
    password: SecretStr | None = None
    connect_timeout_s: float = Field(10.0, gt=0, description="wait at start-up before going on unconnected")
    reconnect_min_s: int = Field(1, ge=1, le=3600)
    reconnect_max_s: int = Field(30, ge=1, le=3600)
    max_payload_bytes: int = Field(256 * 1024, ge=16, description="larger messages are dead-lettered (head kept)")
    subscription: list[Subscription] = Field(min_length=1, description="[[mqtt.subscription]] tables")

    @model_validator(mode="after")
    def _reconnect_order(self) -> MqttSettings:
        if self.reconnect_min_s > self.reconnect_max_s:
            msg = f"reconnect_min_s ({self.reconnect_min_s}) is larger than reconnect_max_s ({self.reconnect_max_s})"
            raise ValueError(msg)
        return self
