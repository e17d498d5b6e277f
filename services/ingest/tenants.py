"""The tenant registry and sender keys: keys are shown once and stored hashed.

A key reads `msp_<key id>_<secret>`; the secret is 32 random bytes, so a plain SHA-256 of it is
enough to store (no password stretching needed), and it is compared in constant time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cachetools import TTLCache
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from libs.common.events import TenantId, utcnow
from services.ingest.tables import api_keys, source_mappings, tenants, ticket_state

_TENANT_ID: TypeAdapter[str] = TypeAdapter(TenantId)

Role = Literal["integration", "engineer", "approver", "admin"]


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str
    role: str
    label: str = ""  # who holds the key (a person for engineer-side keys)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def add_tenant(engine: Engine, tenant_id: str, name: str) -> None:
    # The same rule the events apply, so every registered tenant can appear in an event.
    try:
        _TENANT_ID.validate_python(tenant_id)
    except ValidationError:
        raise RegistryError(
            f"invalid tenant id {tenant_id!r}: lower-case letters, digits, '-' and '_', 1-63 chars"
        ) from None
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(tenants).values(tenant_id=tenant_id, name=name, active=True, created_at=utcnow())
            )
    except IntegrityError:
        raise RegistryError(f"tenant {tenant_id!r} already exists") from None


def tenant_exists(engine: Engine, tenant_id: str) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(select(tenants.c.tenant_id).where(tenants.c.tenant_id == tenant_id)).first()
            is not None
        )


def issue_key(engine: Engine, tenant_id: str, *, role: Role = "integration", label: str = "") -> str:
    """Create a key for the tenant and return it in full: it is never shown again."""
    if not tenant_exists(engine, tenant_id):
        raise RegistryError(f"no tenant {tenant_id!r}: add it first")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(
            insert(api_keys).values(
                key_id=key_id,
                tenant_id=tenant_id,
                secret_hash=_hash(secret),
                role=role,
                label=label,
                created_at=utcnow(),
                revoked_at=None,
            )
        )
    return f"msp_{key_id}_{secret}"


def revoke_key(engine: Engine, tenant_id: str, key_id: str) -> bool:
    with engine.begin() as conn:
        res = conn.execute(
            update(api_keys)
            .where(
                api_keys.c.key_id == key_id,
                api_keys.c.tenant_id == tenant_id,
                api_keys.c.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
        return res.rowcount == 1


def list_keys(engine: Engine, tenant_id: str) -> list[dict[str, object]]:
    c = api_keys.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.key_id, c.role, c.label, c.created_at, c.revoked_at).where(c.tenant_id == tenant_id)
        )
        return [dict(r._mapping) for r in rows]


_MISSING = object()


class KeyVerifier:
    """Checks presented keys against the registry, with a short cache so a busy sender does
    not cost a database read per request. A revoked key stops working within `ttl_s`."""

    def __init__(self, engine: Engine, ttl_s: float = 5.0) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        # Unknown keys are cached too (as None), so a sender with a bad key costs no reads
        # either. Read on the event loop and written from worker threads: under a lock.
        self._cache: TTLCache[str, Principal | None] = TTLCache(maxsize=10_000, ttl=ttl_s)
        self._lock = threading.Lock()

    async def averify(self, presented: str | None) -> Principal | None:
        """`verify` for the event loop: a cached key costs no thread hop, a miss reads the database
        in a worker thread."""
        if presented:
            cached = self._peek(presented)
            if cached is not _MISSING:
                return cached  # type: ignore[return-value]  # a Principal or None, never _MISSING here
        return await asyncio.to_thread(self.verify, presented)

    def verify(self, presented: str | None) -> Principal | None:
        if not presented or not presented.startswith("msp_") or presented.count("_") < 2:
            return None
        return self._cached(presented, lambda: self._lookup(presented))

    def _peek(self, key: str) -> object:
        """The cached answer for `key` (a Principal or None), or `_MISSING`."""
        with self._lock:
            return self._cache.get(key, _MISSING)

    def _cached(self, key: str, load: Callable[[], Principal | None]) -> Principal | None:
        cached = self._peek(key)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]  # a Principal or None, never _MISSING here
        principal = load()
        with self._lock:
            self._cache[key] = principal
        return principal

    def _row(self, key_id: str) -> Any:
        c = api_keys.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(c.tenant_id, c.secret_hash, c.role, c.label, c.revoked_at, tenants.c.active)
                .join(tenants, tenants.c.tenant_id == c.tenant_id)
                .where(c.key_id == key_id)
            ).first()
        if row is None or row.revoked_at is not None or not row.active:
            return None
        return row

    def _lookup(self, presented: str) -> Principal | None:
        _, key_id, secret = presented.split("_", 2)
        row = self._row(key_id)
        if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
            return None
        return Principal(tenant_id=row.tenant_id, key_id=key_id, role=row.role, label=row.label or "")

    def by_key_id(self, key_id: str) -> Principal | None:
        """The active key with this id, for posts authenticated by a signature instead."""

        def load() -> Principal | None:
            row = self._row(key_id)
            return Principal(tenant_id=row.tenant_id, key_id=key_id, role=row.role) if row else None

        return self._cached(f"id:{key_id}", load)


# --- signing secrets --------------------------------------------------------------------------


def signing_secret(pepper: str, key_id: str) -> str:
    """The HMAC secret of a key, for sources that sign their posts (Autotask).

    Derived from the key id and the server's pepper rather than stored, so the database holds
    nothing that could forge a signature. It is shown once, when the key is issued.
    """
    digest = hmac.new(pepper.encode(), f"signing:{key_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def verify_hmac_sha1(secret: str, body: bytes, presented: str | None) -> bool:
    """Check an `X-Hook-Signature`: HMAC-SHA1 of the raw body, base64 (optionally `sha1=`-prefixed)
    or hex."""
    if not presented:
        return False
    value = presented.strip()
    if value.lower().startswith("sha1="):
        value = value[5:]
    mac = hmac.new(secret.encode(), body, hashlib.sha1).digest()
    return hmac.compare_digest(value, base64.b64encode(mac).decode()) or hmac.compare_digest(
        value.lower(), mac.hex()
    )


def key_id_of(presented: str) -> str | None:
    parts = presented.split("_", 2)
    return parts[1] if len(parts) == 3 and parts[0] == "msp" else None


# --- source mappings ---------------------------------------------------------------------------


def map_source(engine: Engine, tenant_id: str, source_system: str, external_id: str) -> None:
    """Declare that a PSA company, RMM site or organisation belongs to the tenant."""
    if not tenant_exists(engine, tenant_id):
        raise RegistryError(f"no tenant {tenant_id!r}")
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(source_mappings).values(
                    source_system=source_system,
                    external_id=external_id,
                    tenant_id=tenant_id,
                    created_at=utcnow(),
                )
            )
    except IntegrityError:
        owner = owner_of(engine, source_system, {external_id}).get(external_id)
        raise RegistryError(
            f"{source_system} {external_id!r} is already mapped to tenant {owner!r}"
        ) from None


def owner_of(engine: Engine, source_system: str, external_ids: set[str]) -> dict[str, str]:
    """Which tenant each external id is mapped to (unmapped ids are absent)."""
    if not external_ids:
        return {}
    c = source_mappings.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.external_id, c.tenant_id).where(
                c.source_system == source_system, c.external_id.in_(sorted(external_ids))
            )
        )
        return {r.external_id: r.tenant_id for r in rows}


def list_mappings(engine: Engine, tenant_id: str) -> list[dict[str, object]]:
    c = source_mappings.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.source_system, c.external_id, c.created_at).where(c.tenant_id == tenant_id)
        )
        return [dict(r._mapping) for r in rows]


def list_tenants(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(tenants).order_by(tenants.c.tenant_id))]


# --- ticket state ------------------------------------------------------------------------------


def load_ticket_states(
    engine: Engine, tenant_id: str, source_system: str, ticket_ids: set[str]
) -> dict[str, dict[str, Any]]:
    c = ticket_state.c
    if not ticket_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.ticket_id, c.state).where(
                c.tenant_id == tenant_id,
                c.source_system == source_system,
                c.ticket_id.in_(sorted(ticket_ids)),
            )
        )
        return {r.ticket_id: json.loads(r.state) for r in rows}


def save_ticket_states(
    engine: Engine, tenant_id: str, source_system: str, states: dict[str, dict[str, Any]]
) -> None:
    if not states:
        return
    rows = [
        {
            "tenant_id": tenant_id,
            "source_system": source_system,
            "ticket_id": tid,
            "state": json.dumps(state, default=str),
            "updated_at": utcnow(),
        }
        for tid, state in states.items()
    ]
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(ticket_state)
    stmt = stmt.on_conflict_do_update(
        index_elements=["tenant_id", "source_system", "ticket_id"],
        set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at},
    )
    with engine.begin() as conn:
        conn.execute(stmt, rows)
