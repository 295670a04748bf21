"""PyFlink job: sustained-overheat alerts (opened / escalated / resolved / silent) per device.

Flink SQL buckets temperature readings per device (event time, JVM) and drops the buckets that cannot
change an alert (``sql/overheat_prefilter.sql``: cool devices with no episode near); a keyed process
function with event-time timers runs the alert lifecycle of ``flink_jobs.overheat_logic`` on the rest
and writes one JSON record per state change to the alerts topic. Python runs once per relevant
device-bucket, not per event: MATCH_RECOGNIZE cannot express the lifecycle (several emissions per
episode, silence).
Submit with ``machinewatch jobs submit sustained-overheat``.
"""

from __future__ import annotations

import argparse
import json
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

from flink_jobs.overheat_logic import DeviceState, OverheatRules, keep_window_ms, on_bucket, on_timer
from flink_jobs.window_aggregates import Topics, render_sql, strip_sql_comments
from machinewatch import names
from machinewatch.config import Settings, load_settings

SQL_DIR = Path(__file__).with_name("sql")
JOB_NAME = "machinewatch-sustained-overheat"


def rules_from(settings: Settings) -> OverheatRules:
    return OverheatRules(
        threshold=settings.overheat_threshold_c,
        duration_ms=settings.overheat_duration_s * 1000,
        hysteresis=settings.overheat_hysteresis_c,
        clear_ms=settings.overheat_clear_s * 1000,
        escalate_factor=settings.overheat_escalate_factor,
        max_gap_ms=settings.overheat_max_gap_s * 1000,
        silence_ms=settings.overheat_silence_s * 1000,
    )


def _sql(name: str) -> str:
    return strip_sql_comments((SQL_DIR / name).read_text())


def bucket_sql(settings: Settings, metric: str = "temperature") -> str:
    """The SQL stage: per-device buckets, without the ones that cannot change an alert (unless disabled)."""
    sql = _sql("overheat_buckets.sql").format(bucket_s=settings.overheat_bucket_s, metric=metric)
    if not settings.overheat_prefilter:
        return sql
    rules = rules_from(settings)
    return _sql("overheat_prefilter.sql").format(
        buckets=sql, cool_below=repr(rules.threshold - rules.hysteresis),
        keep_ms=keep_window_ms(rules, settings.overheat_bucket_s * 1000),
        near_ms=rules.max_gap_ms + settings.overheat_bucket_s * 1000,
    )


class OverheatFunction(KeyedProcessFunction):
    """Keyed by device: state is the device's DeviceState; timers report silence."""

    def __init__(self, rules: OverheatRules) -> None:
        self.rules = rules
        self.state: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor("overheat", Types.PICKLED_BYTE_ARRAY()))

    def _load(self) -> DeviceState:
        raw = self.state.value()
        return pickle.loads(raw) if raw else DeviceState()  # noqa: S301 - our own state

    def process_element(self, row: Any, ctx: KeyedProcessFunction.Context) -> Any:
        st = self._load()
        st.region, st.site = row["region"] or "", row["site"] or ""
        out = on_bucket(st, self.rules, row["device_id"], int(row["start_ms"]), int(row["end_ms"]),
                        float(row["vmin"]), float(row["vmax"]), float(row["vsum"]), int(row["n"]))
        if st.status == "open":
            ctx.timer_service().register_event_time_timer(int(row["end_ms"]) + self.rules.silence_ms)
        self.state.update(pickle.dumps(st))
        for t in out:
            yield json.dumps(t.to_dict(), allow_nan=False, default=str)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        st = self._load()
        out = on_timer(st, self.rules, ctx.get_current_key(), timestamp)
        self.state.update(pickle.dumps(st))
        for t in out:
            yield json.dumps(t.to_dict(), allow_nan=False, default=str)


def build(env: StreamExecutionEnvironment, settings: Settings, group_id: str, readings_topic: str,
          alerts_topic: str, metric: str = "temperature") -> None:
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
    buckets = t_env.sql_query(bucket_sql(settings, metric))
    stream = t_env.to_data_stream(buckets)
    alerts = (
        stream.key_by(lambda row: row["device_id"], key_type=Types.STRING())
        .process(OverheatFunction(rules_from(settings)), output_type=Types.STRING())
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
