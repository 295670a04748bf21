"""A consumer loop outlives a broker outage: poll and commit errors are retried, never raised."""

from __future__ import annotations

import threading
from typing import Any

from kafka.errors import KafkaConnectionError

from machinewatch.kafka_io import BrokerBackoff


class FlakyConsumer:
    """Fails its first ``poll_failures`` polls and ``commit_failures`` commits, as kafka-python 3 does
    while the group coordinator is unreachable."""

    def __init__(self, poll_failures: int, commit_failures: int) -> None:
        self.poll_failures, self.commit_failures = poll_failures, commit_failures
        self.commits = 0

    def poll(self, timeout_ms: int) -> dict[str, Any]:
        if self.poll_failures:
            self.poll_failures -= 1
            msg = "111 ECONNREFUSED"
            raise KafkaConnectionError(msg)
        return {"tp": ["record"]}

    def commit(self) -> None:
        if self.commit_failures:
            self.commit_failures -= 1
            msg = "111 ECONNREFUSED"
            raise KafkaConnectionError(msg)
        self.commits += 1


def test_poll_errors_become_empty_batches_until_the_broker_is_back() -> None:
    consumer = FlakyConsumer(poll_failures=2, commit_failures=0)
    broker = BrokerBackoff(consumer, threading.Event(), "test", max_delay_s=0.01)
    broker.delay = 0.001
    assert broker.poll(10) == {} and broker.poll(10) == {}
    assert broker.poll(10) == {"tp": ["record"]}
    assert broker.failures == 2


def test_a_failed_commit_is_retried_before_the_next_poll() -> None:
    consumer = FlakyConsumer(poll_failures=0, commit_failures=1)
    broker = BrokerBackoff(consumer, threading.Event(), "test", max_delay_s=0.01)
    broker.delay = 0.001
    assert broker.commit() is False and broker.commit_pending
    assert broker.poll(10) == {"tp": ["record"]}  # the commit went through first
    assert consumer.commits == 1 and not broker.commit_pending
