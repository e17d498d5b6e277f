"""The automation inbox: events taken in, keyed by event id.

Revision ID: automation_0001
"""

from alembic import op

from libs.common.inbox import create_inbox

revision = "automation_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_inbox(op, "automation")


def downgrade() -> None:
    op.drop_table("automation_inbox")
