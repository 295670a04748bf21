"""The playback-speed hand-off between the dashboard and a replay of recorded data (core: both stages use it).

A replay that wants to be steered writes ``replay.json`` (``{"speed": 60, "source": "...", "pid": 123}``)
into ``MW_STATE_DIR/replay/`` while it runs; the dashboard shows a speed control only then and writes
the chosen speed to ``speed`` beside it, for the replay to pick up between rows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

SPEEDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0)


@dataclass(frozen=True)
class ReplayStatus:
    speed: float
    source: str
    pid: int | None


def replay_dir(state_dir: Path) -> Path:
    return state_dir / "replay"


def running_replay(state_dir: Path) -> ReplayStatus | None:
    """The replay that announced itself, if its process still exists."""
    path = replay_dir(state_dir) / "replay.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = doc.get("pid")
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # exists, owned by someone else
    try:
        speed = float(requested_speed(state_dir) or doc.get("speed", 1.0))
    except (TypeError, ValueError):
        speed = 1.0
    return ReplayStatus(speed=speed, source=str(doc.get("source", "recorded data")),
                        pid=pid if isinstance(pid, int) else None)


def requested_speed(state_dir: Path) -> float | None:
    try:
        return float((replay_dir(state_dir) / "speed").read_text().strip())
    except (OSError, ValueError):
        return None


def request_speed(state_dir: Path, speed: float) -> None:
    """Write the speed atomically (rename), so a reader never sees half a number."""
    if speed <= 0:
        msg = f"playback speed must be > 0, got {speed}"
        raise ValueError(msg)
    folder = replay_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "speed.tmp"
    tmp.write_text(f"{speed}\n")
    tmp.replace(folder / "speed")


def announce(state_dir: Path, speed: float, source: str) -> Path:
    """Tell dashboards a steerable replay runs (this process); returns the file to remove at the end."""
    folder = replay_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "speed").unlink(missing_ok=True)  # a previous replay's choice is not ours
    path = folder / "replay.json"
    tmp = folder / "replay.json.tmp"
    tmp.write_text(json.dumps({"speed": speed, "source": source, "pid": os.getpid()}))
    tmp.replace(path)
    return path
