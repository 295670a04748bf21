"""The connector's cursor (agent instanceId, next sequence to read), persisted atomically.

Written only after the broker acknowledged everything before ``next_sequence``; a crash can
therefore only make the connector read some observations again, never skip one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


class StateError(ValueError):
    """The state file exists but cannot be used; the message says why and which file."""


@dataclass(frozen=True, slots=True)
class Cursor:
    instance_id: str
    next_sequence: int


def load_cursor(path: Path) -> Cursor | None:
    """The persisted cursor, or None on a first run."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cursor = Cursor(instance_id=str(data["instance_id"]), next_sequence=int(data["next_sequence"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Refuse rather than guess: starting over could silently skip or repeat data.
        msg = f"state file {path} is unreadable ({exc}); fix or remove it to start from the agent's current state"
        raise StateError(msg) from exc
    if cursor.next_sequence < 0:
        msg = f"state file {path} has a negative next_sequence {cursor.next_sequence}"
        raise StateError(msg)
    return cursor


def save_cursor(path: Path, cursor: Cursor, agent_url: str = "") -> None:
    """Write the cursor with tmp file + fsync + rename, then fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"instance_id": cursor.instance_id, "next_sequence": cursor.next_sequence, "agent_url": agent_url,
           "updated_ms": int(time.time() * 1000)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
