"""Settings of the triage service (environment variables `MSP_...`)."""

from pydantic import Field

from libs.common.settings import ServiceSettings
from services.triage.alerts.clusterer import ClusterConfig


class TriageSettings(ServiceSettings):
    service_name: str = "triage"
    http_port: int = 8082
    # Alert clustering (event time, seconds). The defaults suit RMM and NMS alert streams.
    cluster_join_gap_s: float = Field(default=7200.0, gt=0)
    cluster_recent_s: float = Field(default=3600.0, gt=0)
    cluster_join_share: float = Field(default=0.8, gt=0, le=1)
    cluster_site_window_s: float = Field(default=600.0, gt=0)
    cluster_resolve_hold_s: float = Field(default=300.0, ge=0)
    cluster_quiet_resolve_s: float = Field(default=86400.0, gt=0)
    correlation_window_s: float = Field(default=1800.0, gt=0)
    correlation_min_lift: float = Field(default=1.0, gt=0)
    correlation_min_support: int = Field(default=5, ge=1)
    # Off only where the embedding model cannot load: new-group detection (HDBSCAN over
    # template embeddings) stops, everything else keeps working.
    embeddings_enabled: bool = True

    def cluster_config(self) -> ClusterConfig:
        return ClusterConfig(
            join_gap_s=self.cluster_join_gap_s,
            recent_s=self.cluster_recent_s,
            join_share=self.cluster_join_share,
            site_window_s=self.cluster_site_window_s,
            resolve_hold_s=self.cluster_resolve_hold_s,
            quiet_resolve_s=self.cluster_quiet_resolve_s,
            correlation_window_s=self.correlation_window_s,
            min_lift=self.correlation_min_lift,
            min_support=self.correlation_min_support,
        )
