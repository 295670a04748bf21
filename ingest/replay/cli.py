"""``machinewatch ingest replay``: arguments and the command."""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

from machinewatch.config import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay", help="replay a source file at a playback speed (equipment JSON lines, servers CSV, ...)",
        description="Replays FILE through its mapping, releasing rows as their event times come round, SPEED "
        "times faster than recorded. Event times stay those of the file (historical), so ids equal those of "
        "'ingest history' for the same file.",
    )
    p.add_argument("file", type=Path)
    p.add_argument("--mapping", required=True, help="mapping name (equipment, servers, ...) or TOML path")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed: 60 = an hour per minute; 0 = no pacing")
    p.add_argument("--base-date", type=date.fromisoformat, help="date for time-of-day sources (YYYY-MM-DD, UTC)")
    p.add_argument("--limit-rows", type=int, help="stop after this many rows")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.formats import load_mapping
    from ingest.replay.replay import Replayer
    from machinewatch.kafka_io import Publisher

    try:
        mapping = load_mapping(args.mapping, base_date=args.base_date)
    except ValueError as exc:
        msg = f"ingest replay: {exc}"
        raise RuntimeError(msg) from exc
    from machinewatch import playback

    # Announce the replay so the dashboard shows its speed control; poll its choice twice a second.
    announced = playback.announce(settings.state_dir, args.speed, f"{args.mapping}: {args.file}")
    cache: dict[str, float] = {"at": 0.0}
    last: list[float | None] = [None]

    def requested() -> float | None:
        now = time.monotonic()
        if now - cache["at"] >= 0.5:
            cache["at"] = now
            last[0] = playback.requested_speed(settings.state_dir)
        return last[0]

    try:
        with Publisher(settings) as pub:
            report = Replayer(pub, mapping, speed=args.speed, speed_source=requested).run(
                args.file, limit_rows=args.limit_rows)
    finally:
        announced.unlink(missing_ok=True)
    print(f"replayed {report.rows} rows: {report.readings} readings, {report.rejects} dead-lettered")
    return 0
