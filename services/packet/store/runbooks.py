"""The knowledge base's runbooks, per scope (a tenant's own, or the global library): source,
section vectors and a content hash, so an unchanged runbook is not embedded again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, func, select

from libs.common.db import upsert
from libs.common.events import utcnow
from services.packet.tables import runbooks


def put_runbook(
    engine: Engine,
    scope: str,
    path: str,
    title: str,
    url: str | None,
    source: str,
    digest: str,
    vectors: np.ndarray,
) -> None:
    row = {
        "scope": scope,
        "path": path,
        "title": title,
        "url": url,
        "source": source,
        "content_hash": digest,
        "vectors": np.asarray(vectors, dtype=np.float32).tobytes(),
        "updated_at": utcnow(),
    }
    with engine.begin() as conn:
        conn.execute(upsert(engine, runbooks, ["scope", "path"]), [row])


def runbook_hash(engine: Engine, scope: str, path: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(runbooks.c.content_hash).where(runbooks.c.scope == scope, runbooks.c.path == path)
        ).scalar()


def delete_runbook(engine: Engine, scope: str, path: str) -> bool:
    with engine.begin() as conn:
        return bool(
            conn.execute(delete(runbooks).where(runbooks.c.scope == scope, runbooks.c.path == path)).rowcount
        )


def runbook_version(engine: Engine, scopes: list[str]) -> tuple[int, str]:
    """(count, latest change) over the scopes: changes when any of their runbooks does."""
    with engine.connect() as conn:
        n, latest = conn.execute(
            select(func.count(), func.max(runbooks.c.updated_at)).where(runbooks.c.scope.in_(scopes))
        ).one()
    return int(n), str(latest)


def load_runbooks(engine: Engine, scopes: list[str]) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(runbooks).where(runbooks.c.scope.in_(scopes)).order_by(runbooks.c.scope, runbooks.c.path)
        ).mappings()
        return [dict(r) for r in rows]


def list_runbooks(engine: Engine, scope: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(runbooks.c.path, runbooks.c.title, runbooks.c.url, runbooks.c.updated_at)
            .where(runbooks.c.scope == scope)
            .order_by(runbooks.c.path)
        ).mappings()
        return [dict(r) for r in rows]


def get_runbook(engine: Engine, scope: str, path: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(runbooks.c.title, runbooks.c.url, runbooks.c.source, runbooks.c.updated_at).where(
                    runbooks.c.scope == scope, runbooks.c.path == path
                )
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None
