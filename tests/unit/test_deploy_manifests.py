"""The Kubernetes manifests in deploy/, checked offline, without a cluster.

Every YAML document must validate against the schema of its kind: the Flink Kubernetes Operator's and
Strimzi's CRDs vendored in deploy/schemas/ (with their licences), or the Kubernetes core schemas that the
kubernetes-validate package (PyPI) ships. Unknown fields are refused, as the API server does under
`kubectl apply --validate=strict`; a CRD schema alone would let a misspelt field through, and the
server would then silently drop it. What the manifests name must agree with the code: the topics and
their configs (machinewatch.names), the pinned Flink and Kafka versions, the job entry points
(machinewatch.jobs.JOBS), the settings (machinewatch.config) and the image the Dockerfile builds.
"""

from __future__ import annotations

import copy
import hashlib
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import SecretStr

from machinewatch import names
from machinewatch.config import Settings, load_settings
from machinewatch.jobs import JOBS

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCHEMAS = DEPLOY / "schemas"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))
CRD_FILES = sorted([*SCHEMAS.glob("*/*.yaml"), *SCHEMAS.glob("*/*.yml")])
# The oldest Kubernetes that Strimzi 1.0 supports; core kinds are validated against its schemas.
KUBERNETES_VERSION = "1.30"
PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"
# Where deploy/Dockerfile puts the repository (its WORKDIR, and PYTHONPATH).
IMAGE_ROOT = PurePosixPath("/opt/machinewatch")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$")  # a Flink cluster id is at most 45 characters
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _default(name: str) -> Any:
    """A setting's default in machinewatch/config.py (not what this process's MW_* environment makes it)."""
    return Settings.model_fields[name].default


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@cache
def _all_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple((path.name, doc) for path in MANIFESTS for doc in _documents(path))


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _all_documents() if doc["kind"] == kind]


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever Kubernetes would refuse them: every object schema
    that lists its properties and does not preserve unknown fields (x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """{(apiVersion, kind): the strict openAPIV3Schema} of every served version of the vendored CRDs."""
    found = {}
    for path in CRD_FILES:
        crd = yaml.safe_load(path.read_text())
        assert crd["kind"] == "CustomResourceDefinition", path
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = _strict(version["schema"]["openAPIV3Schema"])
                # Every object has these at its root, whether or not its CRD lists them (metadata is the
                # API server's, checked in validation_errors).
                schema["properties"] = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                        "metadata": {"type": "object"}, **schema["properties"]}
                found[(f"{group}/{version['name']}", kind)] = schema
    return found


def validation_errors(doc: dict[str, Any]) -> list[str]:
    """Why ``doc`` would be refused by a cluster with these operators' CRDs (empty: it would not be)."""
    errors = []
    meta = doc.get("metadata", {})
    if not DNS_SUBDOMAIN.match(str(meta.get("name", ""))) or len(meta.get("name", "")) > 253:
        errors.append(f"metadata.name {meta.get('name')!r} is not a DNS-1123 subdomain")
    if unknown := set(meta) - {"name", "labels", "annotations"}:
        errors.append(f"metadata: unexpected {sorted(unknown)} (the namespace comes from kubectl -n)")
    schema = _crd_schemas().get((str(doc.get("apiVersion")), str(doc.get("kind"))))
    if schema is not None:
        validator = jsonschema.Draft7Validator(schema)
        errors += [f"{'.'.join(map(str, e.absolute_path)) or '(document)'}: {e.message}"
                   for e in validator.iter_errors(doc)]
        return errors
    import kubernetes_validate  # the Kubernetes core schemas, from PyPI

    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        errors.append(f"no schema for {doc.get('apiVersion')} {doc.get('kind')}: {exc.message}")
    except kubernetes_validate.ValidationError as exc:
        errors.append(f"{'.'.join(map(str, exc.absolute_path)) or '(document)'}: {exc.message}")
    return errors


# --- every manifest validates ----------------------------------------------------------------------


