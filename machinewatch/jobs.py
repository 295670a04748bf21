"""Submit, list and cancel Flink jobs on the configured cluster (local or remote) over REST."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from machinewatch.config import Settings
from machinewatch.flink_rest import rest
from machinewatch.stack import provision

REPO = Path(__file__).resolve().parent.parent
JOBS: dict[str, Path] = {
    "window-aggregates": REPO / "flink_jobs" / "window_aggregates.py",
    "sustained-overheat": REPO / "flink_jobs" / "sustained_overheat.py",
    "device-alerts": REPO / "flink_jobs" / "device_alerts.py",
}


# What the jobs' Python code imports on a TaskManager; shipped with every submission (see ship_python).
SHIPPED_PACKAGES = ("machinewatch", "flink_jobs")


class JobError(RuntimeError):
    """Submission or a REST call to the JobManager failed; carries Flink's own message."""


def list_jobs(settings: Settings) -> list[dict[str, Any]]:
    resp = rest(settings, "GET", "/jobs/overview")
    resp.raise_for_status()
    return list(resp.json().get("jobs", []))


def running(settings: Settings, name: str) -> list[dict[str, Any]]:
    return [
        j for j in list_jobs(settings)
        if j.get("name") == name and j.get("state") in {"RUNNING", "CREATED", "INITIALIZING", "RESTARTING"}
    ]


