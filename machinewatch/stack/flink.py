"""Apache Flink in the local stack: a standalone session cluster (one JobManager, MW_FLINK_TASKMANAGERS
TaskManagers, one by default)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import requests

from machinewatch.config import Settings
from machinewatch.stack import provision
from machinewatch.stack.procs import ManagedProcess
from machinewatch.stack.service import Service, ServiceStatus, wait_for

# The packages of flink-python besides org.apache.flink. (parent-first already) and org.slf4j.: loaded from
# lib/ by the servers' own class loader, never again per job.
PYTHON_PARENT_FIRST = ["org.apache.beam.", "pemja.", "org.kohsuke.args4j.", "org.checkerframework.",
                       "com.google.errorprone."]


class Flink(Service):
    """Apache Flink standalone session cluster: one JobManager and its TaskManagers.

    TaskManager 1 keeps the single-node name ``flink-taskmanager``; TaskManager n is ``flink-taskmanager-n``.
    They share the config (their RPC and data ports are picked free at start) and Flink's own scripts give
    each its own log file.
    """

    name = "flink-jobmanager"
    # The pid runs jobmanager.sh, then flink-console.sh, then the JVM (each step an exec).
    markers = ("jobmanager.sh", "standalonesession", "StandaloneSessionClusterEntrypoint")

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.dir = settings.state_dir / "flink"
        self.taskmanagers = [
            ManagedProcess(
                "flink-taskmanager" if n == 1 else f"flink-taskmanager-{n}", settings.state_dir / "run",
                "taskmanager.sh", "taskexecutor", "TaskManagerRunner", tied=settings.die_with_parent,
            )
            for n in range(1, settings.flink_taskmanagers + 1)
        ]
        self.taskmanager = self.taskmanagers[0]

    def address(self) -> str:
        return self.s.flink_rest

    def conf_dir(self) -> Path:
        return self.dir / "conf"

    def env(self) -> dict[str, str]:
        """Environment for Flink's own scripts (cluster and the 'flink' CLI)."""
        import sys

        return {
            "FLINK_CONF_DIR": str(self.conf_dir()),
            "FLINK_LOG_DIR": str(self.dir / "log"),
            "FLINK_PID_DIR": str(self.dir / "run"),
            "PYFLINK_CLIENT_EXECUTABLE": sys.executable,
        }

    def write_config(self) -> None:
        import sys

        h = self.s.bind_host
        conf: dict[str, object] = {
            "jobmanager.rpc.address": h,
            "jobmanager.rpc.port": self.s.flink_rpc_port,
            "jobmanager.bind-host": h,
            "jobmanager.memory.process.size": self.s.flink_jobmanager_memory,
            "taskmanager.bind-host": h,
            "taskmanager.host": h,
            "taskmanager.numberOfTaskSlots": self.s.flink_taskmanager_slots,
            "taskmanager.memory.process.size": self.s.flink_taskmanager_memory,
            "parallelism.default": self.s.flink_parallelism,
            "rest.address": h,
            "rest.bind-address": h,
            "rest.port": self.s.flink_rest_port,
            "blob.server.port": "0",
            # Jobs are submitted by the CLI over REST; uploading jars through the web UI stays off.
            "web.submit.enable": False,
            "web.cancel.enable": True,
            "execution.checkpointing.interval": "10 s",
            # Stated, not left to the default: a lost TaskManager restarts the job from the last
            # checkpoint, again and again, backing off to at most 30 s (tests/faults/).
            "restart-strategy.type": "exponential-delay",
            "restart-strategy.exponential-delay.initial-backoff": "1 s",
            "restart-strategy.exponential-delay.max-backoff": "30 s",
            "execution.checkpointing.dir": (self.dir / "checkpoints").as_uri(),
            "execution.checkpointing.savepoint-dir": (self.dir / "savepoints").as_uri(),
            "state.backend.type": "hashmap",
            "python.executable": sys.executable,
            "python.client.executable": sys.executable,
            "table.local-time-zone": "UTC",
            "io.tmp.dirs": str(self.dir / "tmp"),
            # 'flink run -py' ships opt/flink-python with every job, and a job's classes are loaded child-first
            # from what it ships: each PyFlink job with Python operators then left ~26 MB of metaspace (some
            # 3,700 Beam classes) in the TaskManager, which died of it after a few dozen jobs. The bridge is in
            # lib/ (provision.flink_home) and its packages load parent-first, once per process.
            "classloader.parent-first-patterns.additional": PYTHON_PARENT_FIRST,
        }
        # Java 17 module flags as the shipped config.yaml sets them (Flink needs --add-opens).
        import yaml

        shipped = yaml.safe_load((provision.pyflink_dir() / "conf" / "config.yaml").read_text())
        java_opts = shipped.get("env", {}).get("java", {}).get("opts", {}).get("all")
        if java_opts:
            conf["env.java.opts.all"] = java_opts
        for sub in ("conf", "log", "run", "tmp", "checkpoints", "savepoints"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        lines = [f"{k}: {json.dumps(v) if isinstance(v, bool | list) else v}" for k, v in conf.items()]
        (self.conf_dir() / "config.yaml").write_text("\n".join(lines) + "\n")
        src = provision.pyflink_dir() / "conf"
        for name in ("log4j-console.properties", "log4j.properties", "log4j-cli.properties",
                     "log4j-session.properties", "logback-console.xml", "logback.xml"):
            if (src / name).exists():
                shutil.copy2(src / name, self.conf_dir() / name)
        (self.conf_dir() / "masters").write_text(f"{h}:{self.s.flink_rest_port}\n")
        (self.conf_dir() / "workers").write_text(f"{h}\n" * self.s.flink_taskmanagers)

    def home(self) -> Path:
        return provision.flink_home(self.s)

    def provision(self) -> None:
        provision.require("java")
        self.home()
        self.write_config()

    def _script(self, name: str) -> list[str]:
        # start-foreground ends in 'exec java', so the pid we record is the JVM itself.
        return ["bash", str(self.home() / "bin" / name), "start-foreground"]

    def command(self) -> tuple[list[str], dict[str, str]]:
        return self._script("jobmanager.sh"), self.env()

    def taskmanager_command(self) -> tuple[list[str], dict[str, str]]:
        return self._script("taskmanager.sh"), self.env()

    def start(self) -> None:
        super().start()
        for tm in self.taskmanagers:
            tm.start(*self.taskmanager_command())

    def up(self, timeout: float = 180) -> None:
        missing = [tm for tm in self.taskmanagers if tm.pid() is None]
        if self.proc.pid() is not None and missing:
            provision.say(f"flink: {', '.join(tm.name for tm in missing)} not running; starting")
            self.write_config()
            for tm in missing:
                tm.start(*self.taskmanager_command())
        super().up(timeout)

    def wait_ready(self, timeout: float) -> None:
        wait_for(self.ready, self.name, self.proc, timeout, others=self.taskmanagers)

    def overview(self) -> dict[str, Any]:
        resp = requests.get(f"{self.address()}/overview", timeout=5)
        resp.raise_for_status()
        return dict(resp.json())

    def ready(self) -> bool:
        if any(tm.pid() is None for tm in self.taskmanagers):
            return False
        ov = self.overview()
        return (ov.get("taskmanagers", 0) >= self.s.flink_taskmanagers
                and ov.get("slots-total", 0) >= self.s.flink_taskmanagers * self.s.flink_taskmanager_slots)

    def serving(self) -> bool:
        ov = self.overview()
        return ov.get("taskmanagers", 0) >= 1 and ov.get("slots-total", 0) >= self.s.flink_taskmanager_slots

    def version(self) -> str:
        return str(self.overview().get("flink-version", ""))

    def status(self) -> ServiceStatus:
        st = super().status()
        if len(self.taskmanagers) == 1:
            st.detail = (st.detail + f" taskmanager pid {self.taskmanager.pid()}").strip()
        else:
            pids = ", ".join(str(tm.pid()) for tm in self.taskmanagers)
            st.detail = (st.detail + f" {len(self.taskmanagers)} taskmanagers, pids {pids}").strip()
        return st

    def stop_all(self) -> list[str]:
        stopped = [tm.name for tm in self.taskmanagers if tm.stop()]
        if self.proc.stop():
            stopped.append(self.proc.name)
        return stopped

