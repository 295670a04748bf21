"""The stack's servers, one module each, without starting any: the old import path still names the same classes,
and the one InfluxDB set-up routine (native 'stack up' and the compose demo's 'stack setup influxdb') creates every
bucket of machinewatch.names with its retention setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from machinewatch import names
from machinewatch.stack import Stack, flink, influxdb, kafka_broker, service, services
from machinewatch.stack.private import private_settings


def test_the_old_services_module_names_the_same_objects() -> None:
    assert services.Kafka is kafka_broker.Kafka
    assert services.Flink is flink.Flink
    assert services.InfluxDB is influxdb.InfluxDB
    assert services.StackError is service.StackError
    assert services.bucket_permissions is influxdb.bucket_permissions
    assert services.new_cluster_id is kafka_broker.new_cluster_id


def test_the_stack_is_built_from_the_server_modules(tmp_path: Path) -> None:
    stack = Stack(private_settings(tmp_path, die_with_parent=False))
    assert isinstance(stack.kafka, kafka_broker.Kafka)
    assert isinstance(stack.flink, flink.Flink)
    assert isinstance(stack.influxdb, influxdb.InfluxDB)
    assert all(isinstance(s, service.Service) for s in stack.services)


def test_the_set_up_creates_every_bucket_of_names_with_its_retention(tmp_path: Path) -> None:
    settings = private_settings(tmp_path, die_with_parent=False, influx_raw_retention_s=11,
                                influx_aggregates_retention_s=22, influx_alerts_retention_s=33,
                                influx_history_retention_s=0, influx_rollup_1m_retention_s=44,
                                influx_rollup_1h_retention_s=0)
    retentions = influxdb.bucket_retentions(settings)
    assert tuple(retentions) == names.ALL_BUCKETS
    assert retentions == {names.BUCKET_RAW: 11, names.BUCKET_AGGREGATES: 22, names.BUCKET_ALERTS: 33,
                          names.BUCKET_HISTORY: 0, names.BUCKET_ROLLUP_1M: 44, names.BUCKET_ROLLUP_1H: 0}


def test_a_bucket_without_a_retention_setting_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(names, "ALL_BUCKETS", (*names.ALL_BUCKETS, "spare"))
    with pytest.raises(service.StackError, match="spare"):
        influxdb.bucket_retentions(private_settings(tmp_path, die_with_parent=False))
