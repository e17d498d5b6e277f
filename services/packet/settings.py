"""Settings of the packet service (environment variables `MSP_...`)."""

from pydantic import Field

from libs.common.settings import ServiceSettings
from services.packet.engine import PacketTunables


class PacketSettings(ServiceSettings):
    service_name: str = "packet"
    http_port: int = 8083
    # Where engineers reach this service (packet pages linked from PSA notes, runbook pages and
    # the packet page's ticket and notes cited as sources); unset: this process's own address.
    page_base_url: str | None = None
    # Where engineers reach the triage service (signals cited as sources).
    triage_url: str = "http://127.0.0.1:8082"
    # Sentence-model cosine above which a note sentence answers a runbook check.
    check_match_threshold: float = Field(default=PacketTunables.check_match_threshold, ge=0.0, le=1.0)
    # Customer reports: the resolve-after-escalation target whose attainment they state.
    report_resolve_target_h: float = Field(default=8.0, gt=0)

    @property
    def effective_page_base_url(self) -> str:
        if self.page_base_url:
            return self.page_base_url.rstrip("/")
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::", "") else self.http_host
        return f"http://{host}:{self.http_port}"

    psa_timeout_s: float = Field(default=PacketTunables.psa_timeout_s, gt=0)
    psa_retry_base_s: float = Field(default=PacketTunables.retry_base_s, gt=0)  # doubles per attempt...
    psa_retry_max_s: float = Field(default=PacketTunables.retry_max_s, gt=0)  # ...up to this
    psa_max_attempts: int = Field(default=PacketTunables.max_attempts, ge=1)
    # Tickets whose PSA writes are in flight at once (a ticket's own writes stay in order).
    psa_concurrency: int = Field(default=PacketTunables.psa_concurrency, ge=1, le=256)
    # How long a poster holds a due write; a poster that died leaves it due again after this.
    psa_lease_s: float = Field(default=PacketTunables.lease_s, gt=0)
    psa_due_batch: int = Field(default=PacketTunables.due_batch, ge=1, le=10_000)
    # Tenants whose events are handled at once (each tenant's in order): building a version
    # mostly waits on the database, so one process serves many tenants side by side.
    consumer_lanes: int = Field(default=8, ge=1, le=64)
    # Alerts joining an open signal re-version a ticket's packet at most this often.
    signal_update_every_s: float = Field(default=PacketTunables.signal_update_every_s, ge=0)
