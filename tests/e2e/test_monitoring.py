"""A real Prometheus (Debian's) scraping the running services while a tenant's morning is
replayed through them: every recording rule and every dashboard panel has data."""

from __future__ import annotations

import asyncio
import math
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml

from cli import dashboards, debian
from cli.processes import free_port
from libs.common.bus import EventProducer
from libs.common.events import AutomationResult, AutomationResultPayload, EventSource, StepResult
from libs.common.settings import REPO_ROOT
from libs.common.topics import physical
from tests.e2e.platform import AS_OPERATOR, Platform, wait_for

pytestmark = pytest.mark.e2e
RULES = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"


@pytest.fixture(scope="module")
def prometheus(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus scraping each service every second, with the project's rules evaluated every
    second (their groups' own intervals are for production)."""
    binary = debian.ensure("prometheus", "prometheus")
    home = tmp_path_factory.mktemp("prometheus")
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
    (home / "rules.yml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": [url.removeprefix("http://")]}]}
            for name, url in platform.urls.items()
        ],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (home / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=home,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(ready, timeout_s=30), (home / "prometheus.log").read_text()[-2000:]
        yield url
    finally:
        proc.kill()
        proc.wait()


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200, f"{expr}: {r.text}"
    return r.json()["data"]["result"]  # type: ignore[no-any-return]


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in result)


