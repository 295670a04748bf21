"""The connector's cursor, persisted atomically: agent instanceId, the next sequence to read, and per device
the next sequence of that device not yet published.

Written only after the broker acknowledged everything the cursor moves past; a crash can therefore only
make the connector read some observations again, never skip one. State files written before the
per-device marks existed (only ``instance_id`` and ``next_sequence``) are read as they are.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class StateError(ValueError):
    """The state file exists but cannot be used; the message says why and which file."""


@dataclass(frozen=True, slots=True)
class DeviceCursor:
    """One device's mark: ``name`` (for the ``/<name>/sample`` path) and its next unpublished sequence."""

    name: str
    next_sequence: int


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where to go on. ``per_device`` says the agent numbers sequences per device (read per device)."""

    instance_id: str
    next_sequence: int
    per_device: bool = False
    devices: Mapping[str, DeviceCursor] = field(default_factory=dict, hash=False)

    def device_next(self, key: str) -> int:
        """The next sequence of device ``key`` (uuid, else name) not yet published; 0 if never seen."""
        mark = self.devices.get(key)
        return mark.next_sequence if mark else 0


def load_cursor(path: Path) -> Cursor | None:
    """The persisted cursor, or None on a first run."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        devices = {str(key): DeviceCursor(name=str(mark["name"]), next_sequence=int(mark["next_sequence"]))
                   for key, mark in dict(data.get("devices") or {}).items()}
        cursor = Cursor(instance_id=str(data["instance_id"]), next_sequence=int(data["next_sequence"]),
                        per_device=bool(data.get("per_device", False)), devices=devices)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # Refuse rather than guess: starting over could silently skip or repeat data.
        msg = f"state file {path} is unreadable ({exc}); fix or remove it to start from the agent's current state"
        raise StateError(msg) from exc
    negative = [k for k, m in cursor.devices.items() if m.next_sequence < 0]
    if cursor.next_sequence < 0 or negative:
        msg = f"state file {path} has a negative next_sequence ({cursor.next_sequence}, devices {negative})"
        raise StateError(msg)
    return cursor


def save_cursor(path: Path, cursor: Cursor, agent_url: str = "") -> None:
    """Write the cursor with tmp file + fsync + rename, then fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "instance_id": cursor.instance_id, "next_sequence": cursor.next_sequence, "per_device": cursor.per_device,
        "devices": {key: {"name": mark.name, "next_sequence": mark.next_sequence}
                    for key, mark in sorted(cursor.devices.items())},
        "agent_url": agent_url, "updated_ms": int(time.time() * 1000),
    }
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
