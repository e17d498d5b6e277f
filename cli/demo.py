"""`msp up --demo`: a small, plausible morning at a new demo client, replayed through ingest,
and what the platform made of it, reported for this run only.

Each run registers a fresh tenant (`demo-<time>`) through ingest's admin API, so its counts
are this run's and never add up with an earlier run's in the same folder. The tenant, its
sender key and an engineer key are kept in `var/demo.json`; `msp status` reports that tenant.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cli.api import Api
from cli.local import operator_token, url_of

DEMO_STATE = "demo.json"


def last_demo(var: Path) -> dict[str, str] | None:
    """The tenant and keys of the latest demo run in this folder, if any."""
    path = var / DEMO_STATE
    return json.loads(path.read_text()) if path.exists() else None


def new_demo_tenant(var: Path, now: datetime) -> dict[str, str]:
    admin = Api(url_of("ingest"), operator_token(var))
    tenant = "demo-" + now.strftime("%Y%m%d-%H%M%S")
    admin.call(
        "POST", "/v1/admin/tenants", body={"tenant_id": tenant, "name": f"Demo client ({now:%Y-%m-%d %H:%M})"}
    )
    sender = admin.call(
        "POST", f"/v1/admin/tenants/{tenant}/keys", body={"role": "integration", "label": "demo rmm/psa"}
    )
    engineer = admin.call(
        "POST", f"/v1/admin/tenants/{tenant}/keys", body={"role": "engineer", "label": "demo engineer"}
    )
    state = {"tenant_id": tenant, "sender_key": sender["key"], "engineer_key": engineer["key"]}
    path = var / DEMO_STATE
    path.write_text(json.dumps(state, indent=2))
    path.chmod(0o600)
    return state


def demo_events(now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A small, plausible morning at a client: a file server filling up, a VPN gateway flapping,
    and the tickets users raise about it."""
    t = lambda minutes: (now - timedelta(minutes=minutes)).isoformat()  # noqa: E731
    run = now.strftime("%Y%m%dT%H%M%S")  # each demo run is a new morning, not a retry of the last
    alerts = [
        {
            "fingerprint": "fs01-disk-d",
            "severity": "warning",
            "title": "Disk D: above 90% on FS01",
            "device": "FS01",
            "site": "hq",
            "starts_at": t(40),
        },
        {
            "fingerprint": "fs01-disk-d",
            "severity": "critical",
            "title": "Disk D: above 97% on FS01",
            "device": "FS01",
            "site": "hq",
            "starts_at": t(20),
        },
        {
            "fingerprint": "fs01-backup",
            "severity": "high",
            "title": "Backup job 'Nightly FS01' failed: target full",
            "device": "FS01",
            "site": "hq",
            "starts_at": t(35),
        },
        {
            "fingerprint": "fs01-share-latency",
            "severity": "warning",
            "title": "SMB share latency over 800 ms on FS01",
            "device": "FS01",
            "site": "hq",
            "starts_at": t(18),
        },
        {
            "fingerprint": "vpn-gw1-tunnel",
            "severity": "high",
            "title": "IPsec tunnel to branch down on VPN-GW1",
            "device": "VPN-GW1",
            "site": "branch",
            "starts_at": t(12),
        },
        {
            "fingerprint": "vpn-gw1-tunnel",
            "status": "resolved",
            "severity": "high",
            "title": "IPsec tunnel to branch down on VPN-GW1",
            "device": "VPN-GW1",
            "site": "branch",
            "starts_at": t(12),
            "ends_at": t(9),
        },
        {
            "fingerprint": "vpn-gw1-tunnel",
            "severity": "high",
            "title": "IPsec tunnel to branch down on VPN-GW1",
            "device": "VPN-GW1",
            "site": "branch",
            "starts_at": t(6),
        },
        {
            "fingerprint": "ws-114-av",
            "severity": "low",
            "title": "Antivirus definitions out of date on WS-114",
            "device": "WS-114",
            "site": "hq",
            "starts_at": t(50),
        },
    ]
    tickets = [
        {
            "event_ref": f"demo-{run}-1001-created",
            "kind": "created",
            "occurred_at": t(15),
            "ticket": {
                "ticket_id": f"1001-{run}",
                "title": "Cannot save files to the S: drive",
                "description": "Since this morning saving to S: says the disk is full.",
                "requester": "maria.lopez@client.example",
                "site": "hq",
                "devices": ["FS01"],
                "priority": "high",
                "status": "New",
                "tier": "L1",
            },
        },
        {
            "event_ref": f"demo-{run}-1001-note",
            "kind": "note_added",
            "occurred_at": t(10),
            "ticket": {
                "ticket_id": f"1001-{run}",
                "title": "Cannot save files to the S: drive",
                "tier": "L1",
            },
            "note": {
                "note_id": "n-1",
                "text": "Cleared temp folders on FS01, freed 2 GB; still 96% full.",
                "internal": True,
                "author": "l1.sam",
            },
        },
        {
            "event_ref": f"demo-{run}-1001-escalated",
            "kind": "escalated",
            "occurred_at": t(5),
            "ticket": {
                "ticket_id": f"1001-{run}",
                "title": "Cannot save files to the S: drive",
                "tier": "L2",
            },
            "escalation": {"from_tier": "L1", "to_tier": "L2"},
        },
    ]
    return alerts, tickets


