"""The docker compose demo, run for real: docker/compose.yaml as users run it, on a private engine.

With pytest-docker's fixtures: the Compose this project ships (``docker_compose_command``), the repository's
own compose file, ``up --build --wait`` and ``down -v``. The engine is this machine's private one
(machinewatch/stack/engine.py: no bridge, no firewall changes, host network only), started here and stopped
at the end, and the base images are made without a registry. What differs from a user's ``docker compose
up`` is only what the file takes from the environment: free ports and the local image names.
Images and layers stay in the engine's cache (``$MW_CACHE_DIR/docker``), so a second run is quick.
Everything here is module-scoped (pyproject.toml runs pytest-docker with --container-scope=module): the demo
and the engine are gone before the next test module starts its own servers.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dashboards.streamlit import headless
from machinewatch import demo, jobs, names, query
from machinewatch.config import Settings, load_settings
from machinewatch.stack.engine import COMPOSE_FILE, Engine, EngineError, base_image, influxdb_standin
from machinewatch.stack.private import free_ports

pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SECRETS = "/var/lib/machinewatch/secrets"
# Long-running services and the one-shots that must have exited 0.
SERVERS = {"kafka", "jobmanager", "taskmanager", "influxdb", "simulator", "influxdb-writer", "dashboard"}
ONE_SHOTS = {"kafka-init", "job-submitter", "influxdb-setup"}
PROJECT_PREFIX = "mw-compose-test-"


def _interfaces() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir()}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """The private engine, installed through ./run; skips only where it cannot start."""
    out = subprocess.run([str(REPO / "run"), "compose", "install"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"./run compose install failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    engine = Engine(load_settings(), tied=True)
    # One compose test at a time per engine (two clones on one machine share it): the second waits.
    engine.root.mkdir(parents=True, exist_ok=True)
    with open(engine.root / ".compose-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield from _engine_in_use(engine)


def _engine_in_use(engine: Engine) -> Iterator[Engine]:
    # Someone's './run compose up' engine on the same cache: use it and leave it running.
    reused = engine.ping()
    before = _interfaces()
    if not reused:
        try:
            engine.start()
        except EngineError as exc:
            pytest.skip(f"a Docker engine cannot start on this machine: {exc}")
    try:
        assert _interfaces() == before, "the engine made a network interface (a bridge?)"
        # A run that was killed left its project: restarted by the engine, it would hold ports and memory.
        engine.remove_projects(PROJECT_PREFIX)
        yield engine
    finally:
        with contextlib.suppress(EngineError):
            engine.prune_images()
        if not reused:
            engine.stop()


@pytest.fixture(scope="module")
def images(engine: Engine) -> dict[str, str]:
    """The base image (debootstrap) and the InfluxDB stand-in, made once and cached in the engine."""
    settings = load_settings()
    base = base_image(engine)
    return {"DEMO_BASE_IMAGE": base, "DEMO_INFLUXDB_IMAGE": influxdb_standin(engine, settings, base)}


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    names_ = ["MW_KAFKA_PORT", "MW_KAFKA_CONTROLLER_PORT", "MW_FLINK_REST_PORT", "MW_FLINK_RPC_PORT",
              "MW_INFLUX_PORT", "DEMO_DASHBOARD_PORT"]
    return dict(zip(names_, free_ports(len(names_)), strict=True))


# --- pytest-docker's fixtures, pointed at our engine, our Compose and our file ----------------------------


@pytest.fixture(scope="module")
def docker_compose_command(engine: Engine, images: dict[str, str], ports: dict[str, int]) -> str:
    keep = ("DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_BUILDKIT", "COMPOSE_BAKE", "COMPOSE_PARALLEL_LIMIT")
    env = {**{k: v for k, v in engine.env().items() if k in keep}, **images, **{k: str(v) for k, v in ports.items()}}
    return " ".join(["env", *(shlex.quote(f"{k}={v}") for k, v in env.items()), *engine.compose_command()])


@pytest.fixture(scope="module")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)  # the very file users run


@pytest.fixture(scope="module")
def docker_compose_project_name() -> str:
    return f"{PROJECT_PREFIX}{os.getpid()}"


@pytest.fixture(scope="module")
def docker_setup() -> list[str]:
    # Builds (cold: apt, PyPI, Maven) and starts; returns when every service is healthy or has completed.
    return ["up --build --wait --wait-timeout 1800"]


@pytest.fixture(scope="module")
def docker_cleanup() -> list[str]:
    return ["down -v --remove-orphans"]


def _compose(command: str, args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(f"{command} {args}", shell=True, capture_output=True, text=True,  # noqa: S602
                          check=False, timeout=timeout)


@pytest.fixture(scope="module")
def teardown_guard(docker_compose_command: str, docker_compose_file: str,
                   docker_compose_project_name: str) -> Iterator[str]:
    """Whatever happens (a failed build, a failed 'up'), the logs are kept and the project removed with its
    volumes; pytest-docker's own clean-up runs only after a successful set-up. Torn down after it."""
    base = f"{docker_compose_command} -f {shlex.quote(docker_compose_file)} -p {docker_compose_project_name}"
    try:
        yield base
    finally:
        _save_logs(base)
        _compose(base, "down -v --remove-orphans", timeout=300)


