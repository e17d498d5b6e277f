"""Settings of the audit service."""

from pydantic import Field, SecretStr, model_validator

from libs.common.settings import ServiceSettings, dev_secret


class AuditSettings(ServiceSettings):
    service_name: str = "audit"
    http_port: int = 8085
    # Signs the chain heads anchored on audit.checkpoints.v1; kept away from the audit database
    # (required in prod; locally a random one in var/secrets/audit-anchor-key).
    audit_anchor_key: SecretStr | None = None
    audit_checkpoint_every_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _anchor_key_in_prod(self) -> "AuditSettings":
        if self.environment == "prod" and self.audit_anchor_key is None:
            raise ValueError("MSP_AUDIT_ANCHOR_KEY must be set in prod: it signs the anchored audit heads")
        return self

    def effective_anchor_key(self) -> bytes:
        if self.audit_anchor_key:
            return self.audit_anchor_key.get_secret_value().encode()
        if self.environment == "prod":
            raise ValueError("MSP_AUDIT_ANCHOR_KEY must be set in prod")
        return dev_secret(self.var_dir, "audit-anchor-key").encode()
