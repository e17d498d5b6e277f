"""Microsoft Graph v1.0 (Entra ID users, sessions, authentication methods, licences, mailbox
settings, Teams messages) over HTTPS with the tenant's app token.

The token comes from the tenant's app registration (client credentials against
`token_url`), or is given as `token` (tests, short-lived use). Throttling (429, 503) is
retried after the Retry-After the answer names (at most `max_retry_after_s`, three times),
then reported as `throttled`.

Graph has no operation for unlocking an account (Entra lockouts clear themselves) or for
mailbox permissions such as FullAccess and SendAs (Exchange Online's own PowerShell holds
them): those steps fail as `unsupported`, saying so, rather than pretending.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from libs.common.jsontypes import Float
from services.automation.catalogue import Action, Params
from services.automation.connectors.base import (
    BearerToken,
    Connector,
    ConnectorConfig,
    StepFailed,
    temporary_password,
)


class GraphConfig(ConnectorConfig):
    base_url: str = "https://graph.microsoft.com/v1.0"
    token: str | None = None
    token_url: str | None = None  # https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token
    client_id: str | None = None
    client_secret: str | None = None
    team_id: str | None = None  # the team whose channels "#name" messages go to
    skus: dict[str, str] = {}  # licence part number -> skuId, when known ahead
    timeout_s: Float = 10.0
    max_retry_after_s: Float = 30.0


class MicrosoftGraph(Connector):
    kind: ClassVar[str] = "microsoft_graph"
    config_model: ClassVar[type[ConnectorConfig]] = GraphConfig
    actions: ClassVar[frozenset[str]] = frozenset(
        {
            "identity.reset_password",
            "identity.unlock_account",
            "identity.disable_account",
            "identity.enable_account",
            "identity.revoke_sessions",
            "identity.require_mfa_reregistration",
            "identity.add_to_group",
            "identity.remove_from_group",
            "m365.assign_license",
            "m365.set_auto_reply",
            "m365.grant_mailbox_access",
            "teams.send_message",
        }
    )
    unsupported: ClassVar[frozenset[str]] = frozenset({"identity.unlock_account"})
    config: GraphConfig

    def __init__(self, config: ConnectorConfig, *, secret: bytes) -> None:
        super().__init__(config, secret=secret)
        self.http = httpx.Client(base_url=self.config.base_url.rstrip("/"), timeout=self.config.timeout_s)
        self.token = BearerToken(
            self._grant, peer="Microsoft Graph", refused="the app registration was refused a token"
        )

    def close(self) -> None:
        self.http.close()

    def _bearer(self) -> str:
        c = self.config
        if c.token:
            return c.token
        if not (c.token_url and c.client_id and c.client_secret):
            raise StepFailed("not_configured", "the Graph connector needs a token or an app registration")
        return self.token.get()

    def _grant(self) -> httpx.Response:
        c = self.config
        assert c.token_url is not None
        return httpx.post(
            c.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "scope": "https://graph.microsoft.com/.default",
            },
            timeout=c.timeout_s,
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        found: bool = True,
    ) -> Any:
        """The answer's JSON (None for 204); a 404 is `not_found` unless `found` is False,
        when it is None (the thing is already gone)."""
        for attempt in range(4):
            try:
                r = self.http.request(
                    method,
                    path,
                    json=json,
                    params=params,
                    headers={"Authorization": f"Bearer {self._bearer()}"},
                )
            except httpx.HTTPError as exc:
                raise StepFailed("unavailable", f"cannot reach Microsoft Graph: {exc}") from None
            if r.status_code in (429, 503) and attempt < 3:
                wait = _retry_after(r.headers.get("Retry-After"), attempt)
                if wait > self.config.max_retry_after_s:
                    raise StepFailed("throttled", f"Graph asked to wait {wait:.0f} s; more than allowed")
                time.sleep(wait)
                continue
            break
        if r.status_code == 404 and not found:
            return None
        if r.status_code >= 400:
            raise _failure(r, method, path)
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    def check(self, action: Action, params: Params, param: str) -> bool | None:
        value = str(getattr(params, param, "") or "")
        if param in ("user", "mailbox"):
            self._user_id(value)
            return True
        if param == "group":
            self._group_id(value)
            return True
        return None

    def _user_path(self, user: str) -> str:
        return f"/users/{quote(user, safe='@.')}"

    def _user_id(self, user: str) -> str:
        doc = self._call("GET", self._user_path(user), params={"$select": "id,userPrincipalName"})
        return str(doc["id"])

    def _group_id(self, group: str) -> str:
        escaped = group.replace("'", "''")
        doc = self._call("GET", "/groups", params={"$filter": f"displayName eq '{escaped}'", "$select": "id"})
        values = doc.get("value", [])
        if not values:
            raise StepFailed("not_found", f"no group named {group!r}")
        return str(values[0]["id"])

    # --- identity ----------------------------------------------------------------------------

    def reset_password(self, p: Any, *, key: str) -> dict[str, Any]:
        self._call(
            "PATCH",
            self._user_path(p.user),
            json={
                "passwordProfile": {
                    "password": temporary_password(self.secret, key),
                    "forceChangePasswordNextSignIn": bool(p.must_change_at_next_logon),
                }
            },
        )
        return {
            "user": p.user,
            "temporary_password_issued": True,
            "must_change_at_next_logon": p.must_change_at_next_logon,
        }

    def unlock_account(self, p: Any, *, key: str) -> dict[str, Any]:
        raise StepFailed(
            "unsupported",
            "Entra ID has no unlock operation (smart lockout clears itself); reset the password or wait",
        )

    def disable_account(self, p: Any, *, key: str) -> dict[str, Any]:
        self._call("PATCH", self._user_path(p.user), json={"accountEnabled": False})
        return {"user": p.user, "enabled": False}

    def enable_account(self, p: Any, *, key: str) -> dict[str, Any]:
        self._call("PATCH", self._user_path(p.user), json={"accountEnabled": True})
        return {"user": p.user, "enabled": True}

    def revoke_sessions(self, p: Any, *, key: str) -> dict[str, Any]:
        self._call("POST", f"{self._user_path(p.user)}/revokeSignInSessions")
        return {"user": p.user, "revoked": True}

    def require_mfa_reregistration(self, p: Any, *, key: str) -> dict[str, Any]:
        base = f"{self._user_path(p.user)}/authentication"
        methods = (self._call("GET", f"{base}/methods") or {}).get("value", [])
        removed = []
        for m in methods:
            kind = str(m.get("@odata.type", ""))
            segment = {
                "#microsoft.graph.phoneAuthenticationMethod": "phoneMethods",
                "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod": (
                    "microsoftAuthenticatorMethods"
                ),
            }.get(kind)
            if segment:
                self._call("DELETE", f"{base}/{segment}/{quote(str(m['id']))}", found=False)
                removed.append(segment)
        return {"user": p.user, "removed_methods": removed}

    def add_to_group(self, p: Any, *, key: str) -> dict[str, Any]:
        group, user = self._group_id(p.group), self._user_id(p.user)
        try:
            self._call(
                "POST",
                f"/groups/{group}/members/$ref",
                json={"@odata.id": f"{self.config.base_url.rstrip('/')}/directoryObjects/{user}"},
            )
        except StepFailed as exc:
            if "already exist" not in exc.message:
                raise
            return {"user": p.user, "group": p.group, "changed": False}
        return {"user": p.user, "group": p.group, "changed": True}

    def remove_from_group(self, p: Any, *, key: str) -> dict[str, Any]:
        group, user = self._group_id(p.group), self._user_id(p.user)
        gone = self._call("DELETE", f"/groups/{group}/members/{user}/$ref", found=False)
        return {"user": p.user, "group": p.group, "changed": gone is None}

    # --- Microsoft 365 -------------------------------------------------------------------------

    def _sku_id(self, part_number: str) -> str:
        if part_number in self.config.skus:
            return self.config.skus[part_number]
        for sku in (self._call("GET", "/subscribedSkus") or {}).get("value", []):
            if str(sku.get("skuPartNumber", "")).upper() == part_number.upper():
                return str(sku["skuId"])
        raise StepFailed("not_found", f"the tenant has no subscription for licence {part_number}")

    def assign_license(self, p: Any, *, key: str) -> dict[str, Any]:
        sku = self._sku_id(p.sku)
        self._call(
            "POST",
            f"{self._user_path(p.user)}/assignLicense",
            json={"addLicenses": [{"skuId": sku, "disabledPlans": []}], "removeLicenses": []},
        )
        return {"user": p.user, "sku": p.sku, "sku_id": sku}

    def set_auto_reply(self, p: Any, *, key: str) -> dict[str, Any]:
        self._call(
            "PATCH",
            f"{self._user_path(p.user)}/mailboxSettings",
            json={
                "automaticRepliesSetting": {
                    "status": "alwaysEnabled",
                    "internalReplyMessage": p.message,
                    "externalReplyMessage": p.message,
                    "externalAudience": "all",
                }
            },
        )
        return {"user": p.user, "auto_reply": "alwaysEnabled"}

    def grant_mailbox_access(self, p: Any, *, key: str) -> dict[str, Any]:
        raise StepFailed(
            "unsupported",
            f"Microsoft Graph has no operation for the mailbox permission {p.rights}; Exchange Online "
            "PowerShell (Add-MailboxPermission / Add-RecipientPermission) sets it",
        )

    # --- Teams ---------------------------------------------------------------------------------

    def send_message(self, p: Any, *, key: str) -> dict[str, Any]:
        body = {"body": {"contentType": "text", "content": p.text}}
        if p.to.startswith("#"):
            if not self.config.team_id:
                raise StepFailed("not_configured", "no team is configured for channel messages")
            name = p.to[1:].replace("'", "''")
            found = (
                self._call(
                    "GET",
                    f"/teams/{self.config.team_id}/channels",
                    params={"$filter": f"displayName eq '{name}'"},
                )
                or {}
            )
            channels = found.get("value", [])
            if not channels:
                raise StepFailed("not_found", f"no channel {p.to} in the team")
            sent = self._call(
                "POST", f"/teams/{self.config.team_id}/channels/{channels[0]['id']}/messages", json=body
            )
            return {"to": p.to, "message_id": (sent or {}).get("id")}
        user = self._user_id(p.to)
        chat = self._call(
            "POST",
            "/chats",
            json={
                "chatType": "oneOnOne",
                "members": [
                    {
                        "@odata.type": "#microsoft.graph.aadUserConversationMember",
                        "roles": ["owner"],
                        "user@odata.bind": f"{self.config.base_url.rstrip('/')}/users('{user}')",
                    },
                ],
            },
        )
        sent = self._call("POST", f"/chats/{chat['id']}/messages", json=body)
        return {"to": p.to, "message_id": (sent or {}).get("id")}

    # Every change here but a message sets a fixed state (a PATCH, a membership, a licence),
    # so a step that may have run is simply run again.
    repeatable: ClassVar[frozenset[str]] = actions - {"teams.send_message"}

    def phone_of(self, user: str) -> str:
        doc = self._call("GET", self._user_path(user), params={"$select": "mobilePhone"})
        phone = (doc or {}).get("mobilePhone")
        if not phone:
            raise StepFailed("not_found", f"{user} has no mobile number in Entra ID")
        return str(phone)


def _retry_after(value: str | None, attempt: int) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 0.5 * (2**attempt)
    except ValueError:
        return 0.5 * (2**attempt)


def _failure(r: httpx.Response, method: str, path: str) -> StepFailed:
    try:
        error = r.json().get("error", {})
        message = f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    except ValueError:
        message = r.text[:200]
    what = f"{method} {path.split('?')[0]} -> {r.status_code} {message}"
    if r.status_code == 401:
        return StepFailed("auth", f"Graph refused the token: {what}")
    if r.status_code == 403:
        return StepFailed("permission", f"the app lacks a permission: {what}")
    if r.status_code == 404:
        return StepFailed("not_found", what)
    if r.status_code in (429, 503):
        return StepFailed("throttled", what)
    if r.status_code >= 500:
        return StepFailed("unavailable", what)
    if "already exist" in message:
        return StepFailed("invalid_input", f"already exists: {what}")
    return StepFailed("invalid_input", what)
