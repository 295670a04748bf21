"""The pipeline's own health against the real stack: ``machinewatch stack status`` (CLI), the dashboard's Pipeline
page in headless Chromium, and the writer's Prometheus endpoint.

Known facts are made here, each under ids unique to the run: a consumer group 6 messages behind on a topic of its
own, a running Flink job (window-aggregates) with checkpoints, dead letters of two sources (and one older than the
hour, which must not count), and two sources whose window aggregates keep arriving until one of them stops.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from prometheus_client.parser import text_string_to_metric_families

from dashboards.streamlit import headless
from machinewatch import jobs, names, quality
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.stack import Stack
from tests.influx_points import to_point
from tests.integration.conftest import require_free_slot
from tests.stack_support import create_topics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
RUN = uuid.uuid4().hex[:6]
STALE_S = 20  # MW_PIPELINE_STALE_AFTER_S of the dashboard and the CLI here
RED = "rgb(255, 214, 214)"  # dashboards/streamlit/pipeline.py's RED background


class Feeder:
    """Writes a window aggregate of each live source every second (window end = now), as the writer would."""

    def __init__(self, settings: Settings, sources: list[str]) -> None:
        self.live = set(sources)
        self.last: dict[str, datetime] = {}
        self.client = InfluxDBClient(url=settings.influx, token=settings.write_token(), org=settings.influx_org)
        self.write = self.client.write_api(write_options=SYNCHRONOUS)
        self._halt = threading.Event()
        self.thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._halt.is_set():
            now = datetime.now(tz=UTC)
            end_ms = int(now.timestamp() * 1000)
            points = [to_point({"device_id": f"{source}-dev", "metric": "temperature", "source": source,
                                "region": "health", "site": "health", "unit": "°C", "window_ms": 10_000,
                                "window_end_ms": end_ms, "avg_value": 40.0, "min_value": 39.0, "max_value": 41.0,
                                "count": 10}) for source in sorted(self.live)]
            if points:
                self.write.write(names.BUCKET_AGGREGATES, record=points)
                for source in self.live:
                    self.last[source] = now
            self._halt.wait(1)

    def stop_source(self, source: str) -> datetime:
        self.live.discard(source)
        time.sleep(1.5)  # a write under way finishes
        return self.last[source]

    def close(self) -> None:
        self._halt.set()
        self.thread.join(10)
        self.client.close()


@pytest.fixture(scope="module")
def facts(stack: Stack, settings: Settings) -> Iterator[dict[str, Any]]:
    live, stopping = f"health-live-{RUN}", f"health-stop-{RUN}"
    feeder = Feeder(settings, [live, stopping])
    # A consumer group 6 messages behind on a topic of its own.
    topic, group = f"health-lag-{RUN}", f"health-group-{RUN}"
    create_topics(settings, [topic])
    producer = KafkaProducer(**settings.kafka_client_config())
    for i in range(10):
        producer.send(topic, partition=0, value=f"{i}".encode())  # the partition whose offset is committed
    # Dead letters of the last hour: 3 + 2 (one reason class) for source A, 1 for source B; one two hours old.
    letters_a, letters_b = f"health-a-{RUN}", f"health-b-{RUN}"
    old_ms = int((datetime.now(tz=UTC) - timedelta(hours=2)).timestamp() * 1000)
    producer.send(names.TOPIC_DEAD_LETTER, key=letters_b.encode(), timestamp_ms=old_ms,
                  value=json.dumps(quality.letter(letters_b, b"old", "not JSON", received_ms=old_ms)).encode())
    producer.flush()
    producer.close()
    with Publisher(settings, topic=names.TOPIC_DEAD_LETTER) as pub:
        for _ in range(3):
            pub.dead_letter(letters_a, b"\xff", "not JSON", "test")
        pub.dead_letter(letters_a, b"{}", "line 12: value 'x' is not a number", "test")
        pub.dead_letter(letters_a, b"{}", "line 40: value 'yy' is not a number", "test")
        pub.dead_letter(letters_b, b"\xfe", "not JSON", "test")
    consumer = KafkaConsumer(**settings.kafka_client_config(), group_id=group, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.commit({tp: OffsetAndMetadata(4, "", -1)})
    consumer.close()
    # A Flink job with checkpoints (every 10 s on the stack).
    require_free_slot(settings)
    job_topics = [f"health-job-{kind}-{RUN}" for kind in ("readings", "aggregates", "late", "alerts")]
    create_topics(settings, job_topics)
    job_id = jobs.submit(settings, "window-aggregates", [
        "--job-name", f"machinewatch-health-{RUN}", "--group-id", f"health-flink-{RUN}",
        *(arg for kind, t in zip(("readings", "aggregates", "late", "alerts"), job_topics, strict=True)
          for arg in (f"--{kind}-topic", t))])
    try:
        deadline = time.monotonic() + 240
        while True:
            done = jobs.rest(settings, "GET", f"/jobs/{job_id}/checkpoints").json().get("counts", {}).get("completed")
            if done:
                break
            assert time.monotonic() < deadline, "the job completed no checkpoint in 240 s"
            time.sleep(2)
        yield {"live": live, "stopping": stopping, "feeder": feeder, "group": group,
               "job": f"machinewatch-health-{RUN}", "letters_a": letters_a, "letters_b": letters_b}
    finally:
        feeder.close()
        jobs.cancel(settings, job_id)


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO), **extra}


def _wait_stale(facts: dict[str, Any]) -> None:
    """Stop the stopping source (once) and wait until its data is older than STALE_S (plus a margin)."""
    last = facts["feeder"].stop_source(facts["stopping"]) if facts["stopping"] in facts["feeder"].live \
        else facts["feeder"].last[facts["stopping"]]
    while datetime.now(tz=UTC) - last < timedelta(seconds=STALE_S + 3):
        time.sleep(0.5)


# --- the Pipeline page in Chromium --------------------------------------------------------------------------

ROWS_JS = """(() => {
  const out = {};
  for (const tr of document.querySelectorAll('tr')) {
    const cells = [...tr.querySelectorAll('td, th')];
    const text = tr.innerText.replace(/\\s+/g, ' ').trim();
    if (cells.length) out[text] = cells.map(c => getComputedStyle(c).backgroundColor);
  }
  return out;
})()"""


# The job's row: running, restarts 0, a checkpoint count and the last one's age.
JOB_ROW = r"\bRUNNING 0 \d+ \d+s ago"
ROW_HTML_JS = """[...document.querySelectorAll('tr')].filter(tr => tr.innerText.includes(%s))
  .map(tr => tr.outerHTML).join('\\n')"""


def _row(rows: dict[str, list[str]], name: str) -> tuple[str, list[str]]:
    found = [(text, colours) for text, colours in rows.items() if name in text]
    assert len(found) == 1, f"one row for {name}: {list(rows)}"
    return found[0]


def _wait_for(browser: headless.Chromium, check: Any, timeout: float) -> tuple[str, dict[str, list[str]]]:
    deadline = time.monotonic() + timeout
    text, rows = "", {}
    while time.monotonic() < deadline:
        text = re.sub(r"\s+", " ", browser.evaluate("document.body ? document.body.innerText : ''") or "")
        rows = browser.evaluate(ROWS_JS) or {}
        if check(text, rows):
            break
        time.sleep(1)
    return text, rows


def test_pipeline_page_turns_a_stopped_source_red_in_chromium(facts: dict[str, Any], settings: Settings) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    live, stopping = facts["live"], facts["stopping"]
    page_settings = settings.model_copy(update={"pipeline_stale_after_s": float(STALE_S)})
    with headless.dashboard(page_settings) as base, \
            tempfile.TemporaryDirectory(prefix="mw-chromium-", ignore_cleanup_errors=True) as profile:
        browser = headless.Chromium(profile)
        try:
            browser.call("Page.navigate", url=f"{base}pipeline?refresh=2")

            def both_fine(text: str, rows: dict[str, list[str]]) -> bool:
                # The job's row is waited for in full too: one CI run read it once with a cell missing
                # ('RUNNING 2 1s ago') while 'stack status' of the same job said restarts 0.
                return all(any(s in t and " ok " in f" {t} " for t in rows) for s in (live, stopping)) and \
                    facts["group"] in text and facts["letters_a"] in text and \
                    any(facts["job"] in t and re.search(JOB_ROW, t) for t in rows)

            text, rows = _wait_for(browser, both_fine, 180)
            (ARTIFACTS / "pipeline-before.txt").write_text(text + "\n\n" + "\n".join(rows))
            assert 'data-testid="stException"' not in (browser.evaluate("document.documentElement.outerHTML") or "")
            for source in (live, stopping):
                line, colours = _row(rows, source)
                assert " ok " in f" {line} " and RED not in colours, (source, line, colours)
            # the same facts as 'stack status': lag 6, the job running, the letters of the hour
            group_line = _row(rows, facts["group"])[0]
            assert re.fullmatch(rf"{facts['group']} \S+ 6 {re.escape(f'health-lag-{RUN}')}", group_line), group_line
            job_line, job_colours = _row(rows, facts["job"])
            assert "RUNNING" in job_line and RED not in job_colours, job_line
            assert re.search(JOB_ROW, job_line), (job_line, browser.evaluate(ROW_HTML_JS % json.dumps(facts["job"])))
            letters = "\n".join(rows)
            for source, reason, count in ((facts["letters_b"], "not JSON", 1), (facts["letters_a"], "not JSON", 3),
                                          (facts["letters_a"], "line N: value '…' is not a number", 2)):
                assert re.search(rf"^{source} {re.escape(reason)} {count}\b", letters, re.MULTILINE), letters

            _wait_stale(facts)  # the page is not reloaded: its own refresh must show the change

            def stopped_red(text: str, rows: dict[str, list[str]]) -> bool:
                return any(stopping in t and "STALE" in t for t in rows)

            text, rows = _wait_for(browser, stopped_red, 60)
            shot = browser.call("Page.captureScreenshot", format="png")
            (ARTIFACTS / "pipeline.png").write_bytes(base64.b64decode(shot["data"]))
        finally:
            browser.close()
    line, colours = _row(rows, stopping)
    assert "STALE" in line and colours and all(c == RED for c in colours), (line, colours)
    line, colours = _row(rows, live)
    assert " ok " in f" {line} " and RED not in colours, (line, colours)
    assert f"no data from {stopping} for" in text


# --- stack status -------------------------------------------------------------------------------------------


def test_stack_status_shows_lag_jobs_dead_letters_and_the_stale_source(facts: dict[str, Any],
                                                                       settings: Settings) -> None:
    _wait_stale(facts)
    out = subprocess.run([sys.executable, "-m", "machinewatch", "stack", "status"], cwd=REPO, text=True,  # noqa: S603
                         env=_env(settings, MW_PIPELINE_STALE_AFTER_S=str(STALE_S)), capture_output=True,
                         timeout=300, check=False)
    text = out.stdout
    assert out.returncode == 0, out.stdout + out.stderr
    lines = text.splitlines()

    def line_of(name: str) -> str:
        found = [ln for ln in lines if name in ln]
        assert len(found) == 1, f"one line for {name} in:\n{text}"
        return found[0]

    assert line_of(facts["group"]).split()[2] == "6", text
    job = line_of(facts["job"]).split()
    assert job[1:3] == ["RUNNING", "0"] and int(job[3]) >= 1 and job[-1] == "ago", text
    assert line_of(f"{facts['live']} ").split()[-1] == "ok", text
    assert line_of(f"{facts['stopping']} ").split()[-1] == "STALE", text
    letters = [ln.split(None, 2) for ln in lines if RUN in ln and ln.startswith("  ")]
    assert sorted((ln[1], ln[2].strip(), int(ln[0])) for ln in letters) == sorted([
        (facts["letters_a"], "not JSON", 3), (facts["letters_a"], "line N: value '…' is not a number", 2),
        (facts["letters_b"], "not JSON", 1)]), text


def test_stack_status_servers_only_skips_the_pipeline(settings: Settings, stack: Stack) -> None:
    out = subprocess.run([sys.executable, "-m", "machinewatch", "stack", "status", "--servers-only"], cwd=REPO,
                         text=True, env=_env(settings), capture_output=True, timeout=120, check=False)  # noqa: S603
    assert out.returncode == 0 and "kafka" in out.stdout and "consumer group" not in out.stdout, out.stdout


# --- a real process's metrics endpoint ---------------------------------------------------------------------


def test_the_writer_serves_its_metrics_on_127_0_0_1(stack: Stack, settings: Settings, tmp_path: Path) -> None:
    """``machinewatch sink influxdb`` with MW_METRICS_PORT=0: records in/out and a refused one by reason."""
    agg, late, alerts = (f"health-{kind}-{RUN}" for kind in ("agg", "late", "alerts"))
    create_topics(settings, [agg, late, alerts])
    producer = KafkaProducer(**settings.kafka_client_config())
    doc = {"device_id": f"health-w-{RUN}", "metric": "temperature", "source": f"health-writer-{RUN}",
           "region": "health", "site": "health", "unit": "°C", "window_ms": 10_000,
           "window_end_ms": int(time.time() * 1000), "avg_value": 40.0, "min_value": 39.0, "max_value": 41.0,
           "count": 10}
    producer.send(agg, key=b"d", value=json.dumps(doc).encode())
    producer.send(agg, key=b"d", value=b"not json at all")
    producer.flush()
    producer.close()
    log_path = tmp_path / "writer.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "machinewatch", "sink", "influxdb", "--group-id", f"health-writer-{RUN}",
             "--aggregates-topic", agg, "--late-topic", late, "--alerts-topic", alerts],
            cwd=REPO, env=_env(settings, MW_METRICS_PORT="0"), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        url, got = None, {}
        while time.monotonic() < deadline:
            found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", log_path.read_text())
            if found:
                url = found[1]
                text = requests.get(url, timeout=5).text
                got = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for fam in text_string_to_metric_families(text) for s in fam.samples}
                if got.get(("machinewatch_records_written_total", (("runner", "influx-writer"),)), 0) >= 1:
                    break
            assert proc.poll() is None, log_path.read_text()
            time.sleep(1)
        assert url, f"no metrics address in the writer's log:\n{log_path.read_text()}"
        r = (("runner", "influx-writer"),)
        assert got[("machinewatch_records_received_total", r)] == 2, got
        assert got[("machinewatch_records_written_total", r)] == 1, got
        rejected = {dict(k[1]).get("reason"): v for k, v in got.items()
                    if k[0] == "machinewatch_records_rejected_total"}
        assert sum(rejected.values()) == 1, rejected
        assert got[("machinewatch_lag_records", r)] == 0, got
        assert got[("machinewatch_last_success_timestamp_seconds", r)] > time.time() - 120
    finally:
        proc.terminate()
        proc.wait(60)
