"""Settings of the ingest service."""

from pydantic import Field

from libs.common.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    service_name: str = "ingest"
    http_port: int = 8081
    # How long a verified key is trusted before it is looked up again (revocation delay).
    key_cache_s: float = Field(default=5.0, ge=0, le=300)
