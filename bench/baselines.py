"""The baselines every figure is compared with, provisioned into ``$MW_CACHE_DIR/bench`` (Maven Central, PyPI):
Kafka's ConsumerPerformance, the PySpark twins of our jobs, and the ``influx`` CLI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import REPO, say
from bench.kafka_data import create_topic, opened_summary, output_state, read_alerts
from bench.measure import RssSampler, tree_rss
from machinewatch.config import Settings

POM = REPO / "bench" / "maven" / "pom.xml"
KAFKA_VERSION = "4.1.1"
SPARK_VERSION = "4.1.1"
INFLUX_CLI = "github.com/influxdata/influx-cli/v2/cmd/influx@v2.7.5"


def mvn_jars(settings: Settings, profile: str, name: str) -> Path:
    out = settings.cache_dir / "bench" / name
    if not (out / ".ready").exists():
        say(f"resolving {profile} from Maven Central into {out}")
        subprocess.run(["mvn", "-q", "-B", "-f", str(POM), "-P", profile, "dependency:copy-dependencies",  # noqa: S607
                        f"-DoutputDirectory={out}"], check=True)
        (out / ".ready").write_text("")
    return out


def bench_venv(settings: Settings) -> Path:
    venv = settings.cache_dir / "bench-venv"
    # The [sql] extra (pandas, pyarrow) and protobuf are what transformWithStateInPandas needs (spark_overheat.py).
    ready = venv / f".ready-pyspark-{SPARK_VERSION}-sql"
    if not ready.exists():
        say(f"creating {venv} with pyspark[sql]=={SPARK_VERSION} (separate from the project venv)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"pyspark[sql]=={SPARK_VERSION}", "protobuf"],
                       check=True)
        ready.write_text("")
    return venv


def spark_kafka_jars(settings: Settings, venv: Path) -> list[str]:
    """The Kafka connector and its dependencies, minus the jars pyspark already ships (no duplicate classes)."""
    jars_dir = mvn_jars(settings, "spark-kafka", f"spark-kafka-{SPARK_VERSION}")
    spark_jars = next((venv / "lib").glob("python*/site-packages/pyspark/jars"))
    have = {j.name.rsplit("-", 1)[0] for j in spark_jars.glob("*.jar")}
    return [str(j) for j in sorted(jars_dir.glob("*.jar")) if j.name.rsplit("-", 1)[0] not in have]


def influx_cli(settings: Settings) -> tuple[Path | None, str]:
    """The InfluxDB 2.x ``influx`` CLI, or None and why not.

    Looked for in order: ``$MW_BENCH_INFLUX_CLI``, ``influx`` on PATH, ``$MW_CACHE_DIR/bench/bin/influx``,
    then ``go install`` into that directory (the Go proxy currently refuses influx-cli with 403, so a
    binary built by hand from the upstream sources can be dropped there or named by the variable).
    """

    def v2_cli(exe: Path) -> str:
        # An InfluxDB 1.x `influx` is a different program (no `write`); `influx version` tells them apart.
        try:
            res = subprocess.run([str(exe), "version"], capture_output=True, text=True, timeout=20,  # noqa: S603
                                 stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{exe}: {exc}"
        return "" if res.returncode == 0 and res.stdout.startswith("Influx CLI 2") else (
            f"{exe} is not the InfluxDB 2.x CLI: {' '.join((res.stdout + res.stderr).split())[:200]}")

    gobin = settings.cache_dir / "bench" / "bin"
    exe = gobin / "influx"
    named = os.environ.get("MW_BENCH_INFLUX_CLI")
    # An explicit choice that does not work is reported, not silently replaced by another binary.
    candidates = [Path(named).expanduser()] if named else [Path(p) for p in (shutil.which("influx"),) if p]
    if not named and exe.exists():
        candidates.append(exe)
    whys = []
    for candidate in candidates:
        why = v2_cli(candidate)
        if not why:
            return candidate, ""
        whys.append(why)
    if named:
        return None, f"MW_BENCH_INFLUX_CLI: {whys[0]}"
    if shutil.which("go") is None:
        return None, "; ".join([*whys, "go is not installed"])
    out = subprocess.run(["go", "install", INFLUX_CLI], env={**os.environ, "GOBIN": str(gobin)},  # noqa: S607
                         capture_output=True, text=True, check=False)
    if out.returncode != 0 or not exe.exists():
        failed = " ".join(out.stderr.split())[-400:] or f"go install: exit {out.returncode}"
        return None, "; ".join([*whys, failed, f"set MW_BENCH_INFLUX_CLI or place the binary at {exe}"])
    return exe, ""


def bench_raw_consume(settings: Settings, topic: str, events: int, runs: int) -> list[dict[str, float]]:
    """Kafka's own kafka.tools.ConsumerPerformance (JVM, kafka-clients) on the backlog: the ceiling."""
    tools = mvn_jars(settings, "kafka-tools", f"kafka-tools-{KAFKA_VERSION}")
    out = []
    for n in range(runs):
        cmd = ["java", "-Xmx512m", "-cp", f"{tools}/*", "org.apache.kafka.tools.ConsumerPerformance",
               "--bootstrap-server", settings.kafka_servers, "--topic", topic, "--messages", str(events),
               "--group", f"bench-perf-{n}-{time.time_ns()}", "--timeout", "120000", "--hide-header"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)  # noqa: S603
        line = next((ln for ln in res.stdout.splitlines() if ln.count(",") >= 9), "")
        if not line:
            msg = f"ConsumerPerformance failed: {res.stdout[-500:]} {res.stderr[-1500:]}"
            raise RuntimeError(msg)
        cols = [c.strip() for c in line.split(",")]
        # start, end, MB, MB/s, nMsg, nMsg/s, rebalance ms, fetch ms, fetch MB/s, fetch nMsg/s
        out.append({"messages": float(cols[4]), "msg_per_s": float(cols[5]), "rebalance_ms": float(cols[6]),
                    "fetch_ms": float(cols[7]), "fetch_msg_per_s": float(cols[9]), "mb": float(cols[2])})
    return out


