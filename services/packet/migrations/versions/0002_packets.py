"""Escalation packets: what the service knows of tickets, signals and triage results, the
runbooks, packet versions, PSA targets, deliveries and feedback.

Revision ID: packet_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "packet_0002"
down_revision = "packet_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "packet_tickets",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("ticket_id", sa.String(1000), primary_key=True),
        sa.Column("snapshot", sa.Text, nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("escalations", sa.Text, nullable=False),
        sa.Column("escalated", sa.Boolean, nullable=False),
        sa.Column("closed", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_packet_tickets_open", "packet_tickets", ["tenant_id", "escalated", "closed"])
    op.create_table(
        "packet_signals",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("signal_id", sa.String(36), primary_key=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("alert_ids", sa.Text, nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_packet_signals_seen", "packet_signals", ["tenant_id", "last_seen"])
    op.create_table(
        "packet_triage",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("ticket_id", sa.String(1000), primary_key=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "packet_runbooks",
        sa.Column("scope", sa.String(80), primary_key=True),
        sa.Column("path", sa.String(500), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("vectors", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "packet_packets",
        sa.Column("packet_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("ticket_id", sa.String(1000), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("cause_event_id", sa.String(36), nullable=False),
        sa.Column("trigger_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_packet_packets_ticket", "packet_packets", ["tenant_id", "ticket_id", "version"])
    op.create_table(
        "packet_psa_targets",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("base_url", sa.Text, nullable=False),
        sa.Column("credentials", sa.Text, nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "packet_deliveries",
        sa.Column("packet_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("remote_id", sa.Text),
        sa.Column("posted_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_packet_deliveries_due", "packet_deliveries", ["status", "next_at"])
    op.create_table(
        "packet_feedback",
        sa.Column("feedback_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("packet_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("claim", sa.String(100)),
        sa.Column("verdict", sa.String(16)),
        sa.Column("review_seconds", sa.Float),
        sa.Column("engineer", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_packet_feedback_packet", "packet_feedback", ["tenant_id", "packet_id"])


def downgrade() -> None:
    for table in (
        "packet_feedback",
        "packet_deliveries",
        "packet_psa_targets",
        "packet_packets",
        "packet_runbooks",
        "packet_triage",
        "packet_signals",
        "packet_tickets",
    ):
        op.drop_table(table)
