"""A private Docker engine for the compose demo, and a Debian base image made without a registry.

Where no system Docker may run and no image registry is reachable (the project's machines and CI),
``./run compose`` starts its own ``dockerd``: no bridge, no firewall or forwarding changes, its data
in the cache dir and its socket private, so containers can only use the host network
(``network_mode: host`` in docker/compose.yaml). The base image is made with ``debootstrap`` from the
Debian mirror apt already uses and ``docker import``ed under the name docker/compose.yaml is told to
use (``DEMO_BASE_IMAGE``). The engine is stopped by its pid; a test's engine dies with the test process
even when that is SIGKILLed (the stack's watchdog).

    python -m machinewatch.stack.engine install      # Compose v2 (built once), no engine started
    python -m machinewatch.stack.engine prepare      # engine, base images, Compose: ready for 'up'
    python -m machinewatch.stack.engine up|down|ps|logs|compose ARGS...
    python -m machinewatch.stack.engine stop         # stop the private engine
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from machinewatch.config import Settings, load_settings
from machinewatch.stack.procs import ManagedProcess
from machinewatch.stack.provision import ProvisionError, say

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker" / "compose.yaml"
# The base image docker/compose.yaml builds on where no registry is reachable (DEMO_BASE_IMAGE).
LOCAL_BASE_IMAGE = "localhost/debian:bookworm-slim"
# A stand-in for the official InfluxDB image of the pinned version (DEMO_INFLUXDB_IMAGE): the influxd
# the native stack runs, on the local base image.
LOCAL_INFLUXDB_IMAGE = "localhost/influxdb:{version}"
# Compose v2 is not in Debian; it is built once from its Go module (the Go module proxy) into the cache.
COMPOSE_MODULE = "github.com/docker/compose/v2"
COMPOSE_VERSION = "v2.40.3"
# The mandatory engine flags: no bridge, no iptables/ip6tables rules, no forwarding, no masquerading.
DOCKERD_NETWORK_FLAGS = ("--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
                         "--ip-masq=false")


# Seconds containers get to stop on SIGTERM when the engine stops (then SIGKILL).
SHUTDOWN_TIMEOUT_S = 5


class EngineError(RuntimeError):
    """The private engine could not start or a docker command failed; says what to do."""


class Engine:
    """One private dockerd: data under ``root`` (cache), socket and exec-root under a short /tmp path."""

    def __init__(self, settings: Settings, tied: bool = False) -> None:
        self.settings = settings
        self.root = settings.cache_dir / "docker"
        # unix socket paths are limited to 108 bytes: keep the run dir short, one per cache dir.
        key = hashlib.sha1(str(self.root).encode()).hexdigest()[:8]
        self.run_dir = Path(tempfile.gettempdir()) / f"mw-docker-{key}"
        self.socket = self.run_dir / "docker.sock"
        self.proc = ManagedProcess("dockerd", self.run_dir, "dockerd", tied=tied)
        self.proc.logfile = self.root / "dockerd.log"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        """Environment for docker and Compose to talk to this engine (and find the Compose plugin)."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.root / "config"),
                # Builds use the engine's classic builder: BuildKit's Dockerfile frontend would be pulled
                # from a registry, and Compose's bake delegation needs a buildx plugin we do not have.
                "DOCKER_BUILDKIT": "0", "COMPOSE_BAKE": "false",
                # With the classic builder Compose builds the one image once per service, in parallel: one at
                # a time, the first builds and the others find every layer cached.
                "COMPOSE_PARALLEL_LIMIT": "1"}

    def ping(self) -> bool:
        """True when the engine answers on its socket."""
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b" 200 " in sock.recv(256)
        except OSError:
            return False

    def start(self, timeout: float = 90) -> None:
        """Start dockerd unless it runs; wait until it answers. EngineError with its log when it cannot."""
        if self.proc.pid() is not None and self.ping():
            return
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            msg = "dockerd is not installed: './run compose prepare' installs Debian's docker.io"
            raise EngineError(msg)
        if os.geteuid() != 0:
            msg = "the private Docker engine needs root (dockerd mounts filesystems and makes namespaces)"
            raise EngineError(msg)
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "config").mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self._config_file().write_text(json.dumps({
            # Logs of containers stay small: the demo may run for days on a laptop.
            "log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "2"},
            # On SIGTERM dockerd stops its containers (SIGKILL after this many seconds), then exits.
            "shutdown-timeout": SHUTDOWN_TIMEOUT_S,
        }))
        if self.proc.tied:
            from machinewatch.stack.watchdog import ensure_watchdog

            # Killed with the process that started it: dockerd gets the time to stop its containers first
            # (a SIGKILLed dockerd would leave them running until the engine's next start).
            ensure_watchdog(self.run_dir, grace_s=SHUTDOWN_TIMEOUT_S + 30)
        say(f"docker: starting a private engine (socket {self.socket}, data {self.root / 'data'})")
        self.proc.start(self.command(dockerd))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.pid() is None:
                msg = f"dockerd exited while starting. Last lines of {self.proc.logfile}:\n{self.proc.tail(30)}"
                raise EngineError(msg)
            if self.ping():
                say(f"docker: engine ready (pid {self.proc.pid()})")
                return
            time.sleep(0.5)
        self.stop()
        msg = f"dockerd did not answer within {timeout:.0f}s. Last lines of {self.proc.logfile}:\n{self.proc.tail(30)}"
        raise EngineError(msg)

    def _config_file(self) -> Path:
        return self.run_dir / "daemon.json"

    def command(self, dockerd: str = "dockerd") -> list[str]:
        """dockerd's command line: the mandatory network flags, private data, exec root and socket."""
        return [
            dockerd, *DOCKERD_NETWORK_FLAGS,
            f"--data-root={self.root / 'data'}", f"--exec-root={self.run_dir / 'exec'}",
            f"--pidfile={self.run_dir / 'dockerd-own.pid'}", f"--host=unix://{self.socket}",
            # Our own daemon.json, never the system's (registry mirrors, listeners, a default bridge).
            f"--config-file={self._config_file()}",
        ]

    def stop(self, timeout: float = 60) -> bool:
        """Stop dockerd by its pid (it stops its containers first). True if it was running."""
        stopped = self.proc.stop(timeout=timeout)
        if self.proc.tied:
            from machinewatch.stack.watchdog import stop_watchdog

            stop_watchdog(self.run_dir)
        self._unmount_leftovers()
        if stopped:
            say("docker: private engine stopped")
        return stopped

    def _unmount_leftovers(self) -> None:
        """dockerd can leave its namespace mounts under the exec root behind; nothing of ours stays mounted."""
        if self.proc.pid() is not None:
            return
        with contextlib.suppress(OSError):
            mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
            for mount in sorted((m for m in mounts if m.startswith(f"{self.run_dir}/")), reverse=True):
                subprocess.run(["umount", "-l", mount], capture_output=True, check=False)  # noqa: S603,S607

    def remove_projects(self, prefix: str) -> list[str]:
        """Remove the containers and volumes of Compose projects named ``prefix...`` (left by a killed run)."""
        out = self.docker("ps", "-a", "--format", '{{.ID}} {{.Label "com.docker.compose.project"}}', capture=True)
        ids = [line.split()[0] for line in out.stdout.splitlines() if line.split()[1:2] and
               line.split()[1].startswith(prefix)]
        if ids:
            self.docker("rm", "-f", "-v", *ids, capture=True)
        out = self.docker("volume", "ls", "--format", '{{.Name}} {{.Label "com.docker.compose.project"}}', capture=True)
        volumes = [line.split()[0] for line in out.stdout.splitlines() if line.split()[1:2] and
                   line.split()[1].startswith(prefix)]
        if volumes:
            self.docker("volume", "rm", "-f", *volumes, capture=True)
        return ids + volumes

    def prune_images(self) -> None:
        """Drop images no tag names any more (each rebuild after a code change leaves the old one behind)."""
        self.docker("image", "prune", "--force", capture=True, check=False)

    # --- docker and Compose ---------------------------------------------------------------------

    def docker(self, *args: str, check: bool = True, capture: bool = False,
               stdin: int | None = None, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        docker = shutil.which("docker")
        if docker is None:
            msg = "the docker CLI is not installed: './run compose prepare' installs Debian's docker.io"
            raise EngineError(msg)
        out = subprocess.run(  # noqa: S603 - the docker CLI with our arguments
            [docker, *args], env=self.env(), text=True, check=False, stdin=stdin, timeout=timeout,
            capture_output=capture,
        )
        if check and out.returncode != 0:
            msg = f"'docker {' '.join(args)}' failed (exit {out.returncode}): {(out.stderr or '').strip()[-2000:]}"
            raise EngineError(msg)
        return out

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False, capture=True).returncode == 0

    def compose_command(self) -> list[str]:
        """How to run Compose here: the v2 plugin built into the cache, else Debian's docker-compose (v1)."""
        plugin = self.root / "config" / "cli-plugins" / "docker-compose"
        if plugin.exists() and shutil.which("docker"):
            return ["docker", "compose"]
        if shutil.which("docker-compose"):
            return ["docker-compose"]
        msg = "no Docker Compose: './run compose prepare' builds Compose v2 (or install Debian's docker-compose)"
        raise EngineError(msg)