def test_every_recording_rule_and_dashboard_panel_has_data_after_a_replay(
    platform: Platform, prometheus: str
) -> None:
    tenant, key = platform.new_tenant()
    ingest, packet, auth = platform.urls["ingest"], platform.urls["packet"], {"X-API-Key": key}
    t0 = datetime.now(UTC) - timedelta(hours=6)

    def replay(round_: int) -> None:
        """Alerts, a ticket's whole life, an engineer's review, an automation run, a poison event."""
        alerts = [
            {
                "fingerprint": f"disk-{round_}-{i}",
                "title": f"Disk D: above 9{i}% on FS{round_}{i}",
                "severity": "critical",
                "device": f"FS{round_}{i}",
                "site": f"site-{i}",
                "starts_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
                "source_system": "e2e-rmm",
            }
            for i in range(3)
        ]
        assert (
            httpx.post(f"{ingest}/v1/alerts/batch", json={"alerts": alerts}, headers=auth).status_code == 202
        )
        ticket = {
            "ticket_id": f"M-{round_}",
            "title": "S: drive full",
            "devices": [f"FS{round_}0"],
            "site": "site-0",
        }
        for kind, minutes in (("created", 0), ("escalated", 60), ("resolved", 180), ("reopened", 240)):
            body: dict[str, Any] = {
                "kind": kind,
                "event_ref": f"M-{round_}-{kind}",
                "ticket": ticket,
                "occurred_at": (t0 + timedelta(minutes=minutes + round_)).isoformat(),
            }
            if kind == "escalated":
                body["escalation"] = {"from_tier": "L1", "to_tier": "L2"}
            r = httpx.post(f"{ingest}/v1/tickets/events", json=body, headers=auth)
            assert r.status_code == 202, r.text

        def packet_id() -> str | None:
            r = httpx.get(
                f"{packet}/v1/packets",
                params={"tenant_id": tenant, "ticket_id": f"M-{round_}"},
                headers=AS_OPERATOR,
            )
            return r.json()["packet_id"] if r.status_code == 200 else None

        pid = wait_for(packet_id, timeout_s=60)
        assert pid, "the escalation's packet"
        fb = httpx.post(
            f"{packet}/v1/packets/{pid}/feedback",
            json={"tenant_id": tenant, "version": 1, "verdict": "wrong", "review_seconds": 120 + round_},
            headers=AS_OPERATOR,
        )
        assert fb.status_code == 201, fb.text
        # A month's customer report, drafted and approved (the turnaround).
        month = f"2025-{round_ + 1:02d}"
        drafted = httpx.post(
            f"{packet}/v1/reports", json={"tenant_id": tenant, "month": month}, headers=AS_OPERATOR
        )
        assert drafted.status_code == 201, drafted.text
        approved = httpx.post(
            f"{packet}/v1/reports/{drafted.json()['report_id']}/approve",
            json={"tenant_id": tenant, "approved_by": "lead"},
            headers=AS_OPERATOR,
        )
        assert approved.status_code == 200, approved.text
        asyncio.run(_publish_run_result_and_a_poison_event(platform, tenant))

    def seen(metric: str) -> bool:
        return bool(query(prometheus, f'{metric}{{tenant="{tenant}"}}'))

    # Counters are compared with their first scrape: a first round the scrapes see, then a second.
    replay(0)
    base = [
        "msp_sla_alerts_total",
        "msp_sla_time_to_classify_seconds_count",
        "msp_sla_time_to_escalate_seconds_count",
        "msp_sla_time_to_resolve_after_escalation_seconds_count",
        "msp_sla_ticket_transitions_total",
        "msp_sla_engineer_review_seconds_count",
        "msp_sla_engineer_corrections_total",
        "msp_sla_automation_runs_total",
        "msp_sla_report_turnaround_seconds_count",
    ]
    assert wait_for(lambda: all(seen(m) for m in base), timeout_s=60), [m for m in base if not seen(m)]
    assert wait_for(lambda: bool(query(prometheus, "msp_deadlettered_total")), timeout_s=30)

    def scraped_twice() -> bool:
        """Each first-round series in two scrapes: the second round is then an increase."""
        return all(
            finite(query(prometheus, f'min(count_over_time({m}{{tenant="{tenant}"}}[5m])) >= 2'))
            for m in base
        )

    assert wait_for(scraped_twice, timeout_s=30)
    replay(1)

    records = [
        r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r
    ]

    def empty_rules() -> list[str]:
        return [name for name in records if not finite(query(prometheus, name))]

    assert wait_for(lambda: not empty_rules(), timeout_s=90), empty_rules()

    def empty_panels() -> list[str]:
        missing = []
        for board in dashboards.all_dashboards():
            rendered = board.to_json()
            for panel in rendered["panels"]:
                exprs = [
                    t["expr"].replace("$before", "28d").replace("$tenant", tenant) for t in panel["targets"]
                ]
                if not any(finite(query(prometheus, e)) for e in exprs):
                    missing.append(f"{board.uid}: {panel['title']}")
        return missing

    assert wait_for(lambda: not empty_panels(), timeout_s=60), empty_panels()
    # The tenant's own figures, as the API gives them.
    mean = query(prometheus, f'tenant:msp_sla_time_to_escalate_seconds:mean_1d{{tenant="{tenant}"}}')
    assert float(mean[0]["value"][1]) == pytest.approx(3600.0)


async def _publish_run_result_and_a_poison_event(platform: Platform, tenant: str) -> None:
    """What the automation service publishes when a run ends, and an event no consumer can decode."""
    namespace, bootstrap = platform.env["MSP_TOPIC_NAMESPACE"], platform.env["KAFKA_BOOTSTRAP_SERVERS"]
    producer = EventProducer(bootstrap, client_id="e2e-monitoring", namespace=namespace)
    await producer.start()
    try:
        run_id = uuid.uuid4()
        await producer.publish(
            AutomationResult(
                event_id=uuid.uuid4(),
                tenant_id=tenant,
                occurred_at=datetime.now(UTC),
                source=EventSource(system="msp.automation", reference=str(run_id)),
                payload=AutomationResultPayload(
                    run_id=run_id,
                    outcome="succeeded",
                    steps=[StepResult(index=0, action="rmm.restart_service", outcome="succeeded")],
                ),
            )
        )
        await producer.send_raw(
            physical("alerts.raw.v1", namespace), b"{not json", key=tenant.encode(), headers=[]
        )
    finally:
        await producer.stop()
