"""The tenant registry and sender keys: keys are shown once and stored hashed.

A key reads `msp_<key id>_<secret>`; the secret is 32 random bytes, so a plain SHA-256 of it is
enough to store (no password stretching needed), and it is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from libs.common.events import TenantId, utcnow
from services.ingest.tables import api_keys, tenants

_TENANT_ID: TypeAdapter[str] = TypeAdapter(TenantId)

Role = Literal["integration", "engineer", "approver", "admin"]


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str
    role: str


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


class KeyVerifier:
    """Checks presented keys against the registry, with a short cache so a busy sender does
    not cost a database read per request. A revoked key stops working within `ttl_s`."""

    def __init__(self, engine: Engine, ttl_s: float = 5.0) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def verify(self, presented: str | None) -> Principal | None:
        if not presented or not presented.startswith("msp_") or presented.count("_") < 2:
            return None
        now = time.monotonic()
        cached = self._cache.get(presented)
        if cached and now - cached[0] < self.ttl_s:
            return cached[1]
        principal = self._lookup(presented)
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[presented] = (now, principal)
        return principal

    def _lookup(self, presented: str) -> Principal | None:
        _, key_id, secret = presented.split("_", 2)
        c = api_keys.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(c.tenant_id, c.secret_hash, c.role, c.revoked_at, tenants.c.active)
                .join(tenants, tenants.c.tenant_id == c.tenant_id)
                .where(c.key_id == key_id)
            ).first()
        if row is None or row.revoked_at is not None or not row.active:
            return None
        if not hmac.compare_digest(row.secret_hash, _hash(secret)):
            return None
        return Principal(tenant_id=row.tenant_id, key_id=key_id, role=row.role)
