"""Connectors, one per kind of system, chosen per tenant by its tool map.

A tool map names, for each kind of system an action runs against (`identity`, `aws`, `m365`,
`teams`, `sms`, `verify`, `rmm`, `psa`), the connector kind and its settings:

    {"identity": {"kind": "active_directory", "host": "dc1.corp.example", ...},
     "m365": {"kind": "microsoft_graph", "token": "...", ...}, ...}

so the same `identity.reset_password` runs against on-premises AD for one client and Entra ID
(`microsoft_graph`) for another.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from services.automation.connectors.active_directory import ActiveDirectory
from services.automation.connectors.aws_iam import AwsIam
from services.automation.connectors.base import Connector, ConnectorConfig, StepFailed
from services.automation.connectors.datto_rmm import DattoRmm
from services.automation.connectors.microsoft_graph import MicrosoftGraph
from services.automation.connectors.ninjaone import NinjaOne
from services.automation.connectors.psa_bus import PsaBus
from services.automation.connectors.twilio import Twilio

KINDS: dict[str, type[Connector]] = {
    c.kind: c for c in (ActiveDirectory, AwsIam, DattoRmm, MicrosoftGraph, NinjaOne, PsaBus, Twilio)
}
# The kinds of system a tool map may name, and which connector kinds can serve each.
SYSTEMS: dict[str, tuple[str, ...]] = {
    "identity": ("active_directory", "microsoft_graph"),
    "aws": ("aws_iam",),
    "m365": ("microsoft_graph",),
    "teams": ("microsoft_graph",),
    "sms": ("twilio",),
    "verify": ("twilio",),
    "rmm": ("ninjaone", "datto_rmm"),
    "psa": ("psa_bus",),
}
# Which system an action's step runs against (most follow the action's own system).
ROUTE = {"identity.verify_user_mfa": "verify"}
SECRET_WORDS = ("password", "secret", "token", "key")


def _tool_map_model() -> type[BaseModel]:
    """The tool map's shape for the API's schema: each system, served by one of its connector
    kinds (`kind`) with that connector's settings."""
    fields: dict[str, Any] = {}
    for system, kinds in SYSTEMS.items():
        variants = [
            create_model(
                f"{system.title()}{KINDS[kind].config_model.__name__}",
                __base__=KINDS[kind].config_model,
                kind=(Literal[kind], ...),  # type: ignore[valid-type, arg-type]
            )
            for kind in kinds
        ]
        shape: Any = (
            Annotated[Union[tuple(variants)], Field(discriminator="kind")]  # noqa: UP007
            if len(variants) > 1
            else variants[0]
        )
        fields[system] = (shape | None, None)
    return create_model("ToolMap", __config__=ConfigDict(extra="forbid"), **fields)


ToolMap = _tool_map_model()


class ToolMapError(ValueError):
    pass


def validate_tool_map(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tool map checked: known systems, a connector kind that can serve each, and its
    settings as that connector expects them. Errors name the system and the field."""
    if not isinstance(doc, dict):
        raise ToolMapError("a tool map is an object of system -> connector settings")
    out: dict[str, dict[str, Any]] = {}
    for system, settings in doc.items():
        if system not in SYSTEMS:
            raise ToolMapError(f"unknown system {system!r} (known: {', '.join(SYSTEMS)})")
        if not isinstance(settings, dict) or "kind" not in settings:
            raise ToolMapError(f"{system}: give the connector 'kind' ({' or '.join(SYSTEMS[system])})")
        kind = settings["kind"]
        if kind not in SYSTEMS[system]:
            raise ToolMapError(f"{system}: {kind!r} cannot serve it (use {' or '.join(SYSTEMS[system])})")
        try:
            config = KINDS[kind].config_model.model_validate(
                {k: v for k, v in settings.items() if k != "kind"}
            )
        except ValidationError as exc:
            errors = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ToolMapError(f"{system} ({kind}): {errors}") from None
        out[system] = {"kind": kind, **config.model_dump(mode="json")}
    return out


def shown(tool_map: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A tool map as an API may show it: credentials replaced by whether they are set."""
    return {
        system: {
            k: (bool(v) if any(w in k.lower() for w in SECRET_WORDS) else v)
            for k, v in settings.items()
            if k not in ("ca_pem",)
        }
        for system, settings in tool_map.items()
    }


def connector_for(
    tool_map: dict[str, dict[str, Any]], system: str, *, secret: bytes, **extra: Any
) -> Connector:
    settings = tool_map.get(system)
    if settings is None and system == "psa":
        settings = {"kind": "psa_bus"}  # notes go through the platform's own PSA writers
    if settings is None:
        raise StepFailed("not_configured", f"this tenant's tool map names no connector for {system}")
    cls = KINDS[settings["kind"]]
    config: ConnectorConfig = cls.config_model.model_validate(
        {k: v for k, v in settings.items() if k != "kind"}
    )
    if cls is Twilio:
        return Twilio(config, secret=secret, phone_of=extra.get("phone_of"))
    return cls(config, secret=secret)


def system_of(action_name: str, action_system: str) -> str:
    return ROUTE.get(action_name, action_system)


__all__ = [
    "KINDS",
    "SYSTEMS",
    "Connector",
    "StepFailed",
    "ToolMapError",
    "connector_for",
    "shown",
    "system_of",
    "validate_tool_map",
]
