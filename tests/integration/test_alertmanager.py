"""A real Prometheus Alertmanager (Debian's prometheus-alertmanager) notifying ingest.

Alerts are pushed into Alertmanager's own API; its webhook receiver posts them to ingest,
which must put them on alerts.raw.v1 for the key's tenant, firing and then resolved.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cli.processes import wait_http_ready
from libs.common.db import make_engine, migrate
from libs.common.events import AlertReceived
from libs.common.settings import REPO_ROOT
from services.ingest import tenants
from tests.conftest import unique
from tests.processes import free_port, spawn_service, wait_ready

pytestmark = pytest.mark.integration


def alertmanager_binary() -> str:
    # `msp test` installs it from Debian's packages when absent, as it does PostgreSQL.
    from cli import debian

    return debian.ensure("prometheus-alertmanager", "prometheus-alertmanager")


@pytest.fixture
def ingest_with_key(bootstrap: str, pg_url: str, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    migrate(pg_url, REPO_ROOT / "services" / "ingest" / "migrations", "ingest")
    engine = make_engine(pg_url)
    tenant = unique("client")
    tenants.add_tenant(engine, tenant, "Alertmanager client")
    key = tenants.issue_key(engine, tenant)
    engine.dispose()
    log = tmp_path / "ingest.log"
    proc, url = spawn_service(
        "ingest",
        {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "MSP_DATABASE_URL": pg_url, "MSP_VAR_DIR": str(tmp_path)},
        log,
    )
    try:
        wait_ready({"ingest": (proc, url, log)})
        yield tenant, key, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def alertmanager(ingest_with_key: tuple[str, str, str], tmp_path: Path) -> Iterator[str]:
    _, key, ingest_url = ingest_with_key
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: msp\n"
        "  group_by: [alertname, instance]\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: msp\n"
        "    webhook_configs:\n"
        f"      - url: {ingest_url}/v1/sources/alertmanager\n"
        "        send_resolved: true\n"
        "        http_config:\n"
        "          authorization:\n"
        "            type: Bearer\n"
        f"            credentials: {key}\n"
    )
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            alertmanager_binary(),
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        not_ready = wait_http_ready(
            {
                "alertmanager": (
                    f"{url}/-/ready",
                    lambda: proc.poll() is None,
                    lambda: (tmp_path / "alertmanager.log").read_text(),
                )
            },
            timeout_s=20,
        )
        assert not not_ready, (tmp_path / "alertmanager.log").read_text()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def collect(bootstrap: str, tenant: str, until: Any, timeout_s: float = 60) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    seen: list[dict[str, Any]] = []
    try:
        tps = [TopicPartition(AlertReceived.topic, p) for p in range(12)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not until(seen):
            for records in (await consumer.getmany(timeout_ms=300)).values():
                seen.extend(json.loads(r.value) for r in records if r.key == tenant.encode())
    finally:
        await consumer.stop()
    return seen


def test_alertmanager_notifications_reach_kafka_for_the_right_tenant_firing_then_resolved(
    bootstrap: str, ingest_with_key: tuple[str, str, str], alertmanager: str
) -> None:
    tenant, _, _ = ingest_with_key
    now = datetime.now(UTC)
    alerts = [
        {
            "labels": {
                "alertname": "NodeFilesystemAlmostOutOfSpace",
                "instance": "fs01:9100",
                "severity": "critical",
                "mountpoint": "/srv/share",
            },
            "annotations": {
                "summary": "Filesystem has less than 5% space left.",
                "description": "/srv/share on fs01 has 3% available space left.",
            },
            "startsAt": (now - timedelta(minutes=2)).isoformat(),
        },
        {
            "labels": {
                "alertname": "NodeFilesystemAlmostOutOfSpace",
                "instance": "fs01:9100",
                "severity": "critical",
                "mountpoint": "/var",
            },
            "annotations": {"summary": "Filesystem has less than 5% space left."},
            "startsAt": (now - timedelta(minutes=1)).isoformat(),
        },
    ]
    assert httpx.post(f"{alertmanager}/api/v2/alerts", json=alerts).status_code == 200

    def states(events: list[dict[str, Any]]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for e in events:
            out.setdefault(e["payload"]["labels"].get("mountpoint", ""), set()).add(e["payload"]["status"])
        return out

    firing = asyncio.run(collect(bootstrap, tenant, lambda ev: len(states(ev)) == 2))
    assert states(firing) == {"/srv/share": {"firing"}, "/var": {"firing"}}
    fingerprints = {e["payload"]["fingerprint"] for e in firing}
    assert len(fingerprints) == 2 and all(e["tenant_id"] == tenant for e in firing)
    assert {e["payload"]["device"] for e in firing} == {"fs01"}
    assert all(e["source"]["system"] == "alertmanager" for e in firing)

    # Resolve both: an alert whose endsAt has passed is resolved, and Alertmanager says so.
    for a in alerts:
        a["endsAt"] = datetime.now(UTC).isoformat()
    assert httpx.post(f"{alertmanager}/api/v2/alerts", json=alerts).status_code == 200
    done = asyncio.run(collect(bootstrap, tenant, lambda ev: [len(s) for s in states(ev).values()] == [2, 2]))
    assert states(done) == {"/srv/share": {"firing", "resolved"}, "/var": {"firing", "resolved"}}
    resolved = [e for e in done if e["payload"]["status"] == "resolved"]
    assert {e["payload"]["fingerprint"] for e in resolved} == fingerprints  # Alertmanager's own keys