DEMO_RUNBOOK = """# File server disk full

## Meaning
A data volume of a file server is nearly full: users cannot save to the shares on it and the
nightly backup to it fails.

## Diagnosis
- Check which folders grew in the last week with a disk usage report.
- Check whether shadow copies take more than 10% of the volume.
- Confirm the last backup of the volume completed.

## Mitigation
Move old project folders to the archive share; extend the volume if the datastore allows.
"""


def run_demo(var: Path) -> dict[str, Any]:
    from libs.common.access import link_secret, sign_url

    now = datetime.now(UTC)
    demo = new_demo_tenant(var, now)
    tenant = demo["tenant_id"]
    token = operator_token(var)
    alerts, tickets = demo_events(now)
    ingest = Api(url_of("ingest"), demo["sender_key"], timeout_s=10.0)
    ingest.headers = {"X-API-Key": demo["sender_key"]}
    triage, packet, audit = (Api(url_of(n), token, timeout_s=10.0) for n in ("triage", "packet", "audit"))
    # The demo client's own runbook (embedded when added).
    packet.timeout_s = 120.0
    packet.call(
        "PUT",
        "/v1/kb/runbooks",
        body={"tenant_id": tenant, "path": "file-server-disk-full.md", "markdown": DEMO_RUNBOOK},
    )
    packet.timeout_s = 10.0

    def signals() -> list[dict[str, Any]]:
        return list(triage.call("GET", "/v1/signals", params={"tenant_id": tenant})["signals"])

    firing = sum(1 for a in alerts if a.get("status", "firing") == "firing")  # resolutions join no signal
    accepted = 0
    for body in alerts:
        accepted += len(
            ingest.call("POST", "/v1/alerts", body={"source_system": "demo-rmm", **body}, ok=(202,))[
                "event_ids"
            ]
        )
    # Users call a little after the monitoring fired, when triage knows the signals: wait until
    # every alert is in a signal.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(s["count"] for s in signals()) < firing:
        time.sleep(0.5)
    for body in tickets:
        accepted += len(
            ingest.call("POST", "/v1/tickets/events", body={"source_system": "demo-psa", **body}, ok=(202,))[
                "event_ids"
            ]
        )
    ticket_ids = sorted({t["ticket"]["ticket_id"] for t in tickets})

    def triaged() -> list[dict[str, Any]]:
        out = []
        for tid in ticket_ids:
            found = triage.call(
                "GET", f"/v1/tickets/{tid}/triage", params={"tenant_id": tenant}, ok=(200, 404)
            )
            if found and "result" in found:
                out.append(found["result"]["payload"])
        return out

    def packets() -> list[dict[str, Any]]:
        out = []
        for tid in ticket_ids:
            found = packet.call(
                "GET", "/v1/packets", params={"tenant_id": tenant, "ticket_id": tid}, ok=(200, 404)
            )
            if found and "packet" in found:
                out.append(found)
        return out

    # Each alert in a signal, each ticket classified, the escalated ticket's packet built
    # with what the ticket's notes said.
    deadline = time.monotonic() + 60
    grouped: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    built: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        grouped, results, built = signals(), triaged(), packets()
        if sum(s["count"] for s in grouped) >= firing and len(results) == len(ticket_ids) and built:
            break
        time.sleep(0.5)
    audited = int(audit.call("GET", "/v1/audit/counts", params={"tenant_id": tenant})["events"])
    secret = link_secret(token)
    # This month's customer report, drafted for the demo client (never sent by the platform).
    packet.timeout_s = 60.0
    month = (now - timedelta(minutes=15)).strftime("%Y-%m")  # when the demo's ticket was opened
    drafted = packet.call("POST", "/v1/reports", body={"tenant_id": tenant, "month": month})
    report_base = f"{url_of('packet')}/v1/reports/{drafted['report_id']}"
    return {
        "tenant": tenant,
        "this_run": {
            "events_posted": len(alerts) + len(tickets),
            "events_accepted": accepted,
            "alerts": len(alerts),
            "firing_alerts": firing,
            "alerts_in_signals": sum(s["count"] for s in grouped),
            "signals": len(grouped),
            "tickets": len(ticket_ids),
            "packets": len(built),
            "audit_events": audited,
        },
        "signals": [
            {
                "title": s["title"],
                "alerts": s["count"],
                "devices": s["devices"],
                "severity": s["severity"],
                "status": s["status"],
            }
            for s in grouped
        ],
        "tickets": [
            {
                "ticket_id": r["ticket_id"],
                "category": r["category"]["label"],
                "category_method": r["category"]["method"],
                "intent": r["intent"]["label"],
                "priority": r["priority"]["label"],
                "priority_because": (r["priority"]["rationale"] or {}).get("text"),
                "open_signals": [s["title"] for s in r["context"]["open_signals"]],
                "rollout_mode": r["rollout_mode"],
                "needs_human": r["needs_human"],
            }
            for r in results
        ],
        "packets": [
            {
                "packet_id": b["packet_id"],
                "version": b["version"],
                # Opens in a browser for 24 hours without any other credential.
                "page": sign_url(
                    f"{url_of('packet')}/v1/packets/{b['packet_id']}/page?tenant_id={tenant}", secret
                ),
                "summary": [c["text"] for c in b["packet"]["summary"]],
                # Each with how sure the packet is that it bears on the ticket.
                "related_alerts": [
                    f"{c['confidence']:.2f} {c['text']}" for c in b["packet"]["related_alerts"]
                ],
                "runbook": [
                    f"{c['confidence']:.2f} {c['text']} ({c['sources'][0]['id']})"
                    for c in b["packet"]["runbook"]
                ],
                "still_unknown": [u["text"] for u in b["packet"]["still_unknown"]],
            }
            for b in built
        ],
        "report": {
            "report_id": drafted["report_id"],
            "month": month,
            "status": drafted["status"],
            "figures": {f["id"]: f["value"] for f in drafted["figures"] if "." not in f["id"]},
            # Both open in a browser for 24 hours without any other credential.
            "html": sign_url(f"{report_base}/html?tenant_id={tenant}", secret),
            "pdf": sign_url(f"{report_base}/pdf?tenant_id={tenant}", secret),
        },
        "keys": f"the demo tenant's sender and engineer keys are in {var / DEMO_STATE}",
    }
