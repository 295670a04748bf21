"""Builds ``machinewatch.json``, the InfluxDB template (dashboard, variables, the roll-up buckets).

Cells are made from the Flux library's own files: the inputs a file takes from
influxdb-client ``params`` become assignments at the top bound to the UI's variables (v.timeRangeStart,
v.region ...), so the InfluxDB UI and the Streamlit app run the same queries.
Run ``python -m dashboards.influxdb.build`` after changing a Flux file; a test checks the file is current.
Apply it with ``influx apply -f dashboards/influxdb/machinewatch.json`` (operator token). The buckets are the
roll-up buckets ``stack up`` makes (``machinewatch.rollups``), so an InfluxDB set up either way is the same; the
window job fills them (no InfluxDB task).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashboards.streamlit.data import CHART_POINTS
from machinewatch import names, rollups
from machinewatch.config import Settings

HERE = Path(__file__).resolve().parent
FLUX_DIR = HERE.parent / "flux"
TEMPLATE = HERE / "machinewatch.json"
API = "influxdata.com/v2alpha1"

# Inputs every cell gets; "all" in a variable means no filter ("" to the query).
COMMON = {
    "bucket": f'"{names.BUCKET_AGGREGATES}"',
    "start": "date.truncate(t: v.timeRangeStart, unit: 1s)",
    "stop": "date.truncate(t: v.timeRangeStop, unit: 1s)",
    "window": '"10s"',
    "devicePrefix": '""',
    "region": 'if v.region == "all" then "" else v.region',
    "site": 'if v.site == "all" then "" else v.site',
}


@dataclass(frozen=True)
class Cell:
    title: str
    flux: str  # library file stem
    kind: str  # Xy or Table
    pos: tuple[int, int, int, int]  # x, y, width, height on the 12-column grid
    inputs: dict[str, str] = field(default_factory=dict)
    suffix: str = ""  # Xy draws one line per table: regroup by the series column
    y_col: str = "_value"


CELLS = (
    Cell("Metric per region", "chart_series", "Xy", (0, 0, 12, 4),
         {"metric": "v.metric", "by": '"region"', "every": "1m", "devices": "[]"},
         '    |> group(columns: ["series"])', "value"),
    Cell("Events/s per source", "events_per_source", "Xy", (0, 4, 6, 4), {"every": "1m"},
         '    |> group(columns: ["source"])', "per_second"),
    Cell("Fleet averages", "fleet_summary", "Table", (6, 4, 3, 4),
         {"metrics": '["temperature", "cpu_pct", "load", "power", "humidity"]'}),
    Cell("Power now (latest window, kW)", "latest_per_device", "Table", (9, 4, 3, 4), {"metrics": '["power"]'}),
    Cell("Hottest devices", "hottest_devices", "Table", (0, 8, 4, 4), {"metric": "v.metric", "n": "10"}),
    Cell("Devices per temperature bin (cumulative)", "temperature_histogram", "Table", (4, 8, 4, 4),
         {"metric": "v.metric", "binStart": "0.0", "binWidth": "5.0", "binCount": "20"}),
    # The roll-ups over the ranges the app reads them for (its charts' rule: at least CHART_POINTS minutes).
    # Each device's roll-up rows (not the fleet rows, which hold no device ids): the table shows devices per source.
    Cell("Data volume per source", "data_volume", "Table", (8, 8, 4, 4),
         {**{f"rollup{r.label}": f'if int(v: stop) - int(v: start) >= int(v: {CHART_POINTS}m) then "{r.bucket}" else ""'
             for r in rollups.ROLLUPS}, "measurement": f'"{names.MEASUREMENT_WINDOW}"'}),
    Cell("Alerts: latest state", "alert_states", "Table", (0, 12, 6, 4),
         {"bucket": f'"{names.BUCKET_ALERTS}"', "start": "-7d", "stop": "now()"}),
    Cell("Time in alarm per device", "time_in_alarm", "Table", (6, 12, 3, 4),
         {"bucket": f'"{names.BUCKET_ALERTS}"'}),
    Cell("Threshold rules that fired", "threshold_alerts", "Table", (9, 12, 3, 4),
         {"bucket": f'"{names.BUCKET_ALERTS}"'}),
    Cell("Late events per source", "late_events_per_source", "Table", (0, 16, 6, 3)),
)


def _inputs_of(text: str) -> set[str]:
    """The option names a library file reads (the identifiers COMMON and the cells may bind)."""
    known = {*COMMON, "metric", "metrics", "by", "every", "devices", "n", "binStart", "binWidth", "binCount",
             "measurement", *(f"rollup{r.label}" for r in rollups.ROLLUPS)}
    header = "\n".join(line for line in text.splitlines() if line.startswith("//"))
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    return {name for name in known if name in header and _uses(body, name)}


def _uses(body: str, name: str) -> bool:
    import re

    return re.search(rf"(?<![\w.\"]){name}(?![\w\"])(?!\s*:)", body) is not None


def _assemble(text: str, options: dict[str, str], extra_imports: tuple[str, ...] = ()) -> str:
    lines = text.splitlines()
    lead = next((i for i, ln in enumerate(lines) if not ln.startswith("//")), len(lines))
    header = lines[:lead]  # the file's header comment stays on top; comments in the body stay in place
    imports = [ln for ln in lines[lead:] if ln.startswith("import ")]
    body = [ln for ln in lines[lead:] if not ln.startswith("import ")]
    for imp in extra_imports:
        if imp not in imports:
            imports.append(imp)
    opts = [f"{name} = {value}" for name, value in options.items()]
    return "\n".join([*header, *imports, "", *opts, *body]).rstrip() + "\n"


def cell_query(cell: Cell) -> str:
    text = (FLUX_DIR / f"{cell.flux}.flux").read_text()
    wanted = _inputs_of(text)
    options = {k: v for k, v in {**COMMON, **cell.inputs}.items() if k in wanted}
    missing = wanted - set(options)
    if missing:
        msg = f"cell '{cell.title}': no value for input(s) {sorted(missing)} of {cell.flux}.flux"
        raise ValueError(msg)
    query = _assemble(text, options, ('import "date"',))
    return query + (cell.suffix + "\n" if cell.suffix else "")


def _retention_s(bucket: str) -> int:
    """The bucket's default retention (the Settings field's default, not this machine's environment)."""
    field_name = {names.BUCKET_ROLLUP_1M: "influx_rollup_1m_retention_s",
                  names.BUCKET_ROLLUP_1H: "influx_rollup_1h_retention_s"}[bucket]
    return int(Settings.model_fields[field_name].default)


