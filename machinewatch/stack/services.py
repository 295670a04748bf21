"""The three real servers of the local stack: how each is configured, started and checked."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from machinewatch import names
from machinewatch.config import Settings
from machinewatch.stack import provision
from machinewatch.stack.procs import ManagedProcess

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """A server failed to start or to become ready; the message carries its log tail."""


@dataclass
class ServiceStatus:
    name: str
    address: str
    pid: int | None
    ready: bool
    version: str
    detail: str = ""


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    os.chmod(path, 0o600)


def _wait(check: Callable[[], bool], what: str, proc: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.pid() is None:
            msg = f"{proc.name} exited while starting. Last log lines ({proc.logfile}):\n{proc.tail()}"
            raise StackError(msg)
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
        time.sleep(0.5)
    msg = f"{what} not ready after {timeout:.0f}s (last error: {last}). Log {proc.logfile}:\n{proc.tail()}"
    raise StackError(msg)


def bucket_permissions(action: str, org_id: str, bucket_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Least privilege in InfluxDB 2.x terms: one action on named buckets, nothing else.

    Known limit (influxdata/influxdb#23170): 'write' on a bucket also allows deleting it.
    """
    return [{"action": action, "resource": {"type": "buckets", "id": bid, "orgID": org_id}} for bid in bucket_ids]