def _save_logs(base: str) -> None:
    """Every container's state and log into test-artifacts/compose-demo.log, while there are containers."""
    with contextlib.suppress(Exception):
        ps = _compose(base, "ps -a", timeout=60)
        if len(ps.stdout.strip().splitlines()) < 2:  # only the header: nothing (left) to read
            return
        logs = _compose(base, "logs --no-color --timestamps", timeout=120)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "compose-demo.log").write_text(ps.stdout + ps.stderr + "\n" + logs.stdout + logs.stderr)


def _containers(base: str) -> dict[str, dict[str, Any]]:
    """Service -> its container as 'compose ps -a' reports it (state, exit code, health)."""
    out = _compose(base, "ps -a --format json")
    assert out.returncode == 0, out.stderr
    text = out.stdout.strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
    return {r["Service"]: r for r in rows}


@pytest.fixture(scope="module")
def demo_stack(teardown_guard: str, docker_services: Any, ports: dict[str, int]) -> Iterator[Settings]:
    """The running demo, and settings that reach it from the host through its ports (the read-only token)."""
    # 'up --wait' waits for what others depend on; the job submitter nobody waits for: wait for it here.
    deadline = time.monotonic() + 600
    while True:
        state = _containers(teardown_guard)
        pending = [n for n in ONE_SHOTS if state.get(n, {}).get("State") != "exited"]
        if not pending:
            break
        assert time.monotonic() < deadline, f"one-shots still running after 600 s: {pending}"
        time.sleep(5)
    token = _compose(teardown_guard, f"exec -T influxdb-writer cat {SECRETS}/influx_read_token")
    assert token.returncode == 0, token.stderr
    try:
        yield load_settings(
            influx_port=ports["MW_INFLUX_PORT"], influx_url=None, influx_read_token=token.stdout.strip(),
            flink_rest_port=ports["MW_FLINK_REST_PORT"], flink_rest_address=None,
        )
    finally:
        _save_logs(teardown_guard)  # before pytest-docker's 'down -v'


def _wait_for(what: str, probe: Any, timeout: float, every: float = 10) -> pd.DataFrame:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if not last.empty:
                return last
        except query.QueryError as exc:
            last = exc
        time.sleep(every)
    pytest.fail(f"{what} within {timeout:.0f}s (last answer: {last!r}); logs in {ARTIFACTS / 'compose-demo.log'}")


# --- the checks ------------------------------------------------------------------------------------------


def test_every_service_is_up_and_every_one_shot_succeeded(teardown_guard: str, demo_stack: Settings) -> None:
    state = _containers(teardown_guard)
    assert set(state) == SERVERS | ONE_SHOTS
    for name in SERVERS:
        assert state[name]["State"] == "running", (name, state[name])
        assert state[name].get("Health") in ("", "healthy"), (name, state[name])
    for name in ONE_SHOTS:
        assert (state[name]["State"], state[name]["ExitCode"]) == ("exited", 0), (name, state[name])
    running = {j["name"] for j in jobs.list_jobs(demo_stack) if j["state"] == "RUNNING"}
    assert running == set(demo.JOBS.values())


