"""``machinewatch ingest history``: arguments and the command."""

from __future__ import annotations

import argparse
import logging
import tomllib
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from machinewatch.config import Settings

if TYPE_CHECKING:
    from ingest.history.loader import HistoryConfig

log = logging.getLogger(__name__)


def _constant(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        msg = f"{text!r} is not KEY=VALUE (e.g. device=pump-7)"
        raise argparse.ArgumentTypeError(msg)
    return key.strip(), value


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ingest.history.target import HISTORY_BUCKET, HISTORY_TOPIC
    from machinewatch import names

    p = sub.add_parser(
        "history", help="load historical CSV / JSON-lines / Parquet files through a mapping (resumable)",
        description="Load files through a declared mapping (ingest/formats/mappings/*.toml) into Kafka. "
        "Progress is kept in a state file per file content and load options (mapping, base date, constants, "
        "topic): an interrupted load resumes, a second run with the same options sends nothing, a run with "
        "changed options loads again; --force re-sends, with the same event ids. Old data goes in as a "
        f"backfill: --topic {HISTORY_TOPIC} --bucket {HISTORY_BUCKET} (see ingest/history/README.md).",
    )
    p.add_argument("files", nargs="*", help="files or glob patterns")
    p.add_argument("--mapping", help="mapping name (equipment, servers, dc-india, dc-usa, dc-germany) or TOML path")
    p.add_argument("--config", type=Path, help="a TOML file with a [history] table (see ingest/history/sample.conf)")
    p.add_argument("--state", type=Path, help="resume state file (default history-state.json in the MW state dir)")
    p.add_argument("--base-date", type=date.fromisoformat,
                   help="date (YYYY-MM-DD, UTC) for sources with a time of day only, e.g. the servers CSV")
    p.add_argument("--set", dest="constants", action="append", type=_constant, metavar="KEY=VALUE",
                   help="a constant for every row: device, site or region (repeatable), e.g. --set device=pump-7 "
                        "for a file of one device; replaces the mapping's field for it")
    p.add_argument("--topic", help=f"Kafka topic for the readings (default {names.TOPIC_READINGS}; created if "
                                   f"missing); a backfill uses its own, e.g. {HISTORY_TOPIC}")
    p.add_argument("--bucket", help=f"InfluxDB bucket the results will land in (default {names.BUCKET_AGGREGATES}, "
                                    f"{HISTORY_BUCKET} for a backfill): a file older than its retention is refused")
    p.add_argument("--chunk-rows", type=int, help="rows per acknowledged checkpoint (default 5000)")
    p.add_argument("--force", action="store_true", help="ignore the state and load every row again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def config_from(args: argparse.Namespace, settings: Settings) -> HistoryConfig:
    """The ``[history]`` table of ``--config`` with the command line's options on top, validated."""
    from ingest.history.loader import HistoryConfig

    table: dict[str, object] = {}
    if args.config:
        with args.config.open("rb") as handle:
            table = dict(tomllib.load(handle).get("history", {}))
    given = {"files": args.files or None, "mapping": args.mapping, "state_file": args.state,
             "base_date": args.base_date, "chunk_rows": args.chunk_rows, "topic": args.topic, "bucket": args.bucket}
    table.update({k: v for k, v in given.items() if v is not None})
    if args.constants:
        constants = table.get("constants")
        table["constants"] = {**(constants if isinstance(constants, dict) else {}), **dict(args.constants)}
    table.setdefault("state_file", settings.state_dir / "history-state.json")
    if args.no_progress:
        table["progress"] = False
    if not table.get("files") or not table.get("mapping"):
        msg = "ingest history needs files and --mapping (or a --config with [history] files and mapping)"
        raise RuntimeError(msg)
    try:
        return HistoryConfig.model_validate(table)
    except ValueError as exc:
        msg = f"ingest history: {exc}"
        raise RuntimeError(msg) from exc


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.history.loader import HistoryLoader, LoadReport
    from ingest.history.state import LoadState
    from ingest.history.target import RetentionGuard, ensure_topic
    from machinewatch.kafka_io import Publisher

    config = config_from(args, settings)
    try:
        mapping = config.load_mapping()
    except ValueError as exc:
        msg = f"ingest history: {exc}"
        raise RuntimeError(msg) from exc
    paths = config.paths()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        msg = f"ingest history: no such file: {', '.join(missing)}"
        raise RuntimeError(msg)
    ensure_topic(settings, config.topic)
    total = LoadReport(topic=config.topic)
    with Publisher(settings, topic=config.topic) as pub:
        loader = HistoryLoader(pub, mapping, LoadState(config.state_file), config.chunk_rows, config.progress,
                               guard=RetentionGuard(settings, config.bucket))
        for path in paths:
            total.add(loader.load(path, force=args.force))
    summary = total.describe()
    log.info("ingest history: %s", summary)
    print(summary)
    return 0

