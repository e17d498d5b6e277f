"""Database access: SQLAlchemy 2 engines and per-service Alembic migrations.

Each service owns its tables and its migration history (`services/<name>/migrations`, version
table `alembic_version_<name>`), so services can share one PostgreSQL database without sharing
schema. SQLite is the embedded default for local runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, MetaData, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the HTTP side read while the consumer writes; foreign keys are off by
            # default in SQLite.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, **kwargs)


@contextmanager
def reading(bind: Engine | Connection) -> Iterator[Connection]:
    """A connection to read on: the caller's, or one of the engine's for this read alone."""
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.connect() as conn:
            yield conn


@contextmanager
def writing(bind: Engine | Connection) -> Iterator[Connection]:
    """A connection to write on: the caller's, in the caller's transaction (committed with
    the rest of it), or a transaction of its own."""
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.begin() as conn:
            yield conn


def ping(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def _config(url: str, migrations_dir: Path, service: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["version_table"] = f"alembic_version_{service}"
    cfg.attributes["service"] = service
    return cfg


def migrate(url: str, migrations_dir: Path, service: str) -> None:
    """Bring the service's tables to the newest revision (idempotent)."""
    command.upgrade(_config(url, migrations_dir, service), "head")


def pending_migrations(url: str, migrations_dir: Path, service: str) -> bool:
    """Whether the service's tables are behind its newest revision (or not there at all)."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = _config(url, migrations_dir, service)
    heads = set(ScriptDirectory.from_config(cfg).get_heads())
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": f"alembic_version_{service}"})
            return set(context.get_current_heads()) != heads
    finally:
        engine.dispose()


def owned_by(service: str) -> Callable[[str | None, str, Any], bool]:
    """Alembic's `include_name` for one service: its tables are named `<service>_...` (several
    services may share a database); its version table is Alembic's own."""

    def include(name: str | None, kind: str, _parent: Any) -> bool:
        if kind != "table" or name is None:
            return True
        return name.startswith(f"{service}_") and name != f"alembic_version_{service}"

    return include


def run_alembic_env(metadata: MetaData) -> None:
    """The body of every service's `migrations/env.py` (online mode only). `metadata` holds the
    service's tables: what `msp migration` compares the database with."""
    from alembic import context

    cfg = context.config
    engine = make_engine(cfg.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=metadata,
            include_name=owned_by(cfg.attributes["service"]),
            version_table=cfg.attributes["version_table"],
            render_as_batch=conn.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()
    engine.dispose()


def schema_drift(conn: Connection, metadata: MetaData, service: str) -> list[Any]:
    """What differs between the service's tables in the database and its metadata (Alembic's
    comparison: tables, columns, types, nullability, indexes, constraints); [] when they agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"include_name": owned_by(service), "compare_type": True})
    return list(compare_metadata(context, metadata))


def generate_migration(service: str, metadata: MetaData, migrations_dir: Path, message: str) -> Path | None:
    """Write the service's next Alembic revision from what its metadata declares and its
    migrations do not create yet (the migrations run on a scratch SQLite database first).
    None, and no file, when they already agree."""
    import re
    import tempfile

    from alembic.autogenerate import produce_migrations, render_python_code
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    if not message.strip():
        raise ValueError("a migration needs a message that says what it changes")
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/{service}.db"
        cfg = _config(url, migrations_dir, service)
        command.upgrade(cfg, "head")
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                context = MigrationContext.configure(
                    conn, opts={"include_name": owned_by(service), "compare_type": True}
                )
                script = produce_migrations(context, metadata)
        finally:
            engine.dispose()
    if script.upgrade_ops is None or script.upgrade_ops.is_empty():
        return None
    head = ScriptDirectory.from_config(cfg).get_current_head()
    numbers = [re.match(r"(\d{4})_", p.name) for p in (migrations_dir / "versions").glob("*.py")]
    number = 1 + max((int(m.group(1)) for m in numbers if m), default=0)
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40] or "change"
    revision = f"{service}_{number:04d}"
    assert script.downgrade_ops is not None
    body = f'''"""{message.strip()}

Revision ID: {revision}
(generated by `msp migration` from the service's tables: read it before committing)
"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    {render_python_code(script.upgrade_ops, render_as_batch=True)}


def downgrade() -> None:
    {render_python_code(script.downgrade_ops, render_as_batch=True)}
'''
    path = migrations_dir / "versions" / f"{number:04d}_{slug}.py"
    path.write_text(body)
    return path


def upsert(engine: Engine | Connection, table: Table, keys: list[str], *, newer: str | None = None):  # type: ignore[no-untyped-def]
    """An INSERT that overwrites the other columns of the row with the same `keys`; with
    `newer` (a column), only when the incoming value of that column is greater (an older
    revision arriving late changes nothing)."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    cols = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    where = table.c[newer] < stmt.excluded[newer] if newer else None
    return stmt.on_conflict_do_update(index_elements=keys, set_=cols, where=where)
