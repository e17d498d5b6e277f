"""The ingest service's tables: tenants and the keys their senders post with."""

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, MetaData, String, Table

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
    Column("tenant_id", String(63), ForeignKey("ingest_tenants.tenant_id"), nullable=False, index=True),
    Column("secret_hash", String(64), nullable=False),
    Column("role", String(20), nullable=False),
    Column("label", String(200), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)
