"""Record definitions: one per record kind on the topics, from which every stage derives its shape.

Each ``RecordDef`` lists its columns once (name, JSON type, Flink SQL type, role in InfluxDB, meaning).
From it come the Flink DDL column lists (``sql_columns``), the JSON field order and validation of the
Python records (``machinewatch.record``, ``machinewatch.device_events``), the InfluxDB line protocol
(``machinewatch.line_protocol``) and the Flux column lists (``flux_columns``). Nothing here imports a
stage: the jobs, the writer, the dashboards and the tests read the same definitions.

The alerts topic carries three kinds of record; each has a ``kind`` field saying which (``alert_def``):
``threshold`` (the window job's rules), ``sustained_<rule>`` (the sustained-condition job, e.g.
``sustained_overheat``) and ``derived`` (the device-alerts job's, from availability and condition changes of
the device events).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from machinewatch import names

# tag / field / time: what the column is in InfluxDB; "none": not written there (e.g. the window size,
# which becomes the computed ``window`` tag).
Role = Literal["tag", "field", "time", "none"]


class BadRecord(ValueError):
    """A document that is not a record of its definition (a required column is missing or unusable)."""


@dataclass(frozen=True)
class Column:
    name: str
    json: type  # str, float or int: the JSON type (and what Python records validate)
    sql: str  # the Flink SQL type
    role: Role = "field"
    doc: str = ""
    required: bool = False  # an encoder refuses a document without it
    influx: str = ""  # the InfluxDB field name when it is not ``name``

    @property
    def influx_name(self) -> str:
        return self.influx or self.name


@dataclass(frozen=True)
class RecordDef:
    """One record kind: its columns in JSON/DDL order, its topic, and where it lands in InfluxDB."""

    name: str
    doc: str
    columns: tuple[Column, ...]
    topic: str = ""
    measurement: str = ""  # "" = not written to InfluxDB
    kind: str = ""  # the value of its ``kind`` field on a topic shared by several kinds (alerts)
    # Alerts are open: keys the definition does not list are written to InfluxDB as fields as they are
    # (numbers as floats, anything else as JSON), so a rule's extra values reach the dashboards.
    open_fields: bool = False
    # For open records: the keys written as tags whether or not the record lists them (every alert kind has
    # the same tags, so one query filters them all).
    open_tags: tuple[str, ...] = ()
    # Fields written to InfluxDB that are not in the JSON (a late event counts 1).
    constant_fields: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen = [c.name for c in self.columns]
        if len(set(seen)) != len(seen):
            msg = f"record {self.name}: a column is listed twice"
            raise ValueError(msg)
        if self.open_fields and not {c.name for c in self.with_role("tag")} <= set(self.open_tags):
            msg = f"record {self.name}: its tag columns must be among its open_tags"
            raise ValueError(msg)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def with_role(self, role: Role) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.role == role)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def sql_columns(self, indent: str = "  ") -> str:
        """The physical column list of a Flink CREATE TABLE, in JSON order (what the DDL templates insert)."""
        return f",\n{indent}".join(f"`{c.name}` {c.sql}" for c in self.columns)

    def sql_select(self, values: Mapping[str, str], indent: str = "  ") -> str:
        """A SELECT list naming every column in DDL order: ``values[name]`` (an SQL expression) AS name.

        An INSERT into a table of this definition can then not put a value into the wrong column.
        """
        missing = [c.name for c in self.columns if c.name not in values]
        extra = sorted(set(values) - set(self.names))
        if missing or extra:
            msg = f"record {self.name}: SELECT lacks {missing} / has unknown {extra}"
            raise ValueError(msg)
        return f",\n{indent}".join(f"{values[c.name]} AS `{c.name}`" for c in self.columns)

    def check(self, doc: Mapping[str, Any]) -> None:
        """BadRecord naming the required columns a document lacks (None counts as lacking)."""
        if None in map(doc.get, self.required):
            missing = [k for k in self.required if doc.get(k) is None]
            msg = f"{self.doc.split(':')[0]} lacks {', '.join(missing)}"
            raise BadRecord(msg)

    def flux_columns(self, *extra: str) -> str:
        """A Flux array of this record's InfluxDB columns (tags, then fields), for ``keep(columns: ...)``."""
        cols = [*extra, *(c.name for c in self.with_role("tag")), *(c.influx_name for c in self.with_role("field"))]
        return "[" + ", ".join(f'"{c}"' for c in dict.fromkeys(cols)) + "]"


