"""Our Flink jobs under the benchmark: submitted on a backlog and timed from submission to the last output record the
broker appended (the clock the PySpark twins are timed by), with the source-only rate (Flink REST metrics) as a
secondary figure; both jobs together as deployed, or started for the latency harness."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from bench.common import REPO
from bench.kafka_data import create_topic, wait_output_done
from bench.measure import RssSampler, cpu_use
from machinewatch import jobs
from machinewatch.config import Settings

# The limit row's job (bench/flink_passthrough.py): submitted like ours, registered only for its submission
# (the registry is what `machinewatch jobs` lists).
PASSTHROUGH = "bench-passthrough"


def no_rules(tmp: Path) -> list[str]:
    """The window job's arguments for a run without threshold rules (an empty rules file in ``tmp``)."""
    path = tmp / "no_rules.toml"
    path.write_text("# no threshold rules: a benchmark run of the window job without them\n")
    return ["--rules", str(path)]


def submit(settings: Settings, job: str, args: list[str]) -> str:
    if job != PASSTHROUGH:
        return jobs.submit(settings, job, args)
    jobs.JOBS[PASSTHROUGH] = REPO / "bench" / "flink_passthrough.py"
    try:
        return jobs.submit(settings, job, args)
    finally:
        del jobs.JOBS[PASSTHROUGH]


def source_count(settings: Settings, job_id: str) -> int:
    """Records every Kafka source of the job has emitted so far (sum over subtasks, least over sources), from Flink
    REST metrics.

    Each source of our jobs reads the one input topic: the window and device-alerts jobs read it twice, parsed and
    as raw bytes for the dead letters (``readings_raw``). The job has read a record once all its sources have: a sum
    over the sources counted each record twice and called a job done while its main source had read half the
    backlog (the raw reader runs ahead).
    """
    detail = jobs.job_detail(settings, job_id)
    totals = []
    for vertex in detail.get("vertices", []):
        if not vertex["name"].startswith("Source"):
            continue
        base = f"{settings.flink_rest}/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
        ids = [m["id"] for m in requests.get(base, timeout=10).json()]
        wanted = [i for i in ids if i.startswith("Source") and i.endswith(".numRecordsOut")]
        if not wanted:
            totals.append(0)  # no metric yet: this source has read nothing that counts
            continue
        values = requests.get(base, params={"get": wanted[0], "agg": "sum"}, timeout=10).json()
        totals.append(int(float(values[0].get("sum", 0))) if values else 0)
    return min(totals, default=0)


