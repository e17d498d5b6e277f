"""What a connector is: deterministic code that carries out catalogue actions against one kind
of system, with the tenant's own credentials.

A connector never decides what to do; it is given a validated action and its parameters. It
answers with a small JSON-able response (never a credential), or raises `StepFailed` with an
error class the executor, the audit and the failure analysis understand. `done` tells, after a
crash, whether a step that may have run already took effect, by asking the peer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from services.automation.catalogue import Action, Params

ErrorClass = Literal[
    "not_found",  # the user, group, device or policy does not exist there
    "weak_password",  # the directory's password policy refused the password
    "must_change",  # the account must change its password before this works
    "locked",  # the account is locked
    "disabled",  # the account is disabled
    "permission",  # the connector's credential may not do this
    "auth",  # the connector's credential was refused
    "throttled",  # the peer asked to slow down (after the retries it allowed)
    "unavailable",  # the peer could not be reached, or failed
    "invalid_input",  # the peer refused the request as malformed
    "unsupported",  # this kind of system has no such operation
    "verification_failed",  # the person did not confirm the challenge
    "policy",  # the tenant policy refused the step at run time
    "not_configured",  # the tenant's tool map names no connector for this system
    "uncertain",  # it may have run before a crash and the peer cannot tell: check by hand
]


class StepFailed(Exception):
    def __init__(
        self, error_class: ErrorClass, message: str, *, response: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.response = response or {}


class ConnectorConfig(BaseModel):
    """A connector's settings in a tenant's tool map; fields named *password*, *secret*,
    *token* or *key* are credentials (kept sealed, never shown)."""

    model_config = ConfigDict(extra="forbid")


# Looks a user's mobile number up in the tenant's directory (for SMS and MFA challenges).
PhoneLookup = Callable[[str], str]


class Connector:
    kind: ClassVar[str]
    config_model: ClassVar[type[ConnectorConfig]]
    actions: ClassVar[frozenset[str]]
    # Actions it accepts only to say why this kind of system cannot do them (`unsupported`).
    unsupported: ClassVar[frozenset[str]] = frozenset()
    # Actions whose effect is a fixed state, safe to run again when unsure whether they ran.
    repeatable: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: ConnectorConfig, *, secret: bytes) -> None:
        self.config = config
        self.secret = secret

    def run(self, action: Action, params: Params, *, key: str, dry_run: bool = False) -> dict[str, Any]:
        if action.name not in self.actions:
            raise StepFailed("unsupported", f"{self.kind} cannot run {action.name}")
        method = getattr(self, action.name.split(".", 1)[1])
        if dry_run:
            return {"dry_run": True, **self.preview(action, params)}
        result: dict[str, Any] = method(params, key=key)
        return result

    def preview(self, action: Action, params: Params) -> dict[str, Any]:
        """What a dry run says it would do; connectors may add what they check first."""
        return {"would": action.name, "params": params.model_dump(mode="json")}

    def done(self, action: Action, params: Params, *, key: str) -> bool | None:
        """Whether the step's effect is already in place on the peer (None: cannot tell)."""
        return None

    def check(self, action: Action, params: Params, param: str) -> bool | None:
        """Whether the step's target (the value of `param`) exists on the peer: True, or
        StepFailed("not_found"); None when this system cannot tell (the step then runs)."""
        return None

    def phone_of(self, user: str) -> str:
        raise StepFailed("unsupported", f"{self.kind} keeps no phone numbers")

    def close(self) -> None:
        return None


def temporary_password(secret: bytes, key: str) -> str:
    """The temporary password a step sets: derived from the step's idempotency key, so the
    same step always sets the same one (a retry after a crash changes nothing, and the
    engineer can be shown it without it being stored or sent anywhere)."""
    digest = hmac.new(secret, f"temporary password\n{key}".encode(), hashlib.sha256).digest()
    body = base64.b32encode(digest[:10]).decode().rstrip("=")
    return f"Tmp-{body[:4].lower()}{body[4:8]}-{int.from_bytes(digest[10:12], 'big') % 90 + 10}!"


class BearerToken:
    """An OAuth access token, kept until a minute before it expires. `fetch` asks the peer for
    one (the grant differs per system); a peer out of reach is `unavailable`, a refusal is
    `auth` with the `refused` sentence and the status."""

    def __init__(self, fetch: Callable[[], httpx.Response], *, peer: str, refused: str) -> None:
        self.fetch = fetch
        self.peer = peer
        self.refused = refused
        self._token: tuple[str, float] | None = None

    def get(self) -> str:
        if self._token and self._token[1] > time.time() + 60:
            return self._token[0]
        try:
            r = self.fetch()
        except httpx.HTTPError as exc:
            raise StepFailed("unavailable", f"cannot reach {self.peer}: {exc}") from None
        if r.status_code != 200:
            raise StepFailed("auth", f"{self.refused} ({r.status_code})")
        doc = r.json()
        self._token = (doc["access_token"], time.time() + float(doc.get("expires_in", 3600)))
        return self._token[0]


def call_json(http: httpx.Client, token: BearerToken, method: str, path: str, **kwargs: Any) -> Any:
    """One authenticated call to a REST peer; its JSON answer (None when empty). A refusal is a
    `StepFailed` classed by the status (401 auth, 403 permission, 404 not_found, 429 throttled,
    5xx unavailable, other 4xx invalid_input)."""
    try:
        r = http.request(method, path, headers={"Authorization": f"Bearer {token.get()}"}, **kwargs)
    except httpx.HTTPError as exc:
        raise StepFailed("unavailable", f"cannot reach {token.peer}: {exc}") from None
    if r.status_code >= 400:
        what = f"{method} {path} -> {r.status_code} {r.text[:200]}"
        cls = {401: "auth", 403: "permission", 404: "not_found", 429: "throttled"}.get(
            r.status_code, "unavailable" if r.status_code >= 500 else "invalid_input"
        )
        raise StepFailed(cls, what)  # type: ignore[arg-type]
    return r.json() if r.content else None
