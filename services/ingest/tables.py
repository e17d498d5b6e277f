"""The ingest service's tables: tenants and the keys their senders post with."""

from sqlalchemy import Boolean, Column, DateTime, Float, ForeignKey, Index, MetaData, String, Table, Text

metadata = MetaData()

tenants = Table(
    "ingest_tenants",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "ingest_api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("tenant_id", String(63), ForeignKey("ingest_tenants.tenant_id"), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("role", String(20), nullable=False),
    Column("label", String(200), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_ingest_api_keys_tenant", "tenant_id"),
)

# A PSA company, RMM site or organisation, mapped to the tenant it belongs to. Unique per
# source and external id: one client company can belong to one tenant only.
source_mappings = Table(
    "ingest_source_mappings",
    metadata,
    Column("source_system", String(100), primary_key=True),
    Column("external_id", String(200), primary_key=True),
    Column("tenant_id", String(63), ForeignKey("ingest_tenants.tenant_id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_ingest_source_mappings_tenant", "tenant_id"),
)

# The last known state of each PSA ticket, to tell an escalation or a reopen from an update.
ticket_state = Table(
    "ingest_ticket_state",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("source_system", String(100), primary_key=True),
    Column("ticket_id", String(200), primary_key=True),
    Column("state", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Each tenant's rate-limit bucket, shared by every ingest process (see ratelimit.py).
rate_buckets = Table(
    "ingest_rate_buckets",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", Float, nullable=False),  # epoch seconds of the last lease
)
