"""Ticket triage: resolved cases per tenant, decisions, rollout modes, tenant intents and the
open signals triage reads its context from.

Revision ID: triage_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "triage_0003"
down_revision = "triage_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triage_cases",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("ticket_id", sa.String(1000), primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("category", sa.Text),
        sa.Column("priority", sa.Text),
        sa.Column("resolution", sa.Text, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "triage_tickets",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("ticket_id", sa.String(1000), primary_key=True),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("input_category", sa.Text),
        sa.Column("label", sa.Text),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("final_category", sa.Text),
        sa.Column("corrected", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_triage_tickets_tenant_decided", "triage_tickets", ["tenant_id", "decided_at"])
    op.create_table(
        "triage_rollout",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("category", sa.String(200), primary_key=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("auto_threshold", sa.Float, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "triage_intents",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("keywords", sa.Text, nullable=False),
        sa.Column("examples", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "triage_open_signals",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("signal_id", sa.String(36), primary_key=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("devices", sa.Text, nullable=False),
        sa.Column("sites", sa.Text, nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_triage_open_signals_tenant_state", "triage_open_signals", ["tenant_id", "state", "last_seen"]
    )


def downgrade() -> None:
    for table in (
        "triage_open_signals",
        "triage_intents",
        "triage_rollout",
        "triage_tickets",
        "triage_cases",
    ):
        op.drop_table(table)
