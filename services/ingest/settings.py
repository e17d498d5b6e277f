"""Settings of the ingest service."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from libs.common.settings import ServiceSettings, dev_secret


class IngestSettings(ServiceSettings):
    service_name: str = "ingest"
    http_port: int = 8081
    # How long a verified key is trusted before it is looked up again (revocation delay).
    key_cache_s: float = Field(default=5.0, ge=0, le=300)
    # Server secret from which the HMAC signing secrets of keys are derived.
    signing_pepper: SecretStr | None = None
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    max_events_per_request: int = Field(default=10000, ge=1)
    # Per tenant and per ingest process: sustained events/s and the burst above it.
    rate_limit_eps: float = Field(default=5000.0, gt=0)
    rate_limit_burst: int = Field(default=20000, ge=1)
    publish_timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _secrets_in_prod(self) -> IngestSettings:
        if self.environment == "prod":
            if self.signing_pepper is None or len(self.signing_pepper.get_secret_value()) < 32:
                raise ValueError("MSP_SIGNING_PEPPER must be set to at least 32 characters in prod")
        return self

    def effective_signing_pepper(self) -> str:
        if self.signing_pepper:
            return self.signing_pepper.get_secret_value()
        return dev_secret(self.var_dir, "signing-pepper")
