"""The sustained-overheat job built from the SQL files of another directory (a deliberately broken prefilter).

Submitted by tests/integration/test_overheat_prefilter_flink.py to show that its comparison catches a wrong
SQL keep window: ``--sql-dir DIR`` is read instead of flink_jobs/sql/; every other argument goes to the job.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flink_jobs import sustained_overheat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sql-dir", type=Path, required=True)
    args, rest = parser.parse_known_args()
    # The job reads its SQL when the pipeline is built, here in the client: the mutant is what gets compiled.
    sustained_overheat.SQL_DIR = args.sql_dir
    sustained_overheat.main(rest)


if __name__ == "__main__":
    main()
