"""The event contracts: one envelope, one v1 model per topic, and the claim/source types.

Every model is a frozen pydantic v2 model serialised as JSON on the wire. A breaking change is
a new model and a new topic version, never an edit of a model here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from libs.common.jsontypes import NO_NUL, AwareTimestamp, Bool, Text

# Tenant ids end up in Kafka keys, headers, URLs and table rows: keep them to a safe alphabet.
# A tenant id as every API and event takes it (declared here once).
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TenantId = Annotated[str, StringConstraints(pattern=TENANT_PATTERN, min_length=1, max_length=63)]
Confidence = Annotated[float, Field(ge=0.0, le=1.0)]


def _storable(value: str) -> str:
    # NUL is refused by PostgreSQL text columns; a lone surrogate is not Unicode that any
    # wire format can carry.
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no unpaired surrogates)") from None
    return value


# Free text that ends up in database columns as is (names, labels, external ids).
StorableText = Annotated[str, AfterValidator(_storable)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=NO_NUL)]
LongText = Annotated[str, StringConstraints(max_length=20000, pattern=NO_NUL)]

# Namespace for deterministic event ids: the same source event always maps to the same id.
EVENT_ID_NAMESPACE = uuid.UUID("6f1c52b4-3f0e-4a55-9d0b-6d1c6e0a8c11")


def utcnow() -> datetime:
    return datetime.now(UTC)


def derive_event_id(tenant_id: str, *parts: str) -> uuid.UUID:
    """A stable id for a source event, so that webhook retries are recognised as one event."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, "\x1f".join((tenant_id, *parts)))


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- claims and sources -------------------------------------------------------------------


class Source(Frozen):
    """Evidence a claim rests on."""

    kind: Literal["alert", "ticket", "note", "runbook", "signal", "execution"]
    id: ShortText
    url: str | None = None
    excerpt: Annotated[str, StringConstraints(max_length=2000)] = ""


class Claim(Frozen):
    """A statement with a confidence; a claim without a source is not allowed."""

    text: ShortText
    confidence: Confidence
    sources: list[Source] = Field(min_length=1)


class Unknown(Frozen):
    """Something the situation needs that has no evidence yet."""

    text: ShortText
    missing_evidence: ShortText


# --- the envelope ---------------------------------------------------------------------------


class EventSource(Frozen):
    """Where an event came from: the sending system, its own reference and a link to it."""

    system: ShortText
    reference: str | None = None
    link: str | None = None


class Envelope(Frozen):
    """Fields every event carries. Subclasses fix `type`, `schema_version` and `payload`."""

    topic: ClassVar[str]

    event_id: uuid.UUID
    tenant_id: TenantId
    type: str
    schema_version: int
    occurred_at: AwareDatetime
    ingested_at: AwareDatetime = Field(default_factory=utcnow)
    source: EventSource


# --- alerts.raw.v1 --------------------------------------------------------------------------

Severity = Literal["critical", "high", "warning", "low", "info"]


class AlertPayload(Frozen):
    # The source's own dedup key (Alertmanager fingerprint, PagerDuty dedup_key, ...), kept as is.
    fingerprint: ShortText
    status: Literal["firing", "resolved"]
    severity: Severity = "warning"
    title: ShortText
    description: LongText = ""
    device: str | None = None
    site: str | None = None
    group_key: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    url: str | None = None


class AlertReceived(Envelope):
    topic: ClassVar[str] = "alerts.raw.v1"
    type: Literal["alert.received.v1"] = "alert.received.v1"
    schema_version: Literal[1] = 1
    payload: AlertPayload


# --- tickets.events.v1 ----------------------------------------------------------------------

TicketEventKind = Literal[
    "created",
    "updated",
    "note_added",
    "escalated",
    "status_changed",
    "resolved",
    "reopened",
    "closed",
]


class TicketNote(Frozen):
    note_id: ShortText
    text: LongText
    internal: Bool = True
    author: Text | None = None
    created_at: AwareTimestamp | None = None


class Escalation(Frozen):
    """An L1-to-L2 handoff as the PSA expresses it: tier, board or assignee change."""

    from_tier: Text | None = None
    to_tier: Text | None = None
    from_board: Text | None = None
    to_board: Text | None = None
    from_assignee: Text | None = None
    to_assignee: Text | None = None


class TicketSnapshot(Frozen):
    ticket_id: ShortText
    title: ShortText
    description: LongText = ""
    status: Text | None = None
    priority: Text | None = None
    category: Text | None = None
    requester: Text | None = None
    site: Text | None = None
    devices: list[Text] = Field(default_factory=list)
    assignee: Text | None = None
    tier: Text | None = None
    board: Text | None = None
    url: Text | None = None


class TicketEventPayload(Frozen):
    kind: TicketEventKind
    ticket: TicketSnapshot
    note: TicketNote | None = None
    escalation: Escalation | None = None
    previous_status: str | None = None


class TicketEvent(Envelope):
    topic: ClassVar[str] = "tickets.events.v1"
    type: Literal["ticket.event.v1"] = "ticket.event.v1"
    schema_version: Literal[1] = 1
    payload: TicketEventPayload