# --- what 'prepare' makes, once, cached -----------------------------------------------------------


@contextlib.contextmanager
def _lock(root: Path, name: str) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def debian_mirror() -> str:
    """The Debian mirror apt on this machine uses (deb822 or one-line sources), else deb.debian.org."""
    sources = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"),
               *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
               *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in sources:
        with contextlib.suppress(OSError):
            text = path.read_text()
            for stanza in re.split(r"\n\s*\n", text):
                if re.search(r"^Suites:.*\bbookworm\b", stanza, re.MULTILINE) and "Types: deb" in stanza:
                    uri = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
                    if uri and "security" not in uri[1]:
                        return uri[1]
            for line in text.splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == "bookworm" and parts[1].startswith("http"):
                    return parts[1]
    return "http://deb.debian.org/debian"


def base_image(engine: Engine, name: str = LOCAL_BASE_IMAGE) -> str:
    """Debian bookworm (minbase) as ``name``: debootstrap once into a tarball in the cache, then docker import."""
    if engine.has_image(name):
        return name
    tarball = engine.root / "debian-bookworm-minbase.tar"
    with _lock(engine.root, "base-image"):
        if not tarball.exists():
            if shutil.which("debootstrap") is None:
                msg = "debootstrap is not installed: './run compose prepare' installs it"
                raise EngineError(msg)
            mirror = debian_mirror()
            start = time.monotonic()
            say(f"docker: debootstrap --variant=minbase bookworm from {mirror} (about 2 minutes, once)")
            with tempfile.TemporaryDirectory(prefix="mw-debootstrap-", dir=engine.root) as tmp:
                rootfs = Path(tmp) / "rootfs"
                out = subprocess.run(  # noqa: S603
                    ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror],
                    capture_output=True, text=True, check=False,
                )
                if out.returncode != 0:
                    msg = f"debootstrap failed (exit {out.returncode}):\n{(out.stdout + out.stderr)[-3000:]}"
                    raise EngineError(msg)
                # The downloaded .debs and apt lists are not part of a slim image.
                for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                    for f in (rootfs / junk).glob("*"):
                        if f.is_file():
                            f.unlink()
                partial = tarball.with_suffix(".tar.tmp")
                subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."],  # noqa: S603,S607
                               check=True)
                partial.rename(tarball)
            say(f"docker: base file system made in {time.monotonic() - start:.0f}s ({tarball})")
        if not engine.has_image(name):
            with open(tarball, "rb") as fh:
                engine.docker("import", "--change", 'CMD ["bash"]', "-", name, stdin=fh.fileno(), capture=True)
            say(f"docker: imported {name}")
    return name


