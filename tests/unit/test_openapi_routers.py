"""Routes built on an `APIRouter` and included in the app are documented and refused like the
app's own: the refusals of their dependencies are in the OpenAPI, and a wrong method gets 405
with every method the path takes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from libs.common import openapi


@openapi.answers(401, 403)
async def who(x_api_key: Annotated[str | None, Header()] = None) -> str:
    if x_api_key != "k":
        raise HTTPException(401, "no key")
    return "someone"


def router() -> APIRouter:
    r = APIRouter()

    @r.get("/v1/things")
    async def things(caller: Annotated[str, Depends(who)]) -> dict[str, str]:
        return {"caller": caller}

    @r.put("/v1/things")
    async def put_things(caller: Annotated[str, Depends(who)]) -> dict[str, str]:
        return {"caller": caller}

    return r


def test_an_included_routers_routes_document_their_refusals_and_answer_405_in_full() -> None:
    app = FastAPI()
    openapi.document(app)
    app.include_router(router())
    responses = app.openapi()["paths"]["/v1/things"]["get"]["responses"]
    assert {"401", "403", "503"} <= set(responses)
    client = TestClient(app)
    assert client.get("/v1/things", headers={"X-API-Key": "k"}).json() == {"caller": "someone"}
    refused = client.delete("/v1/things")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, PUT"
