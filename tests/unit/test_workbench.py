"""The Flux workbench's logic: presets from the library's headers, inputs, Flux error positions, charts, CSV."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from dashboards.streamlit import workbench
from machinewatch import names
from machinewatch.query import server_message

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _used_inputs(text: str) -> set[str]:
    """The known input names a query reads as values (not r.<column>, not an argument label, not in strings)."""
    code = "\n".join(line.split("//")[0] for line in text.splitlines())
    code = re.sub(r'"[^"]*"', '""', code)
    return {n for n in workbench.INPUT_KINDS if re.search(rf"(?<![.\w]){n}\b(?!\s*:)", code)}


def test_every_library_file_is_a_preset_whose_documented_inputs_are_the_ones_it_reads() -> None:
    library = workbench.presets()
    assert len(library) == len(list(workbench.FLUX_DIR.glob("*.flux"))) >= 10
    for name, preset in library.items():
        documented = [i.name for i in preset.inputs]
        assert documented, name
        # a name the table does not know would be a string field: every library input must be known
        assert set(documented) <= set(workbench.INPUT_KINDS), (name, set(documented) - set(workbench.INPUT_KINDS))
        assert set(documented) == _used_inputs(preset.text), name
        assert preset.title.endswith("?") or preset.title, name


def test_documented_inputs_reads_names_around_notes_commas_and_and() -> None:
    doc = ('What?\nInputs: bucket (string), start and stop (times), metric (string, e.g. "temperature"),\n'
           '  window ("10s" or "30s@10s"), devicePrefix, site ("" = all), n (int, how many devices).\n'
           'Rows: device_id, peak_avg (float).')
    assert workbench.documented_inputs(doc) == ["bucket", "start", "stop", "metric", "window", "devicePrefix",
                                                "site", "n"]
    assert workbench.documented_inputs("no inputs here") == []


def test_presets_know_their_kinds_and_defaults() -> None:
    library = workbench.presets()
    hottest = {i.name: i for i in library["hottest_devices"].inputs}
    assert hottest["n"].kind == "int" and hottest["start"].kind == "time"
    assert hottest["bucket"].default == names.BUCKET_AGGREGATES
    assert {i.name: i for i in library["alert_states"].inputs}["bucket"].default == names.BUCKET_ALERTS
    assert {i.name: i for i in library["chart_series"].inputs}["devices"].kind == "strings"
    assert {i.name: i for i in library["ingest_rate"].inputs}["span"].kind == "duration"
    # the fleet presets read the roll-up buckets' fleet rows, tagged 1m / 1h: the windows' defaults find nothing
    for name in ("fleet_series", "fleet_events_per_source"):
        fleet = {i.name: i for i in library[name].inputs}
        assert (fleet["bucket"].default, fleet["window"].default) == (names.BUCKET_ROLLUP_1M, "1m")


@pytest.mark.parametrize(("text", "expected"), [
    ("10s", timedelta(seconds=10)), ("1h30m", timedelta(minutes=90)), ("-5m", timedelta(minutes=-5)),
    ("7d", timedelta(days=7)), ("250ms", timedelta(milliseconds=250)), ("2w", timedelta(weeks=2)),
])
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert workbench.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "1x", "h", "1h 30m", "1.5h"])
def test_parse_duration_refuses_what_flux_would(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        workbench.parse_duration(text)


def test_parse_time() -> None:
    assert workbench.parse_time("now", NOW) == NOW
    assert workbench.parse_time("-1h", NOW) == NOW - timedelta(hours=1)
    assert workbench.parse_time("+1m", NOW) == NOW + timedelta(minutes=1)
    assert workbench.parse_time("2026-01-31T12:00:00Z", NOW) == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert workbench.parse_time("2026-01-31T12:00:00", NOW).tzinfo is UTC  # no zone: UTC
    with pytest.raises(ValueError, match="not a time"):
        workbench.parse_time("yesterday", NOW)


def test_option_values_convert_each_kind_and_name_every_bad_input() -> None:
    inputs = workbench.presets()["hottest_devices"].inputs
    given: dict[str, object] = {"start": "-2h", "stop": "now", "n": 5.0, "metric": "load", "devicePrefix": "rack-"}
    values = workbench.option_values(inputs, given, NOW)
    assert values["start"] == NOW - timedelta(hours=2) and values["stop"] == NOW
    assert values["n"] == 5 and isinstance(values["n"], int)
    assert values["bucket"] == names.BUCKET_AGGREGATES  # not given: the default
    assert (values["metric"], values["devicePrefix"], values["site"]) == ("load", "rack-", "")
    series = workbench.presets()["chart_series"].inputs
    assert workbench.option_values(series, {"devices": "a, b,", "every": "5m"}, NOW)["devices"] == ["a", "b"]
    assert workbench.option_values(series, {"devices": ""}, NOW)["devices"] == []
    with pytest.raises(workbench.InputError) as info:
        workbench.option_values(series, {"start": "soon", "every": "5 minutes"}, NOW)
    assert "input start (time)" in str(info.value) and "input every (duration)" in str(info.value)


# --- Flux errors (messages as InfluxDB 2.7 words them) ----------------------------------------------


def test_flux_errors_read_line_and_column() -> None:
    [err] = workbench.flux_errors("compilation failed: error @3:5-3:8: undefined identifier foo")
    assert (err.line, err.column, err.end_line, err.end_column) == (3, 5, 3, 8)
    assert err.message == "undefined identifier foo"
    assert err.where() == "line 3, column 5"


def test_flux_errors_split_several_positions() -> None:
    errors = workbench.flux_errors("error @1:14-1:15: expected RPAREN, got EOF; error @2:1-2:4: invalid statement")
    assert [(e.line, e.column, e.message) for e in errors] == [(1, 14, "expected RPAREN, got EOF"),
                                                               (2, 1, "invalid statement")]


def test_flux_errors_of_a_runtime_error_and_of_one_without_position() -> None:
    [err] = workbench.flux_errors("runtime error @5:8-5:40: range: cannot use duration as time")
    assert (err.line, err.column, err.message) == (5, 8, "range: cannot use duration as time")
    [plain] = workbench.flux_errors("failed to initialize execute state: could not find bucket \"nope\"")
    assert plain.line is None and plain.where() == "" and "could not find bucket" in plain.message


def test_excerpt_points_at_the_column() -> None:
    flux = 'from(bucket: "a")\n    |> range(start: -1h)\n    |> fliter(fn: (r) => true)'
    shown = workbench.excerpt(flux, workbench.FluxError("undefined identifier fliter", 3, 8, 3, 14))
    assert shown.splitlines() == ["   3 |     |> fliter(fn: (r) => true)", "     |        ^^^^^^"]
    assert workbench.excerpt(flux, workbench.FluxError("x", 9, 1)) == ""  # a line the text does not have
    assert workbench.excerpt(flux, workbench.FluxError("x")) == ""


def test_server_message_is_influxdbs_own_words() -> None:
    body = b'{"code":"invalid","message":"compilation failed: error @1:1-1:4: undefined identifier foo"}'
    assert server_message(body) == "compilation failed: error @1:1-1:4: undefined identifier foo"
    assert server_message("not json") == "not json"
    assert server_message(None) == ""


# --- results -----------------------------------------------------------------------------------------


def test_choose_chart_draws_series_over_time() -> None:
    t = pd.date_range("2026-11-30", periods=3, freq="1min", tz="UTC")
    frame = pd.DataFrame({"_time": list(t) * 2, "series": ["a"] * 3 + ["b"] * 3, "value": range(6)})
    choice = workbench.choose_chart(frame)
    assert choice == workbench.ChartChoice("_time", "value", "series", "line")
    spec = workbench.chart(frame, choice).to_dict()  # a valid Vega-Lite spec (altair validates it)
    assert spec["mark"]["type"] == "line" and spec["encoding"]["color"]["field"] == "series"


def test_choose_chart_draws_bars_per_label_or_per_number() -> None:
    hottest = pd.DataFrame({"device_id": ["a", "b"], "region": ["in", "in"], "peak_avg": [70.0, 60.0],
                            "at": pd.to_datetime(["2026-11-30", "2026-11-30"], utc=True)})
    assert workbench.choose_chart(hottest) == workbench.ChartChoice("device_id", "peak_avg", None, "bar")
    histogram = pd.DataFrame({"le": [10.0, 20.0, float("inf")], "devices": [1.0, 3.0, 3.0]})
    assert workbench.choose_chart(histogram) == workbench.ChartChoice("le", "devices", None, "bar")
    assert workbench.choose_chart(pd.DataFrame({"alert_id": ["x"], "state": ["opened"]})) is None
    assert workbench.choose_chart(pd.DataFrame()) is None


def test_to_csv_keeps_every_row_with_utc_times() -> None:
    frame = pd.DataFrame({"_time": pd.to_datetime(["2026-11-30T12:00:00Z"] * 3, utc=True), "v": [1, 2, 3]})
    lines = workbench.to_csv(frame).decode().splitlines()
    assert lines == ["_time,v", "2026-11-30T12:00:00.000000Z,1", "2026-11-30T12:00:00.000000Z,2",
                     "2026-11-30T12:00:00.000000Z,3"]