# --- signals.clustered.v1 -------------------------------------------------------------------


class GroupingReason(Frozen):
    """Why alerts joined one signal: the feature that linked them and how strongly."""

    feature: Literal[
        "fingerprint",
        "group_key",
        "device",
        "site",
        "topology",
        "time",
        "template",
        "learned_correlation",
    ]
    detail: ShortText
    weight: Confidence


class SignalAlert(Frozen):
    """One of a signal's recent alerts as its source sent it: its own text, device and link
    (the source's page of the alert, such as Alertmanager's `generatorURL`), so a reader can
    quote and link the alert itself rather than the signal's title."""

    alert_id: uuid.UUID
    title: ShortText
    device: str | None = None
    severity: Severity = "warning"
    status: Literal["firing", "resolved"] = "firing"
    rule: str | None = None  # the source's rule name (alertname, check, monitor), when it has one
    url: str | None = None
    occurred_at: AwareDatetime | None = None


class SignalPayload(Frozen):
    """One revision of a signal. `member_alert_ids` holds its most recent alerts (at most 10;
    `count` is the total); `added_alert_ids` those that joined with this revision, so a reader
    that follows every revision knows every member. Readers deduplicate on (signal_id, revision).
    `alerts` describes the recent alerts themselves (text, device, rule, link)."""

    signal_id: uuid.UUID
    state: Literal["opened", "updated", "merged", "resolved"]
    title: ShortText
    member_alert_ids: list[uuid.UUID] = Field(min_length=1)
    added_alert_ids: list[uuid.UUID] = Field(default_factory=list)
    revision: int = Field(default=1, ge=1)
    devices: list[str] = Field(default_factory=list)
    sites: list[str] = Field(default_factory=list)
    open_alerts: int = Field(default=0, ge=0)
    severity: Severity
    first_seen: AwareDatetime
    last_seen: AwareDatetime
    count: int = Field(ge=1)
    confidence: Confidence
    reasons: list[GroupingReason] = Field(default_factory=list)
    flapping: bool = False
    merged_into: uuid.UUID | None = None
    # The same recent alerts as `member_alert_ids`, with their own text and link (added in a
    # compatible way: revisions published before it carry none).
    alerts: list[SignalAlert] = Field(default_factory=list, max_length=50)


class SignalClustered(Envelope):
    topic: ClassVar[str] = "signals.clustered.v1"
    type: Literal["signal.clustered.v1"] = "signal.clustered.v1"
    schema_version: Literal[1] = 1
    payload: SignalPayload


# --- tickets.triaged.v1 ---------------------------------------------------------------------

RolloutMode = Literal["off", "shadow", "suggest", "auto"]


class Decision(Frozen):
    """One classification outcome: the label, how sure, which method decided and why."""

    label: str | None  # None when the platform abstained
    confidence: Confidence
    method: ShortText
    rationale: Claim | None = None


class SimilarCase(Frozen):
    """A resolved ticket of the same tenant that resembles this one."""

    ticket_id: ShortText
    score: Confidence
    resolution_summary: LongText = ""
    url: str | None = None
    category: str | None = None


class OpenSignal(Frozen):
    signal_id: uuid.UUID
    title: ShortText
    severity: Severity
    devices: list[str] = Field(default_factory=list)


class ClientContext(Frozen):
    """Who and what a ticket is about, and what is failing there now."""

    site: str | None = None
    requester: str | None = None
    devices: list[str] = Field(default_factory=list)
    open_signals: list[OpenSignal] = Field(default_factory=list, max_length=50)


class TicketTriagedPayload(Frozen):
    ticket_id: ShortText
    category: Decision
    intent: Decision
    priority: Decision
    similar_cases: list[SimilarCase] = Field(default_factory=list, max_length=20)
    open_signal_ids: list[uuid.UUID] = Field(default_factory=list)
    rollout_mode: RolloutMode = "shadow"
    needs_human: bool = False
    context: ClientContext = Field(default_factory=ClientContext)
    # Only in `auto` mode above the tenant's threshold: a PSA writer may set the category.
    apply_category: bool = False


class TicketTriaged(Envelope):
    topic: ClassVar[str] = "tickets.triaged.v1"
    type: Literal["ticket.triaged.v1"] = "ticket.triaged.v1"
    schema_version: Literal[1] = 1
    payload: TicketTriagedPayload


# --- packets.escalation.v1 ------------------------------------------------------------------


class EscalationPacketPayload(Frozen):
    packet_id: uuid.UUID
    ticket_id: ShortText
    version: int = Field(ge=1)
    summary: list[Claim] = Field(default_factory=list)
    related_alerts: list[Claim] = Field(default_factory=list)
    runbook: list[Claim] = Field(default_factory=list)
    already_tried: list[Claim] = Field(default_factory=list)
    still_unknown: list[Unknown] = Field(default_factory=list)
    similar_cases: list[Claim] = Field(default_factory=list)


