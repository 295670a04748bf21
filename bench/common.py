"""What every part of the benchmark run shares: where the repository is, the progress line format, and the
throw-away InfluxDB buckets of a measurement."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from influxdb_client import InfluxDBClient

REPO = Path(__file__).resolve().parent.parent


def say(msg: str) -> None:
    print(f"[bench {datetime.now(tz=UTC):%H:%M:%S}] {msg}", flush=True)


@contextlib.contextmanager
def scratch_buckets(client: InfluxDBClient, org: str, names: list[str], retention_s: int = 0) -> Iterator[list[str]]:
    """Buckets made for one measurement (``retention_s`` 0: kept until deleted) and deleted afterwards, also when it
    fails; a delete that fails does not hide the measurement's own error."""
    from influxdb_client import BucketRetentionRules

    made = [client.buckets_api().create_bucket(
        bucket_name=name, org=org, retention_rules=BucketRetentionRules(type="expire", every_seconds=retention_s))
        for name in names]
    try:
        yield [b.name for b in made]
    finally:
        for bucket in made:
            with contextlib.suppress(Exception):
                client.buckets_api().delete_bucket(bucket)