def test_there_are_manifests_and_schemas() -> None:
    assert {p.name for p in MANIFESTS} >= {"kafka.yaml", "topics.yaml", "flink-jobs.yaml", "settings.yaml",
                                           "sinks.yaml"}
    assert set(_crd_schemas()) >= {("flink.apache.org/v1beta1", "FlinkDeployment"), ("kafka.strimzi.io/v1", "Kafka"),
                                   ("kafka.strimzi.io/v1", "KafkaNodePool"), ("kafka.strimzi.io/v1", "KafkaTopic")}


@pytest.mark.parametrize(("manifest", "doc"), [
    pytest.param(name, doc, id=f"{name}:{doc['kind']}/{doc['metadata']['name']}") for name, doc in _all_documents()
])
def test_manifest_validates_against_its_schema(manifest: str, doc: dict[str, Any]) -> None:
    assert validation_errors(doc) == [], manifest


def _broken(kind: str, change: str) -> dict[str, Any]:
    doc = copy.deepcopy(_of_kind(kind)[0])
    if change == "wrong type":
        if kind == "FlinkDeployment":
            doc["spec"]["job"]["parallelism"] = "two"
        elif kind == "KafkaTopic":
            doc["spec"]["partitions"] = "3"
        elif kind == "Kafka":
            doc["spec"]["kafka"]["listeners"][0]["tls"] = "no"
        else:
            doc["spec"]["replicas"] = "1"
    elif change == "misspelt field":
        doc["spec"]["upgradeMod" if kind == "FlinkDeployment" else "replica"] = "savepoint"
    elif change == "value not allowed":
        if kind == "FlinkDeployment":
            doc["spec"]["flinkVersion"] = "v2_9"
        else:
            doc["spec"]["partitions"] = 0
    return doc


@pytest.mark.parametrize(("kind", "change", "expected"), [
    ("FlinkDeployment", "wrong type", "job.parallelism: 'two' is not of type 'integer'"),
    ("FlinkDeployment", "misspelt field", "'upgradeMod' was unexpected"),
    ("FlinkDeployment", "value not allowed", "spec.flinkVersion: 'v2_9' is not one of"),
    ("Kafka", "wrong type", "tls: 'no' is not of type 'boolean'"),
    ("KafkaTopic", "wrong type", "spec.partitions: '3' is not of type 'integer'"),
    ("KafkaTopic", "value not allowed", "spec.partitions: 0 is less than the minimum of 1"),
    ("KafkaNodePool", "misspelt field", "'replica' was unexpected"),
    ("Deployment", "wrong type", "spec.replicas: '1' is not of type 'integer'"),
    ("Deployment", "misspelt field", "'replica' was unexpected"),
])
def test_a_broken_manifest_fails_validation(kind: str, change: str, expected: str) -> None:
    assert validation_errors(_of_kind(kind)[0]) == []
    errors = validation_errors(_broken(kind, change))
    assert any(expected in e for e in errors), errors


def test_a_kind_without_a_schema_is_not_waved_through() -> None:
    doc = {"apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkSessionJob", "metadata": {"name": "x"}}
    assert any("no schema" in e for e in validation_errors(doc))


# --- the vendored schemas ---------------------------------------------------------------------------


def test_vendored_crds_are_unchanged_and_carry_their_licence() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    listed = {path: digest for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, flags=re.MULTILINE)}
    assert sorted(listed) == sorted(str(p.relative_to(SCHEMAS)) for p in CRD_FILES)
    for path in CRD_FILES:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == listed[str(path.relative_to(SCHEMAS))], path
    for directory in {p.parent for p in CRD_FILES}:
        licence = (directory / "LICENSE").read_text()
        assert "Apache License" in licence and "Version 2.0" in licence, directory
        assert directory.name in readme
    assert "Apache Software Foundation" in (SCHEMAS / "flink-kubernetes-operator" / "NOTICE").read_text()


# --- what the manifests name agrees with the code ---------------------------------------------------


