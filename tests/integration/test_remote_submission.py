"""Both jobs submitted to a Flink session cluster machinewatch did not start (issue 20, item 4).

The cluster is what someone else runs: its own FLINK_HOME (Flink's own jars, no Kafka connector in lib/),
its own config, ports, state and working directory, and a Python with PyFlink and the libraries but no
machinewatch on its path. The client is a separate process whose checkout is a temporary copy, renamed
away as soon as the submissions returned. So the jobs can only run if the client shipped everything they
need (Python packages, connector jar) with the submission, and nothing on the cluster reads the client's
files later. Kafka is the session stack's (an existing broker, as far as the client knows).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.stack import Stack, provision
from machinewatch.stack.flink import Flink
from machinewatch.stack.private import private_settings
from machinewatch.stack.watchdog import stop_watchdog
from simulators.temperature import TemperatureSimulator
from tests.stack_support import create_topics, read_topic
from tests.waiting import poll

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STEPS = 120  # seconds of event time per device
HOT_FROM_S = 20  # device 1 runs hot from here to the end: pending at once, opened after the duration


class ElsewhereFlink(Flink):
    """A session cluster started as its operator would: nothing of machinewatch's cache or checkout."""

    def __init__(self, settings: Settings, home: Path, python: Path, cwd: Path) -> None:
        super().__init__(settings)
        self._home, self.python, self.cwd = home, python, cwd

    def home(self) -> Path:
        return self._home

    def env(self) -> dict[str, str]:
        # Nothing inherited from the test process: its PYTHONPATH names the checkout.
        return {**super().env(), "PYTHONPATH": "", "PYFLINK_CLIENT_EXECUTABLE": str(self.python)}

    def write_config(self) -> None:
        super().write_config()
        conf = self.conf_dir() / "config.yaml"
        lines = [line for line in conf.read_text().splitlines() if not line.startswith("python.")]
        conf.write_text("\n".join([*lines, f"python.executable: {self.python}", ""]))

    def start(self) -> None:
        self.proc.start(*self.command(), cwd=self.cwd)
        self.taskmanager.start(*self.taskmanager_command(), cwd=self.cwd)


def _flink_distribution(dest: Path) -> Path:
    """A FLINK_HOME of Flink's own jars only (the stack's adds the Kafka connector to lib/)."""
    src = provision.pyflink_dir()
    shutil.copytree(src / "bin", dest / "bin")
    for sub in ("lib", "opt"):
        (dest / sub).mkdir(parents=True)
        for jar in (src / sub).glob("*.jar"):
            (dest / sub / jar.name).symlink_to(jar)
    (dest / "plugins").mkdir()
    assert not list((dest / "lib").glob("*kafka*")), "the cluster must not hold the connector"
    return dest


