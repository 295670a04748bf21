"""PySpark baseline: the window-aggregates job in Structured Streaming with Spark's official Kafka source.

Runs inside the separate bench venv (``~/.cache/machinewatch/bench-venv``, pyspark only), started by
``bench/baselines.py``; it imports nothing from machinewatch. The job mirrors flink_jobs/window_aggregates.py's
tumbling part: canonical JSON readings -> event time from ``ts`` (ms) with a bounded-disorder watermark ->
10 s tumbling avg/min/max/count per device, metric, source, region, site, unit -> JSON to a Kafka topic.
``trigger(availableNow=True)`` consumes the backlog present at start and stops; the wall time from
``start()`` to termination, the rows read and Spark's own progress reports go to ``--result`` as JSON
(``--runs`` times, each with a fresh checkpoint, i.e. from the start of the topic; the first warms the JVM).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F  # noqa: N812 - Spark's own convention
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

SCHEMA = StructType([
    StructField("source", StringType()), StructField("region", StringType()), StructField("site", StringType()),
    StructField("device_id", StringType()), StructField("metric", StringType()), StructField("value", DoubleType()),
    StructField("unit", StringType()), StructField("orig_value", DoubleType()), StructField("orig_unit", StringType()),
    StructField("ts", LongType()), StructField("event_id", StringType()),
])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out-topic", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--jars", required=True, help="comma-separated jar paths (Kafka source and its deps)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--window-s", type=int, default=10)
    parser.add_argument("--watermark-ms", type=int, default=2000)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=2, help="each from the start of the topic; the last is reported")
    args = parser.parse_args()

    t_session = time.monotonic()
    spark = (
        SparkSession.builder.master(f"local[{args.cores}]").appName("machinewatch-bench-spark-window")
        .config("spark.jars", args.jars)
        # Tuned like a sensible deployment on this machine: one shuffle partition per core, not 200.
        .config("spark.sql.shuffle.partitions", str(args.cores))
        .config("spark.driver.memory", "1g")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.streaming.stateStore.providerClass",
                "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    session_s = time.monotonic() - t_session

    readings = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap)
        .option("subscribe", args.topic)
        .option("startingOffsets", "earliest")
        .load()
        .select(F.from_json(F.col("value").cast("string"), SCHEMA).alias("r"))
        .select("r.*")
        .withColumn("event_time", F.timestamp_millis("ts"))
        .withWatermark("event_time", f"{args.watermark_ms} milliseconds")
    )
    windows = (
        readings.groupBy(F.window("event_time", f"{args.window_s} seconds"), "device_id", "metric", "source",
                         "region", "site", "unit")
        .agg(F.avg("value").alias("avg_value"), F.min("value").alias("min_value"),
             F.max("value").alias("max_value"), F.count(F.lit(1)).alias("count"))
        .select(
            F.col("device_id").alias("key"),
            F.to_json(F.struct(
                "device_id", "metric", "source", "region", "site", "unit",
                F.lit(args.window_s * 1000).alias("window_ms"),
                (F.unix_millis(F.col("window.start"))).alias("window_start_ms"),
                (F.unix_millis(F.col("window.end"))).alias("window_end_ms"),
                "avg_value", "min_value", "max_value", "count",
            )).alias("value"),
        )
    )
    runs = []
    for n in range(args.runs):  # run 1 warms the JVM (as the Flink TaskManager is warm for its 2nd job)
        t0 = time.monotonic()
        # Wall clock at start(): the bench times the run from here to the broker's append time of its last output.
        start_epoch_ms = int(time.time() * 1000)
        query = (
            windows.writeStream.format("kafka")
            .option("kafka.bootstrap.servers", args.bootstrap)
            .option("topic", args.out_topic)
            .option("checkpointLocation", f"{args.checkpoint}-{n}")
            .outputMode("append")
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()
        wall = time.monotonic() - t0
        progress = [json.loads(p.json) for p in query.recentProgress]
        runs.append({
            "wall_s": wall, "start_epoch_ms": start_epoch_ms,
            "rows_in": sum(p.get("numInputRows", 0) for p in progress), "batches": len(progress),
            "batch_durations_ms": [p.get("durationMs", {}).get("triggerExecution") for p in progress],
        })
    args.result.write_text(json.dumps({"session_s": session_s, "spark": spark.version, "runs": runs, **runs[-1]}))
    spark.stop()


if __name__ == "__main__":
    main()
