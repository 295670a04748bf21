"""The docker compose demo, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema as shipped in the
check-jsonschema package (PyPI), every path, variable, topic, bucket and version it references is
checked against the repository, and, where the compose CLI plugin is installed, `docker compose
config` (which parses and resolves offline) must accept it too. Nothing here starts a container.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import jsonschema
import pytest
import yaml

from machinewatch import names
from machinewatch.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "machinewatch.Dockerfile"
README = DOCKER / "README.md"
INIT = DOCKER / "init"
FLINK_POM = REPO / "machinewatch" / "stack" / "provision" / "flink" / "pom.xml"
KAFKA_POM = REPO / "machinewatch" / "stack" / "provision" / "kafka" / "pom.xml"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ... ($$ escapes a literal $)
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
# Services a person opens in a browser; nothing else publishes a port.
PUBLISHED = {"jobmanager": 8081, "influxdb": 8086, "dashboard": 8501}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    from check_jsonschema.builtin_schemas import get_builtin_schema

    schema = get_builtin_schema("vendor.compose-spec")
    assert schema.get("title") == "Compose Specification"
    return schema


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _pom_properties(pom: Path) -> dict[str, str]:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = ET.parse(pom).getroot().find("m:properties", ns)
    assert props is not None, pom
    return {el.tag.split("}", 1)[1]: (el.text or "").strip() for el in props}


def _dockerfile() -> list[Any]:
    """The Dockerfile's instructions, parsed by BuildKit's own parser (the `dockerfile` package)."""
    import dockerfile

    return list(dockerfile.parse_file(str(DOCKERFILE)))


def _dockerfile_args() -> dict[str, str]:
    pairs = [v.split("=", 1) for c in _dockerfile() if c.cmd.upper() == "ARG" for v in c.value if "=" in v]
    return {k: v for k, v in pairs}


def _dockerfile_froms() -> list[str]:
    return [" ".join(c.value) for c in _dockerfile() if c.cmd.upper() == "FROM"]


def _settings_default(env_name: str) -> Any:
    field = Settings.model_fields[env_name.removeprefix("MW_").lower()]
    return field.get_default(call_default_factory=True)


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"compose_init_{name}", INIT / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the Compose Specification ------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any], compose_schema: dict[str, Any]
) -> None:
    errors = sorted(_validator(compose_schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("service", "key", "bad"),
    [
        ("job-submitter", "depends_on", {"jobmanager": {"condition": "service_ready"}}),
        ("kafka", "healthcheck", {"test": ["CMD", "true"], "retrys": 3}),
        ("influxdb", "restart_policy", "always"),
    ],
)
def test_the_schema_rejects_a_broken_variant(
    compose: dict[str, Any], compose_schema: dict[str, Any], service: str, key: str, bad: object
) -> None:
    """The validation above is live: the same file with one wrong value does not pass."""
    broken = copy.deepcopy(compose)
    broken["services"][service][key] = bad
    assert list(_validator(compose_schema).iter_errors(broken))


def _docker_compose() -> list[str] | None:
    if shutil.which("docker") is None:
        return None
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
    return ["docker", "compose"] if probe.returncode == 0 else None


def test_docker_compose_config_accepts_the_file() -> None:
    """`docker compose config` parses, interpolates and checks references without an engine."""
    cli = _docker_compose()
    if cli is None:
        pytest.skip("the docker compose CLI plugin is not installed here (it needs no engine for 'config')")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MW_", "DEMO_", "COMPOSE_"))}
    out = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "--format", "json"], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout)
    published = {
        name: [(p.get("host_ip"), int(p["published"]), p["target"]) for p in svc.get("ports", [])]
        for name, svc in resolved["services"].items()
        if svc.get("ports")
    }
    assert published == {name: [("127.0.0.1", port, port)] for name, port in PUBLISHED.items()}
    assert resolved["services"]["jobmanager"]["build"]["context"] == str(REPO)


# --- references: build contexts, Dockerfiles, mounted files, volumes, dependencies ----------------


def test_build_contexts_dockerfiles_and_bind_mounts_exist(services: dict[str, dict[str, Any]]) -> None:
    built = 0
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / build["dockerfile"]).is_file(), f"{name}: Dockerfile {build['dockerfile']}"
            built += 1
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).resolve().exists(), f"{name}: bind mount {source} is not in the repo"
    assert built >= 5


def test_every_file_a_service_runs_from_a_mount_exists(services: dict[str, dict[str, Any]]) -> None:
    """Scripts named in commands and entrypoints under the init mount are files in docker/init."""
    seen = set()
    for name, svc in services.items():
        for part in [*(svc.get("entrypoint") or []), *(svc.get("command") or [])]:
            if isinstance(part, str) and part.startswith("/opt/machinewatch-init/"):
                script = INIT / part.removeprefix("/opt/machinewatch-init/")
                assert script.is_file(), f"{name}: {part} -> {script}"
                assert any(v.startswith("./init:/opt/machinewatch-init") for v in svc.get("volumes", [])), name
                seen.add(script.name)
    assert seen == {p.name for p in INIT.iterdir() if p.suffix in {".py", ".sh"}}, "an init script is unused"


def test_named_volumes_are_declared_and_used(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose["volumes"])
    used = {
        v.split(":", 1)[0] for svc in services.values() for v in svc.get("volumes", []) if not v.startswith((".", "/"))
    }
    assert used == declared


def test_dependencies_exist_and_health_conditions_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no check"
            if cond["condition"] == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"one-shot {dep} must not restart"


def test_ports_are_published_on_loopback_only_where_a_person_needs_them(
    services: dict[str, dict[str, Any]],
) -> None:
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    assert set(published) == set(PUBLISHED)
    for name, ports in published.items():
        (port,) = ports
        assert port.startswith("127.0.0.1:") and port.endswith(f":{PUBLISHED[name]}"), port


def test_dockerfile_copies_only_what_exists_and_is_in_the_build_context() -> None:
    allowed = [
        line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    sources = [
        src
        for c in _dockerfile()
        if c.cmd.upper() == "COPY" and not any(f.startswith("--from=") for f in c.flags)
        for src in c.value[:-1]
    ]
    assert "pyproject.toml" in sources
    for src in sources:
        assert (REPO / src).exists(), src
        assert src.rstrip("/").split("/", 1)[0] in allowed, f"{src} is excluded by .dockerignore"


# --- configuration names ---------------------------------------------------------------------------


def test_variables_are_settings_or_documented(services: dict[str, dict[str, Any]]) -> None:
    """Every ${VAR} is an MW_* setting (same name as the native stack) or documented in docker/README.md."""
    text = COMPOSE.read_text()
    readme = README.read_text()
    found = INTERPOLATION.findall(text)
    assert found
    for var, op, default in found:
        if var.startswith("MW_"):
            assert var.removeprefix("MW_").lower() in Settings.model_fields, f"{var} is not a setting"
            if op == ":-":  # the compose default must be the native default
                native = _settings_default(var)
                assert default == str(native), f"{var}: compose default {default!r}, native default {native!r}"
        else:
            assert f"`{var}`" in readme, f"{var} is used in compose.yaml but not documented in docker/README.md"
    for name, svc in services.items():
        for key in svc.get("environment") or {}:
            if key.startswith("MW_"):
                assert key.removeprefix("MW_").lower() in Settings.model_fields, f"{name}: {key} is not a setting"
            else:
                assert not key.startswith("DEMO_")


def test_every_mw_variable_documented_in_the_docker_readme_is_a_setting() -> None:
    for var in set(re.findall(r"`(MW_[A-Z0-9_]+)`", README.read_text())):
        assert var.removeprefix("MW_").lower() in Settings.model_fields, var


def test_processes_find_their_tokens_where_the_setup_writes_them(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    setup = (INIT / "influxdb-setup.sh").read_text()
    secrets_dir = re.search(r"^secrets=(\S+)$", setup, flags=re.MULTILINE)
    assert secrets_dir
    files = re.findall(r"^ensure_token (\w+) (write|read) ", setup, flags=re.MULTILINE)
    assert dict(files) == {"influx_write_token": "write", "influx_read_token": "read"}
    for name in ("influxdb-writer", "dashboard"):
        state = services[name]["environment"]["MW_STATE_DIR"]
        mount = next(v for v in services[name]["volumes"] if v.startswith("mw-secrets:"))
        assert mount.split(":")[1] == str(load_settings(state_dir=Path(state)).secrets_dir) == secrets_dir[1]
    # The file names are the ones Settings reads (machinewatch/config.py, _token).
    (tmp_path / "secrets").mkdir()
    for filename, _ in files:
        (tmp_path / "secrets" / filename).write_text(f"token-from-{filename}\n")
    s = load_settings(state_dir=tmp_path, influx_write_token=None, influx_read_token=None)
    assert s.write_token() == "token-from-influx_write_token"
    assert s.read_token() == "token-from-influx_read_token"


# --- topics and buckets -------------------------------------------------------------------------------


class _FakeAdmin:
    """Stands in for kafka.KafkaAdminClient: records created topics."""

    topics: ClassVar[set[str]] = set()
    created: ClassVar[list[tuple[str, int, int]]] = []
    configs: ClassVar[dict[str, dict[str, str]]] = {}
    drop_creates: ClassVar[bool] = False

    def __init__(self, **kwargs: object) -> None:
        self.kwargs = kwargs

    def list_topics(self) -> list[str]:
        return sorted(self.topics)

    def create_topics(self, new: list[Any]) -> None:
        for t in new:
            type(self).created.append((t.name, t.num_partitions, t.replication_factor))
            if not self.drop_creates:
                type(self).topics.add(t.name)
                type(self).configs[t.name] = dict(t.topic_configs)

    def describe_configs(self, resources: list[Any]) -> dict[str, dict[str, dict[str, Any]]]:
        # kafka-python 3's shape; the real broker's answer is checked in tests/integration/test_stack.py
        return {"topic": {r.name: {k: {"value": v} for k, v in self.configs.get(r.name, {}).items()}
                          for r in resources}}

    def alter_configs(self, resources: list[Any]) -> None:
        for r in resources:
            type(self).configs.setdefault(r.name, {}).update(r.configs)

    def close(self) -> None:
        pass


def test_kafka_init_creates_every_topic_of_names(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _load_script("create_topics")
    monkeypatch.setattr(mod, "KafkaAdminClient", _FakeAdmin)
    monkeypatch.setattr(_FakeAdmin, "topics", {names.TOPIC_READINGS, "someone-elses"})
    monkeypatch.setattr(_FakeAdmin, "created", [])
    monkeypatch.setattr(_FakeAdmin, "configs", {})
    settings = load_settings(kafka_bootstrap="kafka:9092", kafka_partitions=5)
    created = mod.create_topics(settings)
    assert set(created) == set(names.ALL_TOPICS) - {names.TOPIC_READINGS}
    assert {name for name, _, _ in _FakeAdmin.created} == set(created)
    assert all(parts == 5 and repl == 1 for _, parts, repl in _FakeAdmin.created)
    assert all(_FakeAdmin.configs[t] == names.topic_config(t) for t in created)
    _FakeAdmin.configs[names.TOPIC_ALERTS] = {}  # made by an older version
    assert mod.create_topics(settings) == []  # a second 'up' creates nothing, and fixes the old topic's config
    assert _FakeAdmin.configs[names.TOPIC_ALERTS] == {"message.timestamp.type": "LogAppendTime"}


def test_kafka_init_fails_when_a_topic_is_still_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _load_script("create_topics")
    monkeypatch.setattr(mod, "KafkaAdminClient", _FakeAdmin)
    monkeypatch.setattr(_FakeAdmin, "topics", set())
    monkeypatch.setattr(_FakeAdmin, "created", [])
    monkeypatch.setattr(_FakeAdmin, "drop_creates", True)
    with pytest.raises(RuntimeError, match=re.escape(names.TOPIC_READINGS)):
        mod.create_topics(load_settings(kafka_bootstrap="kafka:9092"))


def test_influxdb_setup_creates_every_bucket_of_names(services: dict[str, dict[str, Any]]) -> None:
    setup = (INIT / "influxdb-setup.sh").read_text()
    ensured = dict(re.findall(r'^ensure_bucket (\w+) "\$\{(MW_INFLUX_\w+_RETENTION_S):-\d+\}"', setup, re.MULTILINE))
    buckets = {getattr(names, n) for n in dir(names) if n.startswith("BUCKET_")}
    assert set(ensured) == buckets
    for bucket, var in ensured.items():
        assert var == f"MW_INFLUX_{bucket.upper()}_RETENTION_S"
        assert var in services["influxdb-setup"]["environment"]
    assert services["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_BUCKET"] == names.BUCKET_RAW


def test_job_submitter_runs_known_jobs_with_the_official_flink_cli(services: dict[str, dict[str, Any]]) -> None:
    from machinewatch import jobs

    command = services["job-submitter"]["command"]
    requested = command[command.index("/opt/machinewatch-init/submit_jobs.py") + 1 :]
    assert requested and set(requested) <= set(jobs.JOBS)
    mod = _load_script("submit_jobs")
    settings = load_settings(flink_rest_address="http://jobmanager:8081", flink_parallelism=2)
    cmd = mod.flink_run_command(settings, "window-aggregates")
    assert cmd[0] == "/opt/flink/bin/flink" and cmd[1:3] == ["run", "-d"]
    assert "-Drest.address=jobmanager" in cmd and "-Drest.port=8081" in cmd and "-Dparallelism.default=2" in cmd
    assert Path(cmd[-1]) == jobs.JOBS["window-aggregates"] and Path(cmd[-1]).is_file()


# --- versions pinned once ---------------------------------------------------------------------------


def test_dockerfile_pins_the_project_versions() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    flink_pin = next(d for d in project["dependencies"] if d.startswith("apache-flink"))
    args = _dockerfile_args()
    pom = _pom_properties(FLINK_POM)
    settings = load_settings()

    assert flink_pin == f"apache-flink=={args['FLINK_VERSION']}"
    assert args["FLINK_VERSION"] == pom["flink.version"] == settings.flink_version
    assert args["FLINK_KAFKA_CONNECTOR_VERSION"] == pom["flink.kafka.connector.version"]
    assert args["FLINK_KAFKA_CONNECTOR_VERSION"] == settings.flink_kafka_connector_version
    assert args["FLINK_KAFKA_CONNECTOR_VERSION"].endswith("-" + ".".join(args["FLINK_VERSION"].split(".")[:2]))

    major, minor = map(int, args["PYTHON_VERSION"].split("."))
    bounds = re.fullmatch(r">=(\d+\.\d+),<(\d+\.\d+)", project["requires-python"])
    assert bounds, project["requires-python"]
    lower, upper = bounds.groups()
    assert tuple(map(int, lower.split("."))) <= (major, minor) < tuple(map(int, upper.split(".")))

    text = DOCKERFILE.read_text()
    froms = _dockerfile_froms()
    assert froms[-1] == "flink:${FLINK_VERSION}-scala_2.12-java17", "the image is built from the official Flink image"
    assert "python:${PYTHON_VERSION}-slim-bookworm AS python" in froms
    # The connector jars (and zstd-jni) come from the native stack's own pom, not a second list.
    assert "COPY machinewatch/stack/provision/flink/pom.xml" in text
    assert "-Dflink.kafka.connector.version=${FLINK_KAFKA_CONNECTOR_VERSION}" in text
    assert "--from=connectors" in text and "/opt/flink/lib/" in text


def test_compose_images_match_the_native_server_versions(services: dict[str, dict[str, Any]]) -> None:
    settings = load_settings()
    assert _pom_properties(KAFKA_POM)["kafka.version"] == settings.kafka_version
    assert services["kafka"]["image"] == f"apache/kafka:{settings.kafka_version}"
    influxdb = f"influxdb:{settings.influxdb_version}"
    assert services["influxdb"]["image"] == services["influxdb-setup"]["image"] == influxdb
    built = {svc["image"] for svc in services.values() if "build" in svc}
    assert len(built) == 1, "every machinewatch service runs the one image"


# --- scripts and documentation -----------------------------------------------------------------------


@pytest.mark.parametrize("script", sorted(p.name for p in INIT.glob("*.sh")))
def test_shell_scripts_parse_and_pass_shellcheck(script: str) -> None:
    out = subprocess.run(["bash", "-n", str(INIT / script)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (bash -n passed)")
    out = subprocess.run(["shellcheck", "-s", "bash", str(INIT / script)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout


def test_readme_says_what_starts_and_how_to_stop(services: dict[str, dict[str, Any]]) -> None:
    readme = README.read_text()
    for name in services:
        assert f"`{name}`" in readme, f"docker/README.md does not mention the service {name}"
    for port in PUBLISHED.values():
        assert f"http://127.0.0.1:{port}" in readme
    for command in ("docker compose -f docker/compose.yaml up", "down -v", "influx_viewer_password"):
        assert command in readme
    assert "docker compose -f docker/compose.yaml up" in (REPO / "README.md").read_text()
