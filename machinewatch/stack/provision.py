"""Provisioning of the real servers into the cache dir (outside the clone), once per version.

Kafka and the Flink Kafka connector come from Maven Central through poms kept in this package;
Flink itself is the installed ``apache-flink`` package; influxd is an installed one of the pinned major
version (MW_INFLUXD or PATH) or built from its Go module.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from machinewatch.config import Settings

HERE = Path(__file__).resolve().parent / "provision"

INSTALL_HINTS = {
    "java": "apt-get install -y openjdk-17-jre-headless",
    "mvn": "apt-get install -y maven",
    "go": "install Go >= 1.25 (https://go.dev/doc/install or 'apt-get install -y golang-go' on a recent Debian)",
    "cargo": "curl https://sh.rustup.rs | sh  (or 'apt-get install -y cargo')",
    "pkg-config": "apt-get install -y pkg-config",
    "cc": "apt-get install -y build-essential",
}


class ProvisionError(RuntimeError):
    """A server could not be provisioned; the message says what is missing and how to get it."""


def say(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        lines = [f"  {t}: not found. Install: {INSTALL_HINTS.get(t, t)}" for t in missing]
        raise ProvisionError("missing prerequisites:\n" + "\n".join(lines))


@contextmanager
def cache_lock(settings: Settings, name: str) -> Iterator[None]:
    """Serialise provisioning of one artefact between concurrent runs (two clones, CI and a dev)."""
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.cache_dir / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _stream(cmd: list[str], prefix: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run a long command, echoing its output with elapsed time so the user sees progress."""
    start = time.monotonic()
    proc = subprocess.Popen(  # noqa: S603
        cmd, cwd=cwd, env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    )
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = [*tail[-40:], line]
        print(f"[{prefix} {time.monotonic() - start:6.0f}s] {line}", file=sys.stderr, flush=True)
    if proc.wait() != 0:
        msg = f"{prefix}: '{' '.join(cmd)}' failed (exit {proc.returncode}). Last output:\n" + "\n".join(tail)
        raise ProvisionError(msg)


def _maven_copy(pom: Path, dest: Path, props: dict[str, str], prefix: str) -> None:
    require("java", "mvn")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn", "-B", "-f", str(pom), "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
        *[f"-D{k}={v}" for k, v in props.items()],
    ]
    _stream(cmd, prefix)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def _pom_key(pom: Path) -> str:
    """Short hash of a pom, so editing it provisions a fresh directory on every machine."""
    return hashlib.sha1(pom.read_bytes()).hexdigest()[:8]


