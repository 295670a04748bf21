"""Sustained-condition rules: the TOML file, overrides, cadence defaults and the checks at start-up,
and the lifecycle of a below-threshold rule (no Flink; tests/integration/test_sustained_rules.py runs
the job)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from flink_jobs.overheat_logic import DeviceState, OverheatRules, Transition, on_bucket, relevant_buckets
from flink_jobs.sustained_overheat import bucket_sql, overheat_rule, rules_from
from flink_jobs.sustained_rules import (
    DEFAULT_SUSTAINED_RULES,
    SustainedRuleError,
    _like,
    load_sustained_rules,
)
from machinewatch.config import Settings
from sinks.notifier import describe
from tests.unit.test_overheat_logic import random_buckets, run_device

COOLANT = OverheatRules(threshold=20, duration_ms=10_000, hysteresis=2, clear_ms=5_000, escalate_factor=2,
                        max_gap_ms=3_000, silence_ms=20_000, direction="below", kind="sustained_coolant_low",
                        metric="coolant_temp")


def feed(rules: OverheatRules, values: list[float | None]) -> list[Transition]:
    st, out = DeviceState(), []
    for i, v in enumerate(values):
        if v is not None:
            out += on_bucket(st, rules, "pump", i * 1000, i * 1000 + 1000, v, v, v, 1)
    return out


def test_a_below_rule_fires_on_a_drop_and_resolves_above_the_band() -> None:
    # 25 °C, a drop to 12 for 25 s, 3 s at 21 (inside the 2 °C band: not clear), then 25 again
    out = feed(COOLANT, [25.0] * 5 + [12.0, 11.0, 14.0, 12.0] * 6 + [13.0] + [21.0] * 3 + [25.0] * 8)
    assert [(t.state, t.ts // 1000) for t in out] == [("pending", 6), ("opened", 15), ("escalated", 25),
                                                       ("resolved", 38)]
    assert {t.kind for t in out} == {"sustained_coolant_low"} and {t.direction for t in out} == {"below"}
    assert out[1].peak == 11.0, "a below rule's peak is the lowest value of the episode"
    # ids are made of the kind: the same device and start under two rules are two alerts
    over = feed(OverheatRules(threshold=20, duration_ms=10_000, hysteresis=2, clear_ms=5_000), [30.0] * 3)
    assert over[0].alert_id != feed(COOLANT, [10.0] * 3)[0].alert_id


def test_values_at_or_above_a_below_threshold_are_not_in_the_condition() -> None:
    assert feed(COOLANT, [20.0] * 30) == []
    out = feed(COOLANT, [19.0] * 8 + [20.0] + [19.0] * 12)
    assert [(t.state, t.ts // 1000) for t in out] == [("pending", 1), ("cancelled", 9), ("pending", 10),
                                                       ("opened", 19)]


def _mirror(buckets: list[tuple[int, int, float, float]]) -> list[tuple[int, int, float, float]]:
    return [(s, e, 160.0 - hi, 160.0 - lo) for s, e, lo, hi in buckets]


@pytest.mark.parametrize("seed", range(20))
def test_a_below_rule_on_mirrored_data_gives_the_above_rule_transitions(seed: int) -> None:
    """v -> 160 - v turns 'above 80' into 'below 80': same states at the same times, peak mirrored; and the
    prefilter's reference keeps every bucket that matters for a below rule too."""
    rng = random.Random(seed)
    above = OverheatRules(threshold=80, duration_ms=rng.choice([3_000, 10_000]), hysteresis=rng.choice([0, 5]),
                          clear_ms=rng.choice([2_000, 5_000]), escalate_factor=2, max_gap_ms=3_000, silence_ms=20_000)
    below = OverheatRules(**{**above.__dict__, "direction": "below"})
    buckets = random_buckets(rng, 2000)
    horizon = buckets[-1][1] + 2 * above.silence_ms
    up, down = run_device(buckets, above, horizon), run_device(_mirror(buckets), below, horizon)
    assert [(t["state"], t["ts"]) for t in up] == [(t["state"], t["ts"]) for t in down] and up
    assert [t["peak"] for t in up] == pytest.approx([160.0 - float(t["peak"]) for t in down])  # type: ignore[arg-type]
    kept = relevant_buckets(_mirror(buckets), below, 1000)
    assert run_device(_mirror(buckets), below, horizon, kept) == down and sum(kept) < len(kept)


def test_the_shipped_file_is_the_overheat_alert_with_the_settings_values() -> None:
    s = Settings()
    (rule,) = load_sustained_rules(s)
    assert rule.rule.name == "overheat" and rule.base == rules_from(s) == overheat_rule(s).base
    changed = s.model_copy(update={"overheat_threshold_c": 91.0, "overheat_max_gap_s": 20})
    assert load_sustained_rules(changed)[0].base.threshold == 91.0
    assert load_sustained_rules(changed)[0].base.max_gap_ms == 20_000
    assert DEFAULT_SUSTAINED_RULES.exists()


