"""A TaskManager outlives many job submissions: a PyFlink job with Python operators leaves (almost) no JVM
metaspace behind when it ends. Before the Python bridge was put on the servers' own class path, each such
job left ~26 MB of it (some 3,700 classes), and the benchmark's TaskManager died of `OutOfMemoryError:
Metaspace` while starting its 23rd job."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from machinewatch import jobs
from machinewatch.config import Settings
from machinewatch.flink_rest import rest
from machinewatch.stack import Stack
from machinewatch.stack.private import private_settings
from tests.integration.conftest import require_free_slot
from tests.stack_support import create_topics
from tests.waiting import poll

# Per job, after the first (which loads what every later job shares), measured after a full GC: ~1 MB with the
# bridge in lib/, ~15-26 MB without it. Without the GC, class loaders a finished job left for collection still
# count: 8.5 MB per job on the suite's shared TaskManager, with the bridge in lib/.
MAX_GROWTH_PER_JOB = 8 * 2**20


def _metaspace(stack: Stack, settings: Settings) -> tuple[int, int]:
    """(metaspace bytes used, classes loaded so far) summed over the TaskManagers, after a full GC in each (so
    what a finished job's class loader held is gone unless something still holds it: the leak)."""
    jcmd = shutil.which("jcmd")
    assert jcmd, "jcmd (in the JDK) is needed to run a full GC in the TaskManager"
    for tm in stack.flink.taskmanagers:
        pid = tm.pid()
        assert pid is not None, f"{tm.name} is not running"
        subprocess.run([jcmd, str(pid), "GC.run"], check=True, capture_output=True, timeout=60)  # noqa: S603
    used = loaded = 0
    for tm in rest(settings, "GET", "/taskmanagers").json()["taskmanagers"]:
        metrics = rest(settings, "GET", f"/taskmanagers/{tm['id']}/metrics", params={
            "get": "Status.JVM.Memory.Metaspace.Used,Status.JVM.ClassLoader.ClassesLoaded"}).json()
        values = {m["id"]: int(float(m["value"])) for m in metrics}
        used += values["Status.JVM.Memory.Metaspace.Used"]
        loaded += values["Status.JVM.ClassLoader.ClassesLoaded"]
    return used, loaded


def _run_once(settings: Settings, run: str, i: int) -> None:
    """Submit the overheat job (Python operators: the Beam bridge) on the test's own topics, wait until all
    its tasks run, cancel it and wait until it is gone."""
    name = f"mw-classload-{run}-{i}"
    require_free_slot(settings)
    job_id = jobs.submit(settings, "sustained-overheat", [
        "--readings-topic", f"mw.test-{run}.readings", "--alerts-topic", f"mw.test-{run}.alerts",
        "--group-id", f"g-{run}-{i}", "--job-name", name,
    ])
    try:
        detail = poll(lambda: jobs.job_detail(settings, job_id),
                      lambda d: d["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in d["vertices"]),
                      180, f"{name} running")
        assert all(v["status"] == "RUNNING" for v in detail["vertices"]), detail["vertices"]
        time.sleep(3)  # its Python workers have started and connected
    finally:
        jobs.cancel(settings, job_id)
    final = poll(lambda: jobs.job_detail(settings, job_id), lambda d: d["state"] == "CANCELED", 120,
                 f"{name} cancelled")
    assert final["state"] == "CANCELED"


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: on the suite's shared TaskManager, other tests' jobs load and free classes too (the
    growth measured there after the course dataset's jobs passed the bound once, with the fix in place)."""
    # die_with_parent: a killed test run leaves no servers behind
    stack = Stack(private_settings(Path(tmp_path_factory.mktemp("mw-classload")), die_with_parent=True))
    try:
        stack.up(timeout=300)
        yield stack
    finally:
        stack.down()


def test_a_pyflink_job_leaves_no_metaspace_behind(own_stack: Stack) -> None:
    stack, settings = own_stack, own_stack.settings
    run = uuid.uuid4().hex[:8]
    create_topics(settings, [f"mw.test-{run}.readings", f"mw.test-{run}.alerts"])
    _run_once(settings, run, 0)
    before = _metaspace(stack, settings)
    for i in (1, 2):
        _run_once(settings, run, i)
    used, loaded = _metaspace(stack, settings)
    per_job = (used - before[0]) / 2
    assert per_job < MAX_GROWTH_PER_JOB, (
        f"each job left {per_job / 2**20:.1f} MB of metaspace ({(loaded - before[1]) / 2:.0f} classes) in the "
        "TaskManager: are flink-python's packages loaded per job again (provision.flink_home, "
        "flink.PYTHON_PARENT_FIRST)?")
