"""Replay collector plugin: a recorded source file into readings, paced by its event times at a chosen speed.

Registered as ``replay`` under the ``machinewatch.collectors`` entry points; the source is ``ingest.replay.source``.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import Any

from ingest.replay.source import ReplaySettings
from machinewatch.config import Settings
from machinewatch.plugins import Collector
from machinewatch.runtime import Counters, Source


def _make_source(config: Any, settings: Settings) -> Source:
    from ingest.replay.source import make_replay_source

    return make_replay_source(config, settings.state_dir)


def _add_arguments(p: argparse._ActionsContainer) -> None:
    p.add_argument("file", type=Path, nargs="?", help="the file to replay (or 'file' in the [replay] table)")
    p.add_argument("--mapping", help="mapping name (equipment, servers, ...) or TOML path")
    p.add_argument("--speed", type=float, help="playback speed: 60 = an hour per minute; 0 = no pacing (default 1)")
    p.add_argument("--base-date", type=date.fromisoformat, help="date for time-of-day sources (YYYY-MM-DD, UTC)")
    p.add_argument("--limit-rows", type=int, help="stop after this many rows")


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"file": args.file, "mapping": args.mapping, "speed": args.speed, "base_date": args.base_date,
            "limit_rows": args.limit_rows}


def _summary(source: Any, _counters: Counters) -> str:
    report = source.report
    return f"replayed {report.rows} rows: {report.readings} readings, {report.rejects} dead-lettered"


plugin = Collector(
    name="replay",
    summary="replay a source file at a playback speed (equipment JSON lines, servers CSV, ...)",
    description="Replays FILE through its mapping, releasing rows as their event times come round, SPEED "
    "times faster than recorded, and ends at the end of the file. Event times stay those of the file "
    "(historical), so ids equal those of 'ingest history' for the same file. The dashboard's speed control "
    "steers it while it runs. See ingest/replay/README.md and sample.conf.",
    settings_model=ReplaySettings,
    make_source=_make_source,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
    add_arguments=_add_arguments,
    flag_overrides=_flag_overrides,
    summary_line=_summary,
)
