"""Threshold rules from TOML, checked once at start-up and compiled to Flink SQL.

A rule group names a window shape and the per-device values its rules may use; each rule is a
small boolean expression over those values. Compiling to SQL keeps the per-event work in the JVM.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from machinewatch.schema import KIND_THRESHOLD, THRESHOLD_ALERT

DEFAULT_RULES = Path(__file__).with_name("rules") / "servers.toml"

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<op><=|>=|==|!=|<|>)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<paren>[()]))"
)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class RuleError(ValueError):
    """A rule file that cannot be used; the message names the group, rule and the problem."""


class ValueSpec(BaseModel):
    metric: str
    agg: Literal["avg", "min", "max", "count"]


class Rule(BaseModel):
    label: str = Field(min_length=1, max_length=120)
    severity: Literal["info", "warning", "critical"] = "warning"
    when: str


class RuleGroup(BaseModel):
    name: str
    size_s: int = Field(gt=0)
    slide_s: int = Field(gt=0)
    values: dict[str, ValueSpec]
    rule: list[Rule]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", v):
            msg = f"group name '{v}' must be lowercase letters, digits and '-'"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _check(self) -> RuleGroup:
        if self.size_s % self.slide_s:
            msg = f"group '{self.name}': size_s {self.size_s} must be a multiple of slide_s {self.slide_s}"
            raise ValueError(msg)
        for key in self.values:
            if not _NAME.match(key):
                msg = f"group '{self.name}': value name '{key}' must match {_NAME.pattern}"
                raise ValueError(msg)
        for rule in self.rule:
            compile_condition(rule.when, set(self.values), f"group '{self.name}', rule '{rule.label}'")
        return self


class RuleSet(BaseModel):
    group: list[RuleGroup] = []


def load_rules(path: Path = DEFAULT_RULES) -> RuleSet:
    try:
        data = tomllib.loads(path.read_text())
        return RuleSet.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        msg = f"rules file {path}: {exc}"
        raise RuleError(msg) from exc


def compile_condition(text: str, names: set[str], where: str = "rule") -> str:
    """'cpu > 80 and (mem <= 70 or disk > 5)' -> SQL over columns v_cpu, v_mem, v_disk."""
    out: list[str] = []
    pos = 0
    expect_operand = True
    depth = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            msg = f"{where}: cannot read '{text[pos:]}' in condition '{text}'"
            raise RuleError(msg)
        pos = m.end()
        if m["paren"] == "(":
            out.append("(")
            depth += 1
        elif m["paren"] == ")":
            depth -= 1
            if depth < 0:
                msg = f"{where}: unbalanced ')' in '{text}'"
                raise RuleError(msg)
            out.append(")")
        elif m["word"] in ("and", "or"):
            if expect_operand:
                msg = f"{where}: '{m['word']}' without a comparison before it in '{text}'"
                raise RuleError(msg)
            out.append(m["word"].upper())
            expect_operand = True
        elif m["word"] is not None:
            if m["word"] not in names:
                msg = f"{where}: unknown value '{m['word']}' (known: {', '.join(sorted(names))})"
                raise RuleError(msg)
            op = _TOKEN.match(text, pos)
            num = _TOKEN.match(text, op.end()) if op else None
            if not (op and op["op"] and num and num["num"]):
                msg = f"{where}: expected '<value> <op> <number>' after '{m['word']}' in '{text}'"
                raise RuleError(msg)
            sql_op = {"==": "=", "!=": "<>"}.get(op["op"], op["op"])
            out.append(f"(v_{m['word']} IS NOT NULL AND v_{m['word']} {sql_op} {float(num['num'])!r})")
            pos = num.end()
            expect_operand = False
        else:
            msg = f"{where}: unexpected '{m.group().strip()}' in '{text}'"
            raise RuleError(msg)
    if expect_operand or depth != 0:
        msg = f"{where}: incomplete condition '{text}'"
        raise RuleError(msg)
    return " ".join(out)


def group_sql(group: RuleGroup, source: str = "readings", group_windows: bool = False) -> str:
    """SELECT of one alert row per (device, window) whose values match a rule (first match wins).

    ``group_windows`` uses GROUP BY HOP(...) instead of the HOP table function: only group windows
    can fire again for late readings (the job's allowed lateness).
    """
    aggs = ",\n    ".join(
        f"{spec.agg.upper()}(CASE WHEN metric = '{spec.metric}' THEN `value` END) AS v_{name}"
        for name, spec in group.values.items()
    )
    metrics = ", ".join(sorted({f"'{spec.metric}'" for spec in group.values.values()}))
    label = "\n      ".join(
        f"WHEN {compile_condition(r.when, set(group.values))} THEN '{_quote(r.label)}'" for r in group.rule
    )
    severity = "\n      ".join(
        f"WHEN {compile_condition(r.when, set(group.values))} THEN '{r.severity}'" for r in group.rule
    )
    values_json = ", ".join(f"KEY '{name}' VALUE v_{name}" for name in group.values)
    intervals = f"INTERVAL '{group.slide_s}' SECOND, INTERVAL '{group.size_s}' SECOND"
    if group_windows:
        start, end = f"HOP_START(event_time, {intervals})", f"HOP_END(event_time, {intervals})"
        source_expr, group_by = source, f"HOP(event_time, {intervals}), device_id"
    else:
        start, end = "window_start", "window_end"
        source_expr = f"TABLE(HOP(TABLE {source}, DESCRIPTOR(event_time), {intervals}))"
        group_by = "window_start, window_end, device_id"
    # In the column order of the threshold_alerts table (schema.THRESHOLD_ALERT), kind included.
    columns = THRESHOLD_ALERT.sql_select({
        "alert_id": f"MD5(CONCAT_WS('|', '{group.name}', device_id, CAST(window_end_ms AS STRING)))",
        "kind": f"'{KIND_THRESHOLD}'", "rule_group": f"'{group.name}'", "label": "label", "severity": "severity",
        "device_id": "device_id", "region": "region", "site": "site", "window_start_ms": "window_start_ms",
        "window_end_ms": "window_end_ms", "values": f"JSON_OBJECT({values_json})",
    })
    return f"""
SELECT
  {columns}
FROM (
  SELECT *,
    CASE
      {label}
    END AS label,
    CASE
      {severity}
    END AS severity
  FROM (
    SELECT device_id, MAX(region) AS region, MAX(site) AS site,
      1000 * EXTRACT(EPOCH FROM {start}) AS window_start_ms,
      1000 * EXTRACT(EPOCH FROM {end}) AS window_end_ms,
    {aggs}
    FROM {source_expr}
    WHERE metric IN ({metrics})
    GROUP BY {group_by}
  )
)
WHERE label IS NOT NULL"""


def _quote(text: str) -> str:
    return text.replace("'", "''")