def _c(name: str, json: type, sql: str, role: Role = "field", doc: str = "", *, required: bool = False,
       influx: str = "") -> Column:
    return Column(name, json, sql, role, doc, required, influx)


READING = RecordDef("reading", "reading: one measured value of one metric of one device at one event time", (
    _c("source", str, "STRING", "tag", "which collector produced it", required=True),
    _c("region", str, "STRING", "tag", "region of the site, '' if none"),
    _c("site", str, "STRING", "tag", "site (plant, data centre), '' if none"),
    _c("device_id", str, "STRING", "tag", "the device", required=True),
    _c("metric", str, "STRING", "tag", "what was measured", required=True),
    _c("value", float, "DOUBLE", "field", "the value in the normalised unit", required=True),
    _c("unit", str, "STRING", "tag", "the normalised unit (e.g. °C)", required=True),
    _c("orig_value", float, "DOUBLE", "field", "the value as the device gave it, where normalisation changed it"),
    _c("orig_unit", str, "STRING", "field", "the unit the device gave, where normalisation changed it"),
    _c("ts", int, "BIGINT", "time", "event time, UTC epoch ms", required=True),
    _c("event_id", str, "STRING", "field", "stable id: a replay repeats it", required=True),
), topic=names.TOPIC_READINGS)

DEVICE_EVENT = RecordDef("device_event", "device event: a non-numeric fact about a device or its data source", (
    _c("source", str, "STRING", "tag", required=True),
    _c("region", str, "STRING", "tag"),
    _c("site", str, "STRING", "tag"),
    _c("device_id", str, "STRING", "tag", required=True),
    _c("kind", str, "STRING", "tag", "observation | gap | agent_restarted | derived", required=True),
    _c("category", str, "STRING", "field", "SAMPLE | EVENT | CONDITION for observations, '' otherwise"),
    _c("item", str, "STRING", "field", "data item id (or name); '' for agent-level events"),
    _c("item_type", str, "STRING", "field", "e.g. AVAILABILITY, EMERGENCY_STOP; for derived: the rule name"),
    _c("value", str, "STRING", "field", "the reported value or condition text"),
    _c("state", str, "STRING", "tag",
       "condition level NORMAL | WARNING | FAULT | UNAVAILABLE; derived: the alert state"),
    _c("sequence", int, "BIGINT", "field", "source sequence number; for a gap the first lost one"),
    _c("instance_id", str, "STRING", "field"),
    _c("ts", int, "BIGINT", "time", "event time, UTC epoch ms", required=True),
    _c("event_id", str, "STRING", "field", required=True),
    _c("detail", str, "STRING", "field"),
    _c("lost_count", int, "BIGINT", "field", "for a gap: exactly how many sequence numbers were lost"),
), topic=names.TOPIC_DEVICE_EVENTS)

WINDOW_RESULT = RecordDef("window_result", "window result: avg/min/max/count of one metric of one device", (
    _c("device_id", str, "STRING", "tag", required=True),
    _c("metric", str, "STRING", "tag", required=True),
    _c("source", str, "STRING", "tag"),
    _c("region", str, "STRING", "tag"),
    _c("site", str, "STRING", "tag"),
    _c("unit", str, "STRING", "tag"),
    _c("window_ms", int, "BIGINT", "none", "window size (the `window` tag: 10s, or 60s@20s when sliding)",
       required=True),
    _c("slide_ms", int, "BIGINT", "none", "window slide (= size for tumbling windows)"),
    _c("window_start_ms", int, "BIGINT", "none"),
    _c("window_end_ms", int, "BIGINT", "time", "the point's time: a replay overwrites it", required=True),
    _c("avg_value", float, "DOUBLE", "field", required=True, influx="avg"),
    _c("min_value", float, "DOUBLE", "field", required=True, influx="min"),
    _c("max_value", float, "DOUBLE", "field", required=True, influx="max"),
    _c("count", int, "BIGINT", "field", required=True),
), topic=names.TOPIC_AGGREGATES, measurement=names.MEASUREMENT_WINDOW)