def ship_python(dest: Path) -> Path:
    """A zip of the packages the jobs' Python code imports on the TaskManagers, written into ``dest``.

    Flink uploads it with the job (``-pyfs``) and puts it on the Python workers' path, so a cluster
    needs only Python with the dependencies, not a checkout of this repository.
    """
    archive = dest / "machinewatch-jobs.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in SHIPPED_PACKAGES:
            for path in sorted((REPO / package).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix in {".py", ".sql", ".toml"}:
                    zf.write(path, path.relative_to(REPO).as_posix())
    return archive


def connector_jar(settings: Settings) -> Path:
    """The Kafka SQL connector and its zstd-jni (the Publisher compresses with zstd) merged into one jar, made
    once per connector version in the cache: ``flink run`` ships one program jar (``-j``) with a job."""
    libs = provision.flink_connector_libs(settings)
    jars = sorted(libs.glob("*.jar"), key=lambda jar: not jar.name.startswith("flink-sql-connector-kafka"))
    out = settings.cache_dir / "flink-connectors" / f"{libs.name}-bundle.jar"
    with provision.cache_lock(settings, "flink-connectors"):
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            seen: set[str] = set()
            with zipfile.ZipFile(tmp, "w") as bundle:
                for jar in jars:  # the connector first: its manifest and service files are the ones kept
                    with zipfile.ZipFile(jar) as part:
                        for info in part.infolist():
                            if info.filename not in seen:
                                seen.add(info.filename)
                                bundle.writestr(info, part.read(info))
            tmp.rename(out)
    return out


def submission_args(settings: Settings, shipped: Path) -> list[str]:
    """``flink run`` options that make a job carry what it needs: the Python archive, the Kafka connector
    (uploaded with the job: the cluster's lib/ need not hold it) and, if set, the cluster's Python.

    The connector goes as the program jar (``-j``): the CLI replaces ``pipeline.jars`` by the program's
    jars, so a ``-Dpipeline.jars`` never reaches the cluster.
    """
    return [
        "-pyfs", str(shipped), "-j", str(connector_jar(settings)),
        *([f"-Dpython.executable={settings.flink_python}"] if settings.flink_python else []),
    ]


def submit(settings: Settings, job: str, extra_args: list[str] | None = None, from_savepoint: str | None = None) -> str:
    """Run ``flink run -d -py`` for a job file (optionally restoring a savepoint); returns the job id.

    The job's Python packages and connector jars travel with the submission (``submission_args``), so
    the same call serves the local stack and a session cluster elsewhere (``MW_FLINK_REST_ADDRESS``).
    """
    if job not in JOBS:
        msg = f"unknown job '{job}'; known: {', '.join(JOBS)}"
        raise JobError(msg)
    from machinewatch.stack.flink import Flink

    flink = Flink(settings)
    flink.write_config()  # the CLI reads its config dir, also against a remote cluster
    rest = urlparse(settings.flink_rest)
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    # The job script reads its settings from MW_* like every stage: hand ours down.
    env = {**os.environ, **settings.to_env(), **flink.env(), "PYTHONPATH": pythonpath}
    provision.say(f"submitting {job} to {settings.flink_rest}")
    # The archive is uploaded during 'flink run'; it is not needed afterwards.
    with tempfile.TemporaryDirectory(prefix="mw-submit-") as tmp:
        cmd = [
            "bash", str(flink.home() / "bin" / "flink"), "run", "-d",
            f"-Drest.address={rest.hostname}", f"-Drest.port={rest.port or 8081}",
            f"-Dparallelism.default={settings.flink_parallelism}",
            *submission_args(settings, ship_python(Path(tmp))),
            *(["-s", from_savepoint] if from_savepoint else []),
            "-py", str(JOBS[job]), *(extra_args or []),
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    text = out.stdout + out.stderr
    job_id = next(
        (line.rsplit(" ", 1)[-1].strip() for line in text.splitlines() if "has been submitted with JobID" in line),
        "",
    )
    if out.returncode != 0 or not job_id:
        # Java frames say nothing a user can act on; the Python traceback and causes do.
        lines = [line for line in text.splitlines() if not line.lstrip().startswith("at ")]
        # The cause (e.g. a SQL parse error) is near the top, the Python traceback at the end.
        shown = lines if len(lines) <= 70 else [*lines[:40], "    ...", *lines[-30:]]
        msg = f"flink run failed (exit {out.returncode}):\n" + "\n".join(shown)
        raise JobError(msg)
    return job_id


def cancel(settings: Settings, job_id: str) -> None:
    resp = rest(settings, "PATCH", f"/jobs/{job_id}", params={"mode": "cancel"})
    if resp.status_code >= 400:
        msg = f"cancel {job_id}: HTTP {resp.status_code}: {resp.text[:300]}"
        raise JobError(msg)


def job_detail(settings: Settings, job_id: str) -> dict[str, Any]:
    resp = rest(settings, "GET", f"/jobs/{job_id}")
    resp.raise_for_status()
    return dict(resp.json())


def savepoint(settings: Settings, job_id: str, cancel: bool = False, timeout: float = 300) -> str:
    """Trigger a savepoint (and stop the job with it if asked); returns the savepoint's location.

    Stopping uses Flink's stop-with-savepoint, not cancel-with-savepoint: the sources stop, the savepoint
    is taken and every operator finishes its work before it closes. Cancelling closes PyFlink's Python
    operators in the middle of a bundle, and Beam then fails the whole TaskManager ("Reference count
    must not be negative"), taking every other job on it down too (seen with the overheat job).
    """
    if cancel:
        resp = rest(settings, "POST", f"/jobs/{job_id}/stop", json={"drain": False, "formatType": "CANONICAL"})
    else:
        resp = rest(settings, "POST", f"/jobs/{job_id}/savepoints", json={"cancel-job": False,
                                                                          "formatType": "CANONICAL"})
    if resp.status_code >= 400:
        msg = f"savepoint of {job_id}: HTTP {resp.status_code}: {resp.text[:300]}"
        raise JobError(msg)
    trigger = resp.json()["request-id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = rest(settings, "GET", f"/jobs/{job_id}/savepoints/{trigger}").json()
        if status.get("status", {}).get("id") == "COMPLETED":
            operation = status.get("operation", {})
            if "location" in operation:
                return str(operation["location"])
            msg = f"savepoint of {job_id} failed: {str(operation.get('failure-cause', operation))[:2000]}"
            raise JobError(msg)
        time.sleep(0.5)
    msg = f"savepoint of {job_id} did not complete in {timeout:.0f}s"
    raise JobError(msg)