def test_topics_are_the_projects_with_their_configs() -> None:
    topics = {doc["spec"].get("topicName", doc["metadata"]["name"]): doc for doc in _of_kind("KafkaTopic")}
    assert sorted(topics) == sorted(names.ALL_TOPICS)
    assert len(_of_kind("KafkaTopic")) == len(names.ALL_TOPICS)
    (kafka,) = _of_kind("Kafka")
    for name, doc in topics.items():
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"], name
        assert doc["spec"]["partitions"] == _default("kafka_partitions"), name
        assert doc["spec"]["replicas"] == 3, name
        config = {key: str(value) for key, value in doc["spec"]["config"].items()}
        assert config == {"min.insync.replicas": "2", **names.topic_config(name)}, name
    assert {n for n, d in topics.items() if d["spec"]["config"].get("message.timestamp.type") == "LogAppendTime"} \
        == set(names.RESULT_TOPICS)


def test_kafka_is_the_pinned_version_on_three_kraft_nodes() -> None:
    (kafka,) = _of_kind("Kafka")
    spec = kafka["spec"]["kafka"]
    version = _default("kafka_version")
    assert spec["version"] == version
    assert spec["metadataVersion"].startswith(".".join(version.split(".")[:2]) + "-IV")
    assert "zookeeper" not in kafka["spec"]
    pools = [p for p in _of_kind("KafkaNodePool") if p["metadata"]["labels"]["strimzi.io/cluster"]
             == kafka["metadata"]["name"]]
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    config = spec["config"]
    assert brokers >= config["default.replication.factor"] == 3
    assert controllers % 2 == 1 and controllers >= 3  # a KRaft quorum survives one lost controller
    assert config["min.insync.replicas"] == 2
    assert config["auto.create.topics.enable"] is False
    assert config["num.partitions"] == _default("kafka_partitions")
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "share.coordinator.state.topic.replication.factor"):
        assert config[key] == 3, key


def _flink_deployments() -> list[dict[str, Any]]:
    return _of_kind("FlinkDeployment")


def _job_file(deployment: dict[str, Any]) -> tuple[Path, list[str]]:
    """The repository file that a FlinkDeployment's PythonDriver runs (-py), and the job's own arguments."""
    args = deployment["spec"]["job"]["args"]
    py = args.index("-py")
    image_path = PurePosixPath(args[py + 1])
    return REPO / image_path.relative_to(IMAGE_ROOT), args[py + 2:]


def test_both_jobs_run_as_pyflink_applications_of_the_pinned_flink() -> None:
    flink = _default("flink_version")
    major_minor = "v" + "_".join(flink.split(".")[:2])
    files = []
    for deployment in _flink_deployments():
        spec, name = deployment["spec"], deployment["metadata"]["name"]
        assert DNS_LABEL.match(name), name
        assert spec["flinkVersion"] == major_minor, name
        job = spec["job"]
        assert job["entryClass"] == PYTHON_DRIVER, name
        # The jar PythonDriver lives in, as the official image of the pinned version ships it.
        assert job["jarURI"] == f"local:///opt/flink/opt/flink-python-{flink}.jar", name
        path, job_args = _job_file(deployment)
        assert path.is_file(), f"{name}: {path} does not exist"
        assert job_args == [], f"{name}: job arguments {job_args} (check them against the job's parser)"
        files.append(path)
        # PythonDriver's own options come before -py (it hands everything after the file to the job).
        client = job["args"][job["args"].index("-pyclientexec") + 1]
        conf = spec["flinkConfiguration"]
        assert job["args"].index("-pyclientexec") < job["args"].index("-py")
        assert client == conf["python.executable"] == conf["python.client.executable"], name
        assert job["upgradeMode"] in {"savepoint", "last-state"}, f"{name}: keyed state must survive an upgrade"
    assert sorted(files) == sorted(JOBS.values()), "every job of machinewatch.jobs.JOBS deployed once"