def _windows(settings: Settings) -> pd.DataFrame:
    since = datetime.now(tz=UTC) - timedelta(minutes=15)

    def whole() -> pd.DataFrame:
        # A query that meets a write in progress may see some of a point's fields and not yet the others
        # (NaN after the pivot): ask again rather than judge half a point. A point written without one of
        # its fields keeps the answer incomplete until the timeout, and so still fails.
        frame = query.window_aggregates(settings, since, site="demo-line", window=f"{settings.window_size_s}s")
        fields = ["avg", "min", "max", "count"]
        if frame.empty or not set(fields) <= set(frame.columns) or frame[fields].isna().any().any():
            return pd.DataFrame()
        return frame

    return _wait_for("no complete window results of the simulated sensors in InfluxDB", whole, timeout=300)


def test_window_results_reach_influxdb_through_its_port(demo_stack: Settings) -> None:
    windows = _windows(demo_stack)
    assert windows["device_id"].nunique() >= 2, windows
    assert (windows["count"] > 0).all()


def test_an_overheat_alert_opens(demo_stack: Settings) -> None:
    """sensor-0003 overheats 10 s after the simulator starts; the sustained-overheat job opens an alert
    after MW_OVERHEAT_DURATION_S above the threshold, and the writer puts it in the alerts bucket."""
    since = datetime.now(tz=UTC) - timedelta(minutes=15)
    flux = demo._alerts_flux(since)
    alerts = _wait_for(
        "no opened overheat alert in InfluxDB",
        lambda: (lambda a: a[a["state"] == "opened"] if not a.empty else a)(query.run_flux(demo_stack, flux)),
        timeout=420,
    )
    assert set(alerts["device_id"]) == {"sensor-0003"}, alerts


def test_the_dashboard_draws_its_charts_in_chromium(demo_stack: Settings, ports: dict[str, int]) -> None:
    _windows(demo_stack)  # the page has something to draw
    url = f"http://127.0.0.1:{ports['DEMO_DASHBOARD_PORT']}/?range=15m&refresh=off"
    with tempfile.TemporaryDirectory(prefix="mw-chromium-", ignore_cleanup_errors=True) as profile:
        browser = headless.Chromium(profile)
        try:
            browser.call("Page.navigate", url=url)
            deadline = time.monotonic() + 180
            text, charts = "", 0
            while time.monotonic() < deadline:
                text = re.sub(r"\s+", " ", browser.evaluate("document.body ? document.body.innerText : ''") or "")
                charts = browser.evaluate("document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length") or 0
                running = browser.evaluate(
                    "!!document.querySelector('[data-testid=\"stStatusWidget\"]')"
                    " && document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')")
                if charts >= 3 and "Avg temperature" in text and not running:
                    break
                time.sleep(1)
            time.sleep(2)
            dom = browser.evaluate("document.documentElement.outerHTML") or ""
            shot = browser.call("Page.captureScreenshot", format="png")
        finally:
            browser.close()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "compose-dashboard.png").write_bytes(base64.b64decode(shot["data"]))
    assert 'data-testid="stException"' not in dom, "the page shows an exception box"
    assert "Avg temperature" in text and "°C" in text, text[:2000]
    assert "sensor-" in text, "no simulated device on the page"
    assert charts >= 3, f"expected the line charts and the histogram; found {charts} charts"


def test_the_writer_used_its_write_only_token(teardown_guard: str, demo_stack: Settings) -> None:
    """The tokens are the native set-up's: the read-only one cannot write (so the windows above came
    through the pipeline's write-only token)."""
    from influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.rest import ApiException

    with (InfluxDBClient(url=demo_stack.influx, token=demo_stack.read_token(), org=demo_stack.influx_org) as client,
          pytest.raises(ApiException) as refused):
        client.write_api(write_options=SYNCHRONOUS).write(names.BUCKET_RAW, record="probe value=1i")
    assert refused.value.status in (401, 403, 404)
