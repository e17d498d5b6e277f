"""Settings of the triage service (environment variables `MSP_...`)."""

from pathlib import Path

from pydantic import Field

from libs.common.events import RolloutMode
from libs.common.settings import ServiceSettings
from services.triage.alerts.clusterer import ClusterConfig
from services.triage.tickets.triager import TriageConfig


class TriageSettings(ServiceSettings):
    service_name: str = "triage"
    http_port: int = 8082
    # Alert clustering (event time, seconds). The defaults suit RMM and NMS alert streams; each
    # is declared once, in the logic's own config (ClusterConfig, TriageConfig).
    cluster_join_gap_s: float = Field(default=ClusterConfig.join_gap_s, gt=0)
    cluster_recent_s: float = Field(default=ClusterConfig.recent_s, gt=0)
    cluster_join_share: float = Field(default=ClusterConfig.join_share, gt=0, le=1)
    cluster_site_window_s: float = Field(default=ClusterConfig.site_window_s, gt=0)
    cluster_resolve_hold_s: float = Field(default=ClusterConfig.resolve_hold_s, ge=0)
    cluster_quiet_resolve_s: float = Field(default=ClusterConfig.quiet_resolve_s, gt=0)
    correlation_window_s: float = Field(default=ClusterConfig.correlation_window_s, gt=0)
    correlation_min_lift: float = Field(default=ClusterConfig.min_lift, gt=0)
    correlation_min_support: int = Field(default=ClusterConfig.min_support, ge=1)
    # Off only where the embedding model cannot load: new-group detection (HDBSCAN over
    # template embeddings) stops and tickets are only counted, not triaged.
    embeddings_enabled: bool = True
    # Ticket triage (off: ticket events are only counted, for workers that cluster alerts only).
    tickets_enabled: bool = True
    tickets_min_history: int = Field(
        default=TriageConfig.min_history, ge=2
    )  # labelled cases before a tenant model
    tickets_abstain_below: float = Field(default=TriageConfig.abstain_below, ge=0, le=1)
    tickets_default_mode: RolloutMode = TriageConfig.default_mode
    tickets_auto_threshold: float = Field(default=TriageConfig.auto_threshold, ge=0, le=1)
    # A labelled CSV the operator marks as global material for the global model (tenants with
    # little history); the shipped intent catalogue's examples are always part of it.
    tickets_global_corpus: Path | None = None
    tickets_global_text_col: str = "text"
    tickets_global_label_col: str = "category"

    def triage_config(self) -> TriageConfig:
        return TriageConfig(
            min_history=self.tickets_min_history,
            abstain_below=self.tickets_abstain_below,
            default_mode=self.tickets_default_mode,
            auto_threshold=self.tickets_auto_threshold,
        )

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
