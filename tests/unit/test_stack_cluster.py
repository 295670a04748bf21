"""The multi-node stack without starting it: node ports, each node's Kafka config, replicated topics, the
recorded shape that 'status', 'logs' and 'down' use, and the CLI flags. The single node stays as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from machinewatch import names
from machinewatch.config import load_settings
from machinewatch.kafka_io import ensure_topics
from machinewatch.stack import Stack, StackError, with_recorded_shape
from machinewatch.stack.private import private_settings


def _props(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_the_single_node_default_is_unchanged(tmp_path: Path) -> None:
    s = load_settings(state_dir=tmp_path)
    assert s.kafka_servers == "127.0.0.1:9092"
    assert s.kafka_replication_factor == 1
    stack = Stack(s)
    assert stack.kafka.peers == [] and len(stack.flink.taskmanagers) == 1
    props = _props(stack.kafka._config())
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["offsets.topic.replication.factor"] == props["default.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"


def test_node_ports_default_to_steps_of_ten_or_come_from_the_setting(tmp_path: Path) -> None:
    s = load_settings(state_dir=tmp_path, kafka_brokers=3)
    assert s.kafka_node_addresses() == [(9092, 9093), (9102, 9103), (9112, 9113)]
    # Every broker bootstraps a client: it still finds the cluster while node 1 is down.
    assert s.kafka_servers == "127.0.0.1:9092,127.0.0.1:9102,127.0.0.1:9112"
    given = load_settings(state_dir=tmp_path, kafka_brokers=2, kafka_node_ports=[7001, 7002])
    assert given.kafka_node_addresses() == [(9092, 9093), (7001, 7002)]
    with pytest.raises(ValidationError, match="MW_KAFKA_NODE_PORTS"):
        load_settings(state_dir=tmp_path, kafka_brokers=3, kafka_node_ports=[7001, 7002])
    with pytest.raises(ValidationError):
        load_settings(state_dir=tmp_path, kafka_brokers=0)
    assert load_settings(state_dir=tmp_path, kafka_brokers=5).kafka_replication_factor == 3


def test_each_node_has_its_own_id_ports_and_dirs_and_all_know_the_voters(tmp_path: Path) -> None:
    s = private_settings(tmp_path, kafka_brokers=3, die_with_parent=False)
    stack = Stack(s)
    nodes = stack.kafka.nodes
    assert [n.name for n in nodes] == ["kafka", "kafka-2", "kafka-3"]
    assert [n.dir for n in nodes] == [tmp_path / "kafka", tmp_path / "kafka-2", tmp_path / "kafka-3"]
    props = [_props(n._config()) for n in nodes]
    voters = {p["controller.quorum.voters"] for p in props}
    assert len(voters) == 1
    assert voters.pop() == ",".join(f"{i}@127.0.0.1:{c}" for i, (_, c) in enumerate(s.kafka_node_addresses(), 1))
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert len({p["listeners"] for p in props}) == 3
    assert len({p["log.dirs"] for p in props}) == 3
    for p in props:
        assert p["offsets.topic.replication.factor"] == p["default.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"
    assert {n.proc.pidfile for n in nodes} == {tmp_path / "run" / f"{n.name}.pid" for n in nodes}
    # All formatted with one cluster id, made once.
    assert nodes[1]._cluster_id() == nodes[2]._cluster_id() == nodes[0]._cluster_id()


class _FakeAdmin:
    def __init__(self) -> None:
        self.created: list[Any] = []

    def list_topics(self) -> list[str]:
        return []

    def create_topics(self, topics: list[Any]) -> None:
        self.created += topics


@pytest.mark.parametrize(("replication", "min_isr"), [(1, None), (2, None), (3, "2")])
def test_topics_are_replicated_with_min_insync_two_from_three_replicas(replication: int, min_isr: str | None) -> None:
    admin = _FakeAdmin()
    assert ensure_topics(admin, 6, replication=replication) == list(names.ALL_TOPICS)
    for topic in admin.created:
        assert (topic.num_partitions, topic.replication_factor) == (6, replication)
        assert topic.topic_configs.get("min.insync.replicas") == min_isr
        for key, value in names.topic_config(topic.name).items():
            assert topic.topic_configs[key] == value


def test_status_logs_and_down_cover_the_nodes_up_recorded(tmp_path: Path) -> None:
    s = private_settings(tmp_path, kafka_brokers=3, flink_taskmanagers=2, die_with_parent=False)
    stack = Stack(s)
    stack._record_shape()
    # A later command that is not told the shape again still sees every node.
    later = Stack(load_settings(state_dir=tmp_path, kafka_port=s.kafka_port,
                                kafka_controller_port=s.kafka_controller_port))
    assert [n.address() for n in later.kafka.nodes] == [n.address() for n in stack.kafka.nodes]
    assert [tm.name for tm in later.flink.taskmanagers] == ["flink-taskmanager", "flink-taskmanager-2"]
    rows = later.status()
    assert [r.name for r in rows[:3]] == ["kafka", "kafka-2", "kafka-3"]
    assert "2 taskmanagers" in next(r.detail for r in rows if r.name == "flink-jobmanager")
    logs = later.logs(None, 1)
    assert all(f"==> {n} (" in logs for n in ("kafka-3", "flink-taskmanager-2"))
    # What the caller sets explicitly wins over the record.
    assert with_recorded_shape(load_settings(state_dir=tmp_path, flink_taskmanagers=1)).flink_taskmanagers == 1
    assert json.loads((tmp_path / "stack.json").read_text())["kafka_brokers"] == 3


def test_a_kafka_made_for_another_node_count_is_refused(tmp_path: Path) -> None:
    single = Stack(private_settings(tmp_path, die_with_parent=False))
    (single.kafka.dir / "data").mkdir(parents=True)
    (single.kafka.dir / "data" / "meta.properties").write_text("node.id=1\n")
    with pytest.raises(StackError, match="made for 1 node"):
        Stack(private_settings(tmp_path, kafka_brokers=3, die_with_parent=False))._record_shape()
    single._record_shape()  # the same count is fine


def test_the_cli_flags_set_the_shape(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from machinewatch import cli

    seen: list[Any] = []
    monkeypatch.setattr(Stack, "up", lambda self, **_kw: seen.append(self.settings))
    monkeypatch.setenv("MW_STATE_DIR", str(tmp_path))
    assert cli.main(["stack", "up", "--kafka-brokers", "3", "--taskmanagers", "2", "--kafka-partitions", "6"]) == 0
    (got,) = seen
    assert (got.kafka_brokers, got.flink_taskmanagers, got.kafka_partitions) == (3, 2, 6)
    assert got.state_dir == tmp_path


def test_ready_counts_only_unfenced_brokers_in_kafka_pythons_shape(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    import kafka

    # kafka-python's describe_cluster asks for fenced brokers too and names them broker_id.
    answer = {"brokers": [{"broker_id": 1, "is_fenced": False}, {"broker_id": 2, "is_fenced": False},
                          {"broker_id": 3, "is_fenced": True}]}

    class Admin:
        def __init__(self, **_kw: object) -> None:
            pass

        def describe_cluster(self) -> dict[str, Any]:
            return answer

        def close(self) -> None:
            pass

    monkeypatch.setattr(kafka, "KafkaAdminClient", Admin)
    stack = Stack(private_settings(tmp_path, kafka_brokers=3, die_with_parent=False))
    assert stack.kafka.brokers() == {1, 2}
    assert stack.kafka.serving()
    for node in stack.kafka.nodes:
        monkeypatch.setattr(node.proc, "pid", lambda: 4242)
    assert not stack.kafka.ready()  # broker 3 still fenced
    assert stack.kafka.peers[0].ready() and not stack.kafka.peers[1].ready()
    answer["brokers"][2]["is_fenced"] = False
    assert stack.kafka.ready()
    single = Stack(private_settings(tmp_path / "one", die_with_parent=False))
    monkeypatch.setattr(single.kafka.proc, "pid", lambda: 4242)
    assert single.kafka.ready()
