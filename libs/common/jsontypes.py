"""Field types for request bodies that take exactly what their JSON Schema says.

FastAPI validates a parsed body in pydantic's lax mode, which turns `true` into 1, `"12"` into
12, 0 into `false` and a number into a date. The OpenAPI document says "integer", "boolean",
"date-time": these types hold the API to it (a JSON integer is still a valid number), so a
client built from the document and the service agree on what is refused.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from types import UnionType
from typing import Annotated, Any, Self, Union, get_args, get_origin

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Strict,
    StringConstraints,
    model_validator,
)


def json_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


# A JSON integer (2.0 is one too, 2.5 is not); a JSON number (an integer is one); a JSON boolean.
Int = Annotated[int, BeforeValidator(json_number)]
Float = Annotated[float, BeforeValidator(json_number)]
Bool = Annotated[bool, Strict()]

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_CLOCK = re.compile(r"^\d{2}:\d{2}")


def _iso_timestamp(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and _DATE.match(value)):
        return value
    raise ValueError("must be a date-time in ISO 8601 form (2026-01-31T09:00:00Z)")


def _iso_clock(value: Any) -> Any:
    if isinstance(value, time) or (isinstance(value, str) and _CLOCK.match(value)):
        return value
    raise ValueError("must be a time of day in ISO 8601 form (07:30)")


# Dates as ISO 8601 text, never a number of seconds (also in query strings).
Timestamp = Annotated[datetime, BeforeValidator(_iso_timestamp)]
AwareTimestamp = Annotated[AwareDatetime, BeforeValidator(_iso_timestamp)]
ClockTime = Annotated[time, BeforeValidator(_iso_clock)]


# No NUL anywhere: PostgreSQL cannot store it, and an event that carries one would be taken in
# and then refused by every service that stores it.
NO_NUL = r"^[^\x00]*$"
# What `str.strip()` removes.
_BLANK = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# A relative path: segments that start with neither a blank, a dot nor a slash (so no "..",
# no absolute path, no hidden names).
_SEGMENT = rf"[^/.\x00{_BLANK}][^/\x00]*"
RELATIVE_PATH = rf"^{_SEGMENT}(/{_SEGMENT})*$"


# Free text that may be stored as it is: no NUL.
Text = Annotated[str, StringConstraints(pattern=NO_NUL)]


def text_schema(schema: dict[str, Any], cls: type) -> None:
    """`json_schema_extra` of a request body: its free text says it takes no NUL (as
    `RequestBody` checks). Request bodies take their text as sent (no stripping), so the
    lengths the schema states are the lengths checked."""
    _no_nul(schema.get("properties") or {})


def _no_nul(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "string" and not {"pattern", "format", "enum", "const"} & node.keys():
            node["pattern"] = NO_NUL
        for key, value in node.items():
            if key != "$defs":
                _no_nul(value)
    elif isinstance(node, list):
        for value in node:
            _no_nul(value)


def _text_only(annotation: Any) -> bool:
    """Whether a field holds nothing but text (str, optional, or lists and maps of it)."""
    if annotation is str:
        return True
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _text_only(args[0])
    if origin in (Union, UnionType):
        return all(a is type(None) or _text_only(a) for a in args)
    if origin in (list, tuple, set, frozenset):
        return bool(args) and all(a is Ellipsis or _text_only(a) for a in args)
    if origin is dict:
        return len(args) == 2 and _text_only(args[1])
    return False


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(v) for v in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_holds_nul(v) for v in value)
    return False


class RequestBody(BaseModel):
    """A request body: its text fields refuse a NUL character (no database column can store
    one, and an event carrying one would be refused by every service that stores it), and its
    schema says so."""

    model_config = ConfigDict(json_schema_extra=text_schema)

    @model_validator(mode="after")
    def _no_nul_in_text(self) -> Self:
        for name, field in type(self).model_fields.items():
            if _text_only(field.annotation) and _holds_nul(getattr(self, name)):
                raise ValueError(f"{name}: a NUL character is not accepted")
        return self
