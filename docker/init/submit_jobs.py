"""Compose demo, one-shot: submit Flink jobs to the demo's JobManager unless they already run.

The native ``machinewatch jobs submit`` assembles a FLINK_HOME from the apache-flink package and
the connector jars it fetches with Maven. In the image, the official Flink distribution in
/opt/flink already has the connector in lib/, so its own ``flink`` CLI submits the same job files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from machinewatch import jobs
from machinewatch.config import Settings, load_settings

FLINK = Path(os.environ.get("FLINK_HOME", "/opt/flink")) / "bin" / "flink"


def flink_run_command(settings: Settings, job: str) -> list[str]:
    """The ``flink run`` command line for a job of ``machinewatch.jobs.JOBS`` (detached)."""
    rest = urlparse(settings.flink_rest)
    return [
        str(FLINK), "run", "-d",
        f"-Drest.address={rest.hostname}", f"-Drest.port={rest.port or 8081}",
        f"-Dparallelism.default={settings.flink_parallelism}",
        "-py", str(jobs.JOBS[job]),
    ]


def submit(settings: Settings, job: str) -> int:
    if job not in jobs.JOBS:
        print(f"job-submitter: unknown job '{job}'; known: {', '.join(jobs.JOBS)}", file=sys.stderr)
        return 2
    # The same job name the CLI checks ('machinewatch jobs submit'), so 'up' twice submits once.
    running = jobs.running(settings, "machinewatch-" + job)
    if running:
        print(f"job-submitter: {job} already running as {running[0]['jid']}")
        return 0
    print(f"job-submitter: submitting {job} to {settings.flink_rest}", flush=True)
    # The job script reads its settings from the MW_* variables this container has.
    out = subprocess.run(flink_run_command(settings, job), check=False)  # noqa: S603
    return out.returncode


def main(argv: list[str]) -> int:
    settings = load_settings()
    codes = [submit(settings, job) for job in (argv or ["window-aggregates"])]
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
