"""The packet inbox: events taken in, keyed by event id.

Revision ID: packet_0001
"""

from alembic import op

from libs.common.inbox import create_inbox

revision = "packet_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_inbox(op, "packet")


def downgrade() -> None:
    op.drop_table("packet_inbox")
