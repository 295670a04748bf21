"""PySpark baseline: the sustained-overheat job in Structured Streaming, with the same pure state machine.

Runs inside the separate bench venv (pyspark[sql] + protobuf), started by ``bench/baselines.py`` with the repo
on PYTHONPATH: it imports only ``flink_jobs.overheat_logic`` (pure Python) so the lifecycle is the very
code the Flink job runs. Mirrors flink_jobs/sustained_overheat.py: canonical JSON readings from Kafka ->
event time from ``ts`` with the same bounded-disorder watermark -> per-device 1 s tumbling
min/max/sum/count of ``temperature`` (Spark SQL, JVM) -> ``transformWithStateInPandas`` keyed by device
(event-time timers, as Flink's keyed process function) calling ``on_bucket`` / ``on_timer`` -> one JSON
transition per state change (``Transition.to_dict()``) to the alerts topic.

``--available-now`` consumes the backlog present at start and stops (``--runs`` times, fresh checkpoint
each, result JSON as bench/spark_job.py writes); otherwise it runs until killed with the default trigger
(the next micro-batch starts as soon as the previous one ends) and writes ``--ready`` once the first
micro-batch has completed, so the caller can start its clock (it reads from the latest offsets).

Differences from the Flink job: Spark's watermark is the maximum event time over all partitions minus
the delay (Flink: the minimum over partitions) and takes effect from the next micro-batch; there is no
SQL prefilter of cool buckets (MW_OVERHEAT_PREFILTER), so Python sees every device-bucket.
``applyInPandasWithState`` is not used: Spark rejects it after an aggregation in append mode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812 - Spark's own convention
from pyspark.sql.streaming.stateful_processor import (
    ExpiredTimerInfo,
    StatefulProcessor,
    StatefulProcessorHandle,
    TimerValues,
)
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from flink_jobs.overheat_logic import DeviceState, OverheatRules, Transition, on_bucket, on_timer

SCHEMA = StructType([
    StructField("source", StringType()), StructField("region", StringType()), StructField("site", StringType()),
    StructField("device_id", StringType()), StructField("metric", StringType()), StructField("value", DoubleType()),
    StructField("unit", StringType()), StructField("orig_value", DoubleType()), StructField("orig_unit", StringType()),
    StructField("ts", LongType()), StructField("event_id", StringType()),
])
OUTPUT = "key STRING, value STRING"
STATE = StructType([StructField("json", StringType())])


def to_json(t: Transition) -> str:
    return json.dumps(t.to_dict(), allow_nan=False, default=str)  # as OverheatFunction writes them


class OverheatProcessor(StatefulProcessor):
    """Per device: DeviceState (as JSON) in a value state; an event-time timer per open bucket reports silence."""

    def __init__(self, rules: OverheatRules) -> None:
        self.rules = rules  # pickled with the processor to the Python workers

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.state = handle.getValueState("device", STATE)

    def _load(self) -> DeviceState:
        row = self.state.get()  # None when absent: one call to the state server, not exists() and get()
        return DeviceState(**json.loads(row[0])) if row is not None else DeviceState()

    def _save(self, st: DeviceState) -> None:
        self.state.update((json.dumps(st.to_dict()),))

    def handleInputRows(self, key: Any, rows: Iterator[Any], timerValues: TimerValues) -> Iterator[Any]:  # noqa: N802,N803
        import pandas as pd

        device = key[0]
        st = self._load()
        out: list[str] = []
        buckets = pd.concat(list(rows)).sort_values("start_ms")
        for b in buckets.itertuples(index=False):
            st.region, st.site = b.region or "", b.site or ""
            out += map(to_json, on_bucket(st, self.rules, device, int(b.start_ms), int(b.end_ms), float(b.vmin),
                                          float(b.vmax), float(b.vsum), int(b.n)))
            if st.status == "open":
                self.handle.registerTimer(int(b.end_ms) + self.rules.silence_ms)
        self._save(st)
        if out:
            yield pd.DataFrame({"key": [device] * len(out), "value": out})

    def handleExpiredTimer(  # noqa: N802
        self, key: Any, timerValues: TimerValues, expiredTimerInfo: ExpiredTimerInfo,  # noqa: N803
    ) -> Iterator[Any]:
        import pandas as pd

        device = key[0]
        st = self._load()
        out = [to_json(t) for t in on_timer(st, self.rules, device, expiredTimerInfo.getExpiryTimeInMs())]
        self._save(st)
        if out:
            yield pd.DataFrame({"key": [device] * len(out), "value": out})

    def close(self) -> None:
        pass


def buckets(readings: DataFrame, watermark_ms: int, bucket_ms: int, metric: str) -> DataFrame:
    """overheat_buckets.sql in Spark: per device and bucket of event time, min/max/sum/count of ``metric``."""
    return (
        readings.where(F.col("metric") == metric)
        .withColumn("event_time", F.timestamp_millis("ts"))
        .withWatermark("event_time", f"{watermark_ms} milliseconds")
        .groupBy(F.window("event_time", f"{bucket_ms} milliseconds"), "device_id")
        .agg(F.max("region").alias("region"), F.max("site").alias("site"), F.min("value").alias("vmin"),
             F.max("value").alias("vmax"), F.sum("value").alias("vsum"), F.count(F.lit(1)).alias("n"))
        .select("device_id", "region", "site", F.unix_millis(F.col("window.start")).alias("start_ms"),
                F.unix_millis(F.col("window.end")).alias("end_ms"), "vmin", "vmax", "vsum", "n",
                F.window_time("window").alias("bucket_time"))
    )


def alerts(bucketed: DataFrame, rules: OverheatRules) -> DataFrame:
    return bucketed.groupBy("device_id").transformWithStateInPandas(
        statefulProcessor=OverheatProcessor(rules), outputStructType=OUTPUT, outputMode="Append", timeMode="EventTime",
    )


def kafka_readings(spark: SparkSession, bootstrap: str, topic: str, starting: str) -> DataFrame:
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", starting)
        .load()
        .select(F.from_json(F.col("value").cast("string"), SCHEMA).alias("r"))
        .select("r.*")
    )


def session(jars: str, cores: int, shuffle_partitions: int = 1) -> SparkSession:
    # Workers must run this venv's Python (pandas, pyarrow) and see the repo (flink_jobs.overheat_logic).
    os.environ["PYSPARK_PYTHON"] = sys.executable
    return (
        SparkSession.builder.master(f"local[{cores}]").appName("machinewatch-bench-spark-overheat")
        .config("spark.jars", jars)
        # Not 200. Each stateful task of each micro-batch pays a fixed cost (Python worker, state server):
        # one partition made micro-batches ~2x faster than one per core (2) on this machine.
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.driver.memory", "1g")
        .config("spark.ui.enabled", "false")
        .config("spark.executorEnv.PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        # transformWithState requires the RocksDB state store; changelog checkpointing is its recommended
        # low-latency setting (a batch commits a changelog, not a RocksDB checkpoint).
        .config("spark.sql.streaming.stateStore.providerClass",
                "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider")
        .config("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
        .getOrCreate()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out-topic", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--jars", required=True, help="comma-separated jar paths (Kafka source and its deps)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--shuffle-partitions", type=int, default=1)
    parser.add_argument("--watermark-ms", type=int, default=2000)
    parser.add_argument("--bucket-ms", type=int, default=1000)
    parser.add_argument("--metric", default="temperature")
    parser.add_argument("--rules", default="{}", help="OverheatRules fields as JSON (rules_from(settings))")
    parser.add_argument("--available-now", action="store_true", help="consume the backlog and stop")
    parser.add_argument("--runs", type=int, default=2, help="with --available-now: runs, the last is reported")
    parser.add_argument("--result", type=Path, help="with --available-now: result JSON")
    parser.add_argument("--ready", type=Path, help="continuous: touched once the first micro-batch has completed")
    args = parser.parse_args()

    rules = OverheatRules(**json.loads(args.rules))
    t_session = time.monotonic()
    spark = session(args.jars, args.cores, args.shuffle_partitions)
    spark.sparkContext.setLogLevel("WARN")
    session_s = time.monotonic() - t_session

    def start(checkpoint: str, starting: str, available_now: bool) -> Any:
        readings = kafka_readings(spark, args.bootstrap, args.topic, starting)
        writer = (
            alerts(buckets(readings, args.watermark_ms, args.bucket_ms, args.metric), rules).writeStream.format("kafka")
            .option("kafka.bootstrap.servers", args.bootstrap)
            .option("topic", args.out_topic)
            .option("checkpointLocation", checkpoint)
            .outputMode("append")
        )
        return writer.trigger(availableNow=True).start() if available_now else writer.start()

    if not args.available_now:
        # Latency: only readings published from now on (the harness starts its clock after --ready).
        query = start(args.checkpoint, "latest", available_now=False)
        while query.isActive and query.lastProgress is None:
            time.sleep(0.2)
        if args.ready:
            args.ready.write_text(json.dumps({"session_s": session_s, "spark": spark.version}))
        seen = -1
        while query.isActive:  # one PROGRESS line per micro-batch, for the harness's notes
            for p in query.recentProgress:
                if p.batchId > seen:
                    seen = p.batchId
                    print("PROGRESS", json.dumps({
                        "batch": p.batchId, "rows": p.numInputRows, "ms": p.durationMs.get("triggerExecution"),
                        "watermark": p.eventTime.get("watermark"), "ts": p.timestamp, "durations": p.durationMs,
                        "state_ms": [{k: v for k, v in op.customMetrics.items() if k.endswith("TimeMs")}
                                     | {"commit": op.commitTimeMs} for op in p.stateOperators]}), flush=True)
            time.sleep(0.5)
        query.awaitTermination()  # raises the query's failure, if any
        return
    runs = []
    for n in range(args.runs):  # run 1 warms the JVM and the Python workers
        t0 = time.monotonic()
        # Wall clock at start(): the bench times the run from here to the broker's append time of its last output.
        start_epoch_ms = int(time.time() * 1000)
        query = start(f"{args.checkpoint}-{n}", "earliest", available_now=True)
        query.awaitTermination()
        wall = time.monotonic() - t0
        progress = [json.loads(p.json) for p in query.recentProgress]
        runs.append({
            "wall_s": wall, "start_epoch_ms": start_epoch_ms,
            "rows_in": sum(p.get("numInputRows", 0) for p in progress), "batches": len(progress),
            "rows_out": sum(p.get("sink", {}).get("numOutputRows", 0) or 0 for p in progress),
            "batch_durations_ms": [p.get("durationMs", {}).get("triggerExecution") for p in progress],
        })
    if args.result:
        args.result.write_text(json.dumps({"session_s": session_s, "spark": spark.version, "runs": runs,
                                           **runs[-1]}))
    spark.stop()


if __name__ == "__main__":
    main()
