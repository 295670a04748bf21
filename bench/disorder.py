"""What a watermark delay costs for disordered input: late readings of the window job at 0.5 / 1 / 2 s of disorder.

A live load (not a backlog: Flink emits watermarks every 200 ms of processing time, so only a steady arrival
rate gives the lateness a deployment sees) of ``rate`` readings/s from ``devices`` devices for ``seconds``;
each reading is stamped with its publish time minus a uniform 0..``disorder`` s, so arrival order is event time
up to that much disorder. The window job runs on its own topics with the watermark delay (and allowed lateness)
under test; late readings are the records on its late-events topic (one per reading a window dropped).

Its own check (so the figure can be trusted): with no allowed lateness every reading is either counted by a 10 s
window or late, never both and never neither: sum of the window counts of the windows that ended before the load
stopped + late == readings stamped before that (a closing reading far ahead makes every such window fire).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from typing import Any

from bench.flink_runs import wait_running, wait_slots_free
from bench.kafka_data import create_topic, produce, producer, read_alerts, reading_json, wait_output_done
from machinewatch import jobs
from machinewatch.config import Settings


def bench_disorder(settings: Settings, disorder_s: float, rate: int = 2_000, devices: int = 200, seconds: int = 30,
                   seed: int = 11) -> dict[str, Any]:
    """One run: the window job with ``settings``' watermark delay and allowed lateness on a live load whose
    event times are up to ``disorder_s`` behind arrival. Returns readings, late readings and their share."""
    tag = f"dis{time.time_ns() % 10**8}"
    topics = {name: f"mw.bench.{name}.{tag}" for name in ("readings", "aggregates", "late", "alerts")}
    create_topic(settings, topics["readings"], settings.kafka_partitions)
    for name in ("aggregates", "late", "alerts"):  # broker-stamped, so wait_output_done can tell when they settle
        create_topic(settings, topics[name], 1, append_time=True)
    job_id = jobs.submit(settings, "window-aggregates", [
        "--readings-topic", topics["readings"], "--aggregates-topic", topics["aggregates"],
        "--late-topic", topics["late"], "--alerts-topic", topics["alerts"], "--group-id", f"bench-{tag}",
        "--job-name", f"bench-disorder-{tag}"])
    rng = random.Random(seed)
    try:
        wait_running(settings, job_id)
        prod = producer(settings, linger_ms=5)
        sent, interval = 0, 1.0 / rate
        start = time.monotonic()
        stamped: list[int] = []
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                ts = int(time.time() * 1000) - int(rng.uniform(0, disorder_s) * 1000)
                device = f"dis-{sent % devices:05d}"
                produce(prod, topics["readings"], device.encode(), reading_json(device, 20.0, ts))
                stamped.append(ts)
                sent += 1
            prod.poll(0)
            time.sleep(interval)
        stopped_ms = int(time.time() * 1000)
        # The closing reading: a minute ahead, so the watermark passes every window that ended before the stop.
        produce(prod, topics["readings"], b"dis-closer", reading_json("dis-closer", 20.0, stopped_ms + 60_000))
        prod.flush(60)
        wait_output_done(settings, [topics["aggregates"], topics["late"]], quiet_s=8)
        windows = [w for w in read_alerts(settings, topics["aggregates"])
                   if w.get("window_ms") == w.get("slide_ms", 10_000) == 10_000]
        late = read_alerts(settings, topics["late"])
    finally:
        with contextlib.suppress(Exception):
            jobs.cancel(settings, job_id)
        wait_slots_free(settings)
    # Readings whose 10 s window ended before the stop (so it has fired); the later ones may still be open.
    checked_until = stopped_ms - 10_000
    closed = [ts for ts in stamped if _window_end(ts) <= checked_until]
    out = {"disorder_s": disorder_s, "watermark_delay_ms": settings.watermark_delay_ms,
           "allowed_lateness_s": settings.allowed_lateness_s, "rate": rate, "seconds": seconds, "readings": sent,
           "late": len(late), "late_share": len(late) / sent if sent else 0.0, "checked_readings": len(closed)}
    if not settings.allowed_lateness_s:
        counted = sum(w["count"] for w in windows if w["window_end_ms"] <= checked_until
                      and w["device_id"] != "dis-closer")
        late_closed = sum(1 for d in late if _window_end(int(d["ts"])) <= checked_until)
        out.update(counted=counted, late_in_checked=late_closed,
                   conserved=counted + late_closed == len(closed))
    return out


def _window_end(ts: int) -> int:
    """End of the 10 s tumbling window a reading stamped ``ts`` (ms) belongs to."""
    return ts - ts % 10_000 + 10_000


def main() -> None:  # pragma: no cover - a manual entry point; ./run bench runs it as the 'disorder' phase
    import argparse

    from machinewatch.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--disorder", type=float, default=1.0)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(bench_disorder(load_settings(), args.disorder, seconds=args.seconds), indent=1))


if __name__ == "__main__":
    main()
