"""Settings of the packet service (environment variables `MSP_...`)."""

from pydantic import Field

from libs.common.settings import ServiceSettings


class PacketSettings(ServiceSettings):
    service_name: str = "packet"
    http_port: int = 8083
    # Where engineers reach this service's packet pages (linked from the PSA note); unset: no link.
    page_base_url: str | None = None
    psa_timeout_s: float = Field(default=10.0, gt=0)
    psa_retry_base_s: float = Field(default=1.0, gt=0)  # doubles per attempt...
    psa_retry_max_s: float = Field(default=60.0, gt=0)  # ...up to this
    psa_max_attempts: int = Field(default=10, ge=1)
