"""The deploy/ files, checked offline (no Docker engine, no cluster, no network).

- hadolint lints deploy/Dockerfile; kubernetes-validate checks each deploy/k8s manifest
  against the schemas of one pinned Kubernetes version (strict: unknown fields fail);
  check-jsonschema checks deploy/compose.yaml against its vendored compose-spec schema;
  systemd-analyze verifies the unit (when it is installed) and a parser checks its keys.
  Each tool is also shown a broken file, so that a tool that checks nothing is noticed.
- Every ``RAFTMQ_*`` variable and every TOML key in deploy/ is a node setting (or one of
  raftmq's other variables), and the settings each node ends up with are valid.
- The metrics port the probes and healthchecks ask is the one the node is told to serve.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from raftmq.node.settings import OTHER_VARIABLES, NodeSettings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
UNIT = DEPLOY / "systemd" / "raftmq@.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "raftmq.env.example"
POSTGRES_INIT = DEPLOY / "postgres" / "init-databases.sql"

# The Kubernetes version the manifests are checked against: the oldest one still
# maintained upstream when they were written (policy/v1 PDBs, apps/v1 StatefulSets).
KUBERNETES_VERSION = "1.30.0"
K8S_MANIFESTS = sorted(K8S.glob("*.yaml"))
NODE_SERVICES = ("n1", "n2", "n3")

_VARIABLE = re.compile(r"\bRAFTMQ_[A-Z0-9_]*[A-Z0-9]\b")
_KNOWN_VARIABLES = {f"RAFTMQ_{name.upper()}" for name in NodeSettings.model_fields} | set(
    OTHER_VARIABLES
)
_BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    """A command-line tool of the test extras, from this interpreter's environment."""
    path = _BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is missing: install the test extras (pip install -e '.[test]')"
    return found


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # No user config of the tools (hadolint reads ~/.config/hadolint.yaml): only theirs.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd or DEPLOY)}
    if cwd is not None:
        env["XDG_CONFIG_HOME"] = str(cwd)
    return subprocess.run(
        args, capture_output=True, text=True, timeout=120, cwd=cwd or DEPLOY, env=env
    )


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _manifest(name: str) -> dict[str, Any]:
    document = _yaml(K8S / name)
    assert isinstance(document, dict)
    return document


def _k8s_settings_toml() -> dict[str, Any]:
    return tomllib.loads(_manifest("configmap.yaml")["data"]["raftmq.toml"])


def _node_container() -> dict[str, Any]:
    containers = _manifest("statefulset.yaml")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _compose() -> dict[str, Any]:
    document = _yaml(COMPOSE)
    assert isinstance(document, dict)
    return document