def run_job_on_backlog(
    settings: Settings, job: str, topic: str, expected: int, tag: str, sampler: RssSampler, timeout: float = 900,
    max_read_s: float | None = None, extra_args: list[str] | None = None,
) -> dict[str, Any]:
    """Submit ``job`` on the backlog ``topic`` with a fresh group; time until its source has read ``expected``
    (source-only) and, once it has, until its last output record is in Kafka (end to end: submission to the
    broker's append time of the last record on its output topics, which then stay quiet for 5 s).

    With ``max_read_s`` a slow job is stopped after reading for that long and its rate so far is reported (no end
    to end figure: it never finished).
    """
    sampler.phase = f"{job} backlog {tag}"
    args = ["--readings-topic", topic, "--alerts-topic", f"mw.bench.alerts.{tag}", "--group-id",
            f"bench-{tag}-{time.time_ns()}", "--job-name", f"bench-{job}-{tag}"]
    if job == PASSTHROUGH:  # no output topic: a blackhole sink, timed by its source alone
        args = args[:2] + args[4:]
    args += extra_args or []
    if job == "window-aggregates":
        args += ["--aggregates-topic", f"mw.bench.aggregates.{tag}", "--late-topic", f"mw.bench.late.{tag}"]
    outputs = [value for flag, value in zip(args[::2], args[1::2], strict=True)
               if flag.endswith("-topic") and value != topic]
    for name in outputs:  # the broker does not auto-create topics
        create_topic(settings, name, settings.kafka_partitions, append_time=True)
    t_submit = time.monotonic()
    t_submit_epoch = time.time()
    job_id = submit(settings, job, args)
    try:
        deadline = time.monotonic() + timeout
        first: tuple[float, int] | None = None
        zero_t = t_submit  # the last sample at which the source had read nothing
        samples: list[tuple[float, int]] = []
        count = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException, KeyError, ValueError):
                count = source_count(settings, job_id)
            fail_if_restarting(settings, job_id)
            now = time.monotonic()
            samples.append((now - t_submit, count))
            if count > 0 and first is None:
                first = (now, count)
                cpu0 = sampler.cpu_seconds()
            elif first is None:
                zero_t = now
            if count >= expected or (first is not None and max_read_s and now - first[0] >= max_read_s):
                break
            time.sleep(0.5)
        done = time.monotonic()
        if count < expected and not (first is not None and max_read_s and done - first[0] >= max_read_s):
            msg = f"{job} read only {count} of {expected} in {timeout:.0f}s"
            raise RuntimeError(msg)
        assert first is not None
        bound = count == first[1]
        if not bound:
            steady = (count - first[1]) / max(done - first[0], 1e-6)
            cpu: dict[str, Any] | None = cpu_use(cpu0, sampler.cpu_seconds(), max(done - first[0], 1e-6),
                                                 count - first[1])
        else:
            # Everything was read between two samples (a small backlog): the rate is at least count / that interval,
            # and there is no interval of reading to put CPU against.
            steady, cpu = count / max(first[0] - zero_t, 1e-6), None
        out = {"job_id": job_id, "events": count, "cpu": cpu, "submit_to_done_s": done - t_submit,
               "first_record_s": first[0] - t_submit, "source_events_per_s": steady,
               "events_per_s_incl_startup": count / (done - t_submit), "complete": count >= expected,
               "samples": samples[::4], "output_topics": outputs, "source_rate_is_lower_bound": bound}
        out.update(end_to_end(settings, outputs, count, t_submit_epoch) if count >= expected and outputs else {})
        # The figure compared: end to end when the job finished, else (stopped early) the source rate so far.
        out["events_per_s"] = out.get("e2e_events_per_s", steady)
        return out
    finally:
        with contextlib.suppress(Exception):
            jobs.cancel(settings, job_id)
        wait_slots_free(settings)


def run_pipeline_on_backlog(settings: Settings, topic: str, expected: int, sampler: RssSampler,
                            timeout: float = 900) -> dict[str, Any]:
    """Both jobs (window-aggregates and sustained-overheat) at once on ``topic``, one slot each, as deployed.

    events/s = backlog size / time from the first record either job read until both have read it all.
    """
    sampler.phase = "pipeline backlog"
    tag = f"pipe{time.time_ns() % 10**8}"
    out_topics = {"--alerts-topic": f"mw.bench.alerts.{tag}", "--aggregates-topic": f"mw.bench.aggregates.{tag}",
                  "--late-topic": f"mw.bench.late.{tag}"}
    for name in out_topics.values():
        create_topic(settings, name, settings.kafka_partitions, append_time=True)
    ids: dict[str, str] = {}
    failed: list[BaseException] = []

    def submit(job: str) -> None:
        args = ["--readings-topic", topic, "--group-id", f"bench-{tag}-{job}", "--job-name", f"bench-{tag}-{job}",
                "--alerts-topic", out_topics["--alerts-topic"]]
        if job == "window-aggregates":
            args += ["--aggregates-topic", out_topics["--aggregates-topic"], "--late-topic", out_topics["--late-topic"]]
        try:
            ids[job] = jobs.submit(settings, job, args)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the polling loop
            failed.append(exc)

    # Submitted side by side and polled from the start: `flink run` takes seconds, and the first job would
    # otherwise read much of the backlog before the clock starts.
    t_submit = time.monotonic()
    t_submit_epoch = time.time()
    submitters = [threading.Thread(target=submit, args=(job,), daemon=True)
                  for job in ("window-aggregates", "sustained-overheat")]
    for t in submitters:
        t.start()
    try:
        first: float | None = None
        done: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(done) < len(submitters):
            if failed:
                raise failed[0]
            for job, job_id in list(ids.items()):
                fail_if_restarting(settings, job_id)
                if job in done:
                    continue
                with contextlib.suppress(requests.RequestException, KeyError, ValueError):
                    count = source_count(settings, job_id)
                    if count > 0 and first is None:
                        first = time.monotonic()
                        cpu0 = sampler.cpu_seconds()
                    if count >= expected:
                        done[job] = time.monotonic()
            time.sleep(0.5)
        if len(done) < len(submitters) or first is None:
            msg = f"the pipeline did not read {expected} events in {timeout:.0f}s (done: {sorted(done)})"
            raise RuntimeError(msg)
        end = max(done.values())
        cpu = cpu_use(cpu0, sampler.cpu_seconds(), max(end - first, 1e-6), expected)
        out = {"events": expected, "cpu": cpu, "source_events_per_s": expected / max(end - first, 1e-6),
               "submit_to_done_s": end - t_submit,
               "events_per_s_incl_startup": expected / (end - t_submit),
               "per_job_s": {job: t - first for job, t in done.items()}, "output_topics": list(out_topics.values())}
        out.update(end_to_end(settings, list(out_topics.values()), expected, t_submit_epoch))
        out["events_per_s"] = out["e2e_events_per_s"]
        return out
    finally:
        for t in submitters:
            t.join(120)
        for job_id in ids.values():
            with contextlib.suppress(Exception):
                jobs.cancel(settings, job_id)
        wait_slots_free(settings)


