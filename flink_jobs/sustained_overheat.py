"""PyFlink job: sustained-condition alerts (pending / cancelled / opened / escalated / resolved / silent)
per device and rule; the overheat alert is the shipped rule (``rules/sustained.toml``).

For each rule, Flink SQL buckets the rule's metric per device (event time, JVM) and drops the buckets
that cannot change an alert (``sql/overheat_prefilter.sql``: devices clear of the condition with no
episode near); the rules' streams are united, keyed by device, and a keyed process function with
event-time timers runs the lifecycle of ``flink_jobs.overheat_logic`` for each rule on the rest, writing
one JSON record per state change to the alerts topic. Python runs once per relevant device-bucket, not
per event: MATCH_RECOGNIZE cannot express the lifecycle (several emissions per episode, silence).
Submit with ``machinewatch jobs submit sustained-overheat``.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
from pathlib import Path
from typing import Any

from pyflink.common import Types
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.table import StreamTableEnvironment

from flink_jobs.overheat_logic import DeviceState, OverheatRules, on_bucket, on_timer
from flink_jobs.sustained_rules import Compiled, SustainedRule, load_sustained_rules
from flink_jobs.window_aggregates import Topics, render_sql, strip_sql_comments
from machinewatch import names
from machinewatch.config import Settings, load_settings

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).with_name("sql")
JOB_NAME = "machinewatch-sustained-overheat"


def rules_from(settings: Settings) -> OverheatRules:
    """The overheat rule's parameters as the MW_OVERHEAT_* settings give them (the shipped rule's)."""
    return overheat_rule(settings).base


def _sql(name: str) -> str:
    return strip_sql_comments((SQL_DIR / name).read_text())


def overheat_rule(settings: Settings) -> Compiled:
    """The shipped overheat rule alone (what the job ran before rules came from a file)."""
    return Compiled(SustainedRule(name="overheat", metric="temperature"), settings)


def bucket_sql(settings: Settings, rule: Compiled | None = None) -> str:
    """One rule's SQL stage: per-device buckets of its metric, without the ones that cannot change an
    alert (unless MW_OVERHEAT_PREFILTER is off), tagged with the rule's name."""
    rule = rule or overheat_rule(settings)
    metric = rule.rule.metric.replace("'", "''")
    sql = _sql("overheat_buckets.sql").format(bucket_s=f"{settings.overheat_bucket_ms / 1000:.3f}", metric=metric)
    if settings.overheat_prefilter:
        column = "vmax >=" if rule.rule.direction == "above" else "vmin <="
        sql = _sql("overheat_prefilter.sql").format(
            buckets=sql, not_cool=f"{column} {rule.case('clear_line')}",
            keep_ms=rule.case("keep_ms"), near_ms=rule.case("near_ms"),
        )
    name = rule.rule.name.replace("'", "''")
    return (f"SELECT '{name}' AS rule_name, device_id, region, site, start_ms, end_ms, vmin, vmax, vsum, n, "
            f"window_time FROM ({sql})")


# A device keeps one DeviceState per rule; a state written before rules came from a file is the overheat
# rule's (same pickled class), so savepoints of older builds restore.
_LEGACY_RULE = "overheat"
# This many consecutive buckets that each follow a gap longer than max_gap_s: the device's data is too
# sparse for the rule (no run can last duration_s); said once per device and rule in the TaskManager log.
_GAPS_WARN = 5