def _unit_sections(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as section -> key -> values (keys such as Environment repeat, which
    configparser refuses)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"line {number} is outside any section: {raw!r}"
        assert "=" in line and not line.endswith("\\"), f"line {number}: {raw!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _without_raftmq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("RAFTMQ_"):
            monkeypatch.delenv(name)


# -- the tools ------------------------------------------------------------------------------


def test_hadolint_passes_the_dockerfile_at_the_strictest_threshold(tmp_path: Path) -> None:
    hadolint = _tool("hadolint")
    # Every finding fails, style included; no rule is ignored.
    args = ("--no-color", "--failure-threshold", "style")
    result = _run(hadolint, *args, str(DOCKERFILE), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same run flags a Dockerfile that breaks the rules (so it does check).
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:latest\nRUN pip install raftmq\nCMD raftmq node\n")
    flagged = _run(hadolint, *args, str(broken), cwd=tmp_path)
    assert flagged.returncode != 0
    assert {"DL3007", "DL3013", "DL3042"} <= set(re.findall(r"DL\d{4}", flagged.stdout))


def test_the_image_runs_raftmq_node_as_a_non_root_user_with_a_data_volume() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert stages and all(image.startswith("python:3.11-slim") for image in stages)
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^\s*(RUN|&&) .*pip install --no-cache-dir \.$", text, re.MULTILINE)
    assert 'ENTRYPOINT ["raftmq", "node"]' in text
    volume = re.search(r'^VOLUME \["(\S+)"\]', text, re.MULTILINE)
    assert volume is not None
    assert f"RAFTMQ_DATA_DIR={volume.group(1)}" in text


@pytest.mark.parametrize("path", K8S_MANIFESTS, ids=lambda path: path.name)
def test_manifest_is_valid_for_the_pinned_kubernetes_version(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents, f"{path.name} holds no manifest"
    for document in documents:
        # Raises SchemaNotFoundError for an unknown kind: that fails the test too.
        checked = kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        assert checked == "1.30"


def test_kubernetes_validate_refuses_a_misspelt_field() -> None:
    statefulset = _manifest("statefulset.yaml")
    statefulset["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


def test_k8s_has_every_part_of_the_deployment() -> None:
    kinds = {_yaml(path)["kind"]: path.name for path in K8S_MANIFESTS}
    assert set(kinds) == {
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
    }
    service = _manifest("service.yaml")["spec"]
    assert service["clusterIP"] == "None"  # headless
    assert _manifest("pdb.yaml")["spec"]["maxUnavailable"] == 1
    statefulset = _manifest("statefulset.yaml")["spec"]
    assert statefulset["serviceName"] == _manifest("service.yaml")["metadata"]["name"]
    # OrderedReady would wait for pod 0 to be ready, which needs a leader, which needs two.
    assert statefulset["podManagementPolicy"] == "Parallel"
    labels = statefulset["template"]["metadata"]["labels"]
    assert statefulset["selector"]["matchLabels"].items() <= labels.items()
    assert service["selector"].items() <= labels.items()
    assert _manifest("pdb.yaml")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # The Secret's placeholder key is empty: applied by mistake, no node starts with it.
    assert _manifest("secret.yaml")["stringData"]["cluster.key"] == ""


def test_compose_file_is_valid_for_the_compose_spec(tmp_path: Path) -> None:
    check = (sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec")
    result = _run(*check, str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  n1:\n    image: raftmq\n    helthcheck: {}\n")
    refused = _run(*check, str(broken))
    assert refused.returncode != 0
    assert "helthcheck" in refused.stdout + refused.stderr


def test_compose_starts_nodes_after_healthy_services_with_the_key_as_a_secret() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"rabbitmq", "postgres", *NODE_SERVICES}
    assert all("healthcheck" in service for service in services.values())
    secret = compose["secrets"]["cluster_key"]["file"]
    assert (COMPOSE.parent / secret).name == "cluster.key"
    created = set(re.findall(r"CREATE DATABASE (\w+);", POSTGRES_INIT.read_text()))
    mounted = services["postgres"]["volumes"]
    assert any(v.startswith(f"./{POSTGRES_INIT.relative_to(DEPLOY)}:") for v in mounted)
    databases = []
    for name in NODE_SERVICES:
        node = services[name]
        assert node["depends_on"] == {
            "rabbitmq": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
        }
        assert node["secrets"] == ["cluster_key"]
        assert node["environment"]["RAFTMQ_CLUSTER_KEY_FILE"] == "/run/secrets/cluster_key"
        databases.append(node["environment"]["RAFTMQ_DATABASE_URL"].rsplit("/", 1)[1])
    # One database per node, each made by the init script.
    assert len(set(databases)) == len(NODE_SERVICES)
    assert set(databases) <= created


def test_systemd_unit_has_the_keys_a_node_needs() -> None:
    unit = _unit_sections(UNIT.read_text())
    service = unit["Service"]
    assert unit["Unit"]["Description"]
    assert service["ExecStart"] == ["/opt/raftmq/bin/raftmq node"]
    assert service["Restart"] == ["on-failure"]  # a node whose loop died exits non-zero
    assert "RAFTMQ_NODE_ID=%i" in service["Environment"]  # instance name = node id
    assert service["EnvironmentFile"] == ["/etc/raftmq/%i.env"]
    assert service["User"] == ["raftmq"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    data_dir = next(v for v in service["Environment"] if v.startswith("RAFTMQ_DATA_DIR="))
    assert data_dir == "RAFTMQ_DATA_DIR=/var/lib/" + service["StateDirectory"][0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify needs the executables to exist: point ExecStart at this environment's raftmq.
    raftmq = _tool("raftmq")
    text = UNIT.read_text().replace("/opt/raftmq/bin/raftmq", raftmq)
    instance = tmp_path / "raftmq@n1.service"
    instance.write_text(text)
    result = _run("systemd-analyze", "verify", str(instance), cwd=tmp_path)
    # verify exits 0 on unknown keys and bad values, but prints them: nothing may be printed.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    broken = tmp_path / "raftmq@n2.service"
    broken.write_text(text.replace("Restart=on-failure", "Restart=on-falure"))
    complaint = _run("systemd-analyze", "verify", str(broken), cwd=tmp_path)
    assert "on-falure" in complaint.stdout + complaint.stderr


# -- settings -------------------------------------------------------------------------------

DEPLOY_FILES = sorted(
    path for path in DEPLOY.rglob("*") if path.is_file() and path.suffix not in {".sql"}
)


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_variable_and_setting_key_in_deploy_files_exists(path: Path) -> None:
    text = path.read_text()
    unknown = sorted(set(_VARIABLE.findall(text)) - _KNOWN_VARIABLES)
    if path.name == "configmap.yaml":
        keys = set(_k8s_settings_toml())
        assert keys, "the ConfigMap holds no settings"
        unknown += sorted(keys - set(NodeSettings.model_fields))
    assert not unknown, f"not raftmq settings or variables: {unknown}"


def test_deploy_files_name_the_settings_they_rely_on() -> None:
    """The scan above sees the files' variables (it checks something)."""
    names = {name for path in DEPLOY_FILES for name in _VARIABLE.findall(path.read_text())}
    assert {
        "RAFTMQ_NODE_ID",
        "RAFTMQ_PEERS",
        "RAFTMQ_CLUSTER_KEY_FILE",
        "RAFTMQ_METRICS_PORT",
        "RAFTMQ_CONFIG",
    } <= names


def test_compose_nodes_have_valid_settings_of_one_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    _without_raftmq_environment(monkeypatch)
    for name in NODE_SERVICES:
        with monkeypatch.context() as scope:
            for key, value in services[name]["environment"].items():
                scope.setenv(key, str(value))
            settings = NodeSettings()  # node_id from the environment
        assert settings.node_id == name
        assert settings.voters == NODE_SERVICES
        assert settings.database_url is not None


def test_k8s_pods_get_their_node_id_and_peers_from_their_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The StatefulSet's start script, run with /bin/sh for each pod, hands `raftmq node`
    settings that validate, with the pod name as node id and the others as peers."""
    container = _node_container()
    assert container["command"] == ["/bin/sh", "-c"]
    script = container["args"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    replicas = _manifest("statefulset.yaml")["spec"]["replicas"]
    pods = tuple(f"raftmq-{ordinal}" for ordinal in range(replicas))
    assert env["MEMBERS"].split() == list(pods)
    config = tmp_path / "raftmq.toml"
    config.write_text(_manifest("configmap.yaml")["data"]["raftmq.toml"])
    # A stand-in for the image's raftmq: prints the variables it was started with.
    fake = tmp_path / "bin" / "raftmq"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintf \'%s\\n\' "$RAFTMQ_NODE_ID" "$RAFTMQ_PEERS" "$1"\n')
    fake.chmod(0o755)
    _without_raftmq_environment(monkeypatch)
    for pod in pods:
        started = subprocess.run(
            ["/bin/sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env={
                "PATH": f"{fake.parent}:/usr/bin:/bin",
                "POD_NAME": pod,
                "MEMBERS": env["MEMBERS"],
            },
        )
        node_id, peers, command = started.stdout.splitlines()
        assert command == "node"
        with monkeypatch.context() as scope:
            scope.setenv("RAFTMQ_CONFIG", str(config))
            scope.setenv("RAFTMQ_NODE_ID", node_id)
            scope.setenv("RAFTMQ_PEERS", peers)
            settings = NodeSettings()  # node_id from the environment
        assert settings.node_id == pod
        assert settings.voters == pods
        assert str(settings.data_dir) == container_mount(container, "data")


def container_mount(container: dict[str, Any], volume: str) -> str:
    """Where ``container`` mounts ``volume``."""
    mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    assert len(mounts) == 1
    path: str = mounts[0]
    return path


# -- ports ----------------------------------------------------------------------------------


def _url_port(text: str, path: str) -> int:
    found = re.findall(rf"http://127\.0\.0\.1:(\d+){re.escape(path)}\b", text)
    assert len(found) == 1, f"one {path} URL expected in {text!r}"
    return int(found[0])


def test_dockerfile_healthcheck_asks_the_metrics_port_it_sets() -> None:
    text = DOCKERFILE.read_text()
    port = re.search(r"RAFTMQ_METRICS_PORT=(\d+)", text)
    assert port is not None
    assert re.search(r"RAFTMQ_METRICS_HOST=0\.0\.0\.0", text)  # reachable from outside
    assert re.findall(r"^EXPOSE (\d+)$", text, re.MULTILINE) == [port.group(1)]
    healthcheck = re.search(r"^HEALTHCHECK .*\n\s+CMD (.*)$", text, re.MULTILINE)
    assert healthcheck is not None
    command = healthcheck.group(1)
    assert "http://127.0.0.1:%s/healthz" in command
    assert "os.environ['RAFTMQ_METRICS_PORT']" in command


def test_compose_healthchecks_and_published_ports_use_the_nodes_metrics_port() -> None:
    services = _compose()["services"]
    for name in NODE_SERVICES:
        node = services[name]
        port = int(node["environment"]["RAFTMQ_METRICS_PORT"])
        assert node["environment"]["RAFTMQ_METRICS_HOST"] == "0.0.0.0"
        assert _url_port(" ".join(node["healthcheck"]["test"]), "/healthz") == port
        published = [p.rsplit(":", 1)[1] for p in node["ports"]]
        assert published == [str(port)]


def test_k8s_probes_ask_the_metrics_port_of_the_configmap() -> None:
    settings = _k8s_settings_toml()
    port = settings["metrics_port"]
    assert settings["metrics_host"] == "0.0.0.0"
    container = _node_container()
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert named.get(get["port"], get["port"]) == port
        paths[probe] = get["path"]
    assert paths == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    service_port = _manifest("service.yaml")["spec"]["ports"][0]
    assert named.get(service_port["targetPort"], service_port["targetPort"]) == port
    assert service_port["port"] == port
