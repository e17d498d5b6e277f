"""What the platform ran on a ticket (automation runs and their results), for "already tried".

Revision ID: packet_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "packet_0003"
down_revision = "packet_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "packet_actions",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("ticket_id", sa.String(1000)),
        sa.Column("steps", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(16)),
        sa.Column("results", sa.Text, nullable=False),
        sa.Column("logs_url", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_packet_actions_ticket", "packet_actions", ["tenant_id", "ticket_id"])


def downgrade() -> None:
    op.drop_table("packet_actions")
