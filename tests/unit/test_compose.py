"""The docker compose demo, checked without a Docker engine (tests/compose/ runs it on one).

The compose file is validated against the Compose Specification's JSON schema as shipped in the
check-jsonschema package (PyPI), every path, variable, command and version it references is
checked against the repository, and, where Compose v2 is installed (or built by './run compose
prepare'), `docker compose config` (which parses and resolves offline) must accept it too.
Nothing here starts a container.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from machinewatch.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "machinewatch.Dockerfile"
README = DOCKER / "README.md"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ... ($$ escapes a literal $)
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
# What a person opens in a browser, on the host's loopback: service -> (port variable, default).
OPENED = {"jobmanager": ("MW_FLINK_REST_PORT", 8081), "influxdb": ("MW_INFLUX_PORT", 8086),
          "dashboard": ("DEMO_DASHBOARD_PORT", 8501)}


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


def _dockerfile() -> list[Any]:
    """The Dockerfile's instructions, parsed by BuildKit's own parser (the `dockerfile` package)."""
    import dockerfile

    return list(dockerfile.parse_file(str(DOCKERFILE)))


def _dockerfile_args() -> dict[str, str]:
    pairs = [v.split("=", 1) for c in _dockerfile() if c.cmd.upper() == "ARG" for v in c.value if "=" in v]
    return {k: v for k, v in pairs}


def _dockerfile_env() -> dict[str, str]:
    values = [c.value for c in _dockerfile() if c.cmd.upper() == "ENV"]
    return {v[i]: v[i + 1] for v in values for i in range(0, len(v), 2)}


def _settings_default(env_name: str) -> Any:
    field = Settings.model_fields[env_name.removeprefix("MW_").lower()]
    return field.get_default(call_default_factory=True)


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
        ("simulator", "network_mode", ["host"]),
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
    """Compose v2 as installed, or as './run compose prepare' built it into the cache; None if neither."""
    from machinewatch.stack.engine import Engine

    if shutil.which("docker") is None:
        return None
    env = {**os.environ}
    plugin_dir = Engine(load_settings()).env()["DOCKER_CONFIG"]
    for config in (env.get("DOCKER_CONFIG"), plugin_dir):
        probe_env = {**env, "DOCKER_CONFIG": config} if config else env
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, env=probe_env,
                               check=False)
        if probe.returncode == 0:
            return ["env", f"DOCKER_CONFIG={config}", "docker", "compose"] if config else ["docker", "compose"]
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    """`docker compose config` parses, interpolates and checks references without an engine."""
    cli = _docker_compose()
    if cli is None:
        pytest.skip("Compose v2 is not installed here ('./run compose prepare' builds it; 'config' needs no engine)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MW_", "DEMO_", "COMPOSE_"))}
    out = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "--format", "json"], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout)
    for name, svc in resolved["services"].items():
        assert svc.get("network_mode") == "host", name
        assert not svc.get("ports"), f"{name}: a host-network container publishes nothing"
    assert resolved["services"]["jobmanager"]["build"]["context"] == str(REPO)
    assert resolved["services"]["jobmanager"]["build"]["args"]["BASE_IMAGE"] == "debian:bookworm-slim"
    assert resolved["services"]["influxdb"]["image"] == f"influxdb:{load_settings().influxdb_version}"
    env["DEMO_BASE_IMAGE"] = "localhost/debian:bookworm-slim"
    out = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "--format", "json"], capture_output=True, text=True, env=env, check=False
    )
    assert json.loads(out.stdout)["services"]["kafka"]["build"]["args"]["BASE_IMAGE"] == env["DEMO_BASE_IMAGE"]


# --- references: build contexts, Dockerfiles, commands, volumes, dependencies -----------------------


def test_build_contexts_and_dockerfiles_exist(services: dict[str, dict[str, Any]]) -> None:
    built = 0
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / build["dockerfile"]).is_file(), f"{name}: Dockerfile {build['dockerfile']}"
            built += 1
        for volume in svc.get("volumes", []):
            assert not volume.startswith((".", "/")), f"{name}: a bind mount ({volume}) differs between machines"
    assert built >= 5


def test_every_machinewatch_command_is_one_the_cli_accepts(services: dict[str, dict[str, Any]]) -> None:
    """The containers run the native CLI: each command line (after interpolation) parses, and the servers
    run as 'stack serve', checks are 'stack ready', one-shot set-ups 'stack setup'."""
    from machinewatch import demo
    from machinewatch.cli import build_parser
    from machinewatch.stack import SERVERS

    def interpolate(arg: str) -> str:
        return INTERPOLATION.sub(lambda m: m[3] or "", arg)

    commands = []
    for name, svc in services.items():
        command = svc.get("command") or []
        if command[:2] == ["bash", "-c"]:
            commands += [(name, part.split()) for part in command[2].split("&&")]
        elif command and command[0] == "machinewatch":
            commands.append((name, [interpolate(a) for a in command]))
        test = (svc.get("healthcheck") or {}).get("test", [])
        if test[:2] == ["CMD", "machinewatch"]:
            commands.append((f"{name} healthcheck", test[1:]))
    for name, argv in commands:
        assert argv[0] == "machinewatch", name
        build_parser().parse_args(argv[1:])  # SystemExit (a test error) when the CLI refuses it
    served = {svc["command"][3] for svc in services.values() if svc.get("command", [])[1:3] == ["stack", "serve"]}
    assert served == set(SERVERS) - {"influxdb"}, "Kafka and Flink run with the native stack's launch code"
    assert services["kafka-init"]["command"][1:] == ["stack", "setup", "kafka"]
    assert services["influxdb-setup"]["command"][1:] == ["stack", "setup", "influxdb"]
    submitted = [argv[3] for name, argv in commands if name == "job-submitter"]
    assert submitted == list(demo.JOBS), "the submitter starts every job the native demo runs"


def test_named_volumes_are_declared_and_used(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose["volumes"])
    used = {v.split(":", 1)[0] for svc in services.values() for v in svc.get("volumes", [])}
    assert used == declared


def test_dependencies_exist_and_health_conditions_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no check"
            if cond["condition"] == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"one-shot {dep} must not restart"


def test_every_container_uses_the_host_network_and_binds_loopback(services: dict[str, dict[str, Any]]) -> None:
    """The engine has no bridge: containers share the host's network, publish nothing, bind 127.0.0.1."""
    for name, svc in services.items():
        assert svc.get("network_mode") == "host", name
        assert "ports" not in svc and "networks" not in svc, name
    assert services["influxdb"]["environment"]["INFLUXD_HTTP_BIND_ADDRESS"] == "127.0.0.1:${MW_INFLUX_PORT:-8086}"
    dashboard = services["dashboard"]["command"]
    assert dashboard[dashboard.index("--host") + 1] == "127.0.0.1"
    assert load_settings().bind_host == "127.0.0.1"  # Kafka and Flink bind what the native stack binds
    for name, (var, port) in OPENED.items():
        assert f"${{{var}:-{port}}}" in json.dumps(services[name]), f"{name} does not use {var}"


