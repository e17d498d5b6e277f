"""Secrets at rest: tenant credentials (PSA targets, and the automation connectors' next) are
stored encrypted with a key from settings (Fernet: AES-128-CBC with HMAC-SHA256), never in
plain text, and never returned by an API or written to a log."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken


class SecretBoxError(ValueError):
    pass


class SecretBox:
    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode())
        except (ValueError, TypeError):
            raise SecretBoxError(
                "MSP_SECRETS_KEY must be a Fernet key (32 bytes, url-safe base64; make one with "
                "`python -c 'from cryptography.fernet import Fernet as F; print(F.generate_key().decode())'`)"
            ) from None

    def seal(self, value: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode()).decode()

    def open(self, token: str) -> dict[str, Any]:
        try:
            return dict(json.loads(self._fernet.decrypt(token.encode())))
        except InvalidToken:
            raise SecretBoxError(
                "stored credentials cannot be decrypted with this MSP_SECRETS_KEY (another key, or altered)"
            ) from None


def new_key() -> str:
    return Fernet.generate_key().decode()
