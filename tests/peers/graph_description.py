"""The part of Microsoft Graph v1.0's published description that the connectors use, as an
OpenAPI document a mock server can serve.

Graph publishes its metadata as CSDL (`../shared/data/apis/msgraph/v1.0-Prod.csdl`); the npm
package `odata-openapi` converts it to OpenAPI (10,000+ paths, 190 MB). This keeps the paths
the connectors call and the schemas they reference, and writes them as Graph addresses them
(`/users/{id}`, not OData's `/users('{id}')`; actions without the `graph.` namespace).
Three addresses Graph documents but the converted description lacks are added from the
described types: `PATCH /users/{id}/mailboxSettings` and the `$ref` member add and remove.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

KEEP = {
    "/users('{id}')": ("/users/{id}", ["get", "patch"]),
    "/users('{id}')/graph.revokeSignInSessions": ("/users/{id}/revokeSignInSessions", ["post"]),
    "/users('{id}')/graph.assignLicense": ("/users/{id}/assignLicense", ["post"]),
    "/users('{id}')/authentication/methods": ("/users/{id}/authentication/methods", ["get"]),
    "/users('{id}')/authentication/phoneMethods('{id_2}')": (
        "/users/{id}/authentication/phoneMethods/{id_2}",
        ["delete"],
    ),
    "/users('{id}')/authentication/microsoftAuthenticatorMethods('{id_2}')": (
        "/users/{id}/authentication/microsoftAuthenticatorMethods/{id_2}",
        ["delete"],
    ),
    "/groups": ("/groups", ["get"]),
    "/subscribedSkus": ("/subscribedSkus", ["get"]),
    "/chats": ("/chats", ["post"]),
    "/chats('{id}')/messages": ("/chats/{id}/messages", ["post"]),
    "/teams('{id}')/channels": ("/teams/{id}/channels", ["get"]),
    "/teams('{id}')/channels('{id_1}')/messages": ("/teams/{id}/channels/{id_1}/messages", ["post"]),
}


def convert(csdl: Path, work: Path, npm_bin: Path) -> Path:
    """The whole description in OpenAPI form (converted once, kept in `work`)."""
    out = work / "graph-full.openapi.json"
    if out.exists() and out.stat().st_mtime >= csdl.stat().st_mtime:
        return out
    work.mkdir(parents=True, exist_ok=True)
    source = work / "graph.xml"
    source.write_bytes(csdl.read_bytes())
    subprocess.run(
        [
            str(npm_bin / "odata-openapi3"),
            "--basePath",
            "/v1.0",
            "--skipBatchPath",
            "--levels",
            "6",
            "-k",
            "users",
            "-k",
            "groups",
            "-k",
            "chats",
            "-k",
            "teams",
            "-k",
            "subscribedSkus",
            "-t",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    source.unlink()
    return out


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/components/"):
                found.add(v)
            else:
                _refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _refs(v, found)


DEPTH = 2


def _simple(schema: Any) -> bool:
    """An enumeration or a primitive: written out whatever the depth (it refers to nothing)."""
    return isinstance(schema, dict) and (
        "enum" in schema
        or (schema.get("type") in ("string", "number", "integer", "boolean") and "properties" not in schema)
    )


def subset(full: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for odata, (graph, methods) in KEEP.items():
        item = full["paths"][odata]
        kept = {m: item[m] for m in methods}
        if "parameters" in item:
            kept["parameters"] = item["parameters"]
        paths[graph] = kept
    # Documented by Graph, absent from the conversion: built from the described types.
    ref_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["@odata.id"],
                    "properties": {"@odata.id": {"type": "string"}},
                }
            }
        },
    }
    no_content = {"204": {"description": "Success"}}
    error = full["paths"]["/groups('{id}')"]["get"]["responses"].get("4XX")
    errors = {"4XX": error} if error else {}
    id_param = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    paths["/groups/{id}/members/$ref"] = {
        "parameters": id_param,
        "post": {"requestBody": ref_body, "responses": {**no_content, **errors}},
    }
    paths["/groups/{id}/members/{id_1}/$ref"] = {
        "parameters": id_param
        + [{"name": "id_1", "in": "path", "required": True, "schema": {"type": "string"}}],
        "delete": {"responses": {**no_content, **errors}},
    }
    paths["/users/{id}/mailboxSettings"] = {
        "parameters": id_param,
        "patch": {
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/microsoft.graph.mailboxSettings"}
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Success",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/microsoft.graph.mailboxSettings"}
                        }
                    },
                },
                **errors,
            },
        },
    }
    doc = {k: v for k, v in full.items() if k not in ("paths", "components")}
    doc["paths"] = copy.deepcopy(paths)
    # The mock serves the paths as written: with the version prefix the clients use.
    doc["paths"] = {f"/v1.0{path}": item for path, item in doc["paths"].items()}
    doc.pop("servers", None)
    # Graph's types refer to one another without end (a user has a manager, who is a directory
    # object, who has members ...): a mock server resolving all of it never starts. Every
    # reference is written out in place, DEPTH levels deep; deeper, a value is any object.
    schemas = full["components"]["schemas"]

    def inline(node: Any, depth: int) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                target = schemas[ref.rsplit("/", 1)[1]]
                if depth >= DEPTH and not _simple(target):
                    return {"type": "object"}
                return inline(target, depth + 1)
            out = {k: inline(v, depth) for k, v in node.items()}
            # Graph assigns the ids of what is created; the conversion marks the OData key
            # required in create bodies, which Graph does not ask for.
            if isinstance(out.get("required"), list) and "id" in out["required"]:
                out["required"] = [r for r in out["required"] if r != "id"] or None
                if out["required"] is None:
                    del out["required"]
            return out
        if isinstance(node, list):
            return [inline(v, depth) for v in node]
        return node

    components: dict[str, dict[str, Any]] = {}
    for section in ("parameters", "responses"):
        wanted: set[str] = set()
        _refs(doc["paths"], wanted)
        for ref in wanted:
            _, _, sec, name = ref.split("/", 3)
            if sec == section:
                components.setdefault(section, {})[name] = inline(full["components"][section][name], 0)
    doc["paths"] = inline(doc["paths"], 0)
    doc["components"] = components
    # OData key syntax in parameter descriptions is harmless; path templates are Graph's now.
    text = json.dumps(doc)
    text = re.sub(r"\('\{(id(?:_\d)?)\}'\)", r"/{\1}", text)
    return dict(json.loads(text))


def build(csdl: Path, work: Path, npm_bin: Path) -> Path:
    out = work / "graph-subset.openapi.json"
    if out.exists() and out.stat().st_mtime >= csdl.stat().st_mtime:
        return out
    full = json.loads(convert(csdl, work, npm_bin).read_text())
    out.write_text(json.dumps(subset(full)))
    return out
