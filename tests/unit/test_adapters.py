"""Source adapters map each tool's real payload shape into v1 events."""

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from services.ingest.adapters import alertmanager, autotask, connectwise, datto, halopsa, ninjaone, pagerduty
from services.ingest.adapters.lifecycle import classify

FIXTURES = Path(__file__).parents[1] / "fixtures" / "sources"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_alertmanager_group_becomes_one_event_per_alert_keeping_its_fingerprint() -> None:
    doc = alertmanager.AlertmanagerWebhook.model_validate(load("alertmanager_firing.json"))
    events = alertmanager.to_events(doc, "acme")
    assert [e.payload.fingerprint for e in events] == ["5f8a3a1c9e2b7d40", "91c04e2b33aa0f17"]
    first = events[0].payload
    assert first.status == "firing" and first.ends_at is None  # "0001-01-01" means no end
    assert first.title == "Filesystem has less than 5% space left."
    assert first.device == "fs01"  # the machine, from instance="fs01:9100"; not the disk /dev/sdb1
    assert first.labels["device"] == "/dev/sdb1"
    assert first.site == "hq" and first.severity == "warning"
    assert first.group_key == doc.groupKey
    assert first.labels["annotation.runbook_url"].startswith("https://runbooks.prometheus-operator.dev/")


def test_alertmanager_resolution_is_a_different_event_from_the_firing() -> None:
    raw = load("alertmanager_firing.json")
    firing = alertmanager.to_events(alertmanager.AlertmanagerWebhook.model_validate(raw), "acme")[0]
    raw["status"] = raw["alerts"][0]["status"] = "resolved"
    raw["alerts"][0]["endsAt"] = "2026-11-25T09:10:00Z"
    resolved = alertmanager.to_events(alertmanager.AlertmanagerWebhook.model_validate(raw), "acme")[0]
    assert (
        resolved.payload.status == "resolved" and resolved.payload.fingerprint == firing.payload.fingerprint
    )
    assert resolved.event_id != firing.event_id
    assert resolved.occurred_at.isoformat().startswith("2026-11-25T09:10")


def test_pagerduty_trigger_keeps_dedup_key_and_resolve_needs_one() -> None:
    doc = pagerduty.EVENT.validate_python(load("pagerduty_trigger.json"))
    (event,) = pagerduty.to_events(doc, "acme")
    assert event.payload.fingerprint == "fs01-disk-srv-share"
    assert event.payload.severity == "critical" and event.payload.device == "fs01.hq.client.example"
    assert event.payload.labels["detail.check.name"] == "check_disk"
    assert event.payload.labels["class"] == "disk"
    with pytest.raises(ValidationError, match=r"resolve.dedup_key\s+Field required"):
        pagerduty.EVENT.validate_python({"routing_key": "k", "event_action": "resolve"})
    with pytest.raises(ValidationError, match=r"trigger.payload\s+Field required"):
        pagerduty.EVENT.validate_python({"routing_key": "k", "event_action": "trigger"})
    (resolved,) = pagerduty.to_events(
        pagerduty.EVENT.validate_python(
            {"routing_key": "k", "event_action": "resolve", "dedup_key": "fs01-disk-srv-share"}
        ),
        "acme",
    )
    assert resolved.payload.status == "resolved" and resolved.payload.fingerprint == "fs01-disk-srv-share"


def test_datto_alert_maps_priority_site_and_millisecond_timestamps() -> None:
    doc = datto.DattoAlert.model_validate(load("datto_alert.json"))
    (event,) = datto.to_events(doc, "acme")
    assert event.payload.fingerprint == "8c1f6a02-5b7e-4f57-9c63-3f9f1d2e0b44"
    assert event.payload.severity == "critical" and event.payload.device == "FS01"
    assert event.payload.site == "Client HQ" and event.occurred_at.year == 2026
    assert event.payload.labels["context.diskDesignation"] == "D:"
    assert datto.tenant_refs(doc) == {"a1b2c3d4-site-hq"}


def test_ninjaone_series_uid_is_the_fingerprint_and_reset_resolves() -> None:
    raw = load("ninjaone_triggered.json")
    (fired,) = ninjaone.to_events(ninjaone.NinjaActivity.model_validate(raw), "acme")
    assert fired.payload.fingerprint == raw["seriesUid"] and fired.payload.status == "firing"
    assert fired.payload.severity == "high" and fired.payload.device == "FS01"
    (reset,) = ninjaone.to_events(
        ninjaone.NinjaActivity.model_validate(
            {**raw, "id": 982400, "statusCode": "RESET", "status": "Reset"}
        ),
        "acme",
    )
    assert reset.payload.status == "resolved" and reset.payload.fingerprint == fired.payload.fingerprint
    assert ninjaone.tenant_refs(ninjaone.NinjaActivity.model_validate(raw)) == {"7"}


