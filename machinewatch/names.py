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

ALL_TOPICS = (
    TOPIC_READINGS, TOPIC_AGGREGATES, TOPIC_ALERTS, TOPIC_DEAD_LETTER, TOPIC_QUALITY, TOPIC_LATE,
    TOPIC_DEVICE_EVENTS,
)

BUCKET_RAW = "raw"
BUCKET_AGGREGATES = "aggregates"
BUCKET_ALERTS = "alerts"

MEASUREMENT_WINDOW = "window_agg"
MEASUREMENT_LATE = "late_event"
MEASUREMENT_THRESHOLD_ALERT = "threshold_alert"