def bench_spark(settings: Settings, topic: str, tag: str, sampler: RssSampler, tmp: Path) -> dict[str, Any]:
    venv = bench_venv(settings)
    jars = spark_kafka_jars(settings, venv)
    result = tmp / f"spark-{tag}.json"
    cmd = [str(venv / "bin" / "python"), str(REPO / "bench" / "spark_job.py"), "--bootstrap", settings.kafka_servers,
           "--topic", topic, "--out-topic", f"mw.bench.spark.{tag}", "--checkpoint", str(tmp / f"spark-ckpt-{tag}"),
           "--jars", ",".join(jars), "--cores", str(os.cpu_count() or 2), "--result", str(result),
           "--watermark-ms", str(settings.watermark_delay_ms), "--window-s", str(settings.window_size_s)]
    create_topic(settings, f"mw.bench.spark.{tag}", settings.kafka_partitions, append_time=True)
    sampler.phase = f"pyspark backlog {tag}"
    data = run_spark_backlog(cmd, tmp / f"spark-{tag}.log", result, "PySpark", env=None)
    data.update(spark_end_to_end(settings, f"mw.bench.spark.{tag}", data))
    return data


def spark_end_to_end(settings: Settings, out_topic: str, data: dict[str, Any]) -> dict[str, Any]:
    """The last run timed like our jobs: from its start() to the broker's append time of the last output record
    (the runs write one topic in turn, so the newest record is the last run's); its output is read from then on."""
    _, last_ms = output_state(settings, [out_topic])
    if last_ms is None:
        msg = f"PySpark wrote nothing to {out_topic}: nothing to time end to end"
        raise RuntimeError(msg)
    seconds = (last_ms - data["start_epoch_ms"]) / 1000
    return {"e2e_s": seconds, "e2e_events_per_s": data["rows_in"] / seconds, "events_per_s": data["rows_in"] / seconds,
            "out_topic": out_topic, "out_since_ms": data["start_epoch_ms"]}


def run_spark_backlog(cmd: list[str], log: Path, result: Path, what: str, env: dict[str, str] | None) -> dict[str, Any]:
    """Run a PySpark backlog script to its end (20 min at most); its result JSON plus events/s and peak RSS."""
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,  # noqa: S603
                                env=env)
        spark_peak = 0
        deadline = time.monotonic() + 1200
        while proc.poll() is None and time.monotonic() < deadline:
            spark_peak = max(spark_peak, tree_rss(proc.pid))
            time.sleep(0.5)
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            msg = f"{what} did not finish in 20 min"
            raise RuntimeError(msg)
    if proc.returncode != 0 or not result.exists():
        msg = f"{what} failed (exit {proc.returncode}): {log.read_text()[-2000:]}"
        raise RuntimeError(msg)
    data: dict[str, Any] = json.loads(result.read_text())
    data["events_per_s"] = data["start_to_end_events_per_s"] = data["rows_in"] / data["wall_s"]
    data["peak_rss"] = spark_peak
    return data


