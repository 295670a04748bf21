"""Compose demo, one-shot: create every topic of ``machinewatch.names.ALL_TOPICS`` (idempotent).

The native stack creates them in ``machinewatch stack up``; the demo's broker has topic
auto-creation off too, so this runs before anything produces or consumes.
"""

from __future__ import annotations

import sys

from kafka import KafkaAdminClient

from machinewatch import names
from machinewatch.config import Settings, load_settings
from machinewatch.kafka_io import ensure_topics


def create_topics(settings: Settings) -> list[str]:
    """Create the missing topics; returns the names it created. Raises if any is still missing."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers, request_timeout_ms=15000)
    try:
        created = ensure_topics(admin, settings.kafka_partitions)
        missing = sorted(set(names.ALL_TOPICS) - set(admin.list_topics()))
        if missing:
            msg = f"topics still missing after create: {', '.join(missing)}"
            raise RuntimeError(msg)
        return created
    finally:
        admin.close()


def main() -> int:
    settings = load_settings()
    created = create_topics(settings)
    print(f"kafka-init: {settings.kafka_servers}: created {', '.join(created) or 'nothing'}; "
          f"all of {', '.join(names.ALL_TOPICS)} exist")
    return 0


if __name__ == "__main__":
    sys.exit(main())
