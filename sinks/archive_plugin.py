"""The Parquet archiver as a sink plugin (``machinewatch sink archive``): its settings and flags.

Registered as ``archive`` under the ``machinewatch.sinks`` entry points; the archiver is ``sinks.archiver``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import Field, ValidationError

from machinewatch.config import Settings
from machinewatch.plugins import PluginSettings, SinkPlugin
from machinewatch.runtime import RunOptions

_AGE = RunOptions.model_fields["flush_interval_s"]


class ArchiveSinkSettings(PluginSettings):
    """Where the archive goes and how long a batch may wait."""

    root: Path | None = Field(None, description="folder of the Parquet archive (default STATE_DIR/archive)")
    # The runner's flush_interval_s, with its range: RunOptions is the one place that holds it.
    max_age: float = Field(60.0, description="longest seconds a batch waits before it is written")
    idle_exit: float | None = Field(None, gt=0, description="exit after this many seconds without readings")


def flush_age(text: str) -> float:
    """--max-age: the runner's ``flush_interval_s``, checked by RunOptions itself (the one place with its range)."""
    try:
        return RunOptions(flush_interval_s=float(text)).flush_interval_s
    except (ValueError, ValidationError):  # not a number, NaN or out of range
        bounds = {type(m).__name__: m for m in _AGE.metadata}
        msg = f"'{text}' is not a number of seconds in ({bounds['Gt'].gt:g}, {bounds['Le'].le:g}]"
        raise argparse.ArgumentTypeError(msg) from None


def _add_arguments(p: argparse._ActionsContainer) -> None:
    p.add_argument("--root", type=Path, help="folder of the Parquet archive (default STATE_DIR/archive)")
    p.add_argument("--max-age", type=flush_age,
                   help="longest seconds a batch waits before it is written, at most 3600 (default 60)")
    p.add_argument("--idle-exit", type=float, help="exit after this many seconds without readings")


def _run(config: ArchiveSinkSettings, settings: Settings) -> int:
    from sinks import archiver

    max_age = flush_age(str(config.max_age))  # the same range from the TOML table or MW_SINK_ARCHIVE_MAX_AGE
    archiver.main(settings, config.root or settings.state_dir / "archive", max_age, idle_exit_s=config.idle_exit)
    return 0


plugin = SinkPlugin(
    name="archive",
    summary="cold path: raw readings into hour-partitioned Parquet files",
    description="Reads the readings topic and writes every reading into hour-partitioned Parquet files under "
    "--root; 'ingest archive' replays such an archive with the same event ids.",
    settings_model=ArchiveSinkSettings,
    run=_run,
    add_arguments=_add_arguments,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
)
