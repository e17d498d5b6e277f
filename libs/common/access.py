"""Who may read a tenant's data over HTTP: the platform operators' token, a key of that tenant
with an engineer-side role (checked with ingest, which keeps the keys), or a short-lived
signed link (what the demo prints and what a packet page links to).

Read APIs take `tenant_id` as a query parameter (or in the body): a tenant key opens its own
tenant only, a signed link opens one path of one tenant until it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from fastapi import Depends, Header, HTTPException, Request

from libs.common import openapi
from libs.common.settings import ServiceSettings

# Keys of these roles read their tenant's packets, signals and triage results; sender keys
# (`integration`) only post events.
READ_ROLES = frozenset({"engineer", "approver", "admin"})
LINK_TTL_S = 24 * 3600

EXPECTED = (
    "this endpoint takes the operator token (Authorization: Bearer; locally the file "
    "var/secrets/admin-token), a key of the tenant with role engineer, approver or admin "
    "(X-API-Key, or Authorization: Bearer; issue one with `msp key issue --tenant T --role engineer`), "
    "or a signed link (its expires and sig parameters)"
)


@dataclass(frozen=True)
class Access:
    """Who is asking: `operator` (any tenant), `key` or `link` (their tenant only)."""

    kind: str
    tenant_id: str | None = None
    key_id: str | None = None
    role: str | None = None
    label: str = ""

    @property
    def person(self) -> str:
        """Who this is, as the audit trail and approvals name them: the key's holder (its
        label, else its id), or the operators."""
        if self.kind == "operator":
            return "operator"
        if self.kind == "link":
            return f"link:{self.tenant_id}"
        return f"key:{self.label or self.key_id}"

    def require(self, tenant_id: str) -> None:
        """Refuse (403) a tenant this caller may not read."""
        if self.kind != "operator" and self.tenant_id != tenant_id:
            raise HTTPException(403, f"this {self.kind} may not read tenant {tenant_id}")


# --- signed links ------------------------------------------------------------------------------


def link_secret(operator_token: str) -> bytes:
    """The links' signing key, derived from the operators' token that every service shares."""
    return hmac.new(operator_token.encode(), b"msp signed links v1", hashlib.sha256).digest()


def _mac(secret: bytes, path: str, tenant_id: str, expires: int) -> str:
    msg = f"GET\n{path}\n{tenant_id}\n{expires}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:32]


def sign_url(url: str, secret: bytes, *, ttl_s: float = LINK_TTL_S, now: float | None = None) -> str:
    """The URL with `expires` and `sig` added: it opens that path of that tenant (its
    `tenant_id` parameter) without any other credential until it expires."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("expires", "sig")]
    tenant = dict(query).get("tenant_id", "")
    expires = int((now if now is not None else time.time()) + ttl_s)
    query += [("expires", str(expires)), ("sig", _mac(secret, parts.path, tenant, expires))]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def link_tenant(request: Request, secret: bytes, now: float | None = None) -> str | None:
    """The tenant a valid, unexpired signed link on this request opens; None otherwise."""
    q = request.query_params
    sig, expires, tenant = q.get("sig"), q.get("expires"), q.get("tenant_id")
    if not sig or not expires or not tenant or not expires.isdigit() or request.method != "GET":
        return None
    if int(expires) < (now if now is not None else time.time()):
        return None
    if not hmac.compare_digest(sig, _mac(secret, request.url.path, tenant, int(expires))):
        return None
    return tenant


# --- tenant keys, checked with ingest ------------------------------------------------------------


class KeyCheck:
    """Asks ingest which tenant and role a key has, and remembers the answer a little while
    (a revoked key stops working here within `ttl_s`)."""

    def __init__(self, ingest_url: str, operator_token: str, *, ttl_s: float = 30.0) -> None:
        self.url = f"{ingest_url.rstrip('/')}/v1/admin/keys/introspect"
        self.headers = {"Authorization": f"Bearer {operator_token}"}
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Access | None]] = {}

    async def principal(self, key: str) -> Access | None:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                r = await client.post(self.url, json={"key": key}, headers=self.headers)
        except httpx.HTTPError as exc:
            raise HTTPException(503, f"cannot check the key with ingest ({self.url}): {exc}") from None
        if r.status_code == 404:
            found = None
        elif r.status_code == 200:
            doc = r.json()
            found = Access(
                kind="key",
                tenant_id=doc["tenant_id"],
                key_id=doc["key_id"],
                role=doc["role"],
                label=str(doc.get("label") or ""),
            )
        else:
            raise HTTPException(503, f"ingest answered {r.status_code} when checking the key")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now, found)
        return found


def tenant_reader(settings: ServiceSettings, keys: KeyCheck | None = None) -> Any:
    """A FastAPI dependency for read APIs: who asks, and (when the request names a tenant in
    its query) that they may read that tenant. Routes that take the tenant in their body call
    `Access.require` themselves."""
    token = settings.effective_admin_token()
    secret = link_secret(token)
    check = keys or KeyCheck(settings.ingest_url, token)

    @openapi.answers(401, 403)
    async def reader(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> Access:
        bearer = (
            authorization[7:].strip() if authorization and authorization.lower().startswith("bearer ") else ""
        )
        access: Access | None = None
        if bearer and hmac.compare_digest(bearer.encode(), token.encode()):
            access = Access(kind="operator")
        elif x_api_key or bearer:
            found = await check.principal(x_api_key or bearer)
            if found is None:
                raise HTTPException(
                    401, f"unknown or revoked key: {EXPECTED}", headers={"WWW-Authenticate": "Bearer"}
                )
            if found.role not in READ_ROLES:
                raise HTTPException(
                    403, f"a key with role {found.role!r} only posts events; reading takes an engineer key"
                )
            access = found
        elif (tenant := link_tenant(request, secret)) is not None:
            access = Access(kind="link", tenant_id=tenant)
        elif request.query_params.get("sig"):
            raise HTTPException(
                401, "this signed link has expired or does not match its path; ask for a new one"
            )
        if access is None:
            raise HTTPException(401, EXPECTED, headers={"WWW-Authenticate": "Bearer"})
        tenant_id = request.query_params.get("tenant_id")
        if tenant_id is not None:
            access.require(tenant_id)
        return access

    return Depends(reader)
