"""Tokens spent on Claude per tenant per UTC day, shared by every process of the service.

Revision ID: triage_0007
"""

import sqlalchemy as sa
from alembic import op

revision = "triage_0007"
down_revision = "triage_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triage_llm_usage",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("tokens", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("triage_llm_usage")
