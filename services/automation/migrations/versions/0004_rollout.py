"""Automate, Maintain, Govern: runs name the automation that ran them; the ticket history the
miner reads; pause/resume/retire with who and why; rollout decisions, failure analyses and the
latest mining per tenant.

Revision ID: automation_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "automation_0004"
down_revision = "automation_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("automation_runs") as b:
        b.add_column(sa.Column("automation_id", sa.String(36)))
        b.add_column(sa.Column("automation_version", sa.Integer))
    op.create_index("ix_automation_runs_automation", "automation_runs", ["automation_id", "created_at"])
    with op.batch_alter_table("automation_ticket_context") as b:
        b.add_column(sa.Column("description", sa.Text))
        b.add_column(sa.Column("psa_category", sa.String(200)))
        b.add_column(sa.Column("status", sa.String(30)))
        b.add_column(sa.Column("opened_at", sa.DateTime(timezone=True)))
        b.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True)))
        b.add_column(sa.Column("notes", sa.Text))
    op.create_index(
        "ix_automation_ticket_context_resolved", "automation_ticket_context", ["tenant_id", "resolved_at"]
    )
    with op.batch_alter_table("automation_automations") as b:
        b.add_column(sa.Column("status_by", sa.String(200)))
        b.add_column(sa.Column("status_reason", sa.Text))
        b.add_column(sa.Column("status_at", sa.DateTime(timezone=True)))
        b.add_column(sa.Column("failures_in_row", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "automation_decisions",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("ticket_id", sa.String(200), primary_key=True),
        sa.Column("automation_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("decision", sa.String(20), nullable=False),
        sa.Column("similarity", sa.Float, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("plan_id", sa.String(36)),
        sa.Column("run_id", sa.String(36)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_automation_decisions_automation", "automation_decisions", ["automation_id", "created_at"]
    )
    op.create_table(
        "automation_failures",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("automation_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("error_class", sa.String(100)),
        sa.Column("analysis", sa.Text, nullable=False),
        sa.Column("proposed_version", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_automation_failures_automation", "automation_failures", ["automation_id", "created_at"]
    )
    op.create_table(
        "automation_mining",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("kind", sa.String(20), primary_key=True),
        sa.Column("tickets", sa.Integer, nullable=False),
        sa.Column("took_s", sa.Float, nullable=False),
        sa.Column("doc", sa.Text, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for name in ("automation_mining", "automation_failures", "automation_decisions"):
        op.drop_table(name)
    with op.batch_alter_table("automation_automations") as b:
        for c in ("failures_in_row", "status_at", "status_reason", "status_by"):
            b.drop_column(c)
    op.drop_index("ix_automation_ticket_context_resolved", "automation_ticket_context")
    with op.batch_alter_table("automation_ticket_context") as b:
        for c in ("notes", "resolved_at", "opened_at", "status", "psa_category", "description"):
            b.drop_column(c)
    op.drop_index("ix_automation_runs_automation", "automation_runs")
    with op.batch_alter_table("automation_runs") as b:
        b.drop_column("automation_version")
        b.drop_column("automation_id")
