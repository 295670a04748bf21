"""Notifications: alert transitions from Kafka to e-mail (SMTP) and a webhook, each sent once; a sink on the
one runner (``machinewatch.runtime``, with ``kafka_io.KafkaSource``).

A ledger (SQLite in the state dir) records every (alert id, state, channel) that was delivered;
a restart, a replay of the topic or a duplicate from the job's at-least-once sink is skipped.
Message-ID and the webhook's Idempotency-Key are deterministic, so a receiver can drop the one
duplicate that remains possible: a crash between a delivery and its ledger entry. Offsets are
committed after the deliveries; a record on the alerts topic that is not an alert goes to the
dead-letter topic with its exact bytes, never stopping the notifier.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import smtplib
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol

import requests

from machinewatch import names
from machinewatch.config import Settings
from machinewatch.kafka_io import KafkaMessage, KafkaSource, message_origin, run_consumer
from machinewatch.runtime import Counters, Rejected, RunOptions

log = logging.getLogger(__name__)


class Channel(Protocol):
    name: str

    def send(self, alert: dict[str, Any]) -> None: ...


def describe(alert: dict[str, Any]) -> tuple[str, str]:
    """Subject and body naming the device, the state, average/peak and duration."""
    state = str(alert.get("state") or "fired").upper()
    kind = str(alert.get("kind") or alert.get("rule_group") or "alert").replace("_", " ")
    device = alert.get("device_id", "?")
    parts = []
    if alert.get("peak") is not None:
        # a below-threshold rule's peak is the lowest value of the episode
        parts.append(f"{'lowest' if alert.get('direction') == 'below' else 'peak'} {float(alert['peak']):.1f}")
    if alert.get("avg") is not None:
        parts.append(f"avg {float(alert['avg']):.1f}")
    if alert.get("duration_ms") is not None:
        parts.append(f"{int(alert['duration_ms']) // 1000} s")
    if alert.get("label"):
        parts.append(str(alert["label"]))
    subject = f"[machinewatch] {state} {kind}: {device}" + (f" ({', '.join(parts)})" if parts else "")
    when = alert.get("ts", alert.get("window_end_ms"))
    lines = [
        f"Device:   {device}",
        f"State:    {state}",
        f"Kind:     {kind}",
        f"Severity: {alert.get('severity', '')}",
        f"Event time (UTC): {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(int(when) / 1000)) if when else '?'}",
    ]
    for key in ("metric", "direction", "avg", "peak", "threshold", "duration_ms", "started_ms", "region", "site",
                "label", "values"):
        if alert.get(key) not in (None, ""):
            lines.append(f"{key}: {alert[key]}")
    lines.append(f"Alert id: {alert.get('alert_id')}")
    return subject, "\n".join(lines) + "\n"


def alert_key(alert: dict[str, Any]) -> str:
    return f"{alert.get('alert_id')}:{alert.get('state') or 'fired'}"


class EmailChannel:
    name = "email"

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host or not settings.smtp_to:
            msg = "e-mail needs MW_SMTP_HOST and MW_SMTP_TO"
            raise ValueError(msg)
        self.s = settings
        self.host: str = settings.smtp_host

    def send(self, alert: dict[str, Any]) -> None:
        subject, body = describe(alert)
        msg = EmailMessage()
        msg["From"] = self.s.smtp_from
        msg["To"] = ", ".join(self.s.smtp_to)
        msg["Subject"] = subject
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = f"<{alert_key(alert).replace(':', '.')}@machinewatch>"
        msg.set_content(body)
        with smtplib.SMTP(self.host, self.s.smtp_port, timeout=30) as smtp:
            if self.s.smtp_starttls:
                smtp.starttls()
            if self.s.smtp_user and self.s.smtp_password is not None:
                smtp.login(self.s.smtp_user, self.s.smtp_password.get_secret_value())
            smtp.send_message(msg)


class WebhookChannel:
    name = "webhook"

    def __init__(self, settings: Settings) -> None:
        if not settings.webhook_url:
            msg = "the webhook needs MW_WEBHOOK_URL"
            raise ValueError(msg)
        self.url = settings.webhook_url

    def send(self, alert: dict[str, Any]) -> None:
        subject, _ = describe(alert)
        resp = requests.post(
            self.url, json={"summary": subject, "alert": alert},
            headers={"Idempotency-Key": alert_key(alert)}, timeout=15,
        )
        if resp.status_code >= 300:
            msg = f"webhook answered HTTP {resp.status_code}: {resp.text[:200]}"
            raise RuntimeError(msg)


class Ledger:
    """What was delivered, per channel; survives restarts (SQLite, one row per delivery)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS sent (key TEXT, channel TEXT, sent_ms INTEGER, PRIMARY KEY (key, channel))"
        )

    def has(self, key: str, channel: str) -> bool:
        return self.db.execute("SELECT 1 FROM sent WHERE key=? AND channel=?", (key, channel)).fetchone() is not None

    def add(self, key: str, channel: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO sent VALUES (?, ?, ?)", (key, channel, int(time.time() * 1000)))

    def close(self) -> None:
        self.db.close()


class Notifier:
    """A ``machinewatch.runtime.Sink`` of alerts: delivers each (alert id, state) once per channel (retrying a
    channel until it answers), recorded in the ledger before ``write`` returns; ``run()`` consumes the alerts
    topic into it on the runner, which commits the offsets after the deliveries."""

    name = "notifier"  # the dead letters' source

    def __init__(self, settings: Settings, channels: list[Channel] | None = None, topic: str = names.TOPIC_ALERTS,
                 group_id: str = "mw-notifier", ledger_path: Path | None = None) -> None:
        self.s = settings
        self.channels = channels if channels is not None else default_channels(settings)
        self.kinds = set(settings.notify_kinds)
        self.states = set(settings.notify_states)
        self.ledger = Ledger(ledger_path or settings.state_dir / "notifier" / "ledger.sqlite")
        self.topic = topic
        self.group_id = group_id
        self.options = RunOptions(poll_timeout_s=0.5)
        self.stop_event = threading.Event()
        self.delivered = 0
        self.skipped = 0
        self.rejected = 0

    def wanted(self, alert: dict[str, Any]) -> bool:
        state = alert.get("state")
        kind = str(alert.get("kind") or "threshold")
        return (bool(alert.get("alert_id")) and any(fnmatch.fnmatchcase(kind, k) for k in self.kinds)
                and (state is None or state in self.states))

    def handle(self, alerts: Iterable[dict[str, Any]]) -> None:
        for alert in alerts:
            if not self.wanted(alert):
                continue
            key = alert_key(alert)
            for channel in self.channels:
                if self.ledger.has(key, channel.name):
                    self.skipped += 1
                    continue
                self._deliver(channel, alert)
                self.ledger.add(key, channel.name)
                self.delivered += 1
                log.info("notified %s via %s", key, channel.name)

    def _deliver(self, channel: Channel, alert: dict[str, Any]) -> None:
        delay = 1.0
        while True:
            try:
                channel.send(alert)
                return
            except Exception as exc:  # noqa: BLE001 - keep the alert; retry until the channel is back
                if self.stop_event.is_set():
                    raise
                log.warning("%s delivery of %s failed (%s); retrying in %.0fs", channel.name, alert_key(alert), exc,
                            delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, 60.0)

    # ------------------------------------------------------------------ runtime.Sink

    def write(self, records: Sequence[KafkaMessage]) -> list[Rejected]:
        """Deliver the alerts among ``records``; the rest comes back as dead letters."""
        docs, rejects = decode_alerts(records)
        refused = []
        for raw, reason, origin in rejects:
            log.warning("not an alert at %s (%s): dead-lettered", origin, reason)
            refused.append(Rejected(raw, reason, origin))
        self.rejected += len(refused)
        self.handle(docs)
        return refused

    def flush(self) -> None:
        """Nothing to do: ``write`` returns once every delivery is made and in the ledger."""

    def close(self) -> None:
        self.ledger.close()

    def run(self, idle_exit_s: float | None = None) -> Counters:
        """Consume the alerts topic until stopped (``stop_event``, SIGTERM/SIGINT in the main thread) or until no
        message came for ``idle_exit_s`` seconds; closes the ledger at the end."""
        source = KafkaSource(self.s, [self.topic], self.group_id, name=self.name, client_id="machinewatch-notifier",
                             max_poll_records=500)
        return run_consumer(source, self, self.s, self.options, stop_event=self.stop_event, idle_exit_s=idle_exit_s)


def decode_alerts(records: Iterable[Any]) -> tuple[list[dict[str, Any]], list[tuple[bytes, str, str]]]:
    """(alert documents, [(raw bytes, reason, origin)]) of consumed records; anything that is not a JSON
    object is a reject for the dead-letter topic, never a reason for the notifier to stop. A tombstone (no
    value) is neither."""
    docs: list[dict[str, Any]] = []
    rejects: list[tuple[bytes, str, str]] = []
    for rec in records:
        if rec.value is None:
            continue
        origin = message_origin(rec)
        try:
            doc = json.loads(rec.value)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            rejects.append((rec.value, f"alert is not JSON: {exc}", origin))
            continue
        if not isinstance(doc, dict):
            rejects.append((rec.value, f"alert is JSON but not an object ({type(doc).__name__})", origin))
            continue
        docs.append(doc)
    return docs, rejects


def default_channels(settings: Settings) -> list[Channel]:
    channels: list[Channel] = []
    if settings.smtp_host and settings.smtp_to:
        channels.append(EmailChannel(settings))
    if settings.webhook_url:
        channels.append(WebhookChannel(settings))
    return channels


def main(settings: Settings, topic: str = names.TOPIC_ALERTS, group_id: str = "mw-notifier",
         ledger_path: Path | None = None, idle_exit_s: float | None = None) -> None:
    notifier = Notifier(settings, topic=topic, group_id=group_id, ledger_path=ledger_path)
    if not notifier.channels:
        log.warning("no channel configured (MW_SMTP_HOST + MW_SMTP_TO, or MW_WEBHOOK_URL): nothing will be sent")
    notifier.run(idle_exit_s)
