"""Sustained-condition rules from TOML: a metric above or below a threshold for a while, per device.

The shipped file (``rules/sustained.toml``) holds the overheat alert as one rule. A rule's omitted
fields take the ``MW_OVERHEAT_*`` settings (README), so that rule keeps the settings it always had;
``[[rule.override]]`` tables change thresholds and times for the devices they match (device id glob,
region, site; the first matching override applies). Everything is checked at start-up, with the rule
(and override) named in the message: a contradiction between the times and the data's cadence is
refused there, not discovered weeks later as an alert that never fired.

Each rule is rendered to its own Flink SQL stage (buckets of its metric, then the prefilter with
per-device parameters as CASE expressions); ``resolve`` gives the same parameters in Python, so the SQL
and the lifecycle cannot disagree about which device has which threshold.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flink_jobs.overheat_logic import OverheatRules, keep_window_ms
from machinewatch.config import Settings

DEFAULT_SUSTAINED_RULES = Path(__file__).with_name("rules") / "sustained.toml"

# Optional on a rule and on an override; a rule's unset ones come from the MW_OVERHEAT_* settings.
_TIMES = ("duration_s", "clear_s", "max_gap_s", "silence_s")


class SustainedRuleError(ValueError):
    """A sustained-rule file that cannot be used; the message names the rule and the problem."""


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float | None = None
    hysteresis: float | None = Field(default=None, ge=0)
    duration_s: int | None = Field(default=None, gt=0)
    clear_s: int | None = Field(default=None, gt=0)
    escalate_factor: float | None = Field(default=None, ge=1)
    max_gap_s: int | None = Field(default=None, gt=0)
    silence_s: int | None = Field(default=None, gt=0)
    # The devices' sampling interval. When set, the gap and silence times default to 3x and 6x it
    # (one missed reading is not a gap; a few are), and a gap time not above it is refused (silence
    # must exceed the gap, so it is above the cadence too).
    cadence_s: int | None = Field(default=None, gt=0)


class Override(_Params):
    """Parameters for the devices matched by every given matcher (device id glob, region, site)."""

    device: str | None = None
    region: str | None = None
    site: str | None = None

    @field_validator("device")
    @classmethod
    def _glob(cls, v: str | None) -> str | None:
        if v is not None and re.search(r"[\[\]\\]", v):
            msg = f"device pattern '{v}': only '*' and '?' are wildcards; '[', ']' and '\\' are not allowed"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _matches_something(self) -> Override:
        if self.device is None and self.region is None and self.site is None:
            msg = "an override needs at least one of device (a glob), region or site"
            raise ValueError(msg)
        return self

    def matches(self, device: str, region: str, site: str) -> bool:
        return ((self.device is None or fnmatch.fnmatchcase(device, self.device))
                and (self.region is None or self.region == region) and (self.site is None or self.site == site))

    def sql(self) -> str:
        """The same match as ``matches``, as a SQL condition over device_id, region, site."""
        parts = []
        if self.device is not None:
            parts.append(f"device_id LIKE '{_like(self.device)}' ESCAPE '!'")
        if self.region is not None:
            parts.append(f"region = '{_quote(self.region)}'")
        if self.site is not None:
            parts.append(f"site = '{_quote(self.site)}'")
        return " AND ".join(parts)


class SustainedRule(_Params):
    name: str
    metric: str = Field(min_length=1)
    direction: Literal["above", "below"] = "above"
    override: list[Override] = []

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", v):
            msg = (f"rule name '{v}' must be lowercase letters, digits and '_' "
                   "(it becomes the alert kind sustained_<name>)")
            raise ValueError(msg)
        return v

    @property
    def kind(self) -> str:
        return f"sustained_{self.name}"


class SustainedRuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: list[SustainedRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> SustainedRuleSet:
        names = [r.name for r in self.rule]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            msg = f"rule names must be unique; given more than once: {', '.join(twice)}"
            raise ValueError(msg)
        return self


def _like(glob: str) -> str:
    """A device glob ('*', '?') as a SQL LIKE pattern with '!' as the escape character."""
    out = []
    for ch in glob:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_!":
            out.append("!" + ch)
        else:
            out.append(ch)
    return _quote("".join(out))


def _quote(text: str) -> str:
    return text.replace("'", "''")


def _merge(base: _Params, settings: Settings, *layers: _Params) -> OverheatRules:
    """Parameters of the settings, then the rule, then an override (later wins; unset never overrides)."""
    values: dict[str, float | int | None] = {
        "threshold": settings.overheat_threshold_c, "hysteresis": settings.overheat_hysteresis_c,
        "duration_s": settings.overheat_duration_s, "clear_s": settings.overheat_clear_s,
        "escalate_factor": settings.overheat_escalate_factor, "max_gap_s": None, "silence_s": None,
        "cadence_s": None,
    }
    for layer in (base, *layers):
        given = {k: v for k, v in layer.model_dump(include=set(values)).items() if v is not None}
        values.update(given)
        if "cadence_s" in given:  # a layer's cadence moves the gap and silence it does not set itself
            if "max_gap_s" not in given:
                values["max_gap_s"] = 3 * int(given["cadence_s"])
            if "silence_s" not in given:
                values["silence_s"] = 6 * int(given["cadence_s"])
    if values["max_gap_s"] is None:
        values["max_gap_s"] = settings.overheat_max_gap_s
    if values["silence_s"] is None:
        values["silence_s"] = settings.overheat_silence_s
    rule = base if isinstance(base, SustainedRule) else None
    return OverheatRules(
        threshold=float(values["threshold"] or 0.0), duration_ms=int(values["duration_s"] or 0) * 1000,
        hysteresis=float(values["hysteresis"] or 0.0), clear_ms=int(values["clear_s"] or 0) * 1000,
        escalate_factor=float(values["escalate_factor"] or 1.0), max_gap_ms=int(values["max_gap_s"] or 0) * 1000,
        silence_ms=int(values["silence_s"] or 0) * 1000,
        direction=rule.direction if rule else "above", kind=rule.kind if rule else "sustained_overheat",
        metric=rule.metric if rule else "temperature",
    )


class Compiled:
    """One rule with its parameters resolved: the base set and one per override, in match order."""

    def __init__(self, rule: SustainedRule, settings: Settings) -> None:
        self.rule = rule
        self.bucket_ms = settings.overheat_bucket_ms
        self.base = _merge(rule, settings)
        self.overrides = [(o, _merge(rule, settings, o)) for o in rule.override]
        cadences = [rule.cadence_s, *(o.cadence_s or rule.cadence_s for o in rule.override)]
        for (where, params), cadence in zip(self.profiles(), cadences, strict=True):
            _check(params, self.bucket_ms, cadence, where)

    def profiles(self) -> list[tuple[str, OverheatRules]]:
        out = [(f"rule '{self.rule.name}'", self.base)]
        out += [(f"rule '{self.rule.name}', override {i + 1} ({o.sql()})", p)
                for i, (o, p) in enumerate(self.overrides)]
        return out

    def params(self, device: str, region: str, site: str) -> OverheatRules:
        """The parameters for one device: the first override that matches it, or the rule's own."""
        return next((p for o, p in self.overrides if o.matches(device, region or "", site or "")), self.base)

    def case(self, value: str) -> str:
        """A per-device SQL expression of one derived parameter (see ``_derived``), first match wins."""
        base = _derived(self.base, self.bucket_ms)[value]
        if not self.overrides:
            return base
        whens = " ".join(f"WHEN {o.sql()} THEN {_derived(p, self.bucket_ms)[value]}" for o, p in self.overrides)
        return f"(CASE {whens} ELSE {base} END)"


