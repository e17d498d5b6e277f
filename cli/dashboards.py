"""The Grafana dashboards, as code: `msp dashboards` writes them to deploy/grafana/dashboards/.

Three dashboards (Grafana 11 JSON, schema 39), all on a Prometheus data source chosen by a
variable: the SLA overview of one tenant, the pilot view (a tenant in shadow or suggest, its
figures now beside the same figures before the pilot), and the platform's health. Every query
reads a recording rule of deploy/prometheus/rules.yml or a metric the services export; the
integration test against a real Prometheus checks that each one returns data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libs.common.settings import REPO_ROOT

OUT_DIR = REPO_ROOT / "deploy" / "grafana" / "dashboards"
SCHEMA_VERSION = 39  # Grafana 11
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    description: str = ""
    width: int = 12


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        panels, x, y = [], 0, 0
        for i, p in enumerate(self.panels, start=1):
            height = 5 if p.kind == "stat" else 8
            if x + p.width > 24:
                x, y = 0, y + height
            panels.append(
                {
                    "id": i,
                    "type": p.kind,
                    "title": p.title,
                    "description": p.description,
                    "datasource": DATASOURCE,
                    "gridPos": {"h": height, "w": p.width, "x": x, "y": y},
                    "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
                    "options": {"reduceOptions": {"calcs": ["lastNotNull"]}} if p.kind == "stat" else {},
                    "targets": [
                        {
                            "refId": chr(ord("A") + j),
                            "datasource": DATASOURCE,
                            "expr": q.expr,
                            "legendFormat": q.legend,
                        }
                        for j, q in enumerate(p.queries)
                    ],
                }
            )
            x += p.width
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["msp"],
            "schemaVersion": SCHEMA_VERSION,
            "editable": False,
            "time": {"from": "now-7d", "to": "now"},
            "refresh": "1m",
            "templating": {"list": [_DATASOURCE_VAR, *self.variables]},
            "panels": panels,
        }


_DATASOURCE_VAR = {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}


def _tenant_var(metric: str) -> dict[str, Any]:
    return {
        "name": "tenant",
        "label": "Tenant",
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": f"label_values({metric}, tenant)", "refId": "tenant"},
        "definition": f"label_values({metric}, tenant)",
        "refresh": 2,
        "sort": 1,
    }


_BEFORE_VAR = {
    "name": "before",
    "label": "Compare with",
    "type": "custom",
    "query": "7d,14d,28d",
    "current": {"text": "28d", "value": "28d"},
    "options": [{"text": v, "value": v, "selected": v == "28d"} for v in ("7d", "14d", "28d")],
}
T = '{tenant="$tenant"}'


def sla_overview() -> Dashboard:
    return Dashboard(
        uid="msp-sla",
        title="MSP platform: SLA overview",
        description="One tenant's service-delivery figures, from the ticket lifecycle the platform sees.",
        variables=(_tenant_var("msp_sla_alerts_total"),),
        panels=(
            Panel(
                "Time to classify (p95, ingest to decision)",
                (
                    Query(
                        'tenant_kind:msp_sla_time_to_classify_seconds:p95_5m{tenant="$tenant",kind="alert"}',
                        "alerts",
                    ),
                    Query(
                        'tenant_kind:msp_sla_time_to_classify_seconds:p95_5m{tenant="$tenant",kind="ticket"}',
                        "tickets",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Alert noise reduction (1 - signals / alerts, last hour)",
                (Query(f"tenant:msp_sla_noise_reduction:ratio_1h{T}", "reduction"),),
                unit="percentunit",
            ),
            Panel(
                "Mean time to escalate (last day)",
                (Query(f"tenant:msp_sla_time_to_escalate_seconds:mean_1d{T}", "to escalate"),),
                unit="s",
            ),
            Panel(
                "Mean time to resolve after escalation (last day), with and without a packet",
                (
                    Query(
                        f"tenant_packet:msp_sla_time_to_resolve_after_escalation_seconds:mean_1d{T}",
                        "packet: {{packet}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Reopen rate (last 7 days)",
                (Query(f"tenant:msp_sla_reopen_rate:ratio_7d{T}", "reopens per resolution"),),
                unit="percentunit",
                kind="stat",
                width=6,
            ),
            Panel(
                "Repeat questions to the customer per ticket (last 7 days)",
                (Query(f"tenant:msp_sla_repeat_questions_per_ticket:ratio_7d{T}", "per ticket"),),
                kind="stat",
                width=6,
            ),
            Panel(
                "Customer-report turnaround (draft to approval, last 30 days)",
                (Query(f"tenant:msp_sla_report_turnaround_seconds:mean_30d{T}", "turnaround"),),
                unit="s",
                kind="stat",
                width=6,
            ),
            Panel(
                "Engineer time reviewing AI output (last day): the counter-metric",
                (Query(f"tenant:msp_sla_engineer_review_seconds:sum_1d{T}", "review time"),),
                unit="s",
                kind="stat",
                width=6,
            ),
            Panel(
                "Corrections of AI output (last day)",
                (Query(f"tenant_kind:msp_sla_engineer_corrections:increase_1d{T}", "{{kind}}"),),
            ),
            Panel(
                "Automation runs by outcome (last day)",
                (Query(f"tenant_outcome:msp_sla_automation_runs:increase_1d{T}", "{{outcome}}"),),
            ),
        ),
    )


def pilot_view() -> Dashboard:
    """A tenant piloting triage or packets in shadow or suggest: each figure now and as it was
    `$before` earlier (before the pilot began), side by side."""

    def now_and_before(expr: str, label: str) -> tuple[Query, Query]:
        return Query(expr, f"{label}: now"), Query(f"{expr} offset $before", f"{label}: $before before")

    return Dashboard(
        uid="msp-pilot",
        title="MSP platform: pilot view",
        description="One tenant in shadow or suggest: its figures now beside the same before the pilot.",
        variables=(_tenant_var("msp_sla_ticket_transitions_total"), _BEFORE_VAR),
        panels=(
            Panel(
                "Mean time to escalate",
                now_and_before(f"tenant:msp_sla_time_to_escalate_seconds:mean_1d{T}", "to escalate"),
                unit="s",
            ),
            Panel(
                "Mean time to resolve after escalation",
                now_and_before(
                    f"tenant_packet:msp_sla_time_to_resolve_after_escalation_seconds:mean_1d{T}",
                    "packet {{packet}}",
                ),
                unit="s",
            ),
            Panel(
                "Reopen rate",
                now_and_before(f"tenant:msp_sla_reopen_rate:ratio_7d{T}", "reopens"),
                unit="percentunit",
            ),
            Panel(
                "Time to classify tickets (p95)",
                now_and_before(
                    'tenant_kind:msp_sla_time_to_classify_seconds:p95_5m{tenant="$tenant",kind="ticket"}',
                    "p95",
                ),
                unit="s",
            ),
            Panel(
                "Engineer review time per day (the counter-metric)",
                now_and_before(f"tenant:msp_sla_engineer_review_seconds:sum_1d{T}", "review"),
                unit="s",
            ),
            Panel(
                "Corrections of AI output per day",
                now_and_before(f"tenant_kind:msp_sla_engineer_corrections:increase_1d{T}", "{{kind}}"),
            ),
        ),
    )


def platform_health() -> Dashboard:
    return Dashboard(
        uid="msp-health",
        title="MSP platform: health",
        description="Consumer lag, dead letters and HTTP per route, for every service.",
        panels=(
            Panel(
                "Consumer lag by group and topic",
                (Query("group_topic:msp_consumer_lag:sum", "{{group}} {{topic}}"),),
            ),
            Panel(
                "Dead letters (last 10 minutes)",
                (Query("service_topic:msp_deadlettered:increase_10m", "{{service}} {{topic}} {{reason}}"),),
            ),
            Panel(
                "HTTP requests per second by route",
                (Query("service_route:msp_http_requests:rate_5m", "{{service}} {{route}}"),),
                unit="reqps",
            ),
            Panel(
                "HTTP p99 latency by route",
                (Query("service_route:msp_http_request_seconds:p99_5m", "{{service}} {{route}}"),),
                unit="s",
            ),
            Panel(
                "HTTP 5xx share by route",
                (Query("service_route:msp_http_requests:error_ratio_5m", "{{service}} {{route}}"),),
                unit="percentunit",
            ),
            Panel(
                "Events handled per second",
                (
                    Query(
                        'sum by (service, topic) (rate(msp_events_consumed_total{outcome="ok"}[5m]))',
                        "{{service}} {{topic}}",
                    ),
                ),
                unit="ops",
            ),
        ),
    )


def all_dashboards() -> list[Dashboard]:
    return [sla_overview(), pilot_view(), platform_health()]


def render(dashboard: Dashboard) -> str:
    return json.dumps(dashboard.to_json(), indent=2, sort_keys=True) + "\n"


def outputs() -> dict[Path, str]:
    """Every file `msp dashboards` writes, with its text."""
    return {OUT_DIR / f"{d.uid}.json": render(d) for d in all_dashboards()}


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every panel query of a rendered dashboard."""
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
