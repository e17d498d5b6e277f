import uuid

import pytest
from pydantic import ValidationError

from libs.common import events as ev
from libs.common.topics import TOPICS
from tests.samples import T0, alert, every_event, src


@pytest.mark.parametrize("event", every_event(), ids=lambda e: e.type)
def test_every_event_model_round_trips_through_json(event: ev.Envelope) -> None:
    wire = event.model_dump_json()
    back = type(event).model_validate_json(wire)
    assert back == event
    assert back.schema_version == 1
    assert TOPICS[event.topic].model is type(event)


def test_every_event_model_has_a_declared_topic() -> None:
    assert {m.topic for m in ev.EVENT_MODELS} | {ev.DeadLetter.topic} == set(TOPICS)
    assert all(t.endswith(".v1") for t in TOPICS)


def test_events_are_frozen() -> None:
    a = alert()
    with pytest.raises(ValidationError):
        a.tenant_id = "other"  # type: ignore[misc]


def test_claim_without_source_is_refused() -> None:
    with pytest.raises(ValidationError, match="sources"):
        ev.Claim(text="the disk is full", confidence=0.9, sources=[])


def test_confidence_outside_unit_interval_is_refused() -> None:
    with pytest.raises(ValidationError, match="confidence"):
        ev.Claim(text="x", confidence=1.2, sources=[src()])


@pytest.mark.parametrize("bad", ["", "Acme", "a b", "x" * 64, "../etc", "ac\nme"])
def test_unsafe_tenant_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="tenant_id"):
        alert(tenant=bad)


def test_unknown_fields_and_naive_timestamps_are_refused() -> None:
    wire = alert().model_dump(mode="json")
    with pytest.raises(ValidationError, match="extra"):
        ev.AlertReceived.model_validate({**wire, "surprise": 1})
    with pytest.raises(ValidationError, match="timezone"):
        ev.AlertReceived.model_validate({**wire, "occurred_at": "2026-11-25T09:30:00"})


def test_a_newer_schema_version_is_not_silently_read_as_v1() -> None:
    wire = alert().model_dump(mode="json")
    with pytest.raises(ValidationError, match="schema_version"):
        ev.AlertReceived.model_validate({**wire, "schema_version": 2})


def test_derived_event_ids_are_stable_and_tenant_scoped() -> None:
    a = ev.derive_event_id("acme", "alert", "fp-1")
    assert a == ev.derive_event_id("acme", "alert", "fp-1")
    assert a != ev.derive_event_id("globex", "alert", "fp-1")
    assert isinstance(a, uuid.UUID)
    assert T0.tzinfo is not None