class Service:
    name = ""
    markers: tuple[str, ...] = ()

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.dir = settings.state_dir / self.name
        self.proc = ManagedProcess(self.name, settings.state_dir / "run", *self.markers, tied=settings.die_with_parent)

    def address(self) -> str:
        raise NotImplementedError

    def provision(self) -> None:
        raise NotImplementedError

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The server's command line and the environment it adds: the same for a background start and for
        ``serve`` (the compose demo runs each server in the foreground of its container)."""
        raise NotImplementedError

    def start(self) -> None:
        cmd, env = self.command()
        self.proc.start(cmd, env=env)

    def ready(self) -> bool:
        raise NotImplementedError

    def serving(self) -> bool:
        """Ready as seen from outside, without this machine's pid files (another container's server)."""
        return self.ready()

    def version(self) -> str:
        raise NotImplementedError

    def wait_ready(self, timeout: float) -> None:
        _wait(self.ready, self.name, self.proc, timeout)

    def up(self, timeout: float = 180) -> None:
        if self.proc.pid() is not None:
            provision.say(f"{self.name}: already running (pid {self.proc.pid()}), checking readiness")
        else:
            self.provision()
            self.start()
        self.wait_ready(timeout)
        self.after_ready()
        provision.say(f"{self.name}: ready at {self.address()} (pid {self.proc.pid()})")

    def after_ready(self) -> None:
        """Idempotent set-up that needs the server running (topics, buckets, tokens)."""

    def status(self) -> ServiceStatus:
        pid = self.proc.pid()
        ready, version, detail = False, "", ""
        if pid is not None:
            try:
                ready = self.ready()
                version = self.version()
            except Exception as exc:  # noqa: BLE001 - status reports, never raises
                detail = str(exc).splitlines()[0][:120]
        return ServiceStatus(self.name, self.address(), pid, ready, version, detail)


def _argfile_quote(arg: str) -> str:
    """One argument of a java @argfile: quoted, with backslash and quote escaped (the launcher's rules)."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def new_cluster_id() -> str:
    """A random KRaft cluster id (base64url of a UUID) that does not start with '-'.

    Kafka's own generator skips those too: the storage tool would read "-abc..." as an option and fail
    ("argument --cluster-id/-t: expected one argument"), about one stack in 64.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class Kafka(Service):
    """Apache Kafka 4.x, one KRaft node acting as broker and controller."""

    name = "kafka"
    markers = ("kafka.Kafka",)

    def address(self) -> str:
        return f"{self.s.bind_host}:{self.s.kafka_port}"

    def _classpath(self) -> str:
        return str(provision.kafka_libs(self.s) / "*")

    def _config(self) -> Path:
        h, p, c = self.s.bind_host, self.s.kafka_port, self.s.kafka_controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{h}:{c}",
            "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            "advertised.listeners": f"PLAINTEXT://{h}:{p}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.dir / "data"),
            "num.partitions": str(self.s.kafka_partitions),
            # Single node: every internal topic has exactly one replica.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "default.replication.factor": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
        }
        if self.s.kafka_sasl_scram:
            # Clients (and the broker itself) must log in with SCRAM-SHA-256; the controller listener
            # stays internal on the bind host. The JAAS password is a PASSWORD config: Kafka logs it hidden.
            user, password = self.s.kafka_sasl_username, self._password()
            props.update({
                "listeners": f"SASL_PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
                "advertised.listeners": f"SASL_PLAINTEXT://{h}:{p}",
                "inter.broker.listener.name": "SASL_PLAINTEXT",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
                "sasl.enabled.mechanisms": "SCRAM-SHA-256",
                "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
                "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required "
                    f'username="{user}" password="{password}";'
                ),
            })
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "server.properties"
        # 0600: with SCRAM on, the file holds the broker's password.
        _write_secret(path, "".join(f"{k}={v}\n" for k, v in props.items()).rstrip("\n"))
        (self.dir / "log4j2.properties").write_text(
            "status = warn\n"
            "appender.out.type = Console\nappender.out.name = OUT\n"
            "appender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\nrootLogger.appenderRef.out.ref = OUT\n"
            "logger.state.name = state.change.logger\nlogger.state.level = WARN\n"
        )
        return path

    def _password(self) -> str:
        """The SCRAM password: given in settings, else the 0600 secrets file (created on first use)."""
        if self.s.kafka_sasl_password is None and not (self.s.secrets_dir / "kafka_password").exists():
            import secrets as pysecrets

            _write_secret(self.s.secrets_dir / "kafka_password", pysecrets.token_urlsafe(24))
        return self.s.kafka_password()

    def _client(self) -> dict[str, Any]:
        return {**self.s.kafka_client_config(), "bootstrap_servers": self.address()}

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java", f"-Xmx{self.s.kafka_heap}", f"-Xms{self.s.kafka_heap}",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp", self._classpath(), main, *args,
        ]

    def provision(self) -> None:
        provision.require("java")
        config = self._config()
        if not (self.dir / "data" / "meta.properties").exists():
            cluster_id = new_cluster_id()
            provision.say(f"kafka: formatting storage (cluster id {cluster_id})")
            scram = []
            if self.s.kafka_sasl_scram:
                # The credential is stored in the cluster metadata at format time (KRaft has no ZooKeeper
                # to add it later), so the broker can authenticate itself and our clients from the start.
                scram = ["--add-scram",
                         f"SCRAM-SHA-256=[name={self.s.kafka_sasl_username},password={self._password()}]"]
            cmd = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *scram)
            # The whole command goes in a 0600 java @argfile, deleted right after: the password never
            # appears in a command line (/proc/<pid>/cmdline, ps) even for the seconds the tool runs.
            argfile = self.dir / "format.args"
            _write_secret(argfile, "\n".join(_argfile_quote(a) for a in cmd[1:]))
            try:
                out = subprocess.run(  # noqa: S603
                    [cmd[0], f"@{argfile}"], capture_output=True, text=True, check=False,
                )
            finally:
                argfile.unlink(missing_ok=True)
            if out.returncode != 0:
                msg = f"kafka storage format failed:\n{out.stdout}\n{out.stderr}"
                raise StackError(msg)

    def command(self) -> tuple[list[str], dict[str, str]]:
        return self._java("kafka.Kafka", str(self.dir / "server.properties")), {}

    def ready(self) -> bool:
        from kafka import KafkaAdminClient

        # While the broker starts, every poll fails by design: keep the client's errors quiet.
        quiet = logging.getLogger("kafka")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            admin = KafkaAdminClient(**self._client(), request_timeout_ms=5000)
            try:
                return bool(admin.describe_cluster().get("brokers"))
            finally:
                admin.close()
        finally:
            quiet.setLevel(level)

    def version(self) -> str:
        return self.s.kafka_version

    def after_ready(self) -> None:
        from kafka import KafkaAdminClient

        from machinewatch.kafka_io import ensure_topics

        admin = KafkaAdminClient(**self._client(), request_timeout_ms=10000)
        try:
            created = ensure_topics(admin, self.s.kafka_partitions)
            if created:
                provision.say(f"kafka: created topics {', '.join(created)}")
        finally:
            admin.close()


class Flink(Service):
    """Apache Flink standalone session cluster: one JobManager and one TaskManager."""

    name = "flink-jobmanager"
    # The pid runs jobmanager.sh, then flink-console.sh, then the JVM (each step an exec).
    markers = ("jobmanager.sh", "standalonesession", "StandaloneSessionClusterEntrypoint")

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.dir = settings.state_dir / "flink"
        self.taskmanager = ManagedProcess(
            "flink-taskmanager", settings.state_dir / "run", "taskmanager.sh", "taskexecutor", "TaskManagerRunner",
            tied=settings.die_with_parent,
        )

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
        }
        # Java 17 module flags as the shipped config.yaml sets them (Flink needs --add-opens).
        import yaml

        shipped = yaml.safe_load((provision.pyflink_dir() / "conf" / "config.yaml").read_text())
        java_opts = shipped.get("env", {}).get("java", {}).get("opts", {}).get("all")
        if java_opts:
            conf["env.java.opts.all"] = java_opts
        for sub in ("conf", "log", "run", "tmp", "checkpoints", "savepoints"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        lines = [f"{k}: {json.dumps(v) if isinstance(v, bool) else v}" for k, v in conf.items()]
        (self.conf_dir() / "config.yaml").write_text("\n".join(lines) + "\n")
        src = provision.pyflink_dir() / "conf"
        for name in ("log4j-console.properties", "log4j.properties", "log4j-cli.properties",
                     "log4j-session.properties", "logback-console.xml", "logback.xml"):
            if (src / name).exists():
                shutil.copy2(src / name, self.conf_dir() / name)
        (self.conf_dir() / "masters").write_text(f"{h}:{self.s.flink_rest_port}\n")
        (self.conf_dir() / "workers").write_text(f"{h}\n")

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
        self.taskmanager.start(*self.taskmanager_command())

    def up(self, timeout: float = 180) -> None:
        if self.proc.pid() is not None and self.taskmanager.pid() is None:
            provision.say("flink: taskmanager is not running; starting it")
            self.write_config()
            self.taskmanager.start(*self.taskmanager_command())
        super().up(timeout)

    def overview(self) -> dict[str, Any]:
        resp = requests.get(f"{self.address()}/overview", timeout=5)
        resp.raise_for_status()
        return dict(resp.json())

    def ready(self) -> bool:
        return self.taskmanager.pid() is not None and self.serving()

    def serving(self) -> bool:
        ov = self.overview()
        return ov.get("taskmanagers", 0) >= 1 and ov.get("slots-total", 0) >= self.s.flink_taskmanager_slots

    def version(self) -> str:
        return str(self.overview().get("flink-version", ""))

    def status(self) -> ServiceStatus:
        st = super().status()
        st.detail = (st.detail + f" taskmanager pid {self.taskmanager.pid()}").strip()
        return st

    def stop_all(self) -> list[str]:
        stopped = []
        if self.taskmanager.stop():
            stopped.append(self.taskmanager.name)
        if self.proc.stop():
            stopped.append(self.proc.name)
        return stopped


class InfluxDB(Service):
    """InfluxDB 2.x OSS, set up on first start with an org, buckets and least-privilege tokens."""

    name = "influxdb"
    markers = ("influxd",)

    def address(self) -> str:
        return self.s.influx

    def provision(self) -> None:
        provision.influxd_binary(self.s)
        self.dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> tuple[list[str], dict[str, str]]:
        binary = provision.influxd_binary(self.s)
        return (
            [
                str(binary), "run",
                f"--bolt-path={self.dir / 'influxd.bolt'}",
                f"--engine-path={self.dir / 'engine'}",
                f"--sqlite-path={self.dir / 'influxd.sqlite'}",
                f"--http-bind-address={self.s.bind_host}:{self.s.influx_port}",
                "--reporting-disabled",
                "--log-level=info",
                # Pipelines write their own timestamps; no UI assets are built into this binary.
            ],
            {"INFLUXD_CONFIG_PATH": str(self.dir)},
        )

    def health(self) -> dict[str, Any]:
        resp = requests.get(f"{self.address()}/health", timeout=5)
        return dict(resp.json())

    def ready(self) -> bool:
        # Serving; set-up and the write+query check follow in after_ready() (and in status()).
        return self.health().get("status") == "pass"

    def status(self) -> ServiceStatus:
        st = super().status()
        if st.ready:
            try:
                st.ready = self._write_and_query()
            except Exception as exc:  # noqa: BLE001 - status reports, never raises
                st.ready, st.detail = False, str(exc).splitlines()[0][:120]
        return st

    def version(self) -> str:
        return str(self.health().get("version", ""))

    def _needs_setup(self) -> bool:
        resp = requests.get(f"{self.address()}/api/v2/setup", timeout=5)
        resp.raise_for_status()
        return bool(resp.json().get("allowed"))

    def _api(self, method: str, path: str, token: str, **kwargs: Any) -> requests.Response:
        resp = requests.request(
            method, f"{self.address()}{path}", headers={"Authorization": f"Token {token}"}, timeout=15, **kwargs
        )
        if resp.status_code >= 400:
            # The server's own message, never the token.
            msg = f"InfluxDB {method} {path}: HTTP {resp.status_code}: {resp.text[:300]}"
            raise StackError(msg)
        return resp

    def after_ready(self) -> None:
        secrets = self.s.secrets_dir
        if self._needs_setup():
            import secrets as pysecrets

            operator = pysecrets.token_urlsafe(32)
            password = pysecrets.token_urlsafe(18)
            resp = requests.post(
                f"{self.address()}/api/v2/setup",
                json={
                    "username": self.s.influx_user, "password": password, "org": self.s.influx_org,
                    "bucket": names.BUCKET_RAW, "retentionPeriodSeconds": self.s.influx_raw_retention_s,
                    "token": operator,
                },
                timeout=15,
            )
            if resp.status_code >= 400:
                msg = f"InfluxDB setup failed: HTTP {resp.status_code}: {resp.text[:300]}"
                raise StackError(msg)
            _write_secret(secrets / "influx_token", operator)
            _write_secret(secrets / "influx_password", password)
            for stale in ("influx_write_token", "influx_read_token"):
                (secrets / stale).unlink(missing_ok=True)
            provision.say(f"influxdb: set up org '{self.s.influx_org}'; operator token in {secrets}")
        token = self.s.operator_token()
        org_id = self._api("GET", f"/api/v2/orgs?org={self.s.influx_org}", token).json()["orgs"][0]["id"]
        retention = {
            names.BUCKET_RAW: self.s.influx_raw_retention_s,
            names.BUCKET_AGGREGATES: self.s.influx_aggregates_retention_s,
            names.BUCKET_ALERTS: self.s.influx_alerts_retention_s,
            names.BUCKET_HISTORY: self.s.influx_history_retention_s,
            names.BUCKET_ROLLUP_1M: self.s.influx_rollup_1m_retention_s,
            names.BUCKET_ROLLUP_1H: self.s.influx_rollup_1h_retention_s,
        }
        bucket_ids = {}
        created_any = False
        for bucket, seconds in retention.items():
            resp = requests.get(
                f"{self.address()}/api/v2/buckets", params={"name": bucket, "orgID": org_id},
                headers={"Authorization": f"Token {token}"}, timeout=15,
            )
            found = resp.json().get("buckets", []) if resp.status_code == 200 else []
            if found:
                bucket_ids[bucket] = found[0]["id"]
                continue
            created = self._api(
                "POST", "/api/v2/buckets", token,
                json={"orgID": org_id, "name": bucket,
                      # No rule at all is InfluxDB's "forever".
                      "retentionRules": [{"type": "expire", "everySeconds": seconds}] if seconds else []},
            ).json()
            bucket_ids[bucket] = created["id"]
            created_any = True
            kept = f"retention {seconds}s" if seconds else "kept forever"
            provision.say(f"influxdb: created bucket '{bucket}' ({kept})")
        if created_any:
            # Tokens name their buckets: one made before this bucket existed cannot use it. Replace them.
            self._revoke_tokens(token, ("influx_write_token", "influx_read_token"))
        for filename, action, description in (
            ("influx_write_token", "write", "machinewatch pipeline (write-only)"),
            ("influx_read_token", "read", "machinewatch dashboards (read-only)"),
        ):
            if (secrets / filename).exists():
                continue
            perms = bucket_permissions(action, org_id, bucket_ids.values())
            auth = self._api(
                "POST", "/api/v2/authorizations", token,
                json={"orgID": org_id, "description": description, "permissions": perms},
            ).json()
            _write_secret(secrets / filename, auth["token"])
            provision.say(f"influxdb: created {description} token in {secrets / filename}")
        self._ensure_rollup_tasks(token, org_id)
        if not self._write_and_query():
            msg = "InfluxDB accepted the set-up but a test write could not be read back"
            raise StackError(msg)

    def _ensure_rollup_tasks(self, token: str, org_id: str) -> None:
        """The roll-up tasks (machinewatch.rollups), created or brought up to date, and active."""
        from machinewatch import rollups

        for rollup in rollups.ROLLUPS:
            flux = rollups.task_flux(rollup, self.s.influx_org)
            found = self._api("GET", "/api/v2/tasks", token,
                              params={"orgID": org_id, "name": rollup.task_name}).json().get("tasks", [])
            if not found:
                self._api("POST", "/api/v2/tasks", token, json={"orgID": org_id, "flux": flux, "status": "active"})
                provision.say(f"influxdb: created task '{rollup.task_name}' -> bucket '{rollup.bucket}'")
            elif found[0].get("flux") != flux or found[0].get("status") != "active":
                self._api("PATCH", f"/api/v2/tasks/{found[0]['id']}", token, json={"flux": flux, "status": "active"})
                provision.say(f"influxdb: updated task '{rollup.task_name}'")

    def _revoke_tokens(self, operator: str, filenames: tuple[str, ...]) -> None:
        """Delete the pipeline's tokens (in InfluxDB and their files) so set-up makes them anew."""
        secrets = self.s.secrets_dir
        old = {(secrets / f).read_text().strip() for f in filenames if (secrets / f).exists()}
        if not old:
            return
        auths = self._api("GET", f"/api/v2/authorizations?org={self.s.influx_org}", operator).json()
        for auth in auths.get("authorizations", []):
            if auth.get("token") in old:
                self._api("DELETE", f"/api/v2/authorizations/{auth['id']}", operator)
        for f in filenames:
            (secrets / f).unlink(missing_ok=True)
        provision.say("influxdb: replaced the pipeline and dashboard tokens to cover the new bucket "
                      "(restart writers and dashboards started before)")

    def _write_and_query(self) -> bool:
        """Readiness that uses the server for real: a write with the pipeline token, read back."""
        stamp = time.time_ns()
        self._api(
            "POST", f"/api/v2/write?org={self.s.influx_org}&bucket={names.BUCKET_RAW}&precision=ns",
            self.s.write_token(), data=f"mw_stack_probe,check=ready value={stamp}i {stamp}",
        )
        flux = (
            f'from(bucket: "{names.BUCKET_RAW}") |> range(start: -1h) '
            f'|> filter(fn: (r) => r._measurement == "mw_stack_probe") |> last()'
        )
        resp = self._api(
            "POST", f"/api/v2/query?org={self.s.influx_org}", self.s.read_token(),
            json={"query": flux, "type": "flux"},
        )
        return str(stamp) in resp.text
