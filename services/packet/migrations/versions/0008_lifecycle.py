"""The ticket lifecycle, one row per ticket event, for the SLA figures.

Revision ID: packet_0008
"""

import sqlalchemy as sa
from alembic import op

revision = "packet_0008"
down_revision = "packet_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "packet_lifecycle",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("ticket_id", sa.String(1000), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("with_packet", sa.Boolean, nullable=False),
    )
    op.create_index("ix_packet_lifecycle_ticket", "packet_lifecycle", ["tenant_id", "ticket_id"])
    op.create_index("ix_packet_lifecycle_at", "packet_lifecycle", ["tenant_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_packet_lifecycle_at", table_name="packet_lifecycle")
    op.drop_index("ix_packet_lifecycle_ticket", table_name="packet_lifecycle")
    op.drop_table("packet_lifecycle")
