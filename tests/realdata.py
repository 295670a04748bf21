"""Where the real data recorded by others is found, and a clear skip when a clone does not have it.

The files are not ours to redistribute, so they never enter the repository: they live in the
project's ``shared/realdata/`` folder beside the clone (``../shared/realdata`` from its root), or
wherever ``MW_REALDATA_DIR`` points. Nothing here reads a file when a test module is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "MW_REALDATA_DIR"


def realdata_dir() -> Path:
    """``$MW_REALDATA_DIR``, or ``shared/realdata`` beside the repository's own folder."""
    given = os.environ.get(ENV)
    if given:
        return Path(given)
    return Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def realdata_file(relpath: str) -> Path:
    """The path of one real file (``"perfmon/india-logicaldisk-15s.csv"``), or skip the test saying how to get it."""
    path = realdata_dir() / relpath
    if not path.exists():
        pytest.skip(
            f"real data recorded by others is not in this clone ({path} not found): put the project's "
            f"shared/ folder beside the clone (../shared/realdata/{relpath}) or set {ENV}"
        )
    return path
