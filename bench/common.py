"""What every part of the benchmark run shares: where the repository is, and the progress line format."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def say(msg: str) -> None:
    print(f"[bench {datetime.now(tz=UTC):%H:%M:%S}] {msg}", flush=True)