def test_the_network_build_and_the_engine_flags_are_as_the_issue_demands() -> None:
    """The private engine never makes a bridge or firewall rules; builds use the host network."""
    from machinewatch.stack.engine import Engine

    cmd = Engine(load_settings()).command()
    for flag in ("--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false"):
        assert flag in cmd
    assert any(a.startswith("--data-root=") for a in cmd) and any(a.startswith("--exec-root=") for a in cmd)
    assert any(a.startswith("--host=unix://") for a in cmd)
    assert not any(a.startswith(("--host=tcp", "-H=tcp")) for a in cmd)


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
        inside = any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed)
        assert inside, f"{src} is excluded by .dockerignore"


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


def test_processes_find_their_tokens_where_the_setup_writes_them(services: dict[str, dict[str, Any]]) -> None:
    """influxdb-setup writes the tokens (native code) into the volume the writer and the dashboard read."""
    state = Path(_dockerfile_env()["MW_STATE_DIR"])
    secrets = str(load_settings(state_dir=state).secrets_dir)
    for name in ("influxdb-setup", "influxdb-writer", "dashboard"):
        mount = next(v for v in services[name]["volumes"] if v.startswith("mw-secrets:"))
        assert mount.split(":")[1] == secrets, name
        assert "MW_STATE_DIR" not in services[name]["environment"], "the image sets it"
    assert services["influxdb-writer"]["volumes"] == [f"mw-secrets:{secrets}:ro"]


# --- versions pinned once ---------------------------------------------------------------------------


def test_dockerfile_takes_python_and_the_servers_jars_from_where_the_native_stack_does() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    args = _dockerfile_args()
    major, minor = map(int, args["PYTHON_VERSION"].split("."))
    bounds = re.fullmatch(r">=(\d+\.\d+),<(\d+\.\d+)", project["requires-python"])
    assert bounds, project["requires-python"]
    lower, upper = bounds.groups()
    assert tuple(map(int, lower.split("."))) <= (major, minor) < tuple(map(int, upper.split(".")))
    assert args["BASE_IMAGE"] == "debian:bookworm-slim"  # bookworm's own python3 is 3.11
    text = DOCKERFILE.read_text()
    # Dependencies from pyproject.toml, Kafka's jars and the Flink connector by the native provisioning code:
    # the Dockerfile pins no version of its own.
    assert "tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']" in text
    assert "Stack(load_settings()).provision(('kafka', 'flink'))" in text
    settings = load_settings()
    for version in (settings.flink_version, settings.kafka_version, settings.flink_kafka_connector_version):
        assert version not in text
    assert "# syntax=" not in text, "a BuildKit frontend image would be pulled from a registry"


def test_compose_images_match_the_native_server_versions(services: dict[str, dict[str, Any]]) -> None:
    from machinewatch.stack.engine import LOCAL_INFLUXDB_IMAGE

    settings = load_settings()
    assert services["influxdb"]["image"] == f"${{DEMO_INFLUXDB_IMAGE:-influxdb:{settings.influxdb_version}}}"
    assert LOCAL_INFLUXDB_IMAGE.format(version=settings.influxdb_version).endswith(f":{settings.influxdb_version}")
    built = {svc["image"] for svc in services.values() if "build" in svc}
    assert len(built) == 1, "every machinewatch service runs the one image"


# --- documentation -------------------------------------------------------------------------------------


def test_readme_says_what_starts_and_how_to_stop(services: dict[str, dict[str, Any]]) -> None:
    readme = README.read_text()
    for name in services:
        assert f"`{name}`" in readme, f"docker/README.md does not mention the service {name}"
    for _, port in OPENED.values():
        assert f"http://127.0.0.1:{port}" in readme
    for command in ("docker compose -f docker/compose.yaml up", "down -v", "./run compose up", "influx_password"):
        assert command in readme
    assert "docker compose -f docker/compose.yaml up" in (REPO / "README.md").read_text()
