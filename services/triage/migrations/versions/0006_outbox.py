"""The transactional outbox: events staged with the state they describe (libs/common/outbox.py).

Revision ID: triage_0006
"""

import sqlalchemy as sa
from alembic import op

revision = "triage_0006"
down_revision = "triage_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triage_outbox",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.LargeBinary),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_triage_outbox_unpublished", "triage_outbox", ["published_at", "created_at"])


def downgrade() -> None:
    op.drop_table("triage_outbox")
