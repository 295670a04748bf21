"""The InfluxDB writer as a sink plugin (``machinewatch sink influxdb``): its settings and flags.

Registered as ``influxdb`` under the ``machinewatch.sinks`` entry points; the writer is ``sinks.influxdb_writer``,
imported only when the sink runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import Field

from machinewatch import names
from machinewatch.config import Settings
from machinewatch.plugins import PluginSettings, SinkPlugin


class InfluxSinkSettings(PluginSettings):
    """Which topics the writer reads and as which consumer group."""

    aggregates_topic: str | None = Field(None, description=f"window results (default {names.TOPIC_AGGREGATES})")
    late_topic: str | None = Field(None, description=f"late events (default {names.TOPIC_LATE})")
    alerts_topic: str | None = Field(None, description=f"alerts of both jobs (default {names.TOPIC_ALERTS})")
    group_id: str | None = Field(None, description="consumer group (default mw-influx-writer / mw-history-writer)")
    history: bool = Field(False, description="a backfill's topics, written into the history bucket")
    idle_exit: float | None = Field(None, gt=0, description="exit after this many seconds without results")


def _add_arguments(p: argparse._ActionsContainer) -> None:
    p.add_argument("--idle-exit", type=float, help="exit after this many seconds without results")
    p.add_argument("--aggregates-topic", help=f"window results topic (default {names.TOPIC_AGGREGATES})")
    p.add_argument("--late-topic", help=f"late events topic (default {names.TOPIC_LATE})")
    p.add_argument("--alerts-topic", help=f"alerts topic of both jobs (default {names.TOPIC_ALERTS})")
    p.add_argument("--group-id",
                   help="Kafka consumer group, whose committed offsets are the writer's progress "
                   "(default mw-influx-writer; mw-history-writer with --history)")
    p.add_argument("--history", action="store_const", const=True,
                   help=f"a backfill's results: read the {names.TOPIC_HISTORY_AGGREGATES} / "
                   f"{names.TOPIC_HISTORY_LATE} / {names.TOPIC_HISTORY_ALERTS} topics (unless given) and write "
                   f"everything into the '{names.BUCKET_HISTORY}' bucket, which keeps data of any age")


def _run(config: InfluxSinkSettings, settings: Settings) -> int:
    from sinks import influxdb_writer

    if config.history:
        topics = influxdb_writer.Topics(config.aggregates_topic or names.TOPIC_HISTORY_AGGREGATES,
                                        config.late_topic or names.TOPIC_HISTORY_LATE,
                                        config.alerts_topic or names.TOPIC_HISTORY_ALERTS, history=True)
    else:
        topics = influxdb_writer.Topics(config.aggregates_topic or names.TOPIC_AGGREGATES,
                                        config.late_topic or names.TOPIC_LATE,
                                        config.alerts_topic or names.TOPIC_ALERTS)
    group_id = config.group_id or ("mw-history-writer" if config.history else "mw-influx-writer")
    influxdb_writer.main(settings, idle_exit_s=config.idle_exit, group_id=group_id, topics=topics)
    return 0


plugin = SinkPlugin(
    name="influxdb",
    summary="write window results, late events and alerts from Kafka into InfluxDB",
    description="Reads the window results, late events and alerts topics and writes them into InfluxDB "
    "(deterministic timestamps and tags: a replay overwrites). Malformed records go to the dead-letter topic. "
    "Its progress is the consumer group's committed offsets.",
    settings_model=InfluxSinkSettings,
    run=_run,
    add_arguments=_add_arguments,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
)
