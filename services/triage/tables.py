"""Every table of the triage service, in one metadata (its migrations are generated from it):
the clustering's signals, revision reservations and learned correlations; ticket triage's
cases, decisions, rollout modes, intents, open signals and tenant models; the inbox the
consumers count into, the outbox and the tenants' daily Claude budgets."""

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
)

from libs.common.inbox import inbox_table
from libs.common.llm import usage_table
from libs.common.outbox import outbox_table

metadata = MetaData()
inbox = inbox_table(metadata, "triage")  # what the consumers took in, per tenant and topic
signals = Table(
    "triage_signals",
    metadata,
    Column("signal_id", String(36), primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("status", String(16), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_triage_signals_tenant_status", "tenant_id", "status"),
)
# The revision numbers a signal may have published: reserved in blocks before they are used,
# so a restart continues after every number that may have reached the topic.
reservations = Table(
    "triage_revision_reservations",
    metadata,
    Column("signal_id", String(36), primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("reserved", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_triage_revision_reservations_tenant_id", "tenant_id"),
)
correlations = Table(
    "triage_correlations",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("state", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

outbox = outbox_table(metadata, "triage")
llm_usage = usage_table(metadata, "triage")  # the tenants' daily Claude token budgets
cases = Table(
    "triage_cases",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("ticket_id", String(1000), primary_key=True),
    Column("text", Text, nullable=False),
    Column("category", Text),
    Column("priority", Text),
    Column("resolution", Text, nullable=False),
    Column("url", Text),
    Column("vector", LargeBinary, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
tickets = Table(
    "triage_tickets",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("ticket_id", String(1000), primary_key=True),
    Column("text_hash", String(64), nullable=False),
    Column("input_category", Text),  # the category the ticket had when it was classified
    Column("label", Text),  # what triage said (None: abstained)
    Column("confidence", Float, nullable=False),
    Column("method", String(64), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("final_category", Text),  # the category an engineer set afterwards
    Column("corrected", Boolean, nullable=False, default=False),
    Column("result", Text, nullable=False),  # the triaged payload, as published
    Column("event_id", String(36), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Index("ix_triage_tickets_tenant_decided", "tenant_id", "decided_at"),
)
rollout = Table(
    "triage_rollout",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("category", String(200), primary_key=True),  # "*": the tenant's default
    Column("mode", String(16), nullable=False),
    Column("auto_threshold", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
intents = Table(
    "triage_intents",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("description", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("keywords", Text, nullable=False),
    Column("examples", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
open_signals = Table(
    "triage_open_signals",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("signal_id", String(36), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("title", Text, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("devices", Text, nullable=False),
    Column("sites", Text, nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Index("ix_triage_open_signals_tenant_state", "tenant_id", "state", "last_seen"),
)


models = Table(
    "triage_models",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("trained_on", Integer, nullable=False),
    Column("model", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
