"""The admin API: tenants, their source mappings and their sender keys.

For the MSP's platform operators, authenticated with the operator token (`Authorization: Bearer`).
"""
# No `from __future__ import annotations` (see api.py).

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from libs.common.events import TENANT_PATTERN, StorableText, TenantId
from libs.common.jsontypes import RequestBody
from libs.common.openapi import errors
from services.ingest import tenants
from services.ingest.tenants import KeyVerifier, RegistryError, signing_secret

TenantPath = Annotated[str, Path(pattern=TENANT_PATTERN)]


class NewTenant(RequestBody):
    tenant_id: TenantId
    name: StorableText = Field(min_length=1, max_length=200)


class NewMapping(RequestBody):
    source_system: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9_.-]+$")
    external_id: StorableText = Field(min_length=1, max_length=200)


class NewKey(RequestBody):
    role: Literal["integration", "engineer", "approver", "admin"] = "integration"
    label: StorableText = Field(default="", max_length=200)


class KeyToCheck(RequestBody):
    key: str = Field(min_length=1, max_length=300)


class KeyPrincipal(BaseModel):
    tenant_id: str
    key_id: str
    role: str
    label: str = ""


class IssuedKey(BaseModel):
    key_id: str
    key: str = Field(description="Shown once; stored only hashed.")
    signing_secret: str = Field(description="HMAC secret for sources that sign their posts; shown once.")


def make_router(engine: Engine, operator: Any, pepper: str, verifier: KeyVerifier) -> APIRouter:
    router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[operator], responses=errors(401))

    async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, engine, *args, **kwargs)
        except RegistryError as exc:
            code = status.HTTP_404_NOT_FOUND if str(exc).startswith("no tenant") else status.HTTP_409_CONFLICT
            raise HTTPException(code, str(exc)) from None

    @router.post("/tenants", status_code=201, responses=errors(409))
    async def add_tenant(body: NewTenant) -> dict[str, str]:
        await run(tenants.add_tenant, body.tenant_id, body.name)
        return {"tenant_id": body.tenant_id}

    @router.get("/tenants")
    async def list_tenants() -> list[dict[str, Any]]:
        return await run(tenants.list_tenants)

    @router.post("/tenants/{tenant_id}/mappings", status_code=201, responses=errors(404, 409))
    async def add_mapping(tenant_id: TenantPath, body: NewMapping) -> dict[str, str]:
        await run(tenants.map_source, tenant_id, body.source_system, body.external_id)
        return {"tenant_id": tenant_id, **body.model_dump()}

    @router.get("/tenants/{tenant_id}/mappings")
    async def list_mappings(tenant_id: TenantPath) -> list[dict[str, Any]]:
        return await run(tenants.list_mappings, tenant_id)

    @router.post(
        "/tenants/{tenant_id}/keys", status_code=201, response_model=IssuedKey, responses=errors(404)
    )
    async def issue_key(tenant_id: TenantPath, body: NewKey) -> IssuedKey:
        key = await run(tenants.issue_key, tenant_id, role=body.role, label=body.label)
        key_id = tenants.key_id_of(key) or ""
        return IssuedKey(key_id=key_id, key=key, signing_secret=signing_secret(pepper, key_id))

    @router.get("/tenants/{tenant_id}/keys")
    async def list_keys(tenant_id: TenantPath) -> list[dict[str, Any]]:
        return await run(tenants.list_keys, tenant_id)

    @router.post(
        "/keys/introspect",
        response_model=KeyPrincipal,
        responses=errors(404),
    )
    async def introspect_key(body: KeyToCheck) -> KeyPrincipal:
        """Which tenant and role an active key belongs to: how the other services check the
        tenant keys presented to their read APIs (ingest keeps the keys)."""
        found = await verifier.averify(body.key)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no active key matches")
        return KeyPrincipal(
            tenant_id=found.tenant_id, key_id=found.key_id, role=found.role, label=found.label
        )

    @router.delete("/tenants/{tenant_id}/keys/{key_id}", status_code=204, responses=errors(404))
    async def revoke_key(tenant_id: TenantPath, key_id: str) -> None:
        if not await run(tenants.revoke_key, tenant_id, key_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no active key {key_id} for tenant {tenant_id}")

    return router
