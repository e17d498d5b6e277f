"""Notes that automation steps (`psa.add_note`) ask to post into their ticket.

Revision ID: packet_0006
"""

import sqlalchemy as sa
from alembic import op

revision = "packet_0006"
down_revision = "packet_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "packet_action_notes",
        sa.Column("note_key", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("ticket_id", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("remote_id", sa.Text),
        sa.Column("posted_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_packet_action_notes_due", "packet_action_notes", ["status", "next_at"])


def downgrade() -> None:
    op.drop_table("packet_action_notes")