def end_to_end(settings: Settings, outputs: list[str], events: int, t_submit_epoch: float) -> dict[str, Any]:
    """Submission to the last output record in Kafka (broker append time), once the outputs have gone quiet."""
    tail = wait_output_done(settings, outputs)
    if tail["last_ms"] is None:
        msg = f"no output record on {outputs}: nothing to time end to end"
        raise RuntimeError(msg)
    seconds = tail["last_ms"] / 1000 - t_submit_epoch
    return {"e2e_s": seconds, "e2e_events_per_s": events / seconds, "output_records": tail["records"]}


def fail_if_restarting(settings: Settings, job_id: str) -> None:
    """A failing job restarts forever (exponential-delay strategy): stop waiting and say why."""
    with contextlib.suppress(requests.RequestException, ValueError):
        state = jobs.job_detail(settings, job_id).get("state")
        if state in {"RESTARTING", "FAILED", "FAILING"}:
            exc = requests.get(f"{settings.flink_rest}/jobs/{job_id}/exceptions", timeout=10).json()
            entries = exc.get("exceptionHistory", {}).get("entries", [])
            cause = entries[0].get("stacktrace", "")[:600] if entries else "?"
            msg = f"job {job_id} is {state}: {cause}"
            raise RuntimeError(msg)


def wait_slots_free(settings: Settings, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException, ValueError):
            if not [j for j in jobs.list_jobs(settings) if j.get("state") in {"RUNNING", "CANCELLING", "CREATED",
                                                                                "INITIALIZING", "RESTARTING"}]:
                return
        time.sleep(0.5)


def wait_running(settings: Settings, job_id: str, timeout: float = 180) -> None:
    """Until the job and every one of its vertices run (a job that restarts meanwhile fails the phase)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detail = jobs.job_detail(settings, job_id)
        if detail.get("state") == "RUNNING" and all(v.get("status") == "RUNNING" for v in detail["vertices"]):
            return
        fail_if_restarting(settings, job_id)
        time.sleep(0.5)
    msg = f"job {job_id} not running after {timeout:.0f} s"
    raise TimeoutError(msg)


@contextlib.contextmanager
def flink_overheat_job(settings: Settings, readings: str, alerts: str, tag: str) -> Iterator[dict[str, Any]]:
    """Our sustained-overheat Flink job."""
    job_id = jobs.submit(settings, "sustained-overheat", ["--readings-topic", readings, "--alerts-topic", alerts,
                                                           "--group-id", f"bench-{tag}", "--job-name", f"bench-{tag}"])
    try:
        wait_running(settings, job_id)  # before the clock starts: startup is not alert latency
        yield {"engine": "flink", "job_id": job_id}
    finally:
        with contextlib.suppress(Exception):
            jobs.cancel(settings, job_id)
        wait_slots_free(settings)
