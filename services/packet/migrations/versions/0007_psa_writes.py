"""What the service writes into a tenant's PSA besides packet notes: the notes automation steps
ask for, and (in `auto` rollout mode) the category ticket triage decided. One queue, one kind
column.

Revision ID: packet_0007
"""

import sqlalchemy as sa
from alembic import op

revision = "packet_0007"
down_revision = "packet_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_packet_action_notes_due", table_name="packet_action_notes")
    op.rename_table("packet_action_notes", "packet_psa_writes")
    with op.batch_alter_table("packet_psa_writes") as batch:
        batch.alter_column("note_key", new_column_name="write_key", existing_type=sa.String(64))
        batch.alter_column("run_id", new_column_name="cause_id", existing_type=sa.String(36))
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="note"))
        batch.add_column(sa.Column("details", sa.Text))
    op.create_index("ix_packet_psa_writes_due", "packet_psa_writes", ["status", "next_at"])


def downgrade() -> None:
    op.drop_index("ix_packet_psa_writes_due", table_name="packet_psa_writes")
    with op.batch_alter_table("packet_psa_writes") as batch:
        batch.drop_column("details")
        batch.drop_column("kind")
        batch.alter_column("cause_id", new_column_name="run_id", existing_type=sa.String(36))
        batch.alter_column("write_key", new_column_name="note_key", existing_type=sa.String(64))
    op.rename_table("packet_psa_writes", "packet_action_notes")
    op.create_index("ix_packet_action_notes_due", "packet_action_notes", ["status", "next_at"])
