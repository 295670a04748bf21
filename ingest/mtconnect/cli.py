"""``machinewatch ingest mtconnect``: arguments and the command."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from machinewatch.config import Settings

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mtconnect", help="follow an MTConnect agent (/probe, /current, /sample) and publish to Kafka",
        description="Reads /probe for units and types, baselines with /current (or the agent's whole buffer), "
        "then follows /sample from nextSequence by streaming (multipart, heartbeats) or polling. Numeric SAMPLEs "
        "go to the readings topic, EVENT/CONDITION observations, buffer gaps and agent restarts to the "
        "device-events topic, and machine UNAVAILABLE / emergency stop / condition FAULT to the alerts topic. "
        "The cursor (instanceId, next sequence, and each device's next sequence) is saved after Kafka "
        "acknowledged, so a restart resumes without gaps. An agent that numbers sequences per device is read "
        "device by device; header and id problems become data-quality notes (mw.quality), never lost values. "
        "See ingest/mtconnect/README.md and sample.conf.",
    )
    p.add_argument("--config", type=Path, required=True,
                   help="TOML file with an [mtconnect] table (see ingest/mtconnect/sample.conf)")
    p.add_argument("--agent-url", help="override agent_url from the config, e.g. http://127.0.0.1:5000")
    p.add_argument("--mode", choices=["stream", "poll"], help="override mode from the config")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.mtconnect.config import ConfigError, load_config
    from ingest.mtconnect.connector import MTConnectSource
    from ingest.mtconnect.state import StateError
    from machinewatch.kafka_io import Publisher

    overrides: dict[str, Any] = {k: v for k, v in {"agent_url": args.agent_url, "mode": args.mode}.items() if v}
    try:
        config = load_config(args.config, **overrides)
    except ConfigError as exc:
        raise RuntimeError(str(exc)) from exc
    with Publisher(settings, client_id="machinewatch-mtconnect") as pub:
        source = MTConnectSource(config, pub)
        try:
            source.setup()
        except StateError as exc:
            raise RuntimeError(str(exc)) from exc
        # SIGTERM stops as cleanly as Ctrl-C: the batch in flight is acknowledged and persisted first.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: source.stop())
        timer = threading.Timer(args.duration, source.stop) if args.duration else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            source.run()
        except KeyboardInterrupt:
            source.stop()
        finally:
            if timer:
                timer.cancel()
    return 0
