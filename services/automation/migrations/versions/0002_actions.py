"""Tool maps, policies, plans, approvals, runs, the step ledger and the outbox.

Revision ID: automation_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "automation_0002"
down_revision = "automation_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "automation_tools",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("systems", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "automation_policies",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("doc", sa.Text, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "automation_plans",
        sa.Column("plan_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("ticket_id", sa.String(200)),
        sa.Column("instruction", sa.Text, nullable=False),
        sa.Column("ticket", sa.Text, nullable=False),
        sa.Column("steps", sa.Text, nullable=False),
        sa.Column("questions", sa.Text, nullable=False),
        sa.Column("unmatched", sa.Text, nullable=False),
        sa.Column("interpreter", sa.String(20), nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("approved_by", sa.String(200)),
        sa.Column("approval_reason", sa.Text),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("run_id", sa.String(36)),
    )
    op.create_index("ix_automation_plans_tenant", "automation_plans", ["tenant_id", "created_at"])
    op.create_table(
        "automation_always_allowed",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("action", sa.String(100), primary_key=True),
        sa.Column("granted_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "automation_runs",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("plan_id", sa.String(36)),
        sa.Column("ticket_id", sa.String(200)),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("approved_by", sa.String(200)),
        sa.Column("steps", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_automation_runs_tenant", "automation_runs", ["tenant_id", "created_at"])
    op.create_table(
        "automation_ledger",
        sa.Column("idempotency_key", sa.String(32), primary_key=True),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("duration_ms", sa.Float),
        sa.Column("response", sa.Text),
        sa.Column("error_class", sa.String(100)),
        sa.Column("message", sa.Text),
        sa.Column("code_sealed", sa.Text),
        sa.UniqueConstraint("run_id", "step", name="uq_automation_ledger_run_step"),
    )
    op.create_table(
        "automation_outbox",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.LargeBinary),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_automation_outbox_unpublished", "automation_outbox", ["published_at", "created_at"])


def downgrade() -> None:
    for name in (
        "automation_outbox",
        "automation_ledger",
        "automation_runs",
        "automation_always_allowed",
        "automation_plans",
        "automation_policies",
        "automation_tools",
    ):
        op.drop_table(name)
