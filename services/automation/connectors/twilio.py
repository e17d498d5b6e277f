"""Twilio: SMS through the Messages API (2010-04-01), and MFA challenges by SMS or voice call
through Verify v2, with the official `twilio` client and the tenant's account. The user's
mobile number comes from the tenant's directory (the identity connector), never from the
instruction.

A challenge is two-phase: the step starts a verification and waits for the code the person
reads out to the engineer (`POST /v1/runs/{id}/code`); the check then asks Verify whether the
code is right.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from libs.common.jsontypes import Float
from services.automation.catalogue import Action, Params
from services.automation.connectors.base import Connector, ConnectorConfig, PhoneLookup, StepFailed


class TwilioConfig(ConnectorConfig):
    account_sid: str
    auth_token: str
    from_number: str | None = None  # a Twilio number, or use messaging_service_sid
    messaging_service_sid: str | None = None
    verify_service_sid: str | None = None
    api_base_url: str | None = None  # the Messages API's base, when not Twilio's own
    verify_base_url: str | None = None
    timeout_s: Float = 10.0


class NeedsCode(Exception):
    """A challenge was sent; the step continues when the engineer enters the code."""

    def __init__(self, response: dict[str, Any]) -> None:
        super().__init__("waiting for the verification code")
        self.response = response


class Twilio(Connector):
    kind: ClassVar[str] = "twilio"
    config_model: ClassVar[type[ConnectorConfig]] = TwilioConfig
    actions: ClassVar[frozenset[str]] = frozenset({"notify.send_sms", "identity.verify_user_mfa"})
    config: TwilioConfig

    def __init__(
        self, config: ConnectorConfig, *, secret: bytes, phone_of: PhoneLookup | None = None
    ) -> None:
        super().__init__(config, secret=secret)
        c = self.config
        self.client = Client(c.account_sid, c.auth_token, http_client=TwilioHttpClient(timeout=c.timeout_s))
        if c.api_base_url:
            self.client.api.base_url = c.api_base_url.rstrip("/")
        if c.verify_base_url:
            self.client.verify.base_url = c.verify_base_url.rstrip("/")
        self._phone_of = phone_of

    def _phone(self, user: str) -> str:
        if self._phone_of is None:
            raise StepFailed(
                "not_configured", "no directory is configured to look up the user's mobile number"
            )
        phone = self._phone_of(user).replace(" ", "")
        if not re.fullmatch(r"\+[1-9]\d{6,14}", phone):
            raise StepFailed(
                "invalid_input", f"{user}'s mobile number {phone!r} is not in E.164 form (+15551234567)"
            )
        return phone

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except TwilioRestException as exc:
            if exc.status == 429:
                raise StepFailed("throttled", f"Twilio asked to slow down ({what})") from None
            if exc.status in (401, 403):
                raise StepFailed(
                    "auth" if exc.status == 401 else "permission", f"Twilio refused {what}: {exc.msg}"
                ) from None
            if exc.status == 404:
                raise StepFailed("not_found", f"{what}: {exc.msg}") from None
            if exc.status >= 500:
                raise StepFailed("unavailable", f"Twilio failed {what} ({exc.status})") from None
            raise StepFailed("invalid_input", f"Twilio refused {what} ({exc.status}): {exc.msg}") from None
        except TwilioException as exc:
            raise StepFailed("unavailable", f"cannot reach Twilio ({what}): {exc}") from None

    def send_sms(self, p: Any, *, key: str) -> dict[str, Any]:
        c = self.config
        to = self._phone(p.user)
        sender: dict[str, Any] = (
            {"messaging_service_sid": c.messaging_service_sid}
            if c.messaging_service_sid
            else {"from_": c.from_number}
        )
        message = self._call(
            "sending the SMS", self.client.api.v2010.account.messages.create, to=to, body=p.text, **sender
        )
        return {"user": p.user, "message_sid": message.sid, "status": message.status}

    def verify_user_mfa(self, p: Any, *, key: str) -> dict[str, Any]:
        if p.method == "push":
            raise StepFailed(
                "unsupported", "Twilio Verify challenges by SMS or call; a push needs the identity provider"
            )
        if not self.config.verify_service_sid:
            raise StepFailed("not_configured", "no Twilio Verify service is configured for this tenant")
        to = self._phone(p.user)
        service = self.client.verify.v2.services(self.config.verify_service_sid)
        started = self._call(
            "starting the verification", service.verifications.create, to=to, channel=p.method
        )
        raise NeedsCode(
            {"user": p.user, "channel": p.method, "verification_sid": started.sid, "status": started.status}
        )

    def check_code(self, p: Any, code: str) -> dict[str, Any]:
        if not self.config.verify_service_sid:
            raise StepFailed("not_configured", "no Twilio Verify service is configured for this tenant")
        to = self._phone(p.user)
        service = self.client.verify.v2.services(self.config.verify_service_sid)
        checked = self._call("checking the code", service.verification_checks.create, to=to, code=code)
        if checked.status != "approved":
            raise StepFailed("verification_failed", f"the code was not accepted (status {checked.status})")
        return {"user": p.user, "channel": p.method, "status": checked.status}

    def done(self, action: Action, params: Params, *, key: str) -> bool | None:
        """An SMS went out when Twilio lists a message to the user's number, sent today, with
        the same text."""
        if action.name != "notify.send_sms":
            return None
        p: Any = params
        from datetime import UTC, datetime, timedelta

        since = datetime.now(UTC) - timedelta(days=1)
        sent = self._call(
            "listing sent messages",
            self.client.api.v2010.account.messages.list,
            to=self._phone(p.user),
            date_sent_after=since,
            limit=50,
        )
        return any(m.body == p.text for m in sent)
