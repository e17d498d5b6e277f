"""The packet service's tables, declared once: the migrations in `migrations/` create exactly
these (a test compares them)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from libs.common.inbox import inbox_table
from libs.common.llm import usage_table
from libs.common.outbox import outbox_table

metadata = MetaData()
tickets = Table(
    "packet_tickets",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("ticket_id", String(1000), primary_key=True),
    Column("snapshot", Text, nullable=False),  # the latest TicketSnapshot, merged field by field
    Column("notes", Text, nullable=False),  # JSON list of notes, in arrival order
    Column("escalations", Text, nullable=False),  # JSON list of escalations with their time
    Column("escalated", Boolean, nullable=False),
    Column("closed", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_packet_tickets_open", "tenant_id", "escalated", "closed"),
)

signals = Table(
    "packet_signals",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("signal_id", String(36), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("payload", Text, nullable=False),  # the SignalPayload of that revision
    Column("alert_ids", Text, nullable=False),  # every member alert seen, JSON list
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Index("ix_packet_signals_seen", "tenant_id", "last_seen"),
)

triage = Table(
    "packet_triage",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("ticket_id", String(1000), primary_key=True),
    Column("payload", Text, nullable=False),  # the TicketTriagedPayload
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

runbooks = Table(
    "packet_runbooks",
    metadata,
    Column("scope", String(80), primary_key=True),  # "tenant:<id>" or "global"
    Column("path", String(500), primary_key=True),
    Column("title", Text, nullable=False),
    Column("url", Text),
    Column("source", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("vectors", LargeBinary, nullable=False),  # float32, one row per section
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

packets = Table(
    "packet_packets",
    metadata,
    Column("packet_id", String(36), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("ticket_id", String(1000), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("cause_event_id", String(36), nullable=False),
    Column("trigger_at", DateTime(timezone=True), nullable=False),  # when the causing event was ingested
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_packet_packets_ticket", "tenant_id", "ticket_id", "version"),
)

# Every ticket event once (keyed by its event id), with the PSA's time: the ticket lifecycle the
# SLA figures are computed from (time to escalate, time to resolve after escalation, reopens).
lifecycle = Table(
    "packet_lifecycle",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("ticket_id", String(1000), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    # Whether the ticket had a packet when the event was handled (what a resolution is
    # compared by: with a packet, without one).
    Column("with_packet", Boolean, nullable=False),
    Index("ix_packet_lifecycle_ticket", "tenant_id", "ticket_id"),
    Index("ix_packet_lifecycle_at", "tenant_id", "at"),
)

# Customer report drafts, one per tenant and month: what the platform drafted (every figure
# with its query, every sentence with its sources) and who approved it when. Never sent.
reports = Table(
    "packet_reports",
    metadata,
    Column("report_id", String(36), primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("month", String(7), nullable=False),  # YYYY-MM
    Column("status", String(16), nullable=False),  # draft, approved
    Column("content", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),  # the first draft
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("approved_at", DateTime(timezone=True)),
    Column("approved_by", String(200)),
    UniqueConstraint("tenant_id", "month", name="uq_packet_reports_month"),
)

targets = Table(
    "packet_psa_targets",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("base_url", Text, nullable=False),
    Column("credentials", Text, nullable=False),  # encrypted (libs/common/crypto.py); never returned
    Column("options", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

deliveries = Table(
    "packet_deliveries",
    metadata,
    Column("packet_id", String(36), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    # waiting (no PSA target yet), pending, posting, posted, failed (gave up), skipped,
    # superseded (a later version of the packet was posted instead)
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("remote_id", Text),
    Column("posted_at", DateTime(timezone=True)),
    Index("ix_packet_deliveries_due", "status", "next_at"),
)

feedback = Table(
    "packet_feedback",
    metadata,
    Column("feedback_id", String(36), primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("packet_id", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("claim", String(100)),  # "runbook/0", "summary/2"... or None for the packet as a whole
    Column("verdict", String(16)),  # useful, wrong
    Column("review_seconds", Float),
    Column("engineer", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_packet_feedback_packet", "tenant_id", "packet_id"),
)

# What the service writes into a tenant's PSA besides packet versions: the notes automation
# steps ask for (`psa.add_note`, kind "note": text is the note) and, in `auto` rollout mode, the
# category ticket triage decided (kind "category": text is the category). Keyed by the step's
# idempotency key or by (ticket, category), so a redelivery queues nothing new.
psa_writes = Table(
    "packet_psa_writes",
    metadata,
    Column("write_key", String(64), primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("ticket_id", String(200), nullable=False),
    Column("cause_id", String(36), nullable=False),  # the run, or the triage event
    Column("requested_by", String(200), nullable=False),
    Column("text", Text, nullable=False),
    Column("status", String(16), nullable=False),  # waiting, pending, posting, posted, failed, skipped
    Column("attempts", Integer, nullable=False),
    Column("next_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("remote_id", Text),
    Column("posted_at", DateTime(timezone=True)),
    Column("kind", String(16), nullable=False, server_default="note"),  # note, category
    Column("details", Text),  # JSON: for a category, the decision (confidence, method)
    Index("ix_packet_psa_writes_due", "status", "next_at"),
)

inbox = inbox_table(metadata, "packet")  # what the consumers took in, per tenant and topic
outbox = outbox_table(metadata, "packet")
llm_usage = usage_table(metadata, "packet")  # the tenants' daily Claude token budgets
actions = Table(
    "packet_actions",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("run_id", String(36), primary_key=True),
    Column("ticket_id", String(1000)),
    Column("steps", Text, nullable=False),  # the run's steps as requested
    Column("outcome", String(16)),  # None until its result arrives
    Column("results", Text, nullable=False),  # the steps' results
    Column("logs_url", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_packet_actions_ticket", "tenant_id", "ticket_id"),
)
