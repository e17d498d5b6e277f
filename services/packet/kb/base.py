"""The knowledge base as the packet service uses it: runbooks stored per tenant or global, each
split into sections and embedded once when added; searched over the tenant's own runbooks
plus the global library, never another tenant's.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine

from libs.common.embeddings import DIMENSIONS, Embedder
from services.packet.builder import RunbookMatch
from services.packet.kb.markdown import Runbook, parse
from services.packet.kb.search import RunbookIndex, section_text
from services.packet.store import runbooks

GLOBAL = "global"


def scope_of(tenant_id: str | None) -> str:
    return GLOBAL if tenant_id is None else f"tenant:{tenant_id}"


@dataclass
class _Cached:
    version: tuple[int, str]
    index: RunbookIndex
    rows: list[dict[str, object]]


class KnowledgeBase:
    def __init__(self, engine: Engine, embedder: Embedder, recheck_s: float = 1.0) -> None:
        self.engine = engine
        self.embedder = embedder
        # How often a tenant's index asks the database whether its runbooks changed (a change
        # made through this process is seen at once; through another one, within this time).
        self.recheck_s = recheck_s
        self._indexes: dict[str, _Cached] = {}
        self._checked: dict[str, float] = {}
        self._lock = threading.Lock()

    def put(
        self, tenant_id: str | None, path: str, markdown: str, url: str | None = None
    ) -> dict[str, object]:
        """Add or replace a runbook; unchanged content is not embedded again."""
        if not path.strip() or len(path) > 500 or path.startswith("/") or ".." in path.split("/"):
            raise ValueError("path must be a relative name of at most 500 characters, without '..'")
        book = parse(markdown, fallback_title=path.rsplit("/", 1)[-1].removesuffix(".md"))
        if not book.sections:
            raise ValueError(f"{path}: no text")
        scope = scope_of(tenant_id)
        digest = hashlib.sha256(f"{url or ''}\n{markdown}".encode()).hexdigest()
        changed = runbooks.runbook_hash(self.engine, scope, path) != digest
        if changed:
            vectors = self.embedder.encode([section_text(book, i) for i in range(len(book.sections))])
            runbooks.put_runbook(self.engine, scope, path, book.title, url, markdown, digest, vectors)
            with self._lock:
                self._checked.clear()
        return {
            "scope": scope,
            "path": path,
            "title": book.title,
            "sections": len(book.sections),
            "changed": changed,
        }

    def remove(self, tenant_id: str | None, path: str) -> bool:
        removed = runbooks.delete_runbook(self.engine, scope_of(tenant_id), path)
        with self._lock:
            self._checked.clear()
        return removed

    def search(self, tenant_id: str, query: str, k: int = 3, names: Sequence[str] = ()) -> list[RunbookMatch]:
        """The tenant's best runbooks for `query` (its own and the global library); one whose
        title is among `names` (alert rule names) first."""
        cached = self._index(tenant_id)
        out = []
        for hit in cached.index.search(query, k=k, names=names):
            row = cached.rows[hit.doc]
            book: Runbook = cached.index.runbooks[hit.doc]
            out.append(
                RunbookMatch(
                    scope=str(row["scope"]),
                    path=str(row["path"]),
                    title=book.title,
                    url=row["url"],  # type: ignore[arg-type]
                    section=book.sections[hit.section],
                    sections=book.sections,
                    score=hit.section_score,
                    named=hit.named,
                )
            )
        return out

    def _index(self, tenant_id: str) -> _Cached:
        scopes = [scope_of(tenant_id), GLOBAL]
        now = time.monotonic()
        with self._lock:
            cached = self._indexes.get(tenant_id)
            if cached is not None and now - self._checked.get(tenant_id, -1e9) < self.recheck_s:
                return cached
        version = runbooks.runbook_version(self.engine, scopes)
        with self._lock:
            cached = self._indexes.get(tenant_id)
            if cached is not None and cached.version == version:
                self._checked[tenant_id] = now
                return cached
        rows = runbooks.load_runbooks(self.engine, scopes)
        books = [parse(str(r["source"]), fallback_title=str(r["path"])) for r in rows]
        vectors = [np.frombuffer(r["vectors"], dtype=np.float32).reshape(-1, DIMENSIONS) for r in rows]  # type: ignore[arg-type]
        stacked = np.vstack(vectors) if vectors else np.zeros((0, DIMENSIONS), dtype=np.float32)
        cached = _Cached(version, RunbookIndex(books, self.embedder.encode, stacked), [dict(r) for r in rows])
        with self._lock:
            self._indexes[tenant_id] = cached
            self._checked[tenant_id] = now
        return cached
