"""Customer report drafts, one per tenant and month.

Revision ID: packet_0009
"""

import sqlalchemy as sa
from alembic import op

revision = "packet_0009"
down_revision = "packet_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "packet_reports",
        sa.Column("report_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True)),
        sa.Column("approved_by", sa.String(200)),
        sa.UniqueConstraint("tenant_id", "month", name="uq_packet_reports_month"),
    )


def downgrade() -> None:
    op.drop_table("packet_reports")
