"""Tenant models, kept so a restart or a rebalance does not retrain them.

Revision ID: triage_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "triage_0004"
down_revision = "triage_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triage_models",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("trained_on", sa.Integer, nullable=False),
        sa.Column("model", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("triage_models")