def _derived(p: OverheatRules, bucket_ms: int) -> dict[str, str]:
    """What the SQL prefilter needs of one parameter set, as SQL literals."""
    return {
        "clear_line": f"CAST({p.clear_line!r} AS DOUBLE)",
        "keep_ms": str(keep_window_ms(p, bucket_ms)),
        "near_ms": str(p.max_gap_ms + bucket_ms),
    }


def _check(p: OverheatRules, bucket_ms: int, cadence_s: int | None, where: str) -> None:
    silence_s, gap_s = p.silence_ms // 1000, p.max_gap_ms // 1000
    if silence_s <= gap_s:
        msg = (f"{where}: silence_s ({silence_s}) must exceed max_gap_s ({gap_s}): the alert would go silent "
               "before a gap could even break its run")
        raise SustainedRuleError(msg)
    if p.max_gap_ms < bucket_ms:
        msg = (f"{where}: max_gap_s ({gap_s}) is shorter than MW_OVERHEAT_BUCKET_S ({bucket_ms / 1000:g}): "
               "every bucket would be a gap")
        raise SustainedRuleError(msg)
    if cadence_s is not None and gap_s <= cadence_s:
        msg = (f"{where}: max_gap_s ({gap_s}) must exceed cadence_s ({cadence_s}): every reading would follow a "
               f"gap, so no run could ever last duration_s ({p.duration_ms // 1000})")
        raise SustainedRuleError(msg)


def load_sustained_rules(settings: Settings, path: Path | None = None) -> list[Compiled]:
    """The rules of ``path`` (default: MW_SUSTAINED_RULES or the shipped file), resolved and checked."""
    path = path or settings.sustained_rules or DEFAULT_SUSTAINED_RULES
    try:
        ruleset = SustainedRuleSet.model_validate(tomllib.loads(Path(path).read_text()))
        return [Compiled(rule, settings) for rule in ruleset.rule]
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        msg = f"sustained rules file {path}: {exc}"
        raise SustainedRuleError(msg) from exc
