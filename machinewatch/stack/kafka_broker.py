"""Apache Kafka in the local stack: KRaft nodes (each broker and controller), their storage and the topics.

One node by default; ``MW_KAFKA_BROKERS=3`` makes a three-node cluster whose nodes are all broker and
controller ("combined" mode): three JVMs instead of six on a small machine, and a quorum of three voters
still survives the loss of any one node, which is what the cluster fault tests take away.

Named ``kafka_broker`` rather than ``kafka`` so that it can never shadow the ``kafka`` client package.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from machinewatch.config import Settings
from machinewatch.stack import provision
from machinewatch.stack.service import Service, StackError, wait_for, write_secret


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
    """Apache Kafka 4.x: KRaft node 1 (broker and controller), and the cluster's other nodes as ``peers``.

    Node 1 keeps the single-node names (``kafka``, state in ``<state>/kafka``); node n is ``kafka-n``.
    """

    name = "kafka"
    markers = ("kafka.Kafka",)

    def __init__(self, settings: Settings, node: int = 1) -> None:
        self.node = node
        if node > 1:
            self.name = f"kafka-{node}"
        super().__init__(settings)
        self.port, self.controller_port = settings.kafka_node_addresses()[node - 1]
        # The other nodes of the cluster: started, checked and stopped with node 1.
        self.peers = [Kafka(settings, n) for n in range(2, settings.kafka_brokers + 1)] if node == 1 else []

    @property
    def nodes(self) -> list[Kafka]:
        return [self, *self.peers]

    def address(self) -> str:
        return f"{self.s.bind_host}:{self.port}"

    def _classpath(self) -> str:
        return str(provision.kafka_libs(self.s) / "*")

    def _config(self) -> Path:
        h, p, c = self.s.bind_host, self.port, self.controller_port
        nodes = self.s.kafka_node_addresses()
        # Internal topics get as many replicas as our own (3 at most), so they too survive a lost broker.
        replicas, min_isr = str(self.s.kafka_replication_factor), "2" if self.s.kafka_replication_factor >= 3 else "1"
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node),
            "controller.quorum.voters": ",".join(f"{n}@{h}:{ctl}" for n, (_, ctl) in enumerate(nodes, start=1)),
            "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            "advertised.listeners": f"PLAINTEXT://{h}:{p}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.dir / "data"),
            "num.partitions": str(self.s.kafka_partitions),
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "default.replication.factor": replicas,
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

    def _cluster_id(self) -> str:
        """The id every node's storage is formatted with: made once, kept in node 1's dir."""
        path = self.s.state_dir / "kafka" / "cluster.id"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(new_cluster_id() + "\n")
        return path.read_text().strip()

    def provision(self) -> None:
        provision.require("java")
        for node in self.nodes:
            node._format()

    def _format(self) -> None:
        config = self._config()
        if not (self.dir / "data" / "meta.properties").exists():
            # A single node keeps its fresh id per format; the nodes of a cluster must share one.
            cluster_id = self._cluster_id() if self.s.kafka_brokers > 1 else new_cluster_id()
            provision.say(f"{self.name}: formatting storage (cluster id {cluster_id})")
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

    def start(self) -> None:
        for node in self.nodes:
            if node.proc.pid() is None:
                Service.start(node)

    def up(self, timeout: float = 180) -> None:
        if self.proc.pid() is not None and any(peer.proc.pid() is None for peer in self.peers):
            provision.say("kafka: a node of the cluster is not running; starting it")
            self.provision()
            self.start()
        super().up(timeout)

    def wait_ready(self, timeout: float) -> None:
        # All nodes start before any is waited for: a node is ready only once a quorum of voters runs.
        wait_for(self.ready, self.name, self.proc, timeout, others=[p.proc for p in self.peers])

    def ready(self) -> bool:
        """Node 1: every node runs and answers at its own address, and the cluster has all its brokers.
        Node n: it is one of the brokers."""
        if any(node.proc.pid() is None for node in self.nodes):
            return False
        if self.node > 1:
            return self.node in self.brokers()
        # A node restarted moments ago can still be listed as a serving broker (its registration from before
        # the stop) while it does not yet accept connections; a client sent to it then fails at once.
        if not all(peer.serving() for peer in self.peers):
            return False
        return set(range(1, self.s.kafka_brokers + 1)) <= self.brokers()

    def serving(self) -> bool:
        return bool(self.brokers())

    def brokers(self) -> set[int]:
        """The node ids of the brokers the cluster reports, asked at this node's address."""
        from kafka import KafkaAdminClient

        # While the broker starts, every poll fails by design: keep the client's errors quiet.
        quiet = logging.getLogger("kafka")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            admin = KafkaAdminClient(**self._client(), request_timeout_ms=5000)
            try:
                # kafka-python asks for fenced brokers too: a broker that is still fenced is not serving yet.
                brokers = admin.describe_cluster().get("brokers") or ()
                return {int(b.get("broker_id", b.get("node_id", -1))) for b in brokers if not b.get("is_fenced")}
            finally:
                admin.close()
        finally:
            quiet.setLevel(level)

    def version(self) -> str:
        return self.s.kafka_version

    def after_ready(self) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaConnectionError, KafkaTimeoutError

        from machinewatch.kafka_io import ensure_topics

        # On a cluster a node can refuse a connection for a moment after all of them were ready (it is
        # restarting its listener, or a leader moves): retry a refused or timed-out connection, nothing else, for
        # up to 60 s.
        deadline = time.monotonic() + 60
        while True:
            try:
                admin = KafkaAdminClient(**self._client(), request_timeout_ms=10000)
                try:
                    created = ensure_topics(admin, self.s.kafka_partitions,
                                            replication=self.s.kafka_replication_factor)
                finally:
                    admin.close()
                break
            except (KafkaConnectionError, KafkaTimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise
                provision.say(f"kafka: {exc}; retrying the topic check")
                time.sleep(2)
        if created:
            provision.say(f"kafka: created topics {', '.join(created)}")

