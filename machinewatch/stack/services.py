"""The servers of the local stack under one name: each lives in its own module (``service`` holds what they
share, then ``kafka_broker``, ``flink``, ``influxdb``, ``mosquitto``); existing imports from here keep working."""

from __future__ import annotations

from machinewatch.stack.flink import Flink
from machinewatch.stack.influxdb import InfluxDB, bucket_permissions, bucket_retentions
from machinewatch.stack.kafka_broker import Kafka, new_cluster_id
from machinewatch.stack.service import Service, ServiceStatus, StackError

__all__ = ["Flink", "InfluxDB", "Kafka", "Service", "ServiceStatus", "StackError", "bucket_permissions",
           "bucket_retentions", "new_cluster_id"]
