"""Typed settings for every stage: env vars (prefix ``MW_``) or a ``.env``-style file.

One place names every port, directory and credential so the native stack, the tests and the
compose demo use the same names.
"""

from __future__ import annotations

import json
import os
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "machinewatch"


def _default_state() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "machinewatch"


# A property of the process that starts a stack, not of the stack: a child would tie servers to itself.
_NOT_INHERITED = frozenset({"die_with_parent"})


class InfluxSite(BaseModel):
    """One site's own InfluxDB (``MW_INFLUX_SITES``): the writer sends the results tagged with that site there.

    The buckets are those of ``names.ALL_BUCKETS`` as on the default instance. The write token comes from
    a file or an environment variable, never from the settings themselves (they are printed and passed on).
    """

    model_config = ConfigDict(extra="forbid")

    url: str
    org: str | None = None  # None: MW_INFLUX_ORG
    token_file: Path | None = None
    token_env: str | None = None

    @model_validator(mode="after")
    def _one_token_source(self) -> InfluxSite:
        if (self.token_file is None) == (self.token_env is None):
            msg = f"InfluxDB site at {self.url}: give exactly one of token_file, token_env"
            raise ValueError(msg)
        return self

    def token(self) -> str:
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        value = os.environ.get(str(self.token_env), "")
        if not value:
            msg = f"InfluxDB site at {self.url}: the environment variable {self.token_env} is not set"
            raise RuntimeError(msg)
        return value


