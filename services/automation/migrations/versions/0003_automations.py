"""Automations from resolutions: ticket context, automations, their versions and approvals;
runs say whether they were dry runs.

Revision ID: automation_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "automation_0003"
down_revision = "automation_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "automation_runs", sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.create_index("ix_automation_runs_ticket", "automation_runs", ["tenant_id", "ticket_id"])
    op.create_table(
        "automation_ticket_context",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("ticket_id", sa.String(200), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("requester", sa.String(300)),
        sa.Column("device", sa.String(200)),
        sa.Column("category", sa.String(200)),
        sa.Column("intent", sa.String(200)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "automation_automations",
        sa.Column("automation_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("current_version", sa.Integer),
        sa.Column("source_ticket_id", sa.String(200)),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "source_ticket_id", name="uq_automation_automations_source"),
    )
    op.create_table(
        "automation_versions",
        sa.Column("automation_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("steps", sa.Text, nullable=False),
        sa.Column("preconditions", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("diff", sa.Text, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "automation_approvals",
        sa.Column("approval_id", sa.String(36), primary_key=True),
        sa.Column("automation_id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("approver", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_automation_approvals_automation", "automation_approvals", ["automation_id", "approved_at"]
    )


def downgrade() -> None:
    for name in (
        "automation_approvals",
        "automation_versions",
        "automation_automations",
        "automation_ticket_context",
    ):
        op.drop_table(name)
    op.drop_index("ix_automation_runs_ticket", "automation_runs")
    op.drop_column("automation_runs", "dry_run")
