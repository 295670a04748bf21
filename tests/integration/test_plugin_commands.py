"""The simulator and sink plugins as a user runs them, against the real stack: ``simulate temperature`` and
``simulate equipment`` publish readings, ``sink archive`` keeps them, each with its settings from the TOML
table (``--config``), its ``MW_SIMULATE_*`` / ``MW_SINK_*`` variables and its flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq

from machinewatch import names
from machinewatch.config import Settings
from machinewatch.stack import Stack
from tests.stack_support import end_offsets, read_since

REPO = Path(__file__).resolve().parents[2]


def _cli(settings: Settings, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "machinewatch", *args], cwd=REPO, env=full, text=True,  # noqa: S603
                          capture_output=True, timeout=300, check=False)


def test_simulators_publish_and_the_archive_sink_keeps_what_they_published(stack: Stack, settings: Settings,
                                                                           tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    conf = tmp_path / "mw.toml"
    conf.write_text(f"[simulate_temperature]\ndevices = 2\nsite = 'plug-{run}'\n\n"
                    "[sink_archive]\nmax_age = 2.0\n")
    starts = end_offsets(settings, [names.TOPIC_READINGS])

    done = _cli(settings, "simulate", "temperature", "--config", str(conf), "--count", "3",
                env={"MW_SIMULATE_TEMPERATURE_REGION": f"region-{run}"})
    assert done.returncode == 0, done.stderr
    done = _cli(settings, "simulate", "equipment", "--devices", "2", "--count", "3", "--seed", "7")
    assert done.returncode == 0, done.stderr

    published = read_since(settings, starts)[names.TOPIC_READINGS]
    temperature = [r for r in published if r["site"] == f"plug-{run}"]
    assert len(temperature) == 2 * 3                                   # devices from the table, --count flag
    assert {r["region"] for r in temperature} == {f"region-{run}"}     # region from the environment
    equipment = [r for r in published if r["source"] == "equipment-sensors"]
    assert len(equipment) == 2 * 3 and len({r["device_id"] for r in equipment}) == 2  # through the mapping

    root = tmp_path / "archive"
    done = _cli(settings, "sink", "archive", "--config", str(conf), "--root", str(root), "--idle-exit", "10")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["archived"] >= 12
    rows = [row for path in sorted(root.rglob("*.parquet")) for row in pq.read_table(path).to_pylist()]
    archived = {row["event_id"] for row in rows}
    assert {r["event_id"] for r in temperature + equipment} <= archived
