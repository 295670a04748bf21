"""Apache Kafka in the local stack: one KRaft node (broker and controller), its storage and its topics.

Named ``kafka_broker`` rather than ``kafka`` so that it can never shadow the ``kafka`` client package.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from pathlib import Path
from typing import Any

from machinewatch.stack import provision
from machinewatch.stack.service import Service, StackError, write_secret


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
            # Clients (and the broker itself) must log in with MW_KAFKA_SASL_MECHANISM; the controller listener
            # stays internal on the bind host. The JAAS password is a PASSWORD config: Kafka logs it hidden.
            user, password = self.s.kafka_sasl_username, self._password()
            mechanism = self.s.kafka_sasl_mechanism
            if mechanism == "PLAIN":
                # PLAIN checks logins against the users listed in the broker's own JAAS entry.
                jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
                        f'username="{user}" password="{password}" user_{user}="{password}";')
            else:
                jaas = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
                        f'username="{user}" password="{password}";')
            props.update({
                "listeners": f"SASL_PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
                "advertised.listeners": f"SASL_PLAINTEXT://{h}:{p}",
                "inter.broker.listener.name": "SASL_PLAINTEXT",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
                "sasl.enabled.mechanisms": mechanism,
                "sasl.mechanism.inter.broker.protocol": mechanism,
                f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config": jaas,
            })
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "server.properties"
        # 0600: with SCRAM on, the file holds the broker's password.
        write_secret(path, "".join(f"{k}={v}\n" for k, v in props.items()).rstrip("\n"))
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

            write_secret(self.s.secrets_dir / "kafka_password", pysecrets.token_urlsafe(24))
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
            if self.s.kafka_sasl_scram and self.s.kafka_sasl_mechanism != "PLAIN":
                # The credential is stored in the cluster metadata at format time (KRaft has no ZooKeeper
                # to add it later), so the broker can authenticate itself and our clients from the start.
                scram = ["--add-scram", f"{self.s.kafka_sasl_mechanism}=[name={self.s.kafka_sasl_username},"
                         f"password={self._password()}]"]
            cmd = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *scram)
            # The whole command goes in a 0600 java @argfile, deleted right after: the password never
            # appears in a command line (/proc/<pid>/cmdline, ps) even for the seconds the tool runs.
            argfile = self.dir / "format.args"
            write_secret(argfile, "\n".join(_argfile_quote(a) for a in cmd[1:]))
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