def influxdb_standin(engine: Engine, settings: Settings, base: str) -> str:
    """An image with the influxd the native stack runs (same version as the official image), for a machine
    without a registry: same command and environment as the official image, no UI, no influx CLI."""
    from machinewatch.stack import provision

    name = LOCAL_INFLUXDB_IMAGE.format(version=settings.influxdb_version)
    binary = provision.influxd_binary(settings)
    version = settings.influxdb_version
    key = hashlib.sha1(binary.read_bytes()).hexdigest()[:12]
    label = f"{version}-{key}"
    if engine.has_image(name):
        found = engine.docker("image", "inspect", "--format", '{{ index .Config.Labels "machinewatch.influxd" }}',
                              name, capture=True).stdout.strip()
        if found == label:
            return name
    with tempfile.TemporaryDirectory(prefix="mw-influxd-image-", dir=engine.root) as tmp:
        shutil.copy2(binary, Path(tmp) / "influxd")
        (Path(tmp) / "Dockerfile").write_text(
            f"FROM {base}\n"
            "COPY influxd /usr/local/bin/influxd\n"
            "RUN mkdir -p /var/lib/influxdb2 /etc/influxdb2\n"
            f'LABEL machinewatch.influxd="{label}"\n'
            'CMD ["influxd"]\n'
        )
        engine.docker("build", "--network", "host", "-t", name, tmp, capture=True)
    say(f"docker: built {name} (InfluxDB {version}, the native stack's influxd, as the official image's stand-in)")
    return name