class _Section(BaseModel):
    """A typed, read-only view of a group of settings. Each field's alias is its flat name in ``Settings``
    (and ``MW_<ALIAS>`` its variable), so the ``MW_*`` names stay what they were."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")


class StackSection(_Section):
    """Where the local stack keeps its cache and state, and how its servers are bound."""

    cache_dir: Path = Field(alias="cache_dir")
    state_dir: Path = Field(alias="state_dir")
    bind_host: str = Field(alias="bind_host")
    die_with_parent: bool = Field(alias="die_with_parent")


class VersionsSection(_Section):
    """Versions of the real servers that are provisioned (and an installed influxd to use instead)."""

    kafka: str = Field(alias="kafka_version")
    flink: str = Field(alias="flink_version")
    flink_kafka_connector: str = Field(alias="flink_kafka_connector_version")
    influxdb: str = Field(alias="influxdb_version")
    influxd: Path | None = Field(alias="influxd")


class KafkaSection(_Section):
    """The broker (local or remote), its login, and what every publisher checks."""

    port: int = Field(alias="kafka_port")
    controller_port: int = Field(alias="kafka_controller_port")
    partitions: int = Field(alias="kafka_partitions")
    brokers: int = Field(alias="kafka_brokers")
    node_ports: list[int] = Field(alias="kafka_node_ports")
    heap: str = Field(alias="kafka_heap")
    bootstrap: str | None = Field(alias="kafka_bootstrap")
    sasl_scram: bool = Field(alias="kafka_sasl_scram")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(alias="kafka_sasl_mechanism")
    sasl_username: str = Field(alias="kafka_sasl_username")
    sasl_password: SecretStr | None = Field(alias="kafka_sasl_password")
    ssl_cafile: str | None = Field(alias="kafka_ssl_cafile")
    max_future_skew_s: float = Field(alias="max_future_skew_s")
    dedup_recent_ids: int = Field(alias="dedup_recent_ids")
    client: Literal["kafka-python", "confluent-kafka"] = Field(alias="kafka_client")


class MqttSection(_Section):
    """The local MQTT broker of ``stack up --mqtt``."""

    mosquitto_port: int = Field(alias="mosquitto_port")


class FlinkSection(_Section):
    """The Flink cluster: local ports and memory, a remote JobManager, parallelism, REST timeout."""

    rest_port: int = Field(alias="flink_rest_port")
    rpc_port: int = Field(alias="flink_rpc_port")
    taskmanager_slots: int = Field(alias="flink_taskmanager_slots")
    taskmanagers: int = Field(alias="flink_taskmanagers")
    jobmanager_memory: str = Field(alias="flink_jobmanager_memory")
    taskmanager_memory: str = Field(alias="flink_taskmanager_memory")
    rest_address: str | None = Field(alias="flink_rest_address")
    parallelism: int = Field(alias="flink_parallelism")
    rest_timeout_s: float = Field(alias="flink_rest_timeout_s")
    python: str | None = Field(alias="flink_python")


class InfluxSection(_Section):
    """The InfluxDB server (local or remote), its organisation, bucket retentions, tokens, query timeout."""

    port: int = Field(alias="influx_port")
    url: str | None = Field(alias="influx_url")
    sites: dict[str, InfluxSite] = Field(alias="influx_sites")
    org: str = Field(alias="influx_org")
    user: str = Field(alias="influx_user")
    raw_retention_s: int = Field(alias="influx_raw_retention_s")
    aggregates_retention_s: int = Field(alias="influx_aggregates_retention_s")
    alerts_retention_s: int = Field(alias="influx_alerts_retention_s")
    history_retention_s: int = Field(alias="influx_history_retention_s")
    rollup_1m_retention_s: int = Field(alias="influx_rollup_1m_retention_s")
    rollup_1h_retention_s: int = Field(alias="influx_rollup_1h_retention_s")
    token: SecretStr | None = Field(alias="influx_token")
    write_token: SecretStr | None = Field(alias="influx_write_token")
    read_token: SecretStr | None = Field(alias="influx_read_token")
    query_timeout_s: float = Field(alias="query_timeout_s")


class JobsSection(_Section):
    """Tuning of the Flink jobs: windows, watermarks, lateness, the sustained-condition rules."""

    window_size_s: int = Field(alias="window_size_s")
    hop_size_s: int = Field(alias="hop_size_s")
    hop_slide_s: int = Field(alias="hop_slide_s")
    rollups: bool = Field(alias="rollups")
    watermark_delay_ms: int = Field(alias="watermark_delay_ms")
    source_idle_timeout_ms: int = Field(alias="source_idle_timeout_ms")
    dead_letter_unparsable: bool = Field(alias="flink_dead_letter_unparsable")
    allowed_lateness_s: int = Field(alias="allowed_lateness_s")
    overheat_threshold_c: float = Field(alias="overheat_threshold_c")
    overheat_duration_s: int = Field(alias="overheat_duration_s")
    overheat_hysteresis_c: float = Field(alias="overheat_hysteresis_c")
    overheat_clear_s: int = Field(alias="overheat_clear_s")
    overheat_escalate_factor: float = Field(alias="overheat_escalate_factor")
    overheat_bucket_s: float = Field(alias="overheat_bucket_s")
    overheat_max_gap_s: int = Field(alias="overheat_max_gap_s")
    overheat_silence_s: int = Field(alias="overheat_silence_s")
    overheat_prefilter: bool = Field(alias="overheat_prefilter")
    sustained_rules: Path | None = Field(alias="sustained_rules")


class NotifySection(_Section):
    """Where alert transitions are sent (SMTP, a webhook) and which ones."""

    smtp_host: str | None = Field(alias="smtp_host")
    smtp_port: int = Field(alias="smtp_port")
    smtp_from: str = Field(alias="smtp_from")
    smtp_to: list[str] = Field(alias="smtp_to")
    smtp_user: str | None = Field(alias="smtp_user")
    smtp_password: SecretStr | None = Field(alias="smtp_password")
    smtp_starttls: bool = Field(alias="smtp_starttls")
    webhook_url: str | None = Field(alias="webhook_url")
    kinds: list[str] = Field(alias="notify_kinds")
    states: list[str] = Field(alias="notify_states")


class DashboardSection(_Section):
    """The dashboard and the pipeline health page."""

    timeout_s: float = Field(alias="dashboard_timeout_s")
    pipeline_stale_after_s: float = Field(alias="pipeline_stale_after_s")


_S = TypeVar("_S", bound=_Section)

# The sections of ``Settings``, by attribute name (``settings.kafka.port``); every setting is in exactly one.
SECTIONS: dict[str, type[_Section]] = {
    "stack": StackSection, "versions": VersionsSection, "kafka": KafkaSection, "mqtt": MqttSection,
    "flink": FlinkSection, "influxdb": InfluxSection, "jobs": JobsSection, "notify": NotifySection,
    "dashboard": DashboardSection,
}


def section_of(flat: str) -> tuple[str, str]:
    """``("kafka", "port")`` for ``"kafka_port"``: where a flat setting (``MW_<FLAT>``) lives in the sections."""
    for section, model in SECTIONS.items():
        for field, info in model.model_fields.items():
            if info.alias == flat:
                return section, field
    msg = f"{flat} is in no section of Settings"
    raise KeyError(msg)


class Settings(BaseSettings):
    """Settings shared by the CLI, the stack, the jobs and the collectors.

    Each setting is one flat field, read from ``MW_<FIELD>`` (the names the README documents), and belongs to
    one typed section (``SECTIONS``): ``settings.kafka.port`` is ``settings.kafka_port``. New code reads the
    sections; the flat names stay for the call sites written before them. Settings are frozen: a changed copy
    is ``settings.model_copy(update={"kafka_port": ...})``.
    """

    model_config = SettingsConfigDict(
        env_prefix="MW_", env_file=os.environ.get("MW_ENV_FILE", ".env"), extra="ignore", frozen=True
    )

    # Where downloads/builds are cached (survives clones) and where a running stack keeps state.
    cache_dir: Path = Field(default_factory=_default_cache)
    state_dir: Path = Field(default_factory=_default_state)
    bind_host: str = "127.0.0.1"
    # Servers started with these settings die with the process that started them, even when it is
    # SIGKILLed (machinewatch/stack/watchdog.py). Private stacks of tests and benchmarks set it; the dev
    # stack of 'stack up' outlives the CLI. Never passed on to child processes (to_env).
    die_with_parent: bool = False

    # Versions of the real servers; the connector must match the pinned apache-flink.
    kafka_version: str = "4.1.1"
    flink_version: str = "2.2.1"
    flink_kafka_connector_version: str = "5.0.0-2.2"
    influxdb_version: str = "2.9.1"
    # An installed influxd to run instead of building the pinned version; its major version must match.
    # Unset: the pinned version's cached build, else an influxd of that major version on PATH, else a build.
    influxd: Path | None = None

    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    # One partition per topic: the jobs run at parallelism 1, and a source subtask that reads several
    # partitions can take a busy one for idle (FLINK-40234; README, Several nodes). Raise it together with
    # flink_parallelism.
    kafka_partitions: int = 1
    kafka_heap: str = "512m"
    # Local KRaft nodes (each broker and controller). Node 1 listens on kafka_port/kafka_controller_port;
    # nodes 2.. on kafka_node_ports as [broker, controller] pairs, or, when that is empty, 10 ports on each.
    kafka_brokers: int = Field(1, ge=1, le=9)
    kafka_node_ports: list[int] = []
    # Remote clusters: set bootstrap servers explicitly; otherwise the local broker is used.
    kafka_bootstrap: str | None = None
    # SASL/SCRAM-SHA-256 (off by default): the local broker then accepts only authenticated clients and
    # every client of ours logs in. The password comes from MW_KAFKA_SASL_PASSWORD or the 0600 file
    # secrets/kafka_password (created by the stack). With MW_KAFKA_SSL_CAFILE clients use SASL_SSL.
    kafka_sasl_scram: bool = False
    # The SASL mechanism of that login, for every client (Python and Flink) and the local broker:
    # Strimzi's SCRAM listeners take SCRAM-SHA-512 only; PLAIN sends the password itself (use TLS).
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-256"
    kafka_sasl_username: str = "machinewatch"
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    # Readings stamped further ahead of the collector's clock are dead-lettered by the Publisher:
    # one reading from "tomorrow" would push every event-time watermark a day ahead.
    max_future_skew_s: float = 300.0
    # A Publisher remembers this many recent event ids and dead-letters a repeat (0 = off): a source
    # that sends the same event twice would otherwise count it twice in every window.
    dedup_recent_ids: int = 100_000
    # The publishers' Kafka client: kafka-python (pure Python, installs anywhere) or librdkafka through
    # confluent-kafka (the 'kafka-c' extra), several times less CPU per record; same acks, idempotence and
    # partition per key (machinewatch.kafka_confluent). The consumers use kafka-python either way.
    kafka_client: Literal["kafka-python", "confluent-kafka"] = "kafka-python"

    # The local MQTT broker of 'stack up --mqtt', for the MQTT collector (ingest/mqtt).
    mosquitto_port: int = 1883

    flink_rest_port: int = 8081
    flink_rpc_port: int = 6123
    flink_taskmanager_slots: int = 2
    flink_jobmanager_memory: str = "1024m"
    flink_taskmanager_memory: str = "2048m"
    flink_rest_address: str | None = None
    flink_parallelism: int = 1
    # The Python the TaskManagers run the jobs' Python code in (python.executable of the submitted job).
    # Unset: this Python, right for the local stack; set it for a cluster machinewatch did not start.
    flink_python: str | None = None
    # TaskManagers of the local session cluster, each with flink_taskmanager_slots slots.
    flink_taskmanagers: int = Field(1, ge=1, le=9)

    influx_port: int = 8086
    influx_url: str | None = None
    influx_org: str = "machinewatch"
    influx_user: str = "mw-admin"
    influx_raw_retention_s: int = 7 * 24 * 3600
    influx_aggregates_retention_s: int = 90 * 24 * 3600
    influx_alerts_retention_s: int = 365 * 24 * 3600
    influx_history_retention_s: int = 0  # 0 = keep forever: backfills of any age land
    influx_rollup_1m_retention_s: int = 90 * 24 * 3600  # the 1-minute roll-up keeps as long as the windows
    influx_rollup_1h_retention_s: int = 0  # hourly: 24 rows per series and day, kept forever
    # Tokens: given directly (env) or read from the 0600 files the stack writes on setup.
    influx_token: SecretStr | None = None
    influx_write_token: SecretStr | None = None
    influx_read_token: SecretStr | None = None
    # InfluxDB 2 OSS is one node: results of these sites (their ``site`` tag) go to an instance of their own
    # (JSON, e.g. {"plant-2": {"url": "http://10.0.2.5:8086", "token_file": "/run/secrets/plant-2"}});
    # every other site's go to MW_INFLUX_URL.
    influx_sites: dict[str, InfluxSite] = {}

    # How long a caller waits for an answer before it gives up with a message naming the setting.
    # influxdb-client's own default (10 s) was too short for a Flux query while the writer flushes or a
    # backfill runs on a loaded 2-core machine; these are per request, not for a whole wait loop.
    query_timeout_s: float = Field(60.0, gt=0)          # a Flux query (machinewatch query, demo, query.py)
    dashboard_timeout_s: float = Field(10.0, gt=0)      # one dashboard panel's query: a page shows an error
    flink_rest_timeout_s: float = Field(30.0, gt=0)     # one call to the Flink JobManager's REST API
    # The Pipeline page and 'stack status' flag a source (red, STALE) whose newest window of data ended
    # longer ago than this (machinewatch/health.py).
    pipeline_stale_after_s: float = Field(default=300.0, gt=0)

    # Event-time windows of the first slice.
    window_size_s: int = 10
    # The window job dead-letters readings messages that are no JSON object from a second, raw reader of
    # the topic (their bytes exist only there). It cost 5-28 % more JVM CPU on a parse-bound local run
    # (flink_jobs/sql/malformed_readings.sql); off, they are dropped by the JSON format
    # (rows with a field missing or of the wrong type are dead-lettered either way).
    flink_dead_letter_unparsable: bool = True
    # Late readings within this much event time after their window fired update the window
    # (0: they are only counted as late events).
    allowed_lateness_s: int = 0
    # Sustained overheat (flink_jobs/sustained_overheat.py): above threshold for duration opens an
    # alert, below threshold - hysteresis for clear_s resolves it; no data for silence_s: silent.
    overheat_threshold_c: float = 80.0
    overheat_duration_s: int = 60
    overheat_hysteresis_c: float = 5.0
    overheat_clear_s: int = 30
    overheat_escalate_factor: float = 2.0
    # Readings are reduced to one bucket per device per this many seconds (whole milliseconds) before the
    # lifecycle runs; a bucket closes, and an alert can fire, only at its end plus the watermark delay.
    overheat_bucket_s: float = 1.0
    overheat_max_gap_s: int = 10
    overheat_silence_s: int = 60
    # Drop, in SQL, the buckets that cannot change an alert (cool devices with no episode near):
    # the Python lifecycle then runs for few devices. Off only to compare (bench) or to debug.
    overheat_prefilter: bool = True
    # Sustained-condition rules (TOML; flink_jobs/rules/sustained.toml when unset): any metric above or
    # below a threshold for a while, per-device-group overrides. Fields a rule omits take MW_OVERHEAT_*.
    sustained_rules: Path | None = None

    # Notifications (sinks/notifier.py): e-mail when MW_SMTP_HOST and MW_SMTP_TO are set, a webhook
    # when MW_WEBHOOK_URL is; which alert kinds are notified (threshold window labels are not, by default).
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "machinewatch@localhost"
    smtp_to: list[str] = []
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    webhook_url: str | None = None
    notify_kinds: list[str] = ["sustained_*", "derived"]  # globs: sustained_* = every sustained rule
    # pending/cancelled are for dashboards, not for waking people up
    notify_states: list[str] = ["opened", "escalated", "resolved", "silent"]

    # Sliding windows (0 disables): the course project's 30 s windows sliding by 10 s by default.
    hop_size_s: int = 30
    hop_slide_s: int = 10
    # The window job also rolls its tumbling windows up into 1-minute and hourly windows (machinewatch.rollups),
    # which the writer puts into the roll-up buckets that long dashboard ranges read. Off: no roll-up rows
    # (the dashboards then read the windows at every range, slowly over days).
    rollups: bool = True
    watermark_delay_ms: int = 2000
    # A partition that sent nothing for this long stops holding the watermark back. Long on purpose: a
    # partition wrongly taken as idle (a busy machine, a backlog being read) lets the others move the
    # watermark past its readings, which are then late, and the answer depends on the machine's load.
    source_idle_timeout_ms: int = 30_000

    @model_validator(mode="after")
    def _overheat_times_agree(self) -> Settings:
        # Contradictions that would make the lifecycle silently useless: an alert that goes silent before a
        # gap could even break its run, or a gap rule finer than the buckets it is measured in.
        if self.overheat_silence_s <= self.overheat_max_gap_s:
            msg = (f"MW_OVERHEAT_SILENCE_S ({self.overheat_silence_s}) must exceed MW_OVERHEAT_MAX_GAP_S "
                   f"({self.overheat_max_gap_s}); both must exceed the sensors' sampling interval")
            raise ValueError(msg)
        if self.overheat_bucket_s < 0.01 or abs(self.overheat_bucket_s * 1000 - self.overheat_bucket_ms) > 1e-6:
            msg = (f"MW_OVERHEAT_BUCKET_S ({self.overheat_bucket_s}) must be a whole number of milliseconds, "
                   "at least 0.01")
            raise ValueError(msg)
        if self.overheat_max_gap_s < self.overheat_bucket_s:
            msg = (f"MW_OVERHEAT_MAX_GAP_S ({self.overheat_max_gap_s}) is shorter than MW_OVERHEAT_BUCKET_S "
                   f"({self.overheat_bucket_s}): every bucket would be a gap")
            raise ValueError(msg)
        return self

    @property
    def overheat_bucket_ms(self) -> int:
        """MW_OVERHEAT_BUCKET_S in milliseconds."""
        return round(self.overheat_bucket_s * 1000)

    def _view(self, model: type[_S]) -> _S:
        # Built on each access, not cached: model_copy copies the instance dict, a cached view would go stale.
        fields = model.model_fields.items()
        return model.model_validate({name: getattr(self, info.alias or name) for name, info in fields})

    @property
    def stack(self) -> StackSection:
        return self._view(StackSection)

    @property
    def versions(self) -> VersionsSection:
        return self._view(VersionsSection)

    @property
    def kafka(self) -> KafkaSection:
        return self._view(KafkaSection)

    @property
    def mqtt(self) -> MqttSection:
        return self._view(MqttSection)

    @property
    def flink(self) -> FlinkSection:
        return self._view(FlinkSection)

    @property
    def influxdb(self) -> InfluxSection:
        # (``settings.influx`` was already the server's URL)
        return self._view(InfluxSection)

    @property
    def jobs(self) -> JobsSection:
        return self._view(JobsSection)

    @property
    def notify(self) -> NotifySection:
        return self._view(NotifySection)

    @property
    def dashboard(self) -> DashboardSection:
        return self._view(DashboardSection)

    def section(self, name: str) -> BaseModel:
        """The section called ``name`` in ``SECTIONS``."""
        return self._view(SECTIONS[name])

    @model_validator(mode="after")
    def _kafka_node_ports_complete(self) -> Settings:
        if self.kafka_node_ports and len(self.kafka_node_ports) < 2 * (self.kafka_brokers - 1):
            msg = (f"MW_KAFKA_NODE_PORTS has {len(self.kafka_node_ports)} ports; MW_KAFKA_BROKERS="
                   f"{self.kafka_brokers} needs a broker and a controller port for each node after the first "
                   f"({2 * (self.kafka_brokers - 1)})")
            raise ValueError(msg)
        return self

    def kafka_node_addresses(self) -> list[tuple[int, int]]:
        """(broker port, controller port) of every local KRaft node, node 1 first."""
        given = self.kafka_node_ports
        nodes = [(self.kafka_port, self.kafka_controller_port)]
        for n in range(1, self.kafka_brokers):
            if given:
                nodes.append((given[2 * n - 2], given[2 * n - 1]))
            else:
                nodes.append((self.kafka_port + 10 * n, self.kafka_controller_port + 10 * n))
        return nodes

    @property
    def kafka_servers(self) -> str:
        # Every local broker: a client still finds the cluster while the first one is down.
        return self.kafka_bootstrap or ",".join(f"{self.bind_host}:{b}" for b, _ in self.kafka_node_addresses())

    @property
    def kafka_replication_factor(self) -> int:
        """Replicas of the topics machinewatch creates: 3 where the local cluster has that many brokers."""
        return min(3, self.kafka_brokers)

    @property
    def flink_rest(self) -> str:
        return self.flink_rest_address or f"http://{self.bind_host}:{self.flink_rest_port}"

    @property
    def influx(self) -> str:
        return self.influx_url or f"http://{self.bind_host}:{self.influx_port}"

    @cached_property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    def _token(self, given: SecretStr | None, filename: str) -> str:
        if given is not None:
            return given.get_secret_value()
        path = self.secrets_dir / filename
        if not path.exists():
            msg = (
                f"no InfluxDB token: set MW_{filename.upper().replace('-', '_')} "
                f"or run 'machinewatch stack up' to create {path}"
            )
            raise RuntimeError(msg)
        return path.read_text().strip()

    def to_env(self) -> dict[str, str]:
        """These settings as MW_* variables for a child process; secrets are never included."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None or isinstance(value, SecretStr) or name in _NOT_INHERITED:
                continue
            # pydantic-settings reads lists and mappings from env as JSON
            env[f"MW_{name.upper()}"] = (json.dumps(to_jsonable_python(value)) if isinstance(value, list | dict)
                                         else str(value))
        return env

    def kafka_password(self) -> str:
        if self.kafka_sasl_password is not None:
            return self.kafka_sasl_password.get_secret_value()
        path = self.secrets_dir / "kafka_password"
        if not path.exists():
            msg = f"no Kafka password: set MW_KAFKA_SASL_PASSWORD or run 'machinewatch stack up' to create {path}"
            raise RuntimeError(msg)
        return path.read_text().strip()

    def kafka_client_config(self) -> dict[str, Any]:
        """kafka-python connection options (bootstrap servers and, when enabled, the SASL login)."""
        config: dict[str, Any] = {"bootstrap_servers": self.kafka_servers}
        if self.kafka_sasl_scram:
            config.update(
                security_protocol="SASL_SSL" if self.kafka_ssl_cafile else "SASL_PLAINTEXT",
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_password(),
            )
            if self.kafka_ssl_cafile:
                config["ssl_cafile"] = self.kafka_ssl_cafile
        return config

    def flink_kafka_properties(self) -> dict[str, str]:
        """The same Kafka login for Flink's Kafka connector (its clients are shaded, hence the class name).

        Read by the job's client process from settings/the 0600 file: never passed on a command line.
        """
        if not self.kafka_sasl_scram:
            return {}
        user = self.kafka_sasl_username.replace("\\", "\\\\").replace('"', '\\"')
        password = self.kafka_password().replace("\\", "\\\\").replace('"', '\\"')
        module = "plain.PlainLoginModule" if self.kafka_sasl_mechanism == "PLAIN" else "scram.ScramLoginModule"
        props = {
            "security.protocol": "SASL_SSL" if self.kafka_ssl_cafile else "SASL_PLAINTEXT",
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.jaas.config": (
                f"org.apache.flink.kafka.shaded.org.apache.kafka.common.security.{module} "
                f'required username="{user}" password="{password}";'
            ),
        }
        if self.kafka_ssl_cafile:
            props.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": self.kafka_ssl_cafile})
        return props

    def operator_token(self) -> str:
        return self._token(self.influx_token, "influx_token")

    def write_token(self) -> str:
        return self._token(self.influx_write_token, "influx_write_token")

    def read_token(self) -> str:
        return self._token(self.influx_read_token, "influx_read_token")


def read_toml_table(path: Path, table: str, label: str, error: type[ValueError] = ValueError) -> dict[str, Any]:
    """The ``[table]`` of a TOML config file, or ``error`` naming the file and what is wrong with it."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"cannot read {label} config {path}: {exc}"
        raise error(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{label} config {path} is not valid TOML: {exc}"
        raise error(msg) from exc
    found = doc.get(table)
    if not isinstance(found, dict):
        msg = f"{label} config {path} has no [{table}] table"
        raise error(msg)
    return found


def validation_problems(exc: ValidationError, table: str) -> str:
    """Every invalid key of a config table with the value given and why it was refused."""
    return "; ".join(
        f"{table}.{'.'.join(str(p) for p in err['loc']) or '(table)'} = {err.get('input')!r}: {err['msg']}"
        for err in exc.errors()
    )


def load_settings(**overrides: object) -> Settings:
    """Settings from env/file with explicit overrides (tests pass ports and dirs)."""
    return Settings(**overrides)  # type: ignore[arg-type]
