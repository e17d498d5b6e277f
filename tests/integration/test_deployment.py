"""The deployment descriptions load and would start: docker-compose.yml through compose-go (the
loader `docker compose config` uses), with the secrets file `msp secrets` writes, and every
platform service's environment accepted by its own prod settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from libs.common.settings import REPO_ROOT

pytestmark = pytest.mark.integration
SETTINGS = {
    "ingest": "services.ingest.settings:IngestSettings",
    "triage": "services.triage.settings:TriageSettings",
    "packet": "services.packet.settings:PacketSettings",
    "automation": "services.automation.settings:AutomationSettings",
    "audit": "services.audit.settings:AuditSettings",
}


def go() -> str:
    found = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    assert found, "the Go toolchain builds the compose validator (deploy/compose-check)"
    return found


@pytest.fixture(scope="module")
def compose_check(tmp_path_factory: pytest.TempPathFactory) -> str:
    binary = tmp_path_factory.mktemp("bin") / "compose-check"
    built = subprocess.run(
        [go(), "build", "-o", str(binary), "."],
        cwd=REPO_ROOT / "deploy" / "compose-check",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    return str(binary)


def secrets_file(tmp_path: Path) -> Path:
    """As the README says: `./msp secrets --env-file ...`."""
    path = tmp_path / "msp.env"
    made = subprocess.run(
        [sys.executable, "-m", "cli.main", "secrets", "--env-file", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    assert path.stat().st_mode & 0o077 == 0, "secrets readable by others"
    return path


def load_compose(compose_check: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose_check, str(REPO_ROOT / "docker-compose.yml"), str(env_file)],
        env={**os.environ, "MSP_ENV_FILE": str(env_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_class(spec: str) -> Any:
    import importlib

    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def settings_from(monkeypatch: pytest.MonkeyPatch, module: str, env: dict[str, str], tmp_path: Path) -> Any:
    """The settings `python -m services.<name>` builds from exactly `env` (nothing of ours)."""
    for key in list(os.environ):
        if key.startswith("MSP_") or key == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MSP_VAR_DIR", str(tmp_path / "var"))
    return settings_class(SETTINGS[module.removeprefix("services.")])()


def test_compose_loads_and_every_service_would_start_with_the_secrets_file(
    compose_check: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_compose(compose_check, secrets_file(tmp_path))
    assert loaded.returncode == 0, loaded.stderr
    services = json.loads(loaded.stdout)["services"]
    assert set(services) == {
        "kafka", "postgres", "topics", "migrate", "ingest", "triage", "packet", "automation",
        "automation-executor", "audit", "prometheus", "grafana",
    }  # fmt: skip
    # Infrastructure with health checks and volumes; the jobs wait for it, the services for the jobs.
    for infra in ("kafka", "postgres"):
        assert services[infra]["healthcheck"]["test"] and services[infra]["volumes"], infra
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    platform = {n: s for n, s in services.items() if (s.get("command") or [])[:2] == ["python", "-m"]}
    runners = {n: s for n, s in platform.items() if s["command"][2].startswith("services.")}
    assert set(runners) == {"ingest", "triage", "packet", "automation", "automation-executor", "audit"}
    for name, svc in runners.items():
        assert {k: v["condition"] for k, v in svc["depends_on"].items()} == {
            "topics": "service_completed_successfully",
            "migrate": "service_completed_successfully",
        }, name
        assert svc["healthcheck"]["test"][-1].count("/readyz") == 1
        env = svc["environment"]
        assert env["MSP_ENVIRONMENT"] == "prod" and env["MSP_MIGRATE_ON_START"] == "false"
        # The service's own settings accept what compose gives it (prod refuses missing secrets).
        settings = settings_from(monkeypatch, svc["command"][2], env, tmp_path)
        assert settings.environment == "prod" and settings.database_url.startswith("postgresql+psycopg://")
    assert runners["automation-executor"]["environment"]["MSP_AUTOMATION_ROLE"] == "executor"
    # Prometheus with the rules, Grafana with the dashboards, from files that exist.
    mounts = {v["source"]: v["target"] for s in ("prometheus", "grafana") for v in services[s]["volumes"]}
    assert mounts[str(REPO_ROOT / "deploy" / "prometheus" / "rules.yml")] == "/etc/prometheus/rules.yml"
    assert mounts[str(REPO_ROOT / "deploy" / "grafana" / "dashboards")] == "/var/lib/grafana/dashboards"
    assert all(Path(src).exists() for src in mounts if src.startswith("/"))


def test_compose_without_the_secrets_file_says_how_to_make_one(compose_check: str, tmp_path: Path) -> None:
    partial = tmp_path / "partial.env"
    partial.write_text("MSP_ADMIN_TOKEN=" + "x" * 40 + "\n")
    loaded = load_compose(compose_check, partial)
    assert loaded.returncode != 0 and "./msp secrets" in loaded.stderr, loaded.stderr


def test_msp_secrets_never_overwrites_a_secrets_file(tmp_path: Path) -> None:
    path = secrets_file(tmp_path)
    before = path.read_text()
    again = subprocess.run(
        [sys.executable, "-m", "cli.main", "secrets", "--env-file", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1 and "exists" in again.stderr and path.read_text() == before


# --- Kubernetes ---------------------------------------------------------------------------

CRDS = REPO_ROOT.parent / "shared" / "data" / "k8s-crds"
CORE = {"v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1"}


def manifests() -> list[tuple[str, dict[str, Any]]]:
    import yaml

    from cli import kubernetes as k8s

    return [
        (path.name, doc)
        for path in [*sorted(k8s.OUT_DIR.glob("*.yaml")), k8s.SECRET_TEMPLATE]
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the CRD's openAPIV3Schema, from the published CRDs."""
    import yaml

    schemas = {}
    for path in CRDS.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def unknown_fields(value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Fields the API server would prune without a word: keys a structural schema does not know."""
    found: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if props is not None and key in props:
                found += unknown_fields(item, props[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(item, extra, f"{where}.{key}")
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields") and not extra:
                found.append(f"{where}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{where}[{i}]")
    return found


def test_every_manifest_validates_against_the_kubernetes_and_crd_schemas() -> None:
    import jsonschema
    import kubernetes_validate

    schemas = crd_schemas()
    kinds = set()
    for name, doc in manifests():
        kinds.add(doc["kind"])
        if doc["apiVersion"] in CORE:
            kubernetes_validate.validate(doc, "1.37.0", strict=True)
            continue
        schema = schemas.get((doc["apiVersion"], doc["kind"]))
        assert schema is not None, f"{name}: no published schema for {doc['apiVersion']} {doc['kind']}"
        # The schema as published, not checked against a metaschema: its patterns are Go regular
        # expressions (one starts with "(?i)", which Python's re takes only at the very start).
        jsonschema.Draft7Validator(schema).validate(doc)
        assert not unknown_fields(doc["spec"], schema["properties"]["spec"]), (name, doc["kind"])
    assert kinds >= {
        "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "Job", "ConfigMap", "Secret",
        "Kafka", "KafkaNodePool", "KafkaTopic", "ScaledObject", "ServiceMonitor", "PrometheusRule",
    }  # fmt: skip


def test_the_crd_check_catches_a_misspelt_field() -> None:
    import copy

    import jsonschema

    schema = crd_schemas()[("keda.sh/v1alpha1", "ScaledObject")]
    scaled = next(doc for _, doc in manifests() if doc["kind"] == "ScaledObject")
    typo = copy.deepcopy(scaled)
    typo["spec"]["maxReplicas"] = typo["spec"].pop("maxReplicaCount")
    assert unknown_fields(typo["spec"], schema["properties"]["spec"]) == [".maxReplicas"]
    wrong = copy.deepcopy(scaled)
    wrong["spec"]["minReplicaCount"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(wrong)


def test_the_manifests_are_what_the_code_makes_and_follow_the_services() -> None:
    from cli import kubernetes as k8s
    from libs.common.topics import TOPICS

    for path, text in k8s.outputs().items():
        assert path.read_text() == text, f"{path.name}: run ./msp k8s"
    assert {p.name for p in k8s.OUT_DIR.glob("*.yaml")} == set(k8s.manifests()), "a stale file in k8s/"
    docs = [doc for _, doc in manifests()]
    topics = {d["spec"]["topicName"]: d["spec"] for d in docs if d["kind"] == "KafkaTopic"}
    assert set(topics) == set(TOPICS)
    assert all(t["partitions"] == 12 and t["replicas"] == 3 for t in topics.values())
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for scaled in (d for d in docs if d["kind"] == "ScaledObject"):
        assert scaled["spec"]["scaleTargetRef"]["name"] in deployments
        assert scaled["spec"]["maxReplicaCount"] <= 12, "capped at the partition count"
        assert all(t["metadata"]["topic"] in TOPICS for t in scaled["spec"]["triggers"])
    for dep in deployments.values():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["startupProbe"] and container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["securityContext"]["runAsNonRoot"] and container["resources"]["limits"]["memory"]
        names = {d["metadata"]["name"] for d in docs if d["kind"] in ("PodDisruptionBudget", "NetworkPolicy")}
        assert dep["metadata"]["name"] in names
    # The services' model-loading processes get room above the ~1.1 GiB they use once loaded.
    for heavy in ("msp-triage", "msp-packet", "msp-automation"):
        (container,) = deployments[heavy]["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["memory"] == "2Gi"


def test_the_keda_triggers_are_the_consumer_groups_the_services_run(tmp_path: Path) -> None:
    """Each service's runtime, wired as it runs (not started): its consumers' groups and topics
    are what the ScaledObject of its Deployment scales on."""
    from cli import kubernetes as k8s

    wired: dict[str, set[tuple[str, str]]] = {}
    for w in k8s.WORKLOADS:
        import importlib

        app = importlib.import_module(f"services.{w.module}.app")
        cls = settings_class(SETTINGS[w.module])
        env = dict(w.env)
        settings = cls(
            database_url=f"sqlite:///{tmp_path / (w.name + '.db')}",
            var_dir=tmp_path / w.name,
            **({"automation_role": env["MSP_AUTOMATION_ROLE"]} if "MSP_AUTOMATION_ROLE" in env else {}),
        )
        built = app.build(settings)
        rt = built[0] if isinstance(built, tuple) else built.rt
        wired[w.name] = {(c._config["group_id"], t) for c in rt.consumers for t in c.topics}
        rt.engine.dispose()
    assert wired == {w.name: set(w.consumes) for w in k8s.WORKLOADS}


def test_every_deployment_would_start_with_the_configmap_and_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Secret made as the README says (`msp secrets`, plus the database URL) and the
    ConfigMap: each service's prod settings accept them."""
    docs = [doc for _, doc in manifests()]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    secret = dict(line.split("=", 1) for line in secrets_file(tmp_path).read_text().splitlines())
    secret["MSP_DATABASE_URL"] = "postgresql+psycopg://msp:pw@postgres:5432/msp"
    template = next(d for d in docs if d["kind"] == "Secret")["stringData"]
    assert set(template) <= set(secret), "the template names a key msp secrets does not make"
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        env = {**config, **secret, **{e["name"]: e["value"] for e in container["env"]}}
        settings = settings_from(monkeypatch, container["command"][2], env, tmp_path)
        assert settings.environment == "prod" and not settings.migrate_on_start
