"""The loader's resume state: one JSON file, (file, load options) -> rows acknowledged, replaced atomically.

An entry is found by the file's path and a *load key*: a hash of the options that change what is sent
(the mapping with its overrides and constants, the base date, the target topic; ``loader.load_key``).
It holds a fingerprint of the file's content, so a rewritten file starts over; a load with other options
is another entry, so it loads again, while a plain re-run finds its entry complete and sends nothing.
A crash between a Kafka acknowledgement and the state write only means those rows are sent again
on resume; their event ids are identical, so consumers recognise them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

HEAD_BYTES = 64 * 1024


def fingerprint(path: Path) -> str:
    """Identity of a file's content that survives appends: a hash of its first 64 KiB."""
    with path.open("rb") as handle:
        return hashlib.sha256(handle.read(HEAD_BYTES)).hexdigest()


class LoadState:
    """Rows acknowledged per file and load key; ``rows_done`` is 0 for a new or rewritten file, or new options."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, Any] = {}
        if path.exists():
            self._data = json.loads(path.read_text() or "{}")

    @staticmethod
    def key(file: Path, load_key: str = "") -> str:
        path = str(file.resolve())
        return f"{path}#{load_key}" if load_key else path

    def rows_done(self, file: Path, load_key: str = "") -> int:
        entry = self._data.get(self.key(file, load_key))
        if not entry or entry.get("fingerprint") != fingerprint(file):
            return 0
        return int(entry.get("rows", 0))

    def mark(self, file: Path, rows: int, complete: bool = False, load_key: str = "",
             options: dict[str, Any] | None = None) -> None:
        """Rows acknowledged so far; ``options`` (what the load key was made of) is kept for people to read."""
        entry: dict[str, Any] = {"fingerprint": fingerprint(file), "rows": rows, "complete": complete}
        if options:
            entry["options"] = options
        self._data[self.key(file, load_key)] = entry
        self._save()

    def forget(self, file: Path, load_key: str = "") -> None:
        self._data.pop(self.key(file, load_key), None)
        self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self._data, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