FLEET_RESULT = RecordDef("fleet_result", "fleet roll-up: one metric of all devices of a source, region and site in "
                         "one roll-up window (1 minute, 1 hour)", (
    _c("source", str, "STRING", "tag"),
    _c("region", str, "STRING", "tag"),
    _c("site", str, "STRING", "tag"),
    _c("metric", str, "STRING", "tag", required=True),
    _c("unit", str, "STRING", "tag"),
    _c("window_ms", int, "BIGINT", "none", "the roll-up's size (the `window` tag: 1m, 1h)", required=True),
    _c("slide_ms", int, "BIGINT", "none", "= window_ms (roll-ups are tumbling)"),
    _c("window_end_ms", int, "BIGINT", "time", "the point's time: a replay overwrites it", required=True),
    _c("devices", int, "BIGINT", "field", "device series with readings in the window", required=True),
    _c("avg_sum", float, "DOUBLE", "field", "sum of those devices' averages: avg_sum / devices is the mean device",
       required=True),
    _c("min_value", float, "DOUBLE", "field", required=True, influx="min"),
    _c("max_value", float, "DOUBLE", "field", required=True, influx="max"),
    _c("count", int, "BIGINT", "field", "readings", required=True),
), topic=names.TOPIC_AGGREGATES, measurement=names.MEASUREMENT_FLEET)

LATE_EVENT = RecordDef("late_event", "late event: a reading that arrived after its window fired", (
    _c("source", str, "STRING", "tag", required=True),
    _c("device_id", str, "STRING", "tag", required=True),
    _c("metric", str, "STRING", "tag", required=True),
    _c("ts", int, "BIGINT", "time", "the reading's event time", required=True),
    _c("event_id", str, "STRING", "field"),
    _c("watermark", str, "STRING", "field", "the job's watermark when it arrived"),
), topic=names.TOPIC_LATE, measurement=names.MEASUREMENT_LATE, constant_fields={"count": 1})

# Tags of every alert kind; every other key of an alert is a field (alerts are open, see open_fields). An alert
# needs only its device and its time to be written; what else it carries depends on the rule.
# ``item_type`` is the rule of a derived alert: a tag, so two rules' alerts at one time and state are two points.
ALERT_TAGS = ("device_id", "rule_group", "severity", "kind", "state", "region", "site", "source", "item_type")

KIND_THRESHOLD = "threshold"
KIND_DERIVED = "derived"
SUSTAINED_PREFIX = "sustained_"

THRESHOLD_ALERT = RecordDef("threshold_alert", "threshold alert: a sliding window whose values matched a rule", (
    _c("alert_id", str, "STRING", "field", "md5 of group, device and window end: stable across replays"),
    _c("kind", str, "STRING", "tag", "always 'threshold'"),
    _c("rule_group", str, "STRING", "tag"),
    _c("label", str, "STRING", "field", "the first matching rule's label"),
    _c("severity", str, "STRING", "tag"),
    _c("device_id", str, "STRING", "tag", required=True),
    _c("region", str, "STRING", "tag"),
    _c("site", str, "STRING", "tag"),
    _c("window_start_ms", int, "BIGINT", "field"),
    _c("window_end_ms", int, "BIGINT", "time", required=True),
    _c("values", str, "STRING", "field", "the group's values as a JSON object"),
), topic=names.TOPIC_ALERTS, measurement=names.MEASUREMENT_THRESHOLD_ALERT, kind=KIND_THRESHOLD, open_fields=True,
   open_tags=ALERT_TAGS)