def compose_plugin(engine: Engine) -> Path:
    """Compose v2 as a docker CLI plugin in the engine's config dir, built once from its Go module."""
    plugin = engine.root / "config" / "cli-plugins" / "docker-compose"
    if plugin.exists():
        return plugin
    if shutil.which("go") is None:
        msg = "Compose v2 is built from its Go module and Go is not installed"
        raise EngineError(msg)
    with _lock(engine.root, "compose"):
        if plugin.exists():
            return plugin
        start = time.monotonic()
        say(f"docker: building Compose {COMPOSE_VERSION} from its Go module (several minutes, once)")
        env = {**os.environ, "GOFLAGS": "-mod=readonly"}
        # 'go install module@version' refuses modules with exclude directives: build the downloaded source.
        out = subprocess.run(["go", "mod", "download", "-json", f"{COMPOSE_MODULE}@{COMPOSE_VERSION}"],  # noqa: S603,S607
                             capture_output=True, text=True, check=False, env=env)
        if out.returncode != 0:
            msg = f"go mod download {COMPOSE_MODULE}@{COMPOSE_VERSION} failed: {(out.stdout + out.stderr)[-2000:]}"
            raise EngineError(msg)
        moddir = Path(json.loads(out.stdout)["Dir"])
        with tempfile.TemporaryDirectory(prefix="mw-compose-build-", dir=engine.root) as tmp:
            src = Path(tmp) / "src"
            shutil.copytree(moddir, src)
            for path in src.rglob("*"):
                path.chmod(path.stat().st_mode | 0o200)
            src.chmod(src.stat().st_mode | 0o200)
            built = Path(tmp) / "docker-compose"
            version = f"-X {COMPOSE_MODULE}/internal.Version={COMPOSE_VERSION}"
            out = subprocess.run(  # noqa: S603
                ["go", "build", "-trimpath", "-ldflags", f"-s -w {version}", "-o", str(built), "./cmd"],  # noqa: S607
                cwd=src, capture_output=True, text=True, check=False, env=env,
            )
            if out.returncode != 0:
                msg = f"building Compose {COMPOSE_VERSION} failed:\n{(out.stdout + out.stderr)[-3000:]}"
                raise EngineError(msg)
            plugin.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(built, plugin)
        say(f"docker: Compose {COMPOSE_VERSION} built in {time.monotonic() - start:.0f}s ({plugin})")
    return plugin


