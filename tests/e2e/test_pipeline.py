"""The platform as real processes: HTTP into ingest, through Kafka, into the audit trail."""

from __future__ import annotations

import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.common.settings import REPO_ROOT
from tests.e2e.platform import AS_OPERATOR, OPERATOR, SERVICES, Platform, op_get, signals, wait_for
from tests.fakes.otlp_collector import Collector
from tests.processes import platform_env, start_platform, stop_platform

pytestmark = pytest.mark.e2e
ALERT = {
    "fingerprint": "fs01-disk-d",
    "title": "Disk D: above 97% on FS01",
    "severity": "critical",
    "device": "FS01",
    "site": "hq",
    "starts_at": "2026-11-25T09:00:00Z",
    "source_system": "e2e-rmm",
}


def test_an_alert_posted_to_ingest_reaches_the_audit_trail_with_its_trace_id(platform: Platform) -> None:
    tenant, key = platform.new_tenant()
    trace_id = secrets.token_hex(16)
    r = httpx.post(
        f"{platform.urls['ingest']}/v1/alerts",
        json=ALERT,
        headers={"X-API-Key": key, "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
    )
    assert r.status_code == 202, r.text
    (event_id,) = r.json()["event_ids"]

    def audited() -> set[str]:
        rows = op_get(platform, "audit", "/v1/audit/events", tenant, trace_id=trace_id)
        return {row["action"] for row in rows}

    # ingest audits the acceptance; triage audits the signal the alert opened: one trace.
    # Taking an event in is counted, not audited (the packet service has nothing to decide yet).
    assert wait_for(lambda: {"ingest.canonical.accepted", "triage.signal.opened"} <= audited())
    assert wait_for(
        lambda: op_get(platform, "packet", "/v1/counts", tenant)["by_topic"].get("signals.clustered.v1")
    )
    rows = op_get(platform, "audit", "/v1/audit/events", tenant)
    assert {(row["actor"].split(":")[0], row["subject_kind"]) for row in rows} == {
        ("key", "request"),
        ("service", "signal"),
    }
    opened = next(row for row in rows if row["actor"] == "service:triage")
    (signal,) = signals(platform, tenant)
    assert opened["subject_id"] == signal["signal_id"]
    # The documented revision, not the clusterer's working state.
    assert signal["member_alert_ids"] == [event_id] and signal["devices"] == ["FS01"]
    assert signal["alerts"][0]["title"] == ALERT["title"] and signal["status"] == "open"
    assert signal["first_seen"].startswith("2026-11-25T09:00:00") and "members" not in signal
    assert all(row["trace_id"] == trace_id for row in rows)
    verify = op_get(platform, "audit", "/v1/audit/verify", tenant)
    assert verify["ok"] and verify["entries"] == 2


def test_a_retried_post_gets_the_same_event_id_and_is_taken_in_once(platform: Platform) -> None:
    tenant, key = platform.new_tenant()
    first = httpx.post(f"{platform.urls['ingest']}/v1/alerts", json=ALERT, headers={"X-API-Key": key})
    retry = httpx.post(f"{platform.urls['ingest']}/v1/alerts", json=ALERT, headers={"X-API-Key": key})
    assert first.status_code == retry.status_code == 202
    assert first.json() == retry.json()
    ticket = {
        "kind": "created",
        "event_ref": "t-1",
        "ticket": {"ticket_id": "1001", "title": "S: drive full"},
    }
    assert (
        httpx.post(
            f"{platform.urls['ingest']}/v1/tickets/events", json=ticket, headers={"X-API-Key": key}
        ).status_code
        == 202
    )

    def counts() -> tuple[int, list[int]]:
        tickets = op_get(platform, "triage", "/v1/counts", tenant)["by_topic"].get("tickets.events.v1", 0)
        return tickets, [s["count"] for s in signals(platform, tenant)]

    assert wait_for(lambda: counts() == (1, [1]))
    # Audited: the alert and the ticket accepted (ingest), the signal opened and the ticket
    # classified (triage).
    assert wait_for(lambda: op_get(platform, "audit", "/v1/audit/counts", tenant)["events"] == 4)
    # Sentinels after the duplicates (the same tenant, so the same partitions, in order): once
    # they are handled, the retried post was too.
    sentinel = {**ALERT, "fingerprint": "sentinel", "device": "SENTINEL", "title": "sentinel"}
    assert (
        httpx.post(
            f"{platform.urls['ingest']}/v1/alerts", json=sentinel, headers={"X-API-Key": key}
        ).status_code
        == 202
    )
    later = {"kind": "created", "event_ref": "t-2", "ticket": {"ticket_id": "1002", "title": "sentinel"}}
    assert (
        httpx.post(
            f"{platform.urls['ingest']}/v1/tickets/events", json=later, headers={"X-API-Key": key}
        ).status_code
        == 202
    )
    assert wait_for(lambda: counts() == (2, [1, 1]))
    assert wait_for(lambda: op_get(platform, "audit", "/v1/audit/counts", tenant)["events"] == 8)
    first_signal = [s for s in signals(platform, tenant) if "SENTINEL" not in s["devices"]]
    assert [s["count"] for s in first_signal] == [1], "one alert in one signal, one ticket event"
    triaged = op_get(platform, "triage", "/v1/tickets/1001/triage", tenant)["result"]
    assert triaged["tenant_id"] == tenant and triaged["payload"]["ticket_id"] == "1001"
    assert triaged["payload"]["category"]["method"].endswith("global_model"), "a new tenant has no model"
    assert triaged["payload"]["intent"]["label"] == "disk_space"
    other, _ = platform.new_tenant()
    r = httpx.get(
        f"{platform.urls['triage']}/v1/tickets/1001/triage",
        params={"tenant_id": other},
        headers=AS_OPERATOR,
    )
    assert r.status_code == 404, "a ticket id is looked up within its tenant only"


def test_read_apis_need_the_operator_token(platform: Platform) -> None:
    tenant, key = platform.new_tenant()
    for service, path in (
        ("audit", "/v1/audit/events"),
        ("audit", "/v1/audit/verify"),
        ("triage", "/v1/counts"),
        ("triage", "/v1/tickets/drift"),
        ("triage", "/v1/rollout"),
    ):
        url = f"{platform.urls[service]}{path}"
        assert httpx.get(url, params={"tenant_id": tenant}).status_code == 401
        # A tenant's own sender key is not a way into the cross-tenant read APIs either.
        assert (
            httpx.get(
                url, params={"tenant_id": tenant}, headers={"Authorization": f"Bearer {key}"}
            ).status_code
            == 401
        )


def test_engineers_read_their_own_tenants_signals_and_packets_with_their_key(platform: Platform) -> None:
    tenant, sender = platform.new_tenant()
    other, _ = platform.new_tenant()
    engineer = platform.engineer_key(tenant)
    assert (
        httpx.post(
            f"{platform.urls['ingest']}/v1/alerts", json=ALERT, headers={"X-API-Key": sender}
        ).status_code
        == 202
    )
    assert wait_for(lambda: len(signals(platform, tenant)) == 1)
    reads = (("triage", "/v1/signals"), ("packet", "/v1/packets"))
    for service, path in reads:
        url = f"{platform.urls[service]}{path}"
        own = httpx.get(url, params={"tenant_id": tenant}, headers={"X-API-Key": engineer})
        assert own.status_code == 200, own.text
        bearer = httpx.get(url, params={"tenant_id": tenant}, headers={"Authorization": f"Bearer {engineer}"})
        assert bearer.status_code == 200
        # Never another tenant's, whatever parameter says so.
        theirs = httpx.get(url, params={"tenant_id": other}, headers={"X-API-Key": engineer})
        assert theirs.status_code == 403 and other in theirs.json()["detail"]
        # A sender key posts events; it does not read.
        sent = httpx.get(url, params={"tenant_id": tenant}, headers={"X-API-Key": sender})
        assert sent.status_code == 403 and "engineer" in sent.json()["detail"]
        # No credential: the answer says what is expected and where a local user finds it.
        none = httpx.get(url, params={"tenant_id": tenant})
        assert none.status_code == 401
        assert "admin-token" in none.json()["detail"] and "--role engineer" in none.json()["detail"]
    (sig,) = httpx.get(
        f"{platform.urls['triage']}/v1/signals", params={"tenant_id": tenant}, headers={"X-API-Key": engineer}
    ).json()["signals"]
    one = httpx.get(
        f"{platform.urls['triage']}/v1/signals/{sig['signal_id']}",
        params={"tenant_id": tenant},
        headers={"X-API-Key": engineer},
    )
    assert one.status_code == 200 and one.json()["signal_id"] == sig["signal_id"]


def test_a_key_can_never_publish_as_another_tenant(platform: Platform) -> None:
    tenant_a, key_a = platform.new_tenant()
    tenant_b, _ = platform.new_tenant()
    ingest = platform.urls["ingest"]
    assert (
        httpx.post(
            f"{ingest}/v1/alerts", json={**ALERT, "tenant_id": tenant_b}, headers={"X-API-Key": key_a}
        ).status_code
        == 403
    )
    assert httpx.post(f"{ingest}/v1/alerts", json=ALERT).status_code == 401
    forged = key_a[:-4] + ("AAAA" if not key_a.endswith("AAAA") else "BBBB")
    assert httpx.post(f"{ingest}/v1/alerts", json=ALERT, headers={"X-API-Key": forged}).status_code == 401
    bad = httpx.post(
        f"{ingest}/v1/alerts", json={**ALERT, "severity": "apocalyptic"}, headers={"X-API-Key": key_a}
    )
    assert bad.status_code == 422 and "severity" in bad.text
    # A valid post of A still lands as A, and nothing ever lands as B.
    assert httpx.post(f"{ingest}/v1/alerts", json=ALERT, headers={"X-API-Key": key_a}).status_code == 202
    assert wait_for(lambda: len(signals(platform, tenant_a)) == 1)
    assert signals(platform, tenant_b) == []
    assert op_get(platform, "audit", "/v1/audit/counts", tenant_b)["events"] == 0


def test_an_escalated_ticket_gets_a_packet_posted_into_the_tenants_psa(
    platform: Platform, tmp_path: Path
) -> None:
    import hashlib
    import hmac
    import json
    import os
    import sys

    from tests.fakes.psa_sink import psa_sink

    tenant, key = platform.new_tenant()
    other, _ = platform.new_tenant()
    packet = platform.urls["packet"]
    books = tmp_path / "runbooks"
    (books / "storage").mkdir(parents=True)
    (books / "storage" / "disk-full.md").write_text(
        "# File server disk full\n\n## Meaning\n"
        "A file server volume is nearly full; saving to its shares fails.\n\n"
        "## Diagnosis\n- Check which folders grew this week.\n"
        "- Confirm the last backup of the volume completed.\n"
    )
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "kb",
            "add",
            str(books),
            "--tenant",
            tenant,
            "--packet-url",
            packet,
            "--url-base",
            "https://kb.example.test",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "MSP_ADMIN_TOKEN": OPERATOR},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == {"scope": tenant, "runbooks": 1, "changed": 1}
    with psa_sink() as (sink, url):
        r = httpx.put(
            f"{packet}/v1/psa",
            json={
                "tenant_id": tenant,
                "kind": "webhook",
                "base_url": f"{url}/hook",
                "credentials": {"secret": "s3cret"},
            },
            headers=AS_OPERATOR,
        )
        assert r.status_code == 200, r.text
        ingest, auth = platform.urls["ingest"], {"X-API-Key": key}
        snap = {"ticket_id": "5001", "title": "S: drive is full", "devices": ["FS01"], "site": "hq"}
        for body in (
            {"kind": "created", "event_ref": "5001-c", "ticket": snap},
            {
                "kind": "escalated",
                "event_ref": "5001-e",
                "ticket": snap,
                "escalation": {"from_tier": "L1", "to_tier": "L2"},
            },
        ):
            assert httpx.post(f"{ingest}/v1/tickets/events", json=body, headers=auth).status_code == 202
        assert wait_for(lambda: len(sink.notes) == 1, timeout_s=30)
        note = sink.notes[0]
        raw = json.dumps(note["body"], separators=(",", ":"), sort_keys=True).encode()
        assert (
            note["headers"]["x-msp-signature"]
            == "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
        )
        assert note["body"]["internal"] is True and note["body"]["ticket_id"] == "5001"
        assert "https://kb.example.test/storage/disk-full.md#" in note["body"]["markdown"]
    found = op_get(platform, "packet", "/v1/packets", tenant, ticket_id="5001")
    pid = found["packet_id"]
    page = httpx.get(f"{packet}/v1/packets/{pid}/page", params={"tenant_id": tenant}, headers=AS_OPERATOR)
    assert page.status_code == 200 and "S: drive is full" in page.text and "confidence" in page.text
    fb = httpx.post(
        f"{packet}/v1/packets/{pid}/feedback",
        json={
            "tenant_id": tenant,
            "version": 1,
            "claim": "runbook/0",
            "verdict": "useful",
            "review_seconds": 95,
        },
        headers=AS_OPERATOR,
    )
    assert fb.status_code == 201, fb.text
    assert op_get(platform, "packet", f"/v1/packets/{pid}", tenant)["feedback"][0]["verdict"] == "useful"
    # The packet does not exist for another tenant, whoever asks.
    assert (
        httpx.get(f"{packet}/v1/packets/{pid}", params={"tenant_id": other}, headers=AS_OPERATOR).status_code
        == 404
    )