def test_flink_deployments_follow_the_settings_and_keep_their_state_apart() -> None:
    claims = {doc["metadata"]["name"] for doc in _of_kind("PersistentVolumeClaim")}
    state_dirs = []
    for deployment in _flink_deployments():
        spec, name = deployment["spec"], deployment["metadata"]["name"]
        conf = spec["flinkConfiguration"]
        assert all(isinstance(v, str) for v in conf.values()), f"{name}: Flink options are strings"
        assert int(conf["taskmanager.numberOfTaskSlots"]) == _default("flink_taskmanager_slots")
        assert spec["job"]["parallelism"] == _default("flink_parallelism")
        assert spec["jobManager"]["resource"]["memory"] == _default("flink_jobmanager_memory")
        assert spec["taskManager"]["resource"]["memory"] == _default("flink_taskmanager_memory")
        assert conf["table.local-time-zone"] == "UTC"
        pod = spec["podTemplate"]["spec"]
        (main,) = [c for c in pod["containers"] if c["name"] == "flink-main-container"]
        mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
        volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert set(volumes.values()) <= claims, name
        for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir",
                    "high-availability.storageDir"):
            path = conf[key].removeprefix("file://")
            assert any(path.startswith(mount + "/") for mount in mounts.values()), f"{name}: {key} not on a volume"
            state_dirs.append(path)
    assert len(state_dirs) == len(set(state_dirs)), "each job has its own checkpoint, savepoint and HA directory"


