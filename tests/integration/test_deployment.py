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
        for key in list(os.environ):
            if key.startswith("MSP_") or key == "KAFKA_BOOTSTRAP_SERVERS":
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("MSP_VAR_DIR", str(tmp_path / "var"))
        cls = settings_class(SETTINGS[svc["command"][2].removeprefix("services.")])
        settings = cls()
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
