"""Archive collector plugin: the cold-path Parquet archive (``sink archive``) published again, same event ids.

Registered as ``archive`` under the ``machinewatch.collectors`` entry points; the source is
``ingest.archive.source``, the archive's format ``machinewatch.archive`` (shared with the sink that writes it).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ingest.archive.source import ArchiveSettings
from machinewatch import names
from machinewatch.config import Settings
from machinewatch.plugins import Collector, run_collector
from machinewatch.runtime import Counters, Source


def _make_source(config: Any, _settings: Settings) -> Source:
    from ingest.archive.source import ArchiveSource

    return ArchiveSource(config.root, config.runner.max_batch)


def _add_arguments(p: argparse._ActionsContainer) -> None:
    p.add_argument("--root", type=Path, help="the archive's folder (or 'root' in the [archive] table)")
    p.add_argument("--topic", help=f"target topic (default {names.TOPIC_READINGS})")


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"root": args.root, "topic": args.topic}


def _summary(source: Any, _counters: Counters) -> str:
    return f"replayed {source.readings} readings from {source.root}"


plugin = Collector(
    name="archive",
    summary="replay a Parquet archive (sink archive) with its original event ids",
    description="Publishes every reading of a cold-path archive written by 'machinewatch sink archive' again, "
    "file by file in path order, with its original event id (downstream sees the same readings), and ends "
    "after the last file. Rows that are not readings and unreadable files go to the dead-letter topic. "
    "See ingest/archive/README.md and sample.conf.",
    settings_model=ArchiveSettings,
    make_source=_make_source,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
    add_arguments=_add_arguments,
    flag_overrides=_flag_overrides,
    summary_line=_summary,
)


def replay_archive(settings: Settings, root: Path, topic: str = names.TOPIC_READINGS) -> int:
    """Publish an archive again on the runner (what ``ingest archive`` does); returns the readings read."""
    from ingest.archive.source import ArchiveSource

    config = ArchiveSettings(root=root, topic=topic)
    source = ArchiveSource(root, config.runner.max_batch)
    run_collector(plugin, config, settings, source=source)
    return source.readings
