"""Prometheus Alertmanager webhook (version 4): one notification carries a group of alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from libs.common.events import AlertPayload, AlertReceived, EventSource, derive_event_id, utcnow
from libs.common.jsontypes import AwareTimestamp, Int
from services.ingest.adapters.common import SourceModel, severity

SYSTEM = "alertmanager"
# Alertmanager sends this for "no end yet".
_ZERO_TIME_YEAR = 1


class AMAlert(SourceModel):
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: AwareTimestamp
    endsAt: AwareTimestamp | None = None
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1, max_length=1000)


class AlertmanagerWebhook(SourceModel):
    version: str = "4"
    groupKey: str = Field(min_length=1)
    truncatedAlerts: Int = 0
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AMAlert] = Field(min_length=1, max_length=10000)


def _end(value: datetime | None) -> datetime | None:
    return None if value is None or value.year == _ZERO_TIME_YEAR else value


# Labels that name the machine or place an alert is about, in order of preference. Exporters
# use `device` for a disk or interface, so it is the last resort for the machine.
DEVICE_LABELS = ("host", "hostname", "nodename", "node", "instance", "pod", "device")
SITE_LABELS = ("site", "datacenter", "cluster", "namespace")


def _machine(labels: dict[str, str]) -> str | None:
    name = next((labels[k] for k in DEVICE_LABELS if labels.get(k)), None)
    if name and labels.get("instance") == name:
        host, _, port = name.rpartition(":")
        if host and port.isdigit():  # "fs01:9100" is the exporter's address on the machine fs01
            return host.strip("[]")
    return name


def to_events(doc: AlertmanagerWebhook, tenant_id: str) -> list[AlertReceived]:
    events = []
    for a in doc.alerts:
        ends = _end(a.endsAt)
        title = a.annotations.get("summary") or a.labels.get("alertname") or a.fingerprint
        events.append(
            AlertReceived(
                event_id=derive_event_id(
                    tenant_id,
                    "alert",
                    SYSTEM,
                    a.fingerprint,
                    a.status,
                    a.startsAt.isoformat(),
                    ends.isoformat() if ends and a.status == "resolved" else "",
                ),
                tenant_id=tenant_id,
                occurred_at=(ends if a.status == "resolved" and ends else a.startsAt),
                ingested_at=utcnow(),
                source=EventSource(system=SYSTEM, reference=a.fingerprint, link=a.generatorURL or None),
                payload=AlertPayload(
                    fingerprint=a.fingerprint,
                    status=a.status,
                    severity=severity(a.labels.get("severity")),
                    title=title[:1000],
                    description=(a.annotations.get("description") or a.annotations.get("message") or "")[
                        :20000
                    ],
                    device=_machine(a.labels),
                    site=next((a.labels[k] for k in SITE_LABELS if a.labels.get(k)), None),
                    group_key=doc.groupKey,
                    labels={**a.labels, **{f"annotation.{k}": v for k, v in a.annotations.items()}},
                    starts_at=a.startsAt,
                    ends_at=ends,
                    url=a.generatorURL or None,
                ),
            )
        )
    return events


def tenant_refs(doc: AlertmanagerWebhook) -> set[str]:
    return {a.labels["tenant"] for a in doc.alerts if a.labels.get("tenant")}
