"""The dashboard benchmark's synthetic roll-ups are what the roll-up tasks would make of its windows."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from bench.dashboard_queries import ROLLUP_EVERY_S, lines, rollup_lines


def _parse(rows: list[str]) -> pd.DataFrame:
    out = []
    for row in rows:
        head, fields, ts = row.split(" ")
        tags = dict(kv.split("=") for kv in head.split(",")[1:])
        values = {k: float(v.rstrip("i")) for k, v in (kv.split("=") for kv in fields.split(","))}
        out.append({"device_id": tags["device_id"], "window": tags["window"], "t": int(ts), **values})
    return pd.DataFrame(out)


@pytest.mark.parametrize("label", ["1m", "1h"])
def test_rollup_rows_are_the_windows_rolled_up_to_the_bucket_they_close(label: str) -> None:
    start = datetime(2026, 1, 1, 10, 30, tzinfo=UTC)  # on a minute, not on an hour: partial first and last hours
    every = ROLLUP_EVERY_S[label]  # taken from machinewatch.rollups
    windows = _parse(list(lines(3, start, 2, 10, prefix="d")))
    windows["end"] = -(-windows["t"] // every) * every
    expected = windows.groupby(["device_id", "end"]).agg(
        avg=("avg", "mean"), min=("min", "min"), max=("max", "max"), count=("count", "sum")).reset_index()
    got = _parse(list(rollup_lines(3, start, 2, 10, every, label, prefix="d")))
    assert set(got["window"]) == {label}
    got = got.rename(columns={"t": "end"}).drop(columns="window")
    assert len(got) == len(expected) == 3 * (2 * 3600 // every + (1 if label == "1h" else 0))
    pd.testing.assert_frame_equal(got.sort_values(["device_id", "end"], ignore_index=True)[list(expected.columns)],
                                  expected, check_dtype=False)
