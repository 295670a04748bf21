"""TCP collector plugin: JSON lines from many connections through the shared mappings into readings.

Registered as ``tcp`` under the ``machinewatch.collectors`` entry points; the listener is ``ingest.tcp.source``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ingest.tcp.source import TcpSettings
from machinewatch.config import Settings
from machinewatch.plugins import Collector
from machinewatch.runtime import Source


def _make_source(config: Any, _settings: Settings) -> Source:
    from ingest.tcp.source import TcpSource

    return TcpSource(config)


def _add_arguments(p: argparse._ActionsContainer) -> None:
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 9988; 0 = any free port)")
    p.add_argument("--mapping", action="append", dest="mappings",
                   help="mapping a line may use; repeat for several (default: dc-india, dc-usa, dc-germany)")
    p.add_argument("--dispatch-field", help="line field naming its mapping (default 'feed')")
    p.add_argument("--default-mapping", help="mapping for lines without the dispatch field")
    p.add_argument("--max-line-bytes", type=int, help="longest accepted line (default 65536)")
    p.add_argument("--queue-size", type=int, help="lines buffered before readers wait (default 10000)")


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, key) for key in ("host", "port", "mappings", "dispatch_field", "default_mapping",
                                                "max_line_bytes", "queue_size")}


plugin = Collector(
    name="tcp",
    summary="listen for JSON lines on a TCP port (many connections) and publish them",
    description="An asyncio TCP listener for JSON lines. Each line is read through the mapping named in its "
    "dispatch field (default 'feed'), or the only/default mapping. Lines longer than --max-line-bytes, "
    "non-JSON lines and rows a mapping rejects go to the dead-letter topic; the connection stays open. "
    "When Kafka falls behind, a bounded queue makes the readers wait (TCP back-pressure). See "
    "ingest/tcp/README.md and sample.conf.",
    settings_model=TcpSettings,
    make_source=_make_source,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
    add_arguments=_add_arguments,
    flag_overrides=_flag_overrides,
)
