"""The transactional outbox: events staged with the state they describe (libs/common/outbox.py).

Revision ID: packet_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "packet_0004"
down_revision = "packet_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "packet_outbox",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.LargeBinary),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_packet_outbox_unpublished", "packet_outbox", ["published_at", "created_at"])


def downgrade() -> None:
    op.drop_table("packet_outbox")