def spark_overheat_cmd(settings: Settings, venv: Path, readings: str, alerts: str, checkpoint: Path) -> list[str]:
    """bench/spark_overheat.py with the bench venv, the Kafka jars and the rules the Flink job would use."""
    from dataclasses import asdict

    from flink_jobs.sustained_overheat import rules_from  # the project venv has pyflink; the bench venv does not

    return [str(venv / "bin" / "python"), str(REPO / "bench" / "spark_overheat.py"),
            "--bootstrap", settings.kafka_servers, "--topic", readings, "--out-topic", alerts,
            "--checkpoint", str(checkpoint), "--jars", ",".join(spark_kafka_jars(settings, venv)),
            "--cores", str(os.cpu_count() or 2), "--watermark-ms", str(settings.watermark_delay_ms),
            "--bucket-ms", str(settings.overheat_bucket_ms), "--rules", json.dumps(asdict(rules_from(settings)))]


def spark_env() -> dict[str, str]:
    # The driver and its Python workers import flink_jobs.overheat_logic from the repo (pure Python, stdlib only).
    return {**os.environ, "PYTHONPATH": str(REPO)}


def bench_spark_overheat(
    settings: Settings, topic: str, tag: str, sampler: RssSampler, tmp: Path, runs: int = 2,
) -> dict[str, Any]:
    """bench/spark_overheat.py with ``--available-now`` on the backlog ``topic``: like bench_spark().

    Each run reads the whole topic with a fresh checkpoint into the same alerts topic, so every distinct
    transition is written ``runs`` times; ``alerts`` summarises the distinct ones (see opened_summary()).
    """
    venv = bench_venv(settings)
    alerts = f"mw.bench.spark.alerts.{tag}"
    create_topic(settings, alerts, 1, append_time=True)
    result = tmp / f"spark-overheat-{tag}.json"
    cmd = [*spark_overheat_cmd(settings, venv, topic, alerts, tmp / f"spark-overheat-ckpt-{tag}"), "--available-now",
           "--runs", str(runs), "--result", str(result)]
    sampler.phase = f"pyspark overheat backlog {tag}"
    data = run_spark_backlog(cmd, tmp / f"spark-overheat-{tag}.log", result, "PySpark overheat job", env=spark_env())
    data["alerts"] = opened_summary(read_alerts(settings, alerts))
    data.update(spark_end_to_end(settings, alerts, data))
    return data


@contextlib.contextmanager
def spark_overheat_job(settings: Settings, readings: str, alerts: str, tag: str) -> Iterator[dict[str, Any]]:
    """bench/spark_overheat.py, continuous (default trigger: each micro-batch starts when the previous ends)."""
    venv = bench_venv(settings)
    work = Path(tempfile.mkdtemp(prefix=f"mw-spark-{tag}-"))
    ready = work / "ready"
    cmd = [*spark_overheat_cmd(settings, venv, readings, alerts, work / "checkpoint"), "--ready", str(ready)]
    info: dict[str, Any] = {"engine": "pyspark", "trigger": "default (micro-batch as soon as the previous ends)"}
    log = work / "spark.log"  # kept (with its PROGRESS lines per micro-batch); the checkpoint is removed
    info["log"] = str(log)
    fh = log.open("w")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,  # noqa: S603
                            env=spark_env())
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.wait(0.5):
            info["peak_rss"] = max(info.get("peak_rss", 0), tree_rss(proc.pid))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    try:
        # The query's first micro-batch has completed (session, planning, Python workers up) before the clock.
        t0 = time.monotonic()
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() - t0 > 300:
                msg = f"PySpark overheat job did not start (exit {proc.poll()}): {log.read_text()[-2000:]}"
                raise RuntimeError(msg)
            time.sleep(0.2)
        info["start_s"] = time.monotonic() - t0
        yield info
        if proc.poll() is not None:
            msg = f"PySpark overheat job died (exit {proc.returncode}): {log.read_text()[-2000:]}"
            raise RuntimeError(msg)
    finally:
        stop.set()
        sampler.join(2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)
        fh.close()
        shutil.rmtree(work / "checkpoint", ignore_errors=True)
        batches = [json.loads(ln.split(" ", 1)[1]) for ln in log.read_text().splitlines()
                   if ln.startswith("PROGRESS ")]
        info["micro_batches"] = len(batches)
        info["batch_ms"] = sorted(b["ms"] for b in batches if b["ms"] is not None)