def _rules(tmp_path: Path, text: str, **settings: object) -> list:  # type: ignore[type-arg]
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return load_sustained_rules(Settings().model_copy(update={"sustained_rules": path, **settings}))


BASE = """
[[rule]]
name = "coolant_low"
metric = "coolant_temp"
direction = "below"
threshold = 20.0
duration_s = 10
"""


def test_overrides_first_match_wins_and_glob_characters_are_literal(tmp_path: Path) -> None:
    (rule,) = _rules(tmp_path, BASE + """
  [[rule.override]]
  device = "pump_b*"
  threshold = 15.0
  [[rule.override]]
  region = "south"
  duration_s = 20
  [[rule.override]]
  device = "pump_b9"
  threshold = 1.0
""")
    assert rule.params("pump_b1", "south", "x").threshold == 15.0  # first match: not the region's duration
    assert rule.params("pump_b1", "south", "x").duration_ms == 10_000
    assert rule.params("pumpXb1", "north", "x").threshold == 20.0  # '_' is not a wildcard
    assert rule.params("pump_a1", "south", "x").duration_ms == 20_000
    assert rule.params("pump_b9", "", "").threshold == 15.0  # shadowed by the first override
    assert _like("pump_b*") == "pump!_b%" and _like("a%b?!") == "a!%b_!!" and _like("o'x") == "o''x"
    sql = bucket_sql(Settings(), rule)
    assert "device_id LIKE 'pump!_b%' ESCAPE '!'" in sql and "region = 'south'" in sql
    assert "vmin <= (CASE WHEN" in sql and "'coolant_low' AS rule_name" in sql and "'coolant_temp'" in sql
    assert "INTERVAL '1.000' SECOND" in sql
    fine = Settings(overheat_bucket_s=0.1)
    assert "INTERVAL '0.100' SECOND" in bucket_sql(fine, rule) and fine.overheat_bucket_ms == 100


def test_cadence_sets_gap_and_silence_defaults(tmp_path: Path) -> None:
    (rule,) = _rules(tmp_path, BASE + """
cadence_s = 300
  [[rule.override]]
  device = "fast-*"
  cadence_s = 1
  max_gap_s = 5
""")
    assert (rule.base.max_gap_ms, rule.base.silence_ms) == (900_000, 1_800_000)
    fast = rule.params("fast-1", "", "")
    assert (fast.max_gap_ms, fast.silence_ms) == (5_000, 6_000)


@pytest.mark.parametrize(("extra", "message"), [
    ("cadence_s = 300\nmax_gap_s = 300\nsilence_s = 900",
     "rule 'coolant_low': max_gap_s (300) must exceed cadence_s (300)"),
    ("max_gap_s = 60\nsilence_s = 60", "rule 'coolant_low': silence_s (60) must exceed max_gap_s (60)"),
    ("treshold = 3", "treshold"),
    ("[[rule]]\nname = 'x'\nmetric = 'm'\ndirection = 'sideways'", "direction"),
    ("escalate_factor = 0.5", "escalate_factor"),
    ("\n  [[rule.override]]\n  threshold = 3", "at least one of device"),
    ("\n  [[rule.override]]\n  device = 'a[1]'", "only '*' and '?'"),
    ("\n  [[rule.override]]\n  device = 'slow-*'\n  cadence_s = 60\n  max_gap_s = 30",
     "rule 'coolant_low', override 1 (device_id LIKE 'slow-%' ESCAPE '!'): max_gap_s (30) must exceed cadence_s (60)"),
])
def test_contradictions_are_refused_at_start_up_naming_the_rule(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(SustainedRuleError, match=re.escape(message)):
        _rules(tmp_path, BASE + extra + "\n")


def test_rule_names_are_unique_and_the_file_is_named_in_errors(tmp_path: Path) -> None:
    with pytest.raises(SustainedRuleError, match="more than once: coolant_low"):
        _rules(tmp_path, BASE + BASE)
    with pytest.raises(SustainedRuleError, match=r"rules\.toml"):
        _rules(tmp_path, "[[rule]]\nname = 'Bad Name'\nmetric = 'x'\n")


def test_a_below_alert_is_described_with_its_lowest_value() -> None:
    t = feed(COOLANT, [12.0] * 12)[1].to_dict()
    subject, body = describe(t)
    assert "lowest 12.0" in subject and "sustained coolant low" in subject
    assert "metric: coolant_temp" in body and "direction: below" in body
