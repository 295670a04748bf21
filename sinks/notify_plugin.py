"""The notifier as a sink plugin (``machinewatch sink notify``, also ``machinewatch notify``): settings and flags.

Registered as ``notify`` under the ``machinewatch.sinks`` entry points; the notifier is ``sinks.notifier``. Where
notifications go (SMTP, webhook) and which ones stay in the shared settings' ``notify`` section (MW_SMTP_*,
MW_WEBHOOK_URL, MW_NOTIFY_*).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import Field

from machinewatch import names
from machinewatch.config import Settings
from machinewatch.plugins import PluginSettings, SinkPlugin


class NotifySinkSettings(PluginSettings):
    """Which topic the notifier reads, as which group, and where its ledger is."""

    alerts_topic: str = Field(names.TOPIC_ALERTS, description="the alerts topic to notify from")
    group_id: str = Field("mw-notifier", description="Kafka consumer group")
    ledger: Path | None = Field(None, description="SQLite ledger (default STATE_DIR/notifier/ledger.sqlite)")
    idle_exit: float | None = Field(None, gt=0, description="exit after this many seconds without alerts")


def _add_arguments(p: argparse._ActionsContainer) -> None:
    p.add_argument("--alerts-topic", help=f"the alerts topic to notify from (default {names.TOPIC_ALERTS})")
    p.add_argument("--group-id", help="Kafka consumer group (default mw-notifier)")
    p.add_argument("--ledger", type=Path,
                   help="SQLite ledger of what was delivered (default STATE_DIR/notifier/ledger.sqlite)")
    p.add_argument("--idle-exit", type=float, help="exit after this many seconds without alerts")


def _run(config: NotifySinkSettings, settings: Settings) -> int:
    from sinks import notifier

    notifier.main(settings, topic=config.alerts_topic, group_id=config.group_id, ledger_path=config.ledger,
                  idle_exit_s=config.idle_exit)
    return 0


plugin = SinkPlugin(
    name="notify",
    summary="send alert transitions by e-mail (MW_SMTP_*) and webhook (MW_WEBHOOK_URL), once each",
    description="Reads the alerts topic and sends each transition of the configured kinds once (a SQLite "
    "ledger remembers what was delivered), by e-mail when MW_SMTP_HOST and MW_SMTP_TO are set and by webhook "
    "when MW_WEBHOOK_URL is.",
    settings_model=NotifySinkSettings,
    run=_run,
    add_arguments=_add_arguments,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
    aliases=("notify",),
)
