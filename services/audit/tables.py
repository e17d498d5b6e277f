"""The audit service's tables: the append-only trail and one chain head per tenant."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("tenant_id", String(63), nullable=False),
    Column("tenant_seq", BigInteger, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(200), nullable=False),
    Column("subject_kind", String(100), nullable=False),
    Column("subject_id", String(1000), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("trace_id", String(32)),
    Column("body", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("tenant_id", "tenant_seq", name="uq_audit_tenant_seq"),
    Index("ix_audit_tenant_trace", "tenant_id", "trace_id"),
    Index("ix_audit_tenant_subject", "tenant_id", "subject_id"),
)

chain_heads = Table(
    "audit_chain_heads",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("tenant_seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)