def kafka_libs(settings: Settings) -> Path:
    """Directory of the Kafka broker's runtime jars for the configured version."""
    pom = HERE / "kafka" / "pom.xml"
    dest = settings.cache_dir / "kafka" / f"{settings.kafka_version}-{_pom_key(pom)}" / "libs"
    with cache_lock(settings, "kafka"):
        if not (dest / f"kafka_2.13-{settings.kafka_version}.jar").exists():
            say(f"provisioning Apache Kafka {settings.kafka_version} from Maven Central into {dest}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            _maven_copy(pom, dest, {"kafka.version": settings.kafka_version}, "maven kafka")
    return dest


def flink_connector_libs(settings: Settings) -> Path:
    """Directory holding the Flink Kafka SQL connector jar."""
    version = settings.flink_kafka_connector_version
    pom = HERE / "flink" / "pom.xml"
    dest = settings.cache_dir / "flink-connectors" / f"{version}-{_pom_key(pom)}"
    with cache_lock(settings, "flink-connectors"):
        if not any(dest.glob("flink-sql-connector-kafka-*.jar")):
            say(f"provisioning flink-sql-connector-kafka {version} from Maven Central into {dest}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            _maven_copy(pom, dest, {"flink.kafka.connector.version": version}, "maven flink")
    return dest


def pyflink_dir() -> Path:
    try:
        import pyflink
    except ImportError as exc:
        msg = "apache-flink is not installed in this Python: run './run setup' (or pip install -e .)"
        raise ProvisionError(msg) from exc
    return Path(pyflink.__file__).resolve().parent


def flink_home(settings: Settings) -> Path:
    """A FLINK_HOME assembled from the installed apache-flink plus the connector jar.

    bin/ is copied (the scripts derive FLINK_HOME from their own real path); jars are linked.
    Rebuilt when the pyflink install or the connector changes; cheap either way. The Python bridge
    (opt/flink-python) is also put in lib/, so the servers load its classes once (see PYTHON_PARENT_FIRST).
    """
    src = pyflink_dir()
    connectors = flink_connector_libs(settings)
    layout = "python-in-lib"  # a new layout gets a new home, not a stale cached one
    key = hashlib.sha1(f"{src}|{sorted(p.name for p in connectors.iterdir())}|{layout}".encode()).hexdigest()[:10]
    home = settings.cache_dir / "flink" / f"{settings.flink_version}-{key}"
    with cache_lock(settings, "flink-home"):
        if not (home / ".complete").exists():
            say(f"assembling FLINK_HOME at {home} from {src}")
            shutil.rmtree(home, ignore_errors=True)
            shutil.copytree(src / "bin", home / "bin")
            for sub in ("lib", "opt"):
                (home / sub).mkdir(parents=True)
                for jar in (src / sub).glob("*.jar"):
                    (home / sub / jar.name).symlink_to(jar)
            for jar in (src / "opt").glob("flink-python-*.jar"):
                (home / "lib" / jar.name).symlink_to(jar)
            for jar in connectors.glob("*.jar"):
                shutil.copy2(jar, home / "lib" / jar.name)
            (home / "plugins").mkdir()
            (home / ".complete").write_text(key)
    return home


# `influxd version` prints e.g. "InfluxDB v2.9.1 (git: 1a2b3c) build_date: ..." (1.x: "InfluxDB v1.8.10 (git: ...)").
_INFLUXD_VERSION = re.compile(r"\bInfluxDB v?(\d+)\.(\d+)\.(\d+)")
# The influxd chosen per (MW_INFLUXD, influxd on PATH, cache), so a stack start says which one once.
_chosen_influxd: dict[tuple[str, str, str], Path] = {}


def influxd_version(binary: Path, timeout: float = 30) -> str:
    """The version ``binary version`` reports, e.g. "2.9.1"; ProvisionError when it does not say one."""
    try:
        done = subprocess.run(  # noqa: S603 - a path the user named or that is on their PATH
            [str(binary), "version"], capture_output=True, text=True, timeout=timeout, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        msg = f"'{binary} version' did not run: {exc}"
        raise ProvisionError(msg) from exc
    output = (done.stdout + done.stderr).strip()
    found = _INFLUXD_VERSION.search(output)
    if done.returncode != 0 or found is None:
        msg = f"'{binary} version' exited {done.returncode} without an 'InfluxDB vX.Y.Z': {output[:200]!r}"
        raise ProvisionError(msg)
    return ".".join(found.groups())


def installed_influxd(settings: Settings, binary: Path, origin: str) -> Path | None:
    """``binary`` when it is an influxd of the pinned major version, else None after saying why not."""
    wanted = settings.influxdb_version.split(".")[0]
    try:
        version = influxd_version(binary)
    except ProvisionError as exc:
        say(f"not using {binary} ({origin}): {exc}")
        return None
    if version.split(".")[0] != wanted:
        say(f"not using {binary} ({origin}): it is InfluxDB {version}; machinewatch needs InfluxDB {wanted}.x "
            f"(pinned {settings.influxdb_version})")
        return None
    say(f"using InfluxDB {version} at {binary} ({origin}) instead of building {settings.influxdb_version}")
    return binary


def influxd_binary(settings: Settings) -> Path:
    """The influxd to run: MW_INFLUXD, else the pinned version's cached build, else an influxd on PATH,
    else the pinned version built from source once (10-30 minutes).

    An installed influxd is used only when its major version is the pinned one: a refusal is said, and
    the next choice is taken. MW_INFLUXD comes before the cache (the user asked for it); a build already
    in the cache before PATH (the data directory was made by it).
    """
    dest = settings.cache_dir / "influxdb" / settings.influxdb_version
    binary = dest / "influxd"
    on_path = shutil.which("influxd")
    key = (str(settings.influxd or ""), on_path or "", str(binary))
    if key in _chosen_influxd:
        return _chosen_influxd[key]
    chosen = None
    if settings.influxd is not None:
        chosen = installed_influxd(settings, settings.influxd.expanduser().absolute(), "MW_INFLUXD")
        if chosen is None and binary.exists():
            say(f"using the cached build of InfluxDB {settings.influxdb_version} at {binary}")
    if chosen is None and on_path is not None and not binary.exists():
        chosen = installed_influxd(settings, Path(on_path).absolute(), "found on PATH")
    if chosen is None:
        chosen = _built_influxd(settings, dest, binary)
    _chosen_influxd[key] = chosen
    return chosen


def _built_influxd(settings: Settings, dest: Path, binary: Path) -> Path:
    with cache_lock(settings, "influxdb"):
        if not binary.exists():
            require("go", "cargo", "pkg-config", "cc")
            say(
                f"building InfluxDB {settings.influxdb_version} (influxd) from its Go module into {dest}; "
                "libflux is compiled by cargo: this takes 10-30 minutes once, then it is cached"
            )
            _stream(
                ["bash", str(HERE / "build_influxd.sh"), settings.influxdb_version, str(dest)],
                "influxd build",
            )
    return binary


def provision_all(settings: Settings) -> None:
    require("java")
    kafka_libs(settings)
    flink_home(settings)
    influxd_binary(settings)