def _samples(url: str, name: str) -> list[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics").text
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def _sample(url: str, name: str, labels: dict[str, str]) -> float | None:
    return next((s.value for s in _samples(url, name) if s.labels == labels), None)


def test_services_expose_metrics_and_stop_cleanly_on_sigterm(
    bootstrap: str, pg_url: str, tmp_path: Path
) -> None:
    # Its own processes: stopping them must not depend on (or disturb) the tests around it.
    started = start_platform(SERVICES, platform_env(bootstrap, pg_url, tmp_path, OPERATOR, "term"), tmp_path)
    try:
        urls = {n: u for n, (_, u, _) in started.items()}
        tenant, key = Platform(urls, {}, {}, pg_url).new_tenant()
        assert (
            httpx.post(f"{urls['ingest']}/v1/alerts", json=ALERT, headers={"X-API-Key": key}).status_code
            == 202
        )
        series = 'msp_events_consumed_total{outcome="ok",service="triage",topic="alerts.raw.v1"}'
        assert wait_for(lambda: series in httpx.get(f"{urls['triage']}/metrics").text)
        # HTTP by route template, and each consumer group's lag per partition.
        posted = {"service": "ingest", "route": "/v1/alerts", "method": "POST", "code": "202"}
        assert _sample(urls["ingest"], "msp_http_requests_total", posted) == 1
        # Lag is reported about once a second, so it may follow the first consumed event.
        assert wait_for(
            lambda: (
                "alerts.raw.v1" in {s.labels["topic"] for s in _samples(urls["triage"], "msp_consumer_lag")}
            )
        )
        lags = _samples(urls["triage"], "msp_consumer_lag")
        assert all(s.value >= 0 for s in lags)
        for proc, _, _ in started.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _, log in started.values():
            assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
            assert '"msg": "service stopped"' in log.read_text()
    finally:
        stop_platform(started)


def test_the_headline_path_alerts_and_a_ticket_become_a_psa_note_citing_their_signal(
    platform: Platform, collector: Collector
) -> None:
    """Raw alerts and a ticket about the same device, through ingest; the ticket escalates; the
    note that lands in the tenant's PSA cites the signal those alerts formed. The ticket's
    trace (the caller's, recorded) leaves each service for the OTLP collector: ingest's request,
    triage's classification and the packet service's consumer."""
    import json
    from datetime import UTC, datetime, timedelta

    from tests.fakes.psa_sink import psa_sink

    tenant, key = platform.new_tenant()
    ingest, auth = platform.urls["ingest"], {"X-API-Key": key}
    alerts = [
        {
            **ALERT,
            "fingerprint": "fs07-disk",
            "title": f"Disk D: above {p}% on FS07",
            "device": "FS07",
            # Within the packet's look-back window (24 hours before the escalation).
            "starts_at": (datetime.now(UTC) - timedelta(minutes=30 - i)).isoformat(),
        }
        for i, p in enumerate((91, 95, 97))
    ]
    r = httpx.post(f"{ingest}/v1/alerts/batch", json={"alerts": alerts}, headers=auth)
    assert r.status_code == 202, r.text
    alert_ids = set(r.json()["event_ids"])
    assert wait_for(lambda: sum(s["count"] for s in signals(platform, tenant)) == 3)
    (sig,) = signals(platform, tenant)
    with psa_sink() as (sink, url):
        put = httpx.put(
            f"{platform.urls['packet']}/v1/psa",
            json={"tenant_id": tenant, "kind": "webhook", "base_url": f"{url}/hook"},
            headers=AS_OPERATOR,
        )
        assert put.status_code == 200, put.text
        snap = {"ticket_id": "7001", "title": "S: drive full again", "devices": ["FS07"], "site": "hq"}
        trace_id = secrets.token_hex(16)
        for body in (
            {"kind": "created", "event_ref": "7001-c", "ticket": snap},
            {
                "kind": "escalated",
                "event_ref": "7001-e",
                "ticket": snap,
                "escalation": {"from_tier": "L1", "to_tier": "L2"},
            },
        ):
            caller = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
            r = httpx.post(f"{ingest}/v1/tickets/events", json=body, headers=auth | caller)
            assert r.status_code == 202, r.text
        assert wait_for(lambda: any(n["body"].get("ticket_id") == "7001" for n in sink.notes), timeout_s=60)
        note = next(n for n in sink.notes if n["body"].get("ticket_id") == "7001")
    packet = note["body"]["packet"]
    cited = [src for claim in packet["related_alerts"] for src in claim["sources"]]
    assert {"kind": "signal", "id": sig["signal_id"]}.items() <= next(
        s for s in cited if s["kind"] == "signal"
    ).items()
    quoted = {s["id"]: s["excerpt"] for s in cited if s["kind"] == "alert"}
    assert set(quoted) <= alert_ids and quoted, "the alerts themselves, quoted"
    assert all(e.startswith("Disk D: above 9") for e in quoted.values())
    assert sig["signal_id"] in note["body"]["markdown"] or sig["title"] in json.dumps(note["body"])

    def exported() -> set[str]:
        return {s.service for s in collector.in_trace(trace_id)}

    assert wait_for(lambda: {"ingest", "triage", "packet"} <= exported(), timeout_s=20), exported()
    spans = collector.in_trace(trace_id)
    # ingest's server span is the caller's child; triage classified the ticket in the trace
    # itself (a span of its own, not the batch's); the packet service's consumer span is in it
    # or links to it.
    assert any(s.service == "ingest" and s.trace_id == trace_id and s.name.startswith("POST") for s in spans)
    assert any(s.service == "triage" and s.trace_id == trace_id for s in spans)
    assert len({s.span_id for s in spans}) == len(spans), "each span exported once"
