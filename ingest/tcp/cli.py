"""``machinewatch ingest tcp``: arguments and the command."""

from __future__ import annotations

import argparse
import asyncio
import tomllib
from pathlib import Path

from machinewatch.config import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tcp", help="listen for JSON lines on a TCP port (many connections) and publish them",
        description="An asyncio TCP listener for JSON lines. Each line is read through the mapping named in its "
        "dispatch field (default 'feed'), or the only/default mapping. Lines longer than --max-line-bytes, "
        "non-JSON lines and rows a mapping rejects go to the dead-letter topic; the connection stays open. "
        "When Kafka falls behind, a bounded queue makes the readers wait (TCP back-pressure).",
    )
    p.add_argument("--config", type=Path, help="a TOML file with a [tcp] table (see ingest/tcp/sample.conf)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 9988; 0 = any free port)")
    p.add_argument("--mapping", action="append", dest="mappings",
                   help="mapping a line may use; repeat for several (default: dc-india, dc-usa, dc-germany)")
    p.add_argument("--dispatch-field", help="line field naming its mapping (default 'feed')")
    p.add_argument("--default-mapping", help="mapping for lines without the dispatch field")
    p.add_argument("--max-line-bytes", type=int, help="longest accepted line (default 65536)")
    p.add_argument("--queue-size", type=int, help="lines buffered before readers wait (default 10000)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.tcp.listener import TcpConfig, TcpListener
    from machinewatch.kafka_io import Publisher

    table: dict[str, object] = {}
    if args.config:
        with args.config.open("rb") as handle:
            table = tomllib.load(handle).get("tcp", {})
    given = {"host": args.host, "port": args.port, "mappings": args.mappings, "dispatch_field": args.dispatch_field,
             "default_mapping": args.default_mapping, "max_line_bytes": args.max_line_bytes,
             "queue_size": args.queue_size}
    table.update({k: v for k, v in given.items() if v is not None})
    try:
        config = TcpConfig.model_validate(table)
    except ValueError as exc:
        msg = f"ingest tcp: {exc}"
        raise RuntimeError(msg) from exc
    with Publisher(settings) as pub:
        try:
            listener = TcpListener(pub, config)
        except ValueError as exc:
            msg = f"ingest tcp: {exc}"
            raise RuntimeError(msg) from exc
        asyncio.run(listener.run(args.duration))
    return 0