def _rollup_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for r in rollups.ROLLUPS:
        retention = _retention_s(r.bucket)
        rules = [{"type": "expire", "everySeconds": retention}] if retention else []  # 0 = kept forever
        objects.append({"apiVersion": API, "kind": "Bucket", "metadata": {"name": f"mw-{r.bucket.replace('_', '-')}"},
                        "spec": {"name": r.bucket, "retentionRules": rules,
                                 "description": f"{r.label} roll-up of window_agg, made by the window job "
                                                "(machinewatch.rollups)"}})
    return objects


def _chart(cell: Cell) -> dict[str, Any]:
    x, y, w, h = cell.pos
    chart: dict[str, Any] = {"kind": cell.kind, "name": cell.title, "xPos": x, "yPos": y, "width": w, "height": h,
                             "queries": [{"query": cell_query(cell)}]}
    if cell.kind == "Xy":
        chart.update({"geom": "line", "position": "overlaid", "xCol": "_time", "yCol": cell.y_col,
                      "axes": [{"name": "x", "base": "10", "scale": "linear"},
                               {"name": "y", "base": "10", "scale": "linear"}],
                      "colors": [{"name": "Nineteen Eighty Four", "type": "scale", "hex": "#31C0F6"},
                                 {"name": "Nineteen Eighty Four", "type": "scale", "hex": "#A500A5"},
                                 {"name": "Nineteen Eighty Four", "type": "scale", "hex": "#FF7E27"}]})
    else:
        chart.update({"colors": [{"name": "base", "type": "text", "hex": "#00C9FF"}],
                      "tableOptions": {"verticalTimeAxis": True}})
    return chart


def _tag_variable(name: str, tag: str, with_all: bool) -> dict[str, Any]:
    values = f'schema.tagValues(bucket: "{names.BUCKET_AGGREGATES}", tag: "{tag}")'
    query = ('import "array"\nimport "influxdata/influxdb/schema"\n\n'
             + (f'union(tables: [array.from(rows: [{{_value: "all"}}]), {values}])' if with_all else values)
             + '\n    |> sort()\n')
    return {"apiVersion": API, "kind": "Variable", "metadata": {"name": f"mw-var-{name}"},
            "spec": {"name": name, "type": "query", "language": "flux", "query": query,
                     "selected": ["all" if with_all else "temperature"]}}


def template() -> list[dict[str, Any]]:
    return [
        *_rollup_objects(),
        _tag_variable("region", "region", True),
        _tag_variable("site", "site", True),
        _tag_variable("metric", "metric", False),
        {"apiVersion": API, "kind": "Dashboard", "metadata": {"name": "mw-dashboard"},
         "spec": {"name": "machinewatch", "description": "window aggregates, alerts and data volume "
                  "(queries from dashboards/flux/)", "charts": [_chart(c) for c in CELLS]}},
    ]


def main() -> None:
    TEMPLATE.write_text(json.dumps(template(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {TEMPLATE}")


if __name__ == "__main__":
    main()