SUSTAINED_ALERT = RecordDef("sustained_alert", "sustained alert: one state change of a sustained-condition episode", (
    _c("alert_id", str, "STRING", "field", "rule kind + device + start of the run: stable across replays"),
    _c("state", str, "STRING", "tag", "pending | cancelled | opened | escalated | resolved | silent"),
    _c("device_id", str, "STRING", "tag", required=True),
    _c("ts", int, "BIGINT", "time", required=True),
    _c("started_ms", int, "BIGINT", "field"),
    _c("duration_ms", int, "BIGINT", "field"),
    _c("avg", float, "DOUBLE", "field"),
    _c("peak", float, "DOUBLE", "field"),
    _c("threshold", float, "DOUBLE", "field"),
    _c("severity", str, "STRING", "tag"),
    _c("region", str, "STRING", "tag"),
    _c("site", str, "STRING", "tag"),
    _c("fires_at_ms", int, "BIGINT", "field", "pending only: when it opens if the run goes on"),
    _c("kind", str, "STRING", "tag", "sustained_<rule name>, e.g. sustained_overheat"),
    _c("metric", str, "STRING", "field"),
    _c("direction", str, "STRING", "field", "above | below"),
), topic=names.TOPIC_ALERTS, measurement=names.MEASUREMENT_DEVICE_ALERT, kind=SUSTAINED_PREFIX + "*",
    open_fields=True, open_tags=ALERT_TAGS)

DERIVED_ALERT = RecordDef(
    "derived_alert", "derived alert: an availability, e-stop or condition change (the device-alerts job); "
    "item_type is the rule, state opened | resolved",
    tuple(replace(c, required=c.name in ("device_id", "ts"), role="tag" if c.name == "item_type" else c.role)
          for c in DEVICE_EVENT.columns),
    topic=names.TOPIC_ALERTS, measurement=names.MEASUREMENT_DEVICE_ALERT, kind=KIND_DERIVED, open_fields=True,
    open_tags=ALERT_TAGS)

DEAD_LETTER = RecordDef("dead_letter", "dead letter: input that did not become a record, with its exact bytes", (
    _c("source", str, "STRING", "tag", "the stage that refused it (a collector, a sink, flink:<job>)", required=True),
    _c("kind", str, "STRING", "tag", "dead_letter, or a data-quality note's kind", required=True),
    _c("origin", str, "STRING", "field", "where it came from: topic/partition@offset, a file, a URL"),
    _c("reason", str, "STRING", "field", "why it was refused", required=True),
    _c("raw", str, "STRING", "field", "the bytes: text if valid UTF-8, else base64"),
    _c("raw_encoding", str, "STRING", "field", "utf-8 | base64"),
    _c("size", int, "BIGINT", "field", "length of the original bytes"),
    _c("truncated", bool, "BOOLEAN", "field", "raw holds fewer bytes than size"),
    _c("received_ms", int, "BIGINT", "time", "when the stage refused it, UTC epoch ms"),
), topic=names.TOPIC_DEAD_LETTER)

RECORDS = (READING, DEVICE_EVENT, WINDOW_RESULT, FLEET_RESULT, LATE_EVENT, THRESHOLD_ALERT, SUSTAINED_ALERT,
           DERIVED_ALERT, DEAD_LETTER)

def alert_def(doc: Mapping[str, Any]) -> RecordDef | None:
    """The definition of an alert by its ``kind``; None when it has no kind (an alert of an older release).

    ``threshold`` is the window job's; ``derived`` the device-alerts job's; every other kind is a device
    alert of the sustained-condition job (``sustained_<rule>``) or of a future analytics job: they share
    the device_alert measurement, tags and lifecycle fields.
    """
    kind = doc.get("kind")
    if not kind:
        return None
    if kind == KIND_THRESHOLD:
        return THRESHOLD_ALERT
    if kind == KIND_DERIVED:
        return DERIVED_ALERT
    return SUSTAINED_ALERT
