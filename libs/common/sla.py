"""The SLA measures an MSP's service-delivery review tracks, per tenant, as Prometheus metrics.

Every service observes the measures of the decisions it makes (triage: time to classify and
noise; packet: the ticket lifecycle, engineers' review of packets, automation runs; the
automation service: plans engineers rejected or edited). All are named `msp_sla_*` and carry
a `tenant` label, bounded: a process labels the first `MSP_METRICS_TENANT_LIMIT` tenants it
sees (500 unless set) by their id and every later one `_other`, so a flood of tenants cannot
blow up the series count of a scrape. The recording rules in `deploy/prometheus/` turn these
into the figures the dashboards show (means, rates, reduction).
"""

from __future__ import annotations

import os
import threading

from prometheus_client import Counter, Histogram

OTHER_TENANTS = "_other"
_LIMIT = int(os.environ.get("MSP_METRICS_TENANT_LIMIT", "500"))
_admitted: set[str] = set()
_lock = threading.Lock()


def tenant_label(tenant_id: str) -> str:
    """The `tenant` label value for a tenant: its id while the process has labelled fewer than
    the limit, `_other` after that (the same answer for a tenant for the life of the process)."""
    if tenant_id in _admitted:
        return tenant_id
    with _lock:
        if tenant_id in _admitted or len(_admitted) < _LIMIT:
            _admitted.add(tenant_id)
            return tenant_id
    return OTHER_TENANTS


_HOURS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800)

TIME_TO_CLASSIFY = Histogram(
    "msp_sla_time_to_classify_seconds",
    "From ingest to the platform's decision: an alert published in a signal revision, a ticket "
    "triaged (kind: alert or ticket)",
    ["tenant", "kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
ALERTS = Counter("msp_sla_alerts_total", "Firing alerts taken into clustering", ["tenant"])
SIGNALS = Counter("msp_sla_signals_opened_total", "Signals opened from them", ["tenant"])
TICKET_TRANSITIONS = Counter(
    "msp_sla_ticket_transitions_total",
    "Ticket lifecycle events seen for the first time (transition: created, escalated, resolved, reopened)",
    ["tenant", "transition"],
)
TIME_TO_ESCALATE = Histogram(
    "msp_sla_time_to_escalate_seconds",
    "From a ticket's first event to its first escalation, in the PSA's times",
    ["tenant"],
    buckets=_HOURS,
)
TIME_TO_RESOLVE_ESCALATED = Histogram(
    "msp_sla_time_to_resolve_after_escalation_seconds",
    "From a ticket's first escalation to its resolution, in the PSA's times (packet: yes when a "
    "packet version existed before the resolution)",
    ["tenant", "packet"],
    buckets=_HOURS,
)
ENGINEER_REVIEW = Histogram(
    "msp_sla_engineer_review_seconds",
    "Time engineers report spending reviewing AI output (the honest counter-metric; kind: packet)",
    ["tenant", "kind"],
    buckets=(10, 30, 60, 120, 300, 600, 1800),
)
CORRECTIONS = Counter(
    "msp_sla_engineer_corrections_total",
    "AI output engineers corrected or turned down (kind: triage_corrected, packet_claim_wrong, "
    "plan_rejected, plan_edited)",
    ["tenant", "kind"],
)
AUTOMATION_RUNS = Counter(
    "msp_sla_automation_runs_total",
    "Automation runs finished, by outcome (succeeded, failed, partial)",
    ["tenant", "outcome"],
)
REPORT_TURNAROUND = Histogram(
    "msp_sla_report_turnaround_seconds",
    "From a customer report's first draft to an engineer's approval",
    ["tenant"],
    buckets=(600, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400),
)
REPEAT_QUESTIONS = Counter(
    "msp_sla_repeat_questions_total",
    "Questions in client-visible notes asking for what an earlier note or the packet already held",
    ["tenant"],
)