def test_connectwise_entity_string_is_parsed_into_a_created_ticket() -> None:
    doc = connectwise.ConnectWiseCallback.model_validate(load("connectwise_ticket_added.json"))
    (obs,) = connectwise.to_observations(doc)
    assert obs.kind == "created" and obs.ticket_id == "20931" and obs.company_ref == "250"
    event, state = classify("acme", obs, None)
    t = event.payload.ticket
    assert (t.title, t.board, t.status, t.requester) == (
        "Cannot save files to S: drive",
        "Service Desk L1",
        "New",
        "maria.lopez@client.example",
    )
    assert state["board"] == "Service Desk L1"


def test_connectwise_board_change_is_an_escalation() -> None:
    raw = load("connectwise_ticket_added.json")
    (created,) = connectwise.to_observations(connectwise.ConnectWiseCallback.model_validate(raw))
    _, state = classify("acme", created, None)
    entity = json.loads(raw["Entity"])
    entity["board"] = {"id": 2, "name": "Service Desk L2"}
    moved = {**raw, "MessageId": "m-2", "Action": "updated", "Entity": json.dumps(entity)}
    (obs,) = connectwise.to_observations(connectwise.ConnectWiseCallback.model_validate(moved))
    event, _ = classify("acme", obs, state)
    assert event.payload.kind == "escalated"
    assert event.payload.escalation is not None
    assert (event.payload.escalation.from_board, event.payload.escalation.to_board) == (
        "Service Desk L1",
        "Service Desk L2",
    )


def test_connectwise_bad_entity_json_is_a_field_error() -> None:
    raw = {**load("connectwise_ticket_added.json"), "Entity": "{not json"}
    with pytest.raises(ValidationError, match="Entity"):
        connectwise.ConnectWiseCallback.model_validate(raw)


def test_autotask_queue_change_on_a_known_ticket_is_an_escalation_and_keeps_known_fields() -> None:
    doc = autotask.AutotaskWebhook.model_validate(load("autotask_ticket_update.json"))
    (obs,) = autotask.to_observations(doc)
    previous = {
        "ticket_id": "29684",
        "title": "Printer offline",
        "board": "queue 29682832",
        "assignee": "resource 29682885",
        "status": "status 1",
    }
    event, state = classify("acme", obs, previous)
    assert event.payload.kind == "escalated"
    assert event.payload.escalation.to_board == "queue 29682833"  # type: ignore[union-attr]
    assert event.payload.ticket.title == "Printer offline"  # Autotask sent only what changed
    assert obs.company_ref == "174"


def test_halopsa_batch_gives_a_ticket_and_an_internal_note() -> None:
    shapes = TypeAdapter(
        halopsa.HaloWebhook
        | halopsa.HaloAction
        | halopsa.HaloTicket
        | list[halopsa.HaloAction | halopsa.HaloTicket]
    )
    doc = halopsa.as_webhook(shapes.validate_python(load("halopsa_batch.json")))
    ticket, note = halopsa.to_observations(doc)
    assert ticket.ticket_id == "5012" and ticket.fields["board"] == "1st Line"
    assert note.kind == "note_added" and note.note is not None and note.note.internal
    assert "Rebooted VPN-GW1" in note.note.text


@pytest.mark.parametrize(
    "before,after,kind",
    [
        ({"status": "New"}, {"status": "In Progress"}, "status_changed"),
        ({"status": "In Progress"}, {"status": "Resolved"}, "resolved"),
        ({"status": "Resolved"}, {"status": "Closed"}, "closed"),
        ({"status": "Closed"}, {"status": "Closed", "priority": "P3"}, "updated"),
        ({"status": "Closed"}, {"status": "Re-opened"}, "reopened"),
        ({"status": "New", "assignee": "sam"}, {"status": "New", "assignee": "lee"}, "escalated"),
        ({"status": "New", "tier": "L1"}, {"status": "New", "tier": "L2"}, "escalated"),
        ({"status": "New"}, {"status": "New", "priority": "P1"}, "updated"),
    ],
)
def test_ticket_lifecycle_reads_the_change(before: dict[str, str], after: dict[str, str], kind: str) -> None:
    from datetime import UTC, datetime

    from services.ingest.adapters.common import TicketObservation

    obs = TicketObservation("psa", "ref-1", datetime.now(UTC), "42", fields=after)
    event, _ = classify("acme", obs, {"ticket_id": "42", "title": "t", **before})
    assert event.payload.kind == kind