def _pod_specs() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(resource name, pod metadata, pod spec) of every pod the manifests make."""
    for deployment in _flink_deployments():
        spec = deployment["spec"]
        yield deployment["metadata"]["name"], spec["podTemplate"].get("metadata", {}), spec["podTemplate"]["spec"]
        for role in ("jobManager", "taskManager"):
            if "podTemplate" in spec[role]:
                yield f"{deployment['metadata']['name']}/{role}", {}, spec[role]["podTemplate"]["spec"]
    for deployment in _of_kind("Deployment"):
        template = deployment["spec"]["template"]
        yield deployment["metadata"]["name"], template["metadata"], template["spec"]


def _containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, _, pod in _pod_specs():
        for container in pod.get("containers", []):
            yield name, container


def test_settings_reach_every_pod_as_mw_env_and_parse() -> None:
    (configmap,) = _of_kind("ConfigMap")
    data = configmap["data"]
    fields = {f"MW_{name.upper()}": info for name, info in Settings.model_fields.items()}
    assert set(data) <= set(fields), f"not settings of machinewatch/config.py: {set(data) - set(fields)}"
    assert all(isinstance(v, str) for v in data.values())
    settings = load_settings(**{name[3:].lower(): value for name, value in data.items()})
    (kafka,) = _of_kind("Kafka")
    port = kafka["spec"]["kafka"]["listeners"][0]["port"]
    assert settings.kafka_servers == f"{kafka['metadata']['name']}-kafka-bootstrap:{port}"
    assert settings.kafka_partitions == _of_kind("KafkaTopic")[0]["spec"]["partitions"]
    for name, container in _containers():
        if "envFrom" not in container and name.endswith(("/jobManager", "/taskManager")):
            continue  # merged by the operator with the deployment-wide podTemplate's container
        assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in container["envFrom"], name
        for env in container.get("env", []):
            assert env["name"] in fields, f"{name}: {env['name']} is not a setting"


def test_secrets_are_only_referenced() -> None:
    secret_settings = {f"MW_{name.upper()}" for name, info in Settings.model_fields.items()
                       if SecretStr in (info.annotation, *getattr(info.annotation, "__args__", ()))}
    secret_settings.add("MW_WEBHOOK_URL")  # a webhook URL often carries its own credential
    assert {"MW_INFLUX_WRITE_TOKEN", "MW_KAFKA_SASL_PASSWORD", "MW_SMTP_PASSWORD"} <= secret_settings
    assert _of_kind("Secret") == [], "Secrets are made by people (README.md), never kept in deploy/"
    (configmap,) = _of_kind("ConfigMap")
    assert not set(configmap["data"]) & secret_settings
    referenced = set()
    for name, container in _containers():
        for env in container.get("env", []):
            if env["name"] in secret_settings:
                assert "value" not in env, f"{name}: {env['name']} given inline"
                assert set(env["valueFrom"]) == {"secretKeyRef"}, f"{name}: {env['name']}"
                referenced.add(env["name"])
    assert {"MW_INFLUX_WRITE_TOKEN", "MW_KAFKA_SASL_PASSWORD", "MW_SMTP_PASSWORD", "MW_WEBHOOK_URL"} <= referenced
    # A container never gets the InfluxDB operator token: the writer has the write-only one.
    assert "MW_INFLUX_TOKEN" not in {env["name"] for _, c in _containers() for env in c.get("env", [])}


def test_the_kafka_listener_admits_every_machinewatch_pod() -> None:
    (kafka,) = _of_kind("Kafka")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    peers = [peer["podSelector"]["matchLabels"] for peer in listener["networkPolicyPeers"]]
    for name, metadata, _ in _pod_specs():
        if name.endswith(("/jobManager", "/taskManager")):
            continue  # labels come from the deployment-wide podTemplate
        labels = metadata.get("labels", {})
        assert any(peer.items() <= labels.items() for peer in peers), f"{name}: not admitted by {peers}"


def test_sink_commands_are_machinewatch_commands() -> None:
    from machinewatch.cli import build_parser

    parser = build_parser()
    commands = [c["command"] for d in _of_kind("Deployment") for c in d["spec"]["template"]["spec"]["containers"]]
    assert sorted(c[1] for c in commands) == ["notify", "sink"]
    for command in commands:
        assert command[0] == "machinewatch"
        parser.parse_args(command[1:])  # exits (SystemExit) on an unknown command or option


def _dockerfile() -> list[Any]:
    import dockerfile  # BuildKit's parser

    return list(dockerfile.parse_file(str(DEPLOY / "Dockerfile")))


def test_the_image_is_the_pinned_flink_with_the_project_where_the_manifests_look() -> None:
    instructions = _dockerfile()
    args = dict(v.split("=", 1) for c in instructions if c.cmd.upper() == "ARG" for v in c.value if "=" in v)
    assert args["FLINK_VERSION"] == _default("flink_version")
    assert args["FLINK_KAFKA_CONNECTOR_VERSION"] == _default("flink_kafka_connector_version")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert f"apache-flink=={_default('flink_version')}" in pyproject["project"]["dependencies"]
    assert f">={args['PYTHON_VERSION']}," in pyproject["project"]["requires-python"]
    froms = [" ".join(c.value) for c in instructions if c.cmd.upper() == "FROM"]
    assert froms[-1] == "flink:${FLINK_VERSION}-scala_2.12-java17"
    env = {key: value for c in instructions if c.cmd.upper() == "ENV"
           for key, value in zip(c.value[::2], c.value[1::2], strict=True)}
    assert env["PYTHONPATH"] == str(IMAGE_ROOT)
    assert [c.value[0] for c in instructions if c.cmd.upper() == "WORKDIR"][-1] == str(IMAGE_ROOT)
    copied = {c.value[0].rstrip("/") for c in instructions if c.cmd.upper() == "COPY" and not c.flags}
    packages = {p.split("*")[0] for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"the image lacks {packages - copied}"
    assert [c.value[0] for c in instructions if c.cmd.upper() == "USER"][-1] == "flink"
    # Every pod runs the image this Dockerfile builds, tagged with the project's version.
    images = {deployment["spec"]["image"] for deployment in _flink_deployments()}
    images |= {c["image"] for _, c in _containers() if "image" in c}
    assert images == {f"machinewatch:{pyproject['project']['version']}"}


def test_the_readme_covers_every_manifest_in_its_apply_order() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for manifest in MANIFESTS:
        assert f"kubectl apply -n machinewatch -f deploy/{manifest.name}" in readme, manifest.name
    for version in (_default("flink_version"), _default("kafka_version"), "1.15.0", "1.0.1"):
        assert version in readme