class OverheatFunction(KeyedProcessFunction):
    """Keyed by device: state is the device's DeviceState per rule; timers report silence."""

    def __init__(self, rules: list[Compiled]) -> None:
        self.rules = {r.rule.name: r for r in rules}
        self.state: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor("overheat", Types.PICKLED_BYTE_ARRAY()))

    def _load(self) -> dict[str, DeviceState]:
        raw = self.state.value()
        if not raw:
            return {}
        value = pickle.loads(raw)  # noqa: S301 - our own state
        return {_LEGACY_RULE: value} if isinstance(value, DeviceState) else value

    def process_element(self, row: Any, ctx: KeyedProcessFunction.Context) -> Any:
        states = self._load()
        name, device = row["rule_name"], row["device_id"]
        st = states.setdefault(name, DeviceState())
        st.region, st.site = row["region"] or "", row["site"] or ""
        params = self.rules[name].params(device, st.region, st.site)
        start, end = int(row["start_ms"]), int(row["end_ms"])
        self._watch_cadence(st, params, name, device, start)
        out = on_bucket(st, params, device, start, end,
                        float(row["vmin"]), float(row["vmax"]), float(row["vsum"]), int(row["n"]))
        if st.status == "open":
            ctx.timer_service().register_event_time_timer(end + params.silence_ms)
        self.state.update(pickle.dumps(states))
        for t in out:
            yield json.dumps(t.to_dict(), allow_nan=False, default=str)

    @staticmethod
    def _watch_cadence(st: DeviceState, params: OverheatRules, name: str, device: str, start: int) -> None:
        gaps = getattr(st, "gaps_in_row", 0)  # absent from states of older builds
        if st.last_end is None or start - st.last_end <= params.max_gap_ms:
            st.gaps_in_row = 0
            return
        st.gaps_in_row = gaps + 1
        if st.gaps_in_row == _GAPS_WARN:
            log.warning("device %s: %d readings in a row came more than max_gap_s (%d s) apart (last gap %d s): "
                        "rule '%s' cannot open for it; set cadence_s or max_gap_s for it in the rules file",
                        device, _GAPS_WARN, params.max_gap_ms // 1000, (start - st.last_end) // 1000, name)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        states = self._load()
        device = ctx.get_current_key()
        out = []
        for name, st in states.items():
            if name in self.rules:  # a rule removed from the file since the savepoint: its state rests
                out += on_timer(st, self.rules[name].params(device, st.region, st.site), device, timestamp)
        self.state.update(pickle.dumps(states))
        for t in out:
            yield json.dumps(t.to_dict(), allow_nan=False, default=str)


def build(env: StreamExecutionEnvironment, settings: Settings, group_id: str, readings_topic: str,
          alerts_topic: str) -> None:
    t_env = StreamTableEnvironment.create(env)
    conf = t_env.get_config()
    conf.set("table.local-time-zone", "UTC")
    conf.set("table.exec.source.idle-timeout", f"{settings.source_idle_timeout_ms} ms")
    # Alerts are the latency-critical path: flush network buffers after 10 ms instead of 100 ms (at
    # high rates buffers fill first anyway); watermarks every 50 ms, not 200, so a bucket closes (and
    # an alert fires) that much sooner; Python bundles end within 100 ms (few rows reach Python after
    # the prefilter, so small bundles cost little). bench/RESULTS.md has the latency this buys.
    conf.set("execution.buffer-timeout.interval", "10 ms")
    conf.set("pipeline.auto-watermark-interval", "50 ms")
    conf.set("python.fn-execution.bundle.time", "100")
    # Keyed state read through the Python worker's cache: room for every device in an episode at once.
    conf.set("python.state.cache-size", "20000")
    # The same readings table as the window job, rendered by the same code.
    ddl, _ = render_sql(settings, group_id, Topics(readings=readings_topic))
    t_env.execute_sql(next(stmt for stmt in ddl if "CREATE TABLE readings" in stmt))
    rules = load_sustained_rules(settings)
    sql = "\nUNION ALL\n".join(f"({bucket_sql(settings, rule)})" for rule in rules)
    stream = t_env.to_data_stream(t_env.sql_query(sql))
    alerts = (
        stream.key_by(lambda row: row["device_id"], key_type=Types.STRING())
        .process(OverheatFunction(rules), output_type=Types.STRING())
        .uid("sustained-overheat-lifecycle").name("sustained-overheat lifecycle")
    )
    builder = KafkaSink.builder().set_bootstrap_servers(settings.kafka_servers)
    for key, value in settings.flink_kafka_properties().items():
        builder = builder.set_property(key, value)
    sink = (
        builder
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder().set_topic(alerts_topic)
            .set_value_serialization_schema(SimpleStringSchema()).build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .build()
    )
    alerts.sink_to(sink).uid("alerts-kafka-sink").name("alerts to Kafka")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group-id", default="mw-sustained-overheat")
    parser.add_argument("--readings-topic", default=names.TOPIC_READINGS)
    parser.add_argument("--alerts-topic", default=names.TOPIC_ALERTS)
    parser.add_argument("--job-name", default=JOB_NAME)
    args = parser.parse_args(argv)
    settings = load_settings()
    env = StreamExecutionEnvironment.get_execution_environment()
    build(env, settings, args.group_id, args.readings_topic, args.alerts_topic)
    env.execute_async(args.job_name)


if __name__ == "__main__":
    main()
