import pytest
from pydantic import ValidationError

from services.ingest.adapters.canonical import CanonicalAlert, CanonicalTicketEvent, alert_event, ticket_event

ALERT = {
    "fingerprint": "fs01-disk",
    "title": "Disk full on FS01",
    "device": "FS01",
    "starts_at": "2026-11-25T09:00:00Z",
    "source_system": "datto",
}
TICKET = {"kind": "created", "ticket": {"ticket_id": "1001", "title": "Cannot save files"}}


def test_a_retried_alert_post_gets_the_same_event_id() -> None:
    a = alert_event("acme", CanonicalAlert.model_validate(ALERT))
    b = alert_event("acme", CanonicalAlert.model_validate(dict(ALERT)))
    assert a.event_id == b.event_id
    assert a.payload.fingerprint == "fs01-disk"  # the source's key is kept, never re-hashed


def test_firing_and_resolution_are_different_events() -> None:
    firing = alert_event("acme", CanonicalAlert.model_validate(ALERT))
    resolved = alert_event(
        "acme",
        CanonicalAlert.model_validate({**ALERT, "status": "resolved", "ends_at": "2026-11-25T09:20:00Z"}),
    )
    assert firing.event_id != resolved.event_id
    assert resolved.occurred_at.minute == 20


def test_the_same_alert_for_two_tenants_is_two_events() -> None:
    a = CanonicalAlert.model_validate(ALERT)
    assert alert_event("acme", a).event_id != alert_event("globex", a).event_id


def test_ticket_events_without_a_source_id_are_identified_by_content() -> None:
    first = ticket_event("acme", CanonicalTicketEvent.model_validate(TICKET))
    retry = ticket_event("acme", CanonicalTicketEvent.model_validate(TICKET))
    changed = ticket_event(
        "acme",
        CanonicalTicketEvent.model_validate(
            {**TICKET, "kind": "updated", "ticket": {**TICKET["ticket"], "priority": "high"}}
        ),
    )
    assert first.event_id == retry.event_id != changed.event_id


def test_unknown_fields_are_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="colour"):
        CanonicalAlert.model_validate({**ALERT, "colour": "red"})