def _cluster_python(dest: Path) -> Path:
    """A venv seeing this Python's libraries (PyFlink, pydantic, ...) but not machinewatch.

    The shared site-packages are added by a plain path line, so their .pth files (the editable install's
    finder, which would map machinewatch to some checkout) are not processed.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)  # noqa: S603
    python = dest / "bin" / "python"
    site = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "pyflink").is_dir())
    own_site = Path(subprocess.run(  # noqa: S603
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    (own_site / "shared.pth").write_text(f"{site}\n")
    probe = subprocess.run(  # noqa: S603
        [str(python), "-c", "import pyflink, pydantic\ntry:\n import machinewatch\nexcept ImportError:\n print('ok')"],
        capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")}, cwd=dest, check=False)
    assert probe.stdout.strip() == "ok", f"the cluster's Python must have PyFlink but no machinewatch: {probe}"
    return python


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ElsewhereFlink]:
    root = tmp_path_factory.mktemp("elsewhere")
    cwd = root / "cwd"
    cwd.mkdir()
    settings = private_settings(root / "state", flink_taskmanager_slots=2)
    flink = ElsewhereFlink(settings, _flink_distribution(root / "flink"), _cluster_python(root / "venv"), cwd)
    try:
        flink.up(timeout=240)
        yield flink
    finally:
        flink.stop_all()
        stop_watchdog(settings.state_dir / "run")


def _submit_from_copy(settings: Settings, cluster: ElsewhereFlink, client: Path, job: str, args: list[str]) -> str:
    """``jobs.submit`` run by a client process whose machinewatch is the copy in ``client``."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MW_")},
        **settings.to_env(),
        "MW_FLINK_REST_ADDRESS": cluster.address(),
        "MW_FLINK_PYTHON": str(cluster.python),
        # The client's own state dir (the flink CLI's config), not the session stack's.
        "MW_STATE_DIR": str(client / "state"),
        "PYTHONPATH": str(client),
    }
    code = ("import sys; from machinewatch import jobs; from machinewatch.config import load_settings; "
            "print(jobs.submit(load_settings(), sys.argv[1], sys.argv[2:]))")
    done = subprocess.run([sys.executable, "-c", code, job, *args], env=env, cwd=client,  # noqa: S603
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"submission of {job} failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done.stdout.strip().splitlines()[-1]


def test_jobs_run_on_a_cluster_machinewatch_did_not_start(
    stack: Stack, settings: Settings, elsewhere: ElsewhereFlink, tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:8]
    topics = {k: f"mw.test-{run}.{k}" for k in ("readings", "aggregates", "late", "alerts", "overheat", "dead")}
    # One partition: the backlog is published while the jobs' sources start, and a reader that took one
    # partition's readings before another's would make the later ones late (seen: device 0's, all late).
    create_topics(settings.model_copy(update={"kafka_partitions": 1}), topics.values())

    client = tmp_path / "client"
    for package in ("machinewatch", "flink_jobs"):
        shutil.copytree(REPO / package, client / package, ignore=shutil.ignore_patterns("__pycache__"))
    window_id = _submit_from_copy(settings, elsewhere, client, "window-aggregates", [
        "--readings-topic", topics["readings"], "--aggregates-topic", topics["aggregates"],
        "--late-topic", topics["late"], "--alerts-topic", topics["alerts"],
        "--dead-letter-topic", topics["dead"], "--group-id", f"w-{run}", "--job-name", f"mw-remote-w-{run}",
    ])
    overheat_id = _submit_from_copy(settings, elsewhere, client, "sustained-overheat", [
        "--readings-topic", topics["readings"], "--alerts-topic", topics["overheat"],
        "--group-id", f"o-{run}", "--job-name", f"mw-remote-o-{run}",
    ])
    # From here on no file of the client exists where it was: the jobs live on what was shipped.
    client.rename(tmp_path / "client-gone")

    start = (datetime.now(tz=UTC) - timedelta(seconds=STEPS + 30)).replace(microsecond=0)
    t0 = int(start.timestamp() * 1000)
    sim = TemperatureSimulator(devices=2, seed=11, device_prefix=f"rm{run}", base_c=55.0, step_c=0.3,
                               overheats=[(1, HOT_FROM_S * 1000, STEPS * 1000, 40.0)])
    with Publisher(settings, topic=topics["readings"]) as pub:
        pub.send_many(sim.readings(start, STEPS))

    # Tumbling windows wholly inside the data, well before its end (the watermark has passed them).
    size_ms = settings.window_size_s * 1000
    first_end = (t0 // size_ms + 2) * size_ms
    ends = range(first_end, t0 + (STEPS - 20) * 1000, size_ms)
    want_windows = {(sim.device_id(i), end) for i in range(2) for end in ends}

    def windows() -> dict[tuple[str, int], int]:
        return {(str(r["device_id"]), int(r["window_end_ms"])): int(r["count"])
                for r in read_topic(settings, topics["aggregates"])
                if r["window_ms"] == r["slide_ms"] == size_ms and "device_id" in r}

    got = poll(windows, lambda w: want_windows <= w.keys(), 180, "the window job's aggregates", every=3)
    assert want_windows <= got.keys(), f"missing windows: {sorted(want_windows - got.keys())[:5]}"
    assert all(got[key] == size_ms // sim.interval_ms for key in want_windows), "every window counts its readings"

    want_alerts = {("pending", t0 + (HOT_FROM_S + 1) * 1000),
                   ("opened", t0 + (HOT_FROM_S + settings.overheat_duration_s) * 1000)}

    def alerts() -> set[tuple[str, int]]:
        return {(str(a["state"]), int(a["ts"])) for a in read_topic(settings, topics["overheat"])
                if a["device_id"] == sim.device_id(1)}

    seen = poll(alerts, lambda a: want_alerts <= a, 180, "the overheat job's alerts", every=3)
    assert want_alerts <= seen, f"missing {sorted(want_alerts - seen)} (seen {sorted(seen)})"
    assert not [a for a in read_topic(settings, topics["overheat"]) if a["device_id"] == sim.device_id(0)]

    # Both ran on the other cluster, and still run there.
    for job_id in (window_id, overheat_id):
        assert elsewhere_rest(elsewhere, f"/jobs/{job_id}")["state"] == "RUNNING"


def elsewhere_rest(cluster: ElsewhereFlink, path: str, method: str = "GET") -> dict[str, object]:
    import requests

    resp = requests.request(method, f"{cluster.address()}{path}", timeout=30,
                            params={"mode": "cancel"} if method == "PATCH" else None)
    resp.raise_for_status()
    return dict(resp.json()) if resp.content else {}
