"""The fault harness's reference must accept everything the job may emit when a feed stops anywhere.

ci3 failed the savepoint scenario once: its feed stopped after device 0 had been quiet longer than the
silence time but before it resumed, so the job's event-time timer reported it silent while the
reference (which only saw silence through the device's next bucket) did not. Where the feed stops
depends on how fast the machine is; the answer must not.
"""

from __future__ import annotations

import random

import pandas as pd
import pytest

from machinewatch.config import Settings
from tests.faults.harness import OVERHEAT, Expected, overheat_oracle, temperature


def _ledger(ticks: int, devices: int = 4) -> pd.DataFrame:
    rng = random.Random(7)
    rows = []
    for n in range(ticks):
        for d in range(devices):
            value = temperature(d, n, rng)
            if value is not None:
                rows.append({"device_id": f"dev{d}", "metric": "temperature", "value": value,
                             "ts": 1_700_000_000_000 + n * 1000 + rng.randrange(0, 900)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ticks", [150, 165, 172, 175, 178, 181, 200])
def test_a_device_quiet_when_the_feed_stops_is_silent_once_event_time_passes_it(ticks: int) -> None:
    settings = Settings().model_copy(update=OVERHEAT)
    ledger = _ledger(ticks)
    got = overheat_oracle(ledger, settings)
    silent = [t for (_, state), t in got.items() if state == "silent" and t["device_id"] == "dev0"]
    last_watermark = int(ledger.ts.max()) - settings.watermark_delay_ms
    # Device 0 is quiet from event second 140 (harness.temperature): its last bucket before that ends at 140 s.
    quiet_since = int(ledger[(ledger.device_id == "dev0") & (ledger.ts < ledger.ts.min() // 1000 * 1000 + 140_000)]
                      .ts.max()) // 1000 * 1000 + 1000
    due = quiet_since + settings.overheat_silence_s * 1000
    if due <= last_watermark:
        assert [t["ts"] for t in silent] == [due]
        horizon = Expected(windows={}, horizon_ms=last_watermark - 2000, thresholds=set(), transitions=got)
        assert (due <= horizon.horizon_ms) == any(s == "silent" for _, s in horizon.closed_transitions())
    else:
        assert silent == []
