"""Kafka topic, InfluxDB bucket and measurement names, defined once for every stage."""

from __future__ import annotations

TOPIC_READINGS = "mw.readings"
TOPIC_AGGREGATES = "mw.aggregates"
TOPIC_ALERTS = "mw.alerts"
TOPIC_DEAD_LETTER = "mw.deadletter"

ALL_TOPICS = (TOPIC_READINGS, TOPIC_AGGREGATES, TOPIC_ALERTS, TOPIC_DEAD_LETTER)

BUCKET_RAW = "raw"
BUCKET_AGGREGATES = "aggregates"
BUCKET_ALERTS = "alerts"

MEASUREMENT_WINDOW = "window_agg"
