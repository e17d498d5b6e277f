"""Source mappings (PSA company / RMM site to tenant) and the last known state of tickets.

Revision ID: ingest_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0002"
down_revision = "ingest_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_source_mappings",
        sa.Column("source_system", sa.String(100), primary_key=True),
        sa.Column("external_id", sa.String(200), primary_key=True),
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("ingest_tenants.tenant_id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ingest_source_mappings_tenant", "ingest_source_mappings", ["tenant_id"])
    op.create_table(
        "ingest_ticket_state",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("source_system", sa.String(100), primary_key=True),
        sa.Column("ticket_id", sa.String(200), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ingest_ticket_state")
    op.drop_table("ingest_source_mappings")