def local_ca_certificates(dest: Path = REPO / "docker" / "ca-certificates") -> list[str]:
    """Copy the CAs this machine added to Debian's (update-ca-certificates' local folder) into the image
    build's folder, so builds trust what the host trusts (e.g. a proxy that re-signs TLS). Returns the names."""
    names = []
    for cert in sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt")):
        target = dest / f"host-{cert.name}"
        if not target.exists() or target.read_bytes() != cert.read_bytes():
            shutil.copyfile(cert, target)
        names.append(target.name)
    return names


def prepare(engine: Engine, settings: Settings) -> dict[str, str]:
    """Engine running, base images present, Compose available. Returns the DEMO_* variables to use."""
    copied = local_ca_certificates()
    if copied:
        say(f"docker: the image build will trust this machine's local CAs too: {', '.join(copied)}")
    engine.start()
    try:
        compose_plugin(engine)
    except EngineError as exc:
        if not shutil.which("docker-compose"):
            raise
        say(f"docker: using Debian's docker-compose (v1): {exc}")
    base = base_image(engine)
    influx = influxdb_standin(engine, settings, base)
    return {"DEMO_BASE_IMAGE": base, "DEMO_INFLUXDB_IMAGE": influx}


def compose(engine: Engine, args: Sequence[str], env: Mapping[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [*engine.compose_command(), "-f", str(COMPOSE_FILE), *args]
    out = subprocess.run(cmd, env={**engine.env(), **(env or {})}, text=True, check=False)  # noqa: S603
    if check and out.returncode != 0:
        msg = f"'{' '.join(cmd)}' failed (exit {out.returncode})"
        raise EngineError(msg)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run compose", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["install", "prepare", "up", "down", "ps", "logs", "compose", "stop"],
                        help="install: Compose v2 only; prepare: engine and base images too; up: prepare, then "
                        "'compose up --build -d'; down: 'compose down' (add -v to delete the data), then stop the "
                        "engine; ps, logs, compose ARGS: Compose on the running engine; stop: stop the engine")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="more arguments for Compose")
    args = parser.parse_args(argv)
    settings = load_settings()
    engine = Engine(settings)
    # The local images, unless the caller names others (e.g. the official InfluxDB image).
    os.environ.setdefault("DEMO_BASE_IMAGE", LOCAL_BASE_IMAGE)
    os.environ.setdefault("DEMO_INFLUXDB_IMAGE", LOCAL_INFLUXDB_IMAGE.format(version=settings.influxdb_version))
    try:
        if args.action == "install":
            # What needs no engine: Compose and the CAs for the image build (Debian's packages: ./run).
            local_ca_certificates()
            compose_plugin(engine)
            return 0
        if args.action == "stop":
            if not engine.stop():
                say("docker: the private engine was not running")
            return 0
        if args.action in ("prepare", "up"):
            images = prepare(engine, settings)
            say(f"docker: ready: DOCKER_HOST={engine.host} {' '.join(f'{k}={v}' for k, v in images.items())}")
            if args.action == "prepare":
                return 0
            return compose(engine, ["up", "--build", "-d", *args.args], check=False).returncode
        engine.start()
        command = {"down": ["down"], "ps": ["ps"], "logs": ["logs"], "compose": []}[args.action]
        code = compose(engine, [*command, *args.args], check=False).returncode
        if args.action == "down":
            engine.prune_images()
            engine.stop()
        return code
    except (EngineError, ProvisionError) as exc:
        print(f"./run compose: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
