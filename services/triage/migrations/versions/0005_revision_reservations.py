"""Revision numbers reserved per signal before they are published.

Revision ID: triage_0005
"""

import sqlalchemy as sa
from alembic import op

revision = "triage_0005"
down_revision = "triage_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triage_revision_reservations",
        sa.Column("signal_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("reserved", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_triage_revision_reservations_tenant_id", "triage_revision_reservations", ["tenant_id"]
    )


def downgrade() -> None:
    op.drop_table("triage_revision_reservations")
