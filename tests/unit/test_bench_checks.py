"""The benchmark's output checks as the phases apply them: a PySpark figure whose outputs differ from ours is
reported as such and compared with nothing, and a latency goal needs 200 alerts."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench import phases
from bench.report import Report, write_results
from machinewatch.config import Settings


def win(device: str, end: int) -> dict[str, Any]:
    return {"device_id": device, "metric": "temperature", "window_ms": 10_000, "slide_ms": 10_000,
            "window_end_ms": end, "avg_value": 50.0, "min_value": 49.0, "max_value": 51.0, "count": 10}


def spark_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spark_docs: list[dict[str, Any]],
              **args: Any) -> phases.Run:
    ours = [win("a", 10_000), win("b", 10_000), {**win("a", 30_000), "window_ms": 30_000}]  # + a sliding one
    topics = {"mw.bench.aggregates.win1": ours, "mw.bench.spark.thr": spark_docs}
    monkeypatch.setattr(phases, "bench_spark", lambda *a: {
        "spark": "4", "runs": [{"rows_in": 10, "wall_s": 1.0}], "events_per_s": 1234.0, "batches": 2,
        "session_s": 3.0, "start_to_end_events_per_s": 2000.0, "peak_rss": 0, "out_topic": "mw.bench.spark.thr",
        "out_since_ms": 0})
    monkeypatch.setattr(phases, "read_alerts", lambda _s, topic, since_ms=None: list(topics[topic]))
    run = phases.Run(settings=Settings(), topic="t", events=10,
                     args=argparse.Namespace(quick=True, **args), latency_seconds=1, sampler=None,  # type: ignore[arg-type]
                     tmp=tmp_path, report=Report())
    run.outputs["window"] = ["mw.bench.alerts.win1", "mw.bench.aggregates.win1", "mw.bench.late.win1"]
    phases.spark(run)
    return run


def test_equal_outputs_give_the_pyspark_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = spark_run(tmp_path, monkeypatch, [win("b", 10_000), win("a", 10_000)])
    assert run.report.raw["pyspark"]["outputs_equal"] is True
    assert run.report.rows[0][:3] == ("0 same work", "10 s tumbling windows: our window job vs PySpark", "same")
    assert run.report.rows[1][2] == "1,234"
    assert run.report.rows[1][3].startswith("outputs checked equal")


def test_different_outputs_are_reported_not_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = spark_run(tmp_path, monkeypatch, [win("a", 10_000)])  # PySpark lacks window b
    assert run.report.raw["pyspark"]["outputs_equal"] is False
    assert run.report.rows[0][2] == "DIFFER"
    assert run.report.rows[1][2:] == ("outputs differ", "not a figure: see the check above")
    # ... and the goal row compares our figure with nothing.
    run.report.raw.update({"machine_before": {"cpu": "c", "ram": "r", "os": "o", "java": "j", "python": "p",
                                              "load": "l"}, "window_job": {"events_per_s": 9_000.0}})
    out = tmp_path / "R.md"
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    write_results(out, run.report, moment, moment, [], 10, argparse.Namespace(devices=1))
    assert "| throughput ≥ 3 × PySpark: window job vs its PySpark twin | n/a | no |" in out.read_text()


def test_the_self_check_row_differs_while_the_real_comparison_stands(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    run = spark_run(tmp_path, monkeypatch, [win("b", 10_000), win("a", 10_000)], perturb_pyspark=True)
    assert [row[2] for row in run.report.rows] == ["DIFFER", "same", "1,234"]
    assert "self-check" in run.report.rows[0][1]
    assert run.report.raw["self_checks_caught"] == [True]
    assert run.report.raw["pyspark"]["outputs_equal"] is True


@pytest.mark.parametrize(("alerts", "tuned", "met"), [
    (10, {}, "no"), (200, {}, "yes"), (200, {"watermark_delay_ms": 2000, "bucket_ms": 1000}, "yes"),
    (200, {"watermark_delay_ms": 200}, "no"), (200, {"bucket_ms": 100}, "no"),
])
def test_a_latency_goal_counts_only_from_200_alerts_with_the_default_settings(
        tmp_path: Path, alerts: int, tuned: dict[str, int], met: str) -> None:
    report = Report()
    report.raw.update({"machine_before": {"cpu": "c", "ram": "r", "os": "o", "java": "j", "python": "p", "load": "l"},
                       "latency": {"kafka_ms": [100] * alerts, "rate_achieved": 20_000.0, **tuned}})
    out = tmp_path / "R.md"
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    write_results(out, report, moment, moment, [], 10, argparse.Namespace(devices=1))
    assert f"| 100 ms (n={alerts}) | {met} |" in out.read_text()


def test_the_overheat_goals_use_the_worse_backlog(tmp_path: Path) -> None:
    report = Report()
    report.raw.update({
        "machine_before": {"cpu": "c", "ram": "r", "os": "o", "java": "j", "python": "p", "load": "l"},
        "raw_consume": [{"msg_per_s": 100_000.0}],
        "overheat_job": {"events_per_s": 60_000.0}, "overheat_job_hover": {"events_per_s": 20_000.0},
        "pyspark_overheat": {"events_per_s": 10_000.0, "outputs_equal": True},
        "pyspark_overheat_hover": {"events_per_s": 8_000.0, "outputs_equal": True},
    })
    out = tmp_path / "R.md"
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    write_results(out, report, moment, moment, [], 10, argparse.Namespace(devices=1))
    text = out.read_text()
    # Usual backlog: 0.60x raw, 6.0x PySpark; hover backlog: 0.20x raw, 2.5x PySpark. The rows give the hover ones.
    assert "| … sustained-overheat job alone (the worse of the usual and the hover backlog) | 0.20× | no |" in text
    twin = "| … sustained-overheat job vs its PySpark twin (the worse of the usual and the hover backlog) |"
    assert f"{twin} 2.50× | no |" in text
    # A hover run whose outputs differed gives no ratio at all, not the kinder usual one.
    report.raw["pyspark_overheat_hover"]["outputs_equal"] = False
    write_results(out, report, moment, moment, [], 10, argparse.Namespace(devices=1))
    assert f"{twin} n/a | no |" in out.read_text()


def test_a_ratio_to_a_percentile_of_no_samples_is_not_a_number_shown_as_one() -> None:
    from bench.report import ratio

    assert ratio(float("nan"), 2.0) == ratio(2.0, float("nan")) == ratio(None, 2.0) == "n/a"
    assert ratio(1.0, 2.0) == "0.50×"


@pytest.mark.parametrize(("counts", "bound"), [([0, 0, 10], True), ([0, 4, 10], False)])
def test_a_backlog_read_between_two_samples_gives_a_lower_bound_not_zero(
        monkeypatch: pytest.MonkeyPatch, counts: list[int], bound: bool) -> None:
    from bench import flink_runs

    clock = iter(float(x) for x in range(1000))
    seen = iter(counts)

    class Sampler:
        phase = ""

        def cpu_seconds(self) -> dict[str, float]:
            return {"flink-taskmanager": 0.0}

    monkeypatch.setattr(flink_runs.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(flink_runs.time, "sleep", lambda _s: None)
    monkeypatch.setattr(flink_runs, "create_topic", lambda *a, **k: None)
    monkeypatch.setattr(flink_runs, "submit", lambda *a: "job")
    monkeypatch.setattr(flink_runs, "source_count", lambda *a: next(seen))
    monkeypatch.setattr(flink_runs, "fail_if_restarting", lambda *a: None)
    monkeypatch.setattr(flink_runs, "wait_slots_free", lambda *a: None)
    monkeypatch.setattr(flink_runs.jobs, "cancel", lambda *a: None)
    monkeypatch.setattr(flink_runs, "end_to_end", lambda *a: {})
    r = flink_runs.run_job_on_backlog(Settings(), "sustained-overheat", "t", 10, "x", Sampler())  # type: ignore[arg-type]
    assert r["source_rate_is_lower_bound"] is bound
    assert r["source_events_per_s"] > 0
    assert (r["cpu"] is None) is bound


def test_a_job_has_read_a_record_once_each_of_its_sources_has(monkeypatch: pytest.MonkeyPatch) -> None:
    # The window job reads its topic twice (parsed, and raw for the dead letters): the raw reader runs ahead, and
    # a sum over the sources called the job done while its main source had read half the backlog.
    from bench import flink_runs

    read = {"v1": 400, "v2": 900}
    monkeypatch.setattr(flink_runs.jobs, "job_detail", lambda *a: {"vertices": [
        {"id": "v1", "name": "Source: readings[1] -> Calc[2]"}, {"id": "v2", "name": "Source: readings_raw[35]"},
        {"id": "v3", "name": "GlobalWindowAggregate[5]"}]})

    class Response:
        def __init__(self, body: Any) -> None:
            self.body = body

        def json(self) -> Any:
            return self.body

    def get(url: str, params: dict[str, str] | None = None, timeout: float = 0) -> Response:
        vertex = url.split("/vertices/")[1].split("/")[0]
        if params is None:
            return Response([{"id": "Source__x.numRecordsOut"}, {"id": "Source__x.numRecordsIn"}])
        return Response([{"id": params["get"], "sum": float(read[vertex])}])

    monkeypatch.setattr(flink_runs.requests, "get", get)
    assert flink_runs.source_count(Settings(), "job") == 400


MACHINE = {"cpu": "c", "ram": "r", "os": "o", "java": "j", "python": "p", "load": "l"}


def results_text(tmp_path: Path, raw: dict[str, Any]) -> str:
    """The RESULTS.md that ``write_results`` makes of these raw numbers (and a made-up machine)."""
    report = Report()
    report.raw.update({"machine_before": MACHINE, **raw})
    out = tmp_path / "R.md"
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    write_results(out, report, moment, moment, [], 10, argparse.Namespace(devices=1))
    return out.read_text()


def test_the_memory_goal_is_the_peak_at_its_load_with_the_whole_runs_peak_beside_it(tmp_path: Path) -> None:
    text = results_text(tmp_path, {
        "rss_peak_by_phase": {"start": "1.10 GiB", "pipeline backlog": "2.65 GiB", "latency 20000/s": "3.65 GiB"},
    })
    assert "| whole stack ≤ 3 GiB peak RSS at that load (both jobs on the backlog) | 2.65 GiB | yes |" in text
    assert "| … peak RSS over the whole run, every phase | 3.65 GiB | no |" in text


def test_the_render_goals_quote_the_floor_and_are_judged_on_the_dashboards_own_render(tmp_path: Path) -> None:
    def render(cold_ms: float) -> dict[str, Any]:
        return {"cold": {"median_ms": cold_ms, "p95_ms": cold_ms}, "warm": {"median_ms": 1.0, "p95_ms": 1.0}}

    raw = {"dashboard_render_100x1h": render(1_900.0), "dashboard_render_1000x24h": render(3_500.0)}
    text = results_text(tmp_path, raw)
    assert "| dashboard cold first render ≤ 2 s (100 devices x 1 h), median | 1,900 ms | yes |" in text
    assert "| dashboard cold first render ≤ 3 s (1,000 devices x 24 h), median | 3,500 ms | no |" in text
    # With a floor measured, each goal row quotes it; the verdict is still the dashboard's own render.
    text = results_text(tmp_path, {**raw, "dashboard_render_floor": render(2_100.0)})
    floor = "(floor, the page's layout with no queries: 2,100 ms)"
    assert f"| dashboard cold first render ≤ 2 s (100 devices x 1 h), median {floor} | 1,900 ms | yes |" in text
    assert f"| dashboard cold first render ≤ 3 s (1,000 devices x 24 h), median {floor} | 3,500 ms | no |" in text
