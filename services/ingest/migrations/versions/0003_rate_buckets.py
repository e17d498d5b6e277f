"""Each tenant's rate-limit bucket, shared by every ingest process.

Revision ID: ingest_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0003"
down_revision = "ingest_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_rate_buckets",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ingest_rate_buckets")
