"""Kafka topic, InfluxDB bucket and measurement names, defined once for every stage."""

from __future__ import annotations

TOPIC_READINGS = "mw.readings"
TOPIC_AGGREGATES = "mw.aggregates"
TOPIC_ALERTS = "mw.alerts"
TOPIC_DEAD_LETTER = "mw.deadletter"
# Data-quality notes: values were published, but their envelope was repaired (machinewatch.quality).
TOPIC_QUALITY = "mw.quality"
TOPIC_LATE = "mw.late-events"
# MTConnect EVENT/CONDITION observations, agent gaps and restarts (machinewatch.device_events).
TOPIC_DEVICE_EVENTS = "mw.device-events"

# A backfill's own topics: history loaded here never reaches the live jobs (which would count it late),
# a batch run of the window job turns it into results, and the writer puts those in the history bucket.
TOPIC_HISTORY_READINGS = "mw.history.readings"
TOPIC_HISTORY_AGGREGATES = "mw.history.aggregates"
TOPIC_HISTORY_LATE = "mw.history.late-events"
TOPIC_HISTORY_ALERTS = "mw.history.alerts"

ALL_TOPICS = (
    TOPIC_READINGS, TOPIC_AGGREGATES, TOPIC_ALERTS, TOPIC_DEAD_LETTER, TOPIC_QUALITY, TOPIC_LATE,
    TOPIC_DEVICE_EVENTS,
    TOPIC_HISTORY_READINGS, TOPIC_HISTORY_AGGREGATES, TOPIC_HISTORY_LATE, TOPIC_HISTORY_ALERTS,
)

# Result topics keep what they receive for their retention period, counted from when it arrived: the
# jobs stamp results with their event time, and a history load from 2013 would otherwise be deleted
# at once by time-based retention (it measures from the record's timestamp).
RESULT_TOPICS = (TOPIC_AGGREGATES, TOPIC_ALERTS, TOPIC_LATE, TOPIC_DEVICE_EVENTS, TOPIC_HISTORY_AGGREGATES,
                 TOPIC_HISTORY_ALERTS, TOPIC_HISTORY_LATE)
RESULT_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}


def topic_config(topic: str) -> dict[str, str]:
    """The topic-level settings machinewatch creates (and keeps) a topic with."""
    return dict(RESULT_TOPIC_CONFIG) if topic in RESULT_TOPICS else {}


BUCKET_RAW = "raw"
BUCKET_AGGREGATES = "aggregates"
BUCKET_ALERTS = "alerts"
# Backfills and history loads: no retention limit by default, so old data lands (MW_INFLUX_HISTORY_RETENTION_S).
BUCKET_HISTORY = "history"
# Roll-ups of the 10 s tumbling windows (machinewatch.rollups): long dashboard ranges read these.
BUCKET_ROLLUP_1M = "rollup_1m"
BUCKET_ROLLUP_1H = "rollup_1h"
# Every bucket the stack's set-up creates (machinewatch.stack.influxdb), in creation order.
ALL_BUCKETS = (BUCKET_RAW, BUCKET_AGGREGATES, BUCKET_ALERTS, BUCKET_HISTORY, BUCKET_ROLLUP_1M, BUCKET_ROLLUP_1H)

MEASUREMENT_WINDOW = "window_agg"
# Roll-ups of all devices of one source, region and site (machinewatch.schema.FLEET_RESULT): the fleet panels.
MEASUREMENT_FLEET = "fleet_agg"
MEASUREMENT_LATE = "late_event"
MEASUREMENT_THRESHOLD_ALERT = "threshold_alert"
# Alerts with a lifecycle (sustained-condition rules, alerts derived from device events).
MEASUREMENT_DEVICE_ALERT = "device_alert"
