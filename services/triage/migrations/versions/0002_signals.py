"""Alert clustering state: signals and the learned correlations per tenant.

Revision ID: triage_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "triage_0002"
down_revision = "triage_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triage_signals",
        sa.Column("signal_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_triage_signals_tenant_status", "triage_signals", ["tenant_id", "status"])
    op.create_table(
        "triage_correlations",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("triage_correlations")
    op.drop_table("triage_signals")
