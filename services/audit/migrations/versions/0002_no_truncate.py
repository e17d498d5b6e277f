"""TRUNCATE of the audit trail is refused in the database, like UPDATE and DELETE.

Revision ID: audit_0002
"""

from alembic import op

revision = "audit_0002"
down_revision = "audit_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A row-level trigger never sees TRUNCATE: PostgreSQL needs a statement-level one. SQLite
    # has no TRUNCATE (its DELETE without WHERE already meets the row trigger).
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
        )


def downgrade() -> None:
    raise RuntimeError("the audit trail is never dropped by a migration")
