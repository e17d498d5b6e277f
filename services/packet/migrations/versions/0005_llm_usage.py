"""Tokens spent on Claude per tenant per UTC day, shared by every process of the service.

Revision ID: packet_0005
"""

import sqlalchemy as sa
from alembic import op

revision = "packet_0005"
down_revision = "packet_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "packet_llm_usage",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("tokens", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("packet_llm_usage")
