"""The publisher's partitioner puts every key where Kafka's default murmur2 partitioner does (the Java client and
Flink must agree on a device's partition), including right after the partition count changes."""

from __future__ import annotations

import random

import pytest
from kafka.partitioner.default import DefaultPartitioner

from machinewatch.kafka_io import KeyHashCachePartitioner

TOPIC = "mw.readings"


class FakeCluster:
    """The three ClusterMetadata calls the partitioners make."""

    def __init__(self, partitions: int) -> None:
        self.partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {TOPIC}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self.partitions) if topic == TOPIC else None

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions_for_topic(topic)


def keys(count: int) -> list[bytes]:
    rng = random.Random(8)
    out = [f"sensor-{i:04d}".encode() for i in range(count // 2)]
    out += [rng.randbytes(rng.randrange(0, 40)) for _ in range(count - len(out))]
    return out


@pytest.mark.parametrize("partitions", [1, 2, 3, 7, 12, 50, 1000])
def test_same_partition_as_the_default_partitioner(partitions: int) -> None:
    cluster = FakeCluster(partitions)
    ours, default = KeyHashCachePartitioner(), DefaultPartitioner()
    for _ in range(2):  # the second pass is served from the hash cache
        for key in keys(2000):
            assert ours.partition(TOPIC, None, key, None, b"v", cluster) == \
                default.partition(TOPIC, None, key, None, b"v", cluster)


def test_java_client_vectors() -> None:
    # Partitions of these keys over 1000 partitions as Kafka's Java Utils.murmur2 places them.
    cluster = FakeCluster(1000)
    expected = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566, b"\x00 ": 742}
    ours = KeyHashCachePartitioner()
    assert {key: ours.partition(TOPIC, None, key, None, None, cluster) for key in expected} == expected


def test_a_new_partition_count_is_followed_at_once() -> None:
    cluster = FakeCluster(3)
    ours, default = KeyHashCachePartitioner(), DefaultPartitioner()
    sample = keys(500)
    before = [ours.partition(TOPIC, None, key, None, None, cluster) for key in sample]
    cluster.partitions = set(range(8))
    after = [ours.partition(TOPIC, None, key, None, None, cluster) for key in sample]
    assert after == [default.partition(TOPIC, None, key, None, None, cluster) for key in sample]
    assert before != after


def test_keyless_records_and_unknown_topics_behave_as_the_default() -> None:
    cluster = FakeCluster(3)
    ours = KeyHashCachePartitioner()
    assert ours.partition(TOPIC, None, None, None, b"v", cluster) in {0, 1, 2}
    with pytest.raises(ValueError, match="not found"):
        ours.partition("no.such.topic", None, b"k", None, b"v", cluster)


def test_the_hash_cache_is_bounded() -> None:
    cluster = FakeCluster(3)
    ours = KeyHashCachePartitioner(max_keys=16)
    for key in keys(100):
        ours.partition(TOPIC, None, key, None, None, cluster)
    assert len(ours._hashes) <= 16
