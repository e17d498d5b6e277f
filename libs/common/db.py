"""Database access: SQLAlchemy 2 engines and per-service Alembic migrations.

Each service owns its tables and its migration history (`services/<name>/migrations`, version
table `alembic_version_<name>`), so services can share one PostgreSQL database without sharing
schema. SQLite is the embedded default for local runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Table, create_engine, event, text
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


def ping(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def migrate(url: str, migrations_dir: Path, service: str) -> None:
    """Bring the service's tables to the newest revision (idempotent)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["version_table"] = f"alembic_version_{service}"
    command.upgrade(cfg, "head")


def run_alembic_env() -> None:
    """The body of every service's `migrations/env.py` (online mode only)."""
    from alembic import context

    cfg = context.config
    engine = make_engine(cfg.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            version_table=cfg.attributes["version_table"],
            render_as_batch=conn.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()
    engine.dispose()


def upsert(engine: Engine, table: Table, keys: list[str], *, newer: str | None = None):  # type: ignore[no-untyped-def]
    """An INSERT that overwrites the other columns of the row with the same `keys`; with
    `newer` (a column), only when the incoming value of that column is greater (an older
    revision arriving late changes nothing)."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    cols = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    where = table.c[newer] < stmt.excluded[newer] if newer else None
    return stmt.on_conflict_do_update(index_elements=keys, set_=cols, where=where)
