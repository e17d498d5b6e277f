"""Settings: one pydantic-settings base that every service extends.

Values come from the environment (prefix `MSP_`, plus the conventional `KAFKA_BOOTSTRAP_SERVERS`)
and refuse to start with a clear message when missing or unsafe.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from libs.common.crypto import SecretBox

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VAR_DIR = REPO_ROOT / "var"


class SettingsError(SystemExit):
    """Raised at start-up when settings are missing or unsafe.

    A `SystemExit` carrying the message: uncaught, the process prints it and exits with 1.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MSP_", extra="ignore", frozen=True)

    environment: Literal["dev", "test", "prod"] = "dev"
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "MSP_KAFKA_BOOTSTRAP_SERVERS"),
    )
    var_dir: Path = DEFAULT_VAR_DIR
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Prefix of every topic name on the broker, for environments sharing one cluster.
    topic_namespace: str = Field(default="", pattern=r"^([a-z0-9][a-z0-9_-]{0,40})?$")

    @model_validator(mode="after")
    def _bootstrap_is_set(self) -> PlatformSettings:
        if not self.kafka_bootstrap_servers.strip():
            raise ValueError("KAFKA_BOOTSTRAP_SERVERS is empty: name at least one broker host:port")
        return self


class ServiceSettings(PlatformSettings):
    """What every service process needs: its HTTP address, its database and its consumer group."""

    service_name: str = "service"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    # Several processes of one service may share the port (the kernel spreads connections).
    http_reuse_port: bool = False
    database_url: str = ""  # empty means the embedded SQLite file under var_dir
    consumer_group: str = ""  # empty means "msp-<service_name>"
    shutdown_grace_s: float = Field(default=10.0, gt=0)
    # Bring the service's tables to the newest revision at start-up; false where a deployment
    # migrates once (a Kubernetes Job, `msp migrate`) and replicas only check the revision.
    migrate_on_start: bool = True
    # Platform operators' token: the admin API and every read API that spans tenants.
    admin_token: SecretStr | None = None
    # Ingest keeps the tenants' keys: services that accept tenant keys on their read APIs ask it.
    ingest_url: str = "http://127.0.0.1:8081"
    # Encrypts tenant credentials at rest (a Fernet key); required in prod, locally a random one
    # kept in var/secrets/secrets-key.
    secrets_key: SecretStr | None = None
    # Claude, when a key is set; without one every judgement is made on the local path.
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "MSP_ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "MSP_ANTHROPIC_BASE_URL")
    )
    claude_model: str = "claude-sonnet-5-5"
    llm_timeout_s: float = Field(default=30.0, gt=0)
    llm_tenant_token_budget: int = Field(default=200_000, ge=0)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.var_dir / 'db' / (self.service_name + '.db')}"

    @property
    def effective_consumer_group(self) -> str:
        return self.consumer_group or f"msp-{self.service_name}"

    def effective_admin_token(self) -> str:
        """The configured token; for local runs a random one kept in var/secrets/admin-token,
        shared by all services started with the same var folder."""
        if self.admin_token:
            return self.admin_token.get_secret_value()
        return dev_secret(self.var_dir, "admin-token")

    def secret_box(self) -> SecretBox:
        from libs.common.crypto import SecretBox, new_key

        if self.secrets_key:
            return SecretBox(self.secrets_key.get_secret_value())
        return SecretBox(dev_secret(self.var_dir, "secrets-key", make=new_key))

    @model_validator(mode="after")
    def _safe_for_environment(self) -> ServiceSettings:
        if self.environment == "prod":
            if not self.database_url or self.database_url.startswith("sqlite"):
                raise ValueError(
                    "MSP_DATABASE_URL must name a PostgreSQL database in prod "
                    "(SQLite is the embedded default for local runs only)"
                )
            if self.admin_token is None or len(self.admin_token.get_secret_value()) < 32:
                raise ValueError("MSP_ADMIN_TOKEN must be set to at least 32 characters in prod")
            if self.http_host not in ("127.0.0.1", "::1", "localhost") and self.log_level == "DEBUG":
                raise ValueError("MSP_LOG_LEVEL=DEBUG on a public interface would log payloads")
            if self.secrets_key is None:
                raise ValueError(
                    "MSP_SECRETS_KEY (a Fernet key) must be set in prod: credentials are stored encrypted"
                )
        return self


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: object) -> S:
    """Build settings, turning validation errors into one readable start-up message."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [f"invalid settings for {cls.__name__}:"]
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(settings)"
            env = f"MSP_{loc.upper()}" if err["loc"] else ""
            lines.append(f"  - {loc}{f' ({env})' if env else ''}: {err['msg']}")
        raise SettingsError("\n".join(lines)) from None


def dev_secret(var_dir: Path, name: str, make: Callable[[], str] | None = None) -> str:
    """A random secret kept in `var/secrets/NAME` (mode 0600), for local runs only: production
    settings refuse to start without the real value."""
    path = var_dir / "secrets" / name
    if path.exists():
        return path.read_text().strip()
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    value = make() if make is not None else secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value
