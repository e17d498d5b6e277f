"""Shared pieces of the source adapters."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ConfigDict

from libs.common.events import Severity, TicketEventKind, TicketNote
from libs.common.jsontypes import RequestBody


class SourceModel(RequestBody):
    """A third-party payload: unknown fields are normal (tools add them), so they are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


@dataclass(frozen=True)
class TicketObservation:
    """What a PSA says about a ticket now; the lifecycle decides what changed.

    `fields` holds only what this payload states, with the names of `TicketSnapshot`; sources
    that send only changed fields (Autotask) leave the rest to the last known state.
    """

    source_system: str
    event_ref: str  # the source's identity of this event, for the derived event id
    occurred_at: datetime
    ticket_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    kind: TicketEventKind | None = None  # set when the source says it (created, note added)
    note: TicketNote | None = None
    company_ref: str | None = None  # the PSA's client company, for the tenant mapping
    closed_flag: bool | None = None  # a PSA's own "closed" switch, when it has one


SEVERITY_WORDS: dict[str, Severity] = {
    "critical": "critical",
    "crit": "critical",
    "fatal": "critical",
    "emergency": "critical",
    "major": "high",
    "high": "high",
    "error": "high",
    "err": "high",
    "moderate": "warning",
    "medium": "warning",
    "warning": "warning",
    "warn": "warning",
    "minor": "warning",
    "low": "low",
    "info": "info",
    "information": "info",
    "informational": "info",
    "none": "info",
    "ok": "info",
}


def severity(word: str | None, default: Severity = "warning") -> Severity:
    return SEVERITY_WORDS.get((word or "").strip().lower(), default)


def content_ref(doc: Any) -> str:
    """An identity for a source event that has no id of its own: its canonical content."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


MAX_EPOCH_MS = 253402300799999  # 9999-12-31T23:59:59.999Z


def from_epoch(value: float) -> datetime:
    # Sources mix seconds and milliseconds; anything past year 33658 in seconds is milliseconds.
    if not 0 <= value <= MAX_EPOCH_MS:
        raise ValueError(f"timestamp {value} is outside 1970..9999")
    return datetime.fromtimestamp(value / 1000 if value > 1e12 else value, UTC)


def as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def flat_labels(doc: dict[str, Any] | None, prefix: str = "") -> dict[str, str]:
    """Flatten a source's free-form details into string labels (bounded in size)."""
    out: dict[str, str] = {}
    for key, value in (doc or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_labels(value, f"{name}."))
        elif value is not None:
            out[name] = (value if isinstance(value, str) else json.dumps(value, default=str))[:500]
        if len(out) >= 100:
            break
    return out
