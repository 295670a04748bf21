"""Alert notifications end to end: e-mail to a real local SMTP server and a webhook, once per
transition, across a job stop-with-savepoint and restore, and a notifier restart that replays the topic.
"""

from __future__ import annotations

import email
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from machinewatch import jobs
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.stack import Stack
from simulators.temperature import TemperatureSimulator
from sinks.notifier import Notifier
from tests.integration.conftest import require_free_slot
from tests.stack_support import WebhookReceiver, create_topics
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    port = _free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def webhook() -> Iterator[tuple[list[dict[str, Any]], str]]:
    receiver = WebhookReceiver()
    yield receiver.deliveries, receiver.url
    receiver.close()


def test_each_transition_notified_once_across_savepoint_restore_and_replay(
    stack: Stack, settings: Settings, inbox: tuple[Inbox, int], webhook: tuple[list[dict[str, Any]], str],
    tmp_path: Path,
) -> None:
    box, smtp_port = inbox
    hooks, hook_url = webhook
    run = uuid.uuid4().hex[:8]
    topics = {"readings": f"mw.test-{run}.readings", "alerts": f"mw.test-{run}.alerts"}
    create_topics(settings, topics.values())
    notify_settings = settings.model_copy(update={
        "smtp_host": "127.0.0.1", "smtp_port": smtp_port, "smtp_to": ["ops@plant.example"], "webhook_url": hook_url,
    })
    ledger = tmp_path / "ledger.sqlite"

    def start_notifier(group: str) -> tuple[Notifier, threading.Thread]:
        notifier = Notifier(notify_settings, topic=topics["alerts"], group_id=group, ledger_path=ledger)
        thread = threading.Thread(target=notifier.run, daemon=True)
        thread.start()
        return notifier, thread

    start = (datetime.now(tz=UTC) - timedelta(seconds=300)).replace(microsecond=0)
    t0 = int(start.timestamp() * 1000)
    sim = TemperatureSimulator(devices=3, seed=3, device_prefix=f"nt{run}", base_c=55.0, step_c=0.3,
                               max_disorder_ms=1000, overheats=[(1, 20_000, 150_000, 40.0)])
    readings = sim.readings(start, 260)
    first = [r for r in readings if r.ts < t0 + 110_000]
    second = [r for r in readings if r.ts >= t0 + 110_000]
    args = ["--readings-topic", topics["readings"], "--alerts-topic", topics["alerts"], "--group-id", f"g-{run}",
            "--job-name", f"mw-notify-{run}"]

    notifier, thread = start_notifier(f"n1-{run}")
    require_free_slot(settings)
    job_id = jobs.submit(settings, "sustained-overheat", args)
    restored = ""
    try:
        with Publisher(settings, topic=topics["readings"]) as pub:
            pub.send_many(first)
        wait_for(lambda: len(box.messages) >= 1, 180, "the OPENED e-mail")
        location = jobs.savepoint(settings, job_id, cancel=True)

        # A notifier restart that re-reads the whole topic (new group) must send nothing again.
        notifier.stop_event.set()
        thread.join(timeout=30)
        notifier, thread = start_notifier(f"n2-{run}")
        time.sleep(5)
        assert len(box.messages) == 1 and len(hooks) == 1

        restored = jobs.submit(settings, "sustained-overheat", args, from_savepoint=location)
        with Publisher(settings, topic=topics["readings"]) as pub:
            pub.send_many(second)
        wait_for(lambda: len(box.messages) >= 3 and len(hooks) >= 3, 180, "ESCALATED and RESOLVED")
        time.sleep(5)  # anything extra (a duplicate) would arrive now
    finally:
        notifier.stop_event.set()
        thread.join(timeout=30)
        for jid in (job_id, restored):
            if jid and jobs.job_detail(settings, jid).get("state") == "RUNNING":
                jobs.cancel(settings, jid)

    subjects = [" ".join(str(m["Subject"]).split()) for m in box.messages]  # unfold long header lines
    assert len(subjects) == 3, subjects
    assert [s.split()[1] for s in subjects] == ["OPENED", "ESCALATED", "RESOLVED"]
    device = sim.device_id(1)
    for subject in subjects:
        assert device in subject and "peak 9" in subject and " s" in subject, subject
    assert len({m["Message-ID"] for m in box.messages}) == 3
    assert "Alert id:" in box.messages[0].get_payload()
    assert sorted(h["alert"]["state"] for h in hooks) == ["escalated", "opened", "resolved"]
    assert len({h["key"] for h in hooks}) == 3
    assert len({h["alert"]["alert_id"] for h in hooks}) == 1  # one episode, one alert id