class EscalationPacket(Envelope):
    topic: ClassVar[str] = "packets.escalation.v1"
    type: Literal["packet.escalation.v1"] = "packet.escalation.v1"
    schema_version: Literal[1] = 1
    payload: EscalationPacketPayload


# --- automation.runs.v1 / automation.results.v1 ---------------------------------------------


class ActionStep(Frozen):
    """One registered, typed action and its parameters."""

    action: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+\.[a-z0-9_.]+$")]
    params: dict[str, Any] = Field(default_factory=dict)


class AutomationRunPayload(Frozen):
    run_id: uuid.UUID
    automation_id: uuid.UUID | None = None  # None for a one-off, engineer-directed resolution
    automation_version: int | None = None
    ticket_id: str | None = None
    steps: list[ActionStep] = Field(min_length=1)
    requested_by: ShortText
    mode: Literal["manual", "suggested", "auto"]
    # Additive: the plan it was confirmed from, and who approved it (None: no approval needed).
    plan_id: uuid.UUID | None = None
    approved_by: ShortText | None = None
    # A dry run: each step says what it would do and changes nothing.
    dry_run: bool = False
    # Additive: steps whose target must be found on the peer before any step runs (an
    # automation's "exists" preconditions); when one is not, the run fails before changing anything.
    checks: dict[int, str] = Field(default_factory=dict)


class AutomationRun(Envelope):
    topic: ClassVar[str] = "automation.runs.v1"
    type: Literal["automation.run.v1"] = "automation.run.v1"
    schema_version: Literal[1] = 1
    payload: AutomationRunPayload


class StepResult(Frozen):
    index: int = Field(ge=0)
    action: ShortText
    outcome: Literal["succeeded", "failed", "skipped", "waiting"]
    error_class: str | None = None
    message: LongText = ""
    # Additive: what ran, what the connector answered (never a credential), how long it took,
    # and the key the step ran under.
    params: dict[str, Any] = Field(default_factory=dict)
    response: dict[str, Any] = Field(default_factory=dict)
    duration_ms: float | None = None
    idempotency_key: str | None = None


class AutomationResultPayload(Frozen):
    run_id: uuid.UUID
    # running: steps so far, more to come; waiting: a step waits for a person (a code).
    outcome: Literal["succeeded", "failed", "partial", "running", "waiting"]
    steps: list[StepResult] = Field(default_factory=list)
    logs_url: str | None = None
    ticket_id: str | None = None
    requested_by: str | None = None
    dry_run: bool = False


class AutomationResult(Envelope):
    topic: ClassVar[str] = "automation.results.v1"
    type: Literal["automation.result.v1"] = "automation.result.v1"
    schema_version: Literal[1] = 1
    payload: AutomationResultPayload


# --- audit.events.v1 ------------------------------------------------------------------------


class AuditPayload(Frozen):
    actor: ShortText  # a service name ("service:ingest") or a person ("user:alice@msp")
    action: ShortText  # dotted verb, e.g. "ingest.alert.accepted"
    subject_kind: ShortText
    subject_id: ShortText
    outcome: Literal["ok", "rejected", "failed"] = "ok"
    details: dict[str, Any] = Field(default_factory=dict)
    trace_id: str | None = None


class AuditEvent(Envelope):
    topic: ClassVar[str] = "audit.events.v1"
    type: Literal["audit.event.v1"] = "audit.event.v1"
    schema_version: Literal[1] = 1
    payload: AuditPayload


class AuditCheckpointPayload(Frozen):
    """A tenant's audit chain head as the audit service saw it, signed with a key the audit
    database never holds: a trail rewritten in the database (every hash recomputed) no longer
    contains this head, and `verify` says so."""

    tenant_seq: int = Field(ge=0)
    hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    signed_at: AwareDatetime
    signature: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class AuditCheckpoint(Envelope):
    topic: ClassVar[str] = "audit.checkpoints.v1"
    type: Literal["audit.checkpoint.v1"] = "audit.checkpoint.v1"
    schema_version: Literal[1] = 1
    payload: AuditCheckpointPayload


# --- deadletter.v1 --------------------------------------------------------------------------


class DeadLetter(Frozen):
    """What a consumer could not process, with the reason and the original position.

    Not an `Envelope`: a poison message may have no readable tenant. It is keyed by the original
    message key, so it stays with the tenant's partition when there was one.
    """

    topic: ClassVar[str] = "deadletter.v1"

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: Literal["deadletter.v1"] = "deadletter.v1"
    schema_version: Literal[1] = 1
    service: ShortText
    error: LongText
    error_type: ShortText
    original_topic: ShortText
    original_partition: int
    original_offset: int
    original_key: str | None = None
    original_headers: dict[str, str] = Field(default_factory=dict)
    original_value: str  # the raw bytes as text (invalid UTF-8 replaced)
    tenant_id: str | None = None
    failed_at: AwareDatetime = Field(default_factory=utcnow)


EVENT_MODELS: tuple[type[Envelope], ...] = (
    AlertReceived,
    TicketEvent,
    SignalClustered,
    TicketTriaged,
    EscalationPacket,
    AutomationRun,
    AutomationResult,
    AuditEvent,
    AuditCheckpoint,
)
