"""MTConnect collector plugin: follows an agent's /sample stream into readings and device events.

Registered as ``mtconnect`` under the ``machinewatch.collectors`` entry points; the runtime source is
``ingest.mtconnect.source``, the protocol engine ``ingest.mtconnect.connector``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ingest.mtconnect.config import MTConnectSettings, load_config
from machinewatch.config import Settings
from machinewatch.plugins import Collector, CollectorSettings
from machinewatch.runtime import Counters, Source


def _make_source(config: Any, _settings: Settings) -> Source:
    from ingest.mtconnect.source import MTConnectSource
    from ingest.mtconnect.state import load_cursor

    # An unusable state file is a configuration error (StateError, a ValueError), reported before the run.
    load_cursor(config.state_path)
    return MTConnectSource(config)


def _load(path: Path | None, overrides: Mapping[str, Any], environ: Mapping[str, str] | None) -> CollectorSettings:
    # A relative state_path is relative to the config file, which the shared loader does not know.
    return load_config(path, os.environ if environ is None else environ, **overrides)


def _add_arguments(p: argparse._ActionsContainer) -> None:
    p.add_argument("--agent-url", help="override agent_url from the config, e.g. http://127.0.0.1:5000")
    p.add_argument("--mode", choices=["stream", "poll"], help="override mode from the config")


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"agent_url": args.agent_url, "mode": args.mode}


def _summary(source: Any, counters: Counters) -> str:
    return json.dumps({"collector": "mtconnect", "received": counters.received, "written": counters.written,
                       "rejected": counters.rejected, **asdict(source.metrics)})


plugin = Collector(
    name="mtconnect",
    summary="follow an MTConnect agent (/probe, /current, /sample) and publish to Kafka",
    description="Reads /probe for units and types, baselines with /current (or the agent's whole buffer), then "
    "follows /sample from nextSequence by streaming (multipart, heartbeats) or polling. Numeric SAMPLEs go to "
    "the readings topic; EVENT/CONDITION observations, buffer gaps and agent restarts to the device-events "
    "topic (the device-alerts Flink job turns availability, e-stop and condition changes into alerts). The "
    "cursor (instanceId, next sequence, and each device's next sequence) is saved after Kafka acknowledged, "
    "so a restart resumes without gaps. An agent that numbers sequences per device is read device by device; "
    "header and id problems become data-quality notes (mw.quality), never lost values. See "
    "ingest/mtconnect/README.md and sample.conf.",
    settings_model=MTConnectSettings,
    make_source=_make_source,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
    add_arguments=_add_arguments,
    flag_overrides=_flag_overrides,
    summary_line=_summary,
    settings_loader=_load,
)
