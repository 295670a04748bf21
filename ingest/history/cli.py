"""``machinewatch ingest history``: arguments and the command."""

from __future__ import annotations

import argparse
import tomllib
from datetime import date
from pathlib import Path

from machinewatch.config import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "history", help="load historical CSV / JSON-lines / Parquet files through a mapping (resumable)",
        description="Load files through a declared mapping (ingest/formats/mappings/*.toml) into Kafka. "
        "Progress is kept in a state file (file -> rows acknowledged), so an interrupted load resumes and a "
        "second run of a finished file sends nothing; --force re-sends, with the same event ids.",
    )
    p.add_argument("files", nargs="*", help="files or glob patterns")
    p.add_argument("--mapping", help="mapping name (equipment, servers, dc-india, dc-usa, dc-germany) or TOML path")
    p.add_argument("--config", type=Path, help="a TOML file with a [history] table (see ingest/history/sample.conf)")
    p.add_argument("--state", type=Path, help="resume state file (default history-state.json in the MW state dir)")
    p.add_argument("--base-date", type=date.fromisoformat,
                   help="date (YYYY-MM-DD, UTC) for sources with a time of day only, e.g. the servers CSV")
    p.add_argument("--chunk-rows", type=int, help="rows per acknowledged checkpoint (default 5000)")
    p.add_argument("--force", action="store_true", help="ignore the state and load every row again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.formats import load_mapping
    from ingest.history.loader import HistoryConfig, HistoryLoader
    from ingest.history.state import LoadState
    from machinewatch.kafka_io import Publisher

    table: dict[str, object] = {}
    if args.config:
        with args.config.open("rb") as handle:
            table = tomllib.load(handle).get("history", {})
    given = {"files": args.files or None, "mapping": args.mapping, "state_file": args.state,
             "base_date": args.base_date, "chunk_rows": args.chunk_rows}
    table.update({k: v for k, v in given.items() if v is not None})
    table.setdefault("state_file", settings.state_dir / "history-state.json")
    if args.no_progress:
        table["progress"] = False
    if not table.get("files") or not table.get("mapping"):
        msg = "ingest history needs files and --mapping (or a --config with [history] files and mapping)"
        raise RuntimeError(msg)
    try:
        config = HistoryConfig.model_validate(table)
        mapping = load_mapping(config.mapping, base_date=config.base_date)
    except ValueError as exc:
        msg = f"ingest history: {exc}"
        raise RuntimeError(msg) from exc
    with Publisher(settings) as pub:
        loader = HistoryLoader(pub, mapping, LoadState(config.state_file), config.chunk_rows, config.progress)
        for path in config.paths():
            loader.load(path, force=args.force)
        print(f"published {pub.sent - pub.dead_lettered} readings, dead-lettered {pub.dead_lettered}")
    return 0
