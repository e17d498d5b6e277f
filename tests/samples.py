"""The tests' shared factories: one valid event of every kind, alerts on a timeline, and
synthetic labelled tickets."""

from __future__ import annotations

import csv
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from libs.common import events as ev
from libs.common.reasoning import ActionSpec, ParamSpec, TicketContext

T0 = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)


def src(kind: str = "alert", id_: str = "a-1") -> ev.Source:
    return ev.Source(kind=kind, id=id_, url=f"https://psa.example/{id_}", excerpt="disk 97% full")  # type: ignore[arg-type]


def claim(text: str = "FS01 ran out of disk space") -> ev.Claim:
    return ev.Claim(text=text, confidence=0.8, sources=[src()])


def base(tenant: str, **kw: object) -> dict[str, object]:
    return {
        "event_id": kw.pop("event_id", uuid.uuid4()),
        "tenant_id": tenant,
        "occurred_at": T0,
        "source": ev.EventSource(system="test", reference="r-1"),
        **kw,
    }


def alert(tenant: str = "acme", title: str = "Disk D: above 90% on FS01", **kw: object) -> ev.AlertReceived:
    return ev.AlertReceived(
        **base(tenant, **kw),
        payload=ev.AlertPayload(
            fingerprint="fs01-disk",
            status="firing",
            severity="warning",
            title=title,
            device="FS01",
            site="hq",
            labels={"job": "node"},
            starts_at=T0,
        ),
    )


def timed_alert(
    tenant: str,
    fingerprint: str,
    title: str,
    *,
    at: float = 0.0,
    device: str | None = None,
    site: str | None = None,
    status: str = "firing",
    labels: dict[str, str] | None = None,
    started: float | None = None,
    t0: datetime = T0,
    system: str = "test-rmm",
) -> ev.AlertReceived:
    """An alert `at` seconds after `t0` (its problem started `started` seconds after, by
    default when it fired): the one alert factory of the tests that build streams."""
    return ev.AlertReceived(
        event_id=uuid.uuid4(),
        tenant_id=tenant,
        occurred_at=t0 + timedelta(seconds=at),
        source=ev.EventSource(system=system, reference=fingerprint),
        payload=ev.AlertPayload(
            fingerprint=fingerprint,
            status=status,  # type: ignore[arg-type]
            title=title,
            device=device,
            site=site,
            labels=labels or {},
            starts_at=t0 + timedelta(seconds=at if started is None else started),
        ),
    )


def every_event(tenant: str = "acme") -> list[ev.Envelope]:
    ticket = ev.TicketSnapshot(ticket_id="1001", title="Cannot save to S:", devices=["FS01"])
    sig_id, run_id = uuid.uuid4(), uuid.uuid4()
    decision = ev.Decision(label="Storage", confidence=0.9, method="knn", rationale=claim())
    return [
        alert(tenant),
        ev.TicketEvent(
            **base(tenant),
            payload=ev.TicketEventPayload(
                kind="escalated",
                ticket=ticket,
                escalation=ev.Escalation(from_tier="L1", to_tier="L2"),
                note=ev.TicketNote(note_id="n1", text="cleared temp", internal=True),
            ),
        ),
        ev.SignalClustered(
            **base(tenant),
            payload=ev.SignalPayload(
                signal_id=sig_id,
                state="opened",
                title="FS01 disk full",
                member_alert_ids=[uuid.uuid4()],
                devices=["FS01"],
                severity="critical",
                first_seen=T0,
                last_seen=T0 + timedelta(minutes=5),
                count=3,
                confidence=0.7,
                reasons=[ev.GroupingReason(feature="device", detail="same device FS01", weight=0.6)],
            ),
        ),
        ev.TicketTriaged(
            **base(tenant),
            payload=ev.TicketTriagedPayload(
                ticket_id="1001",
                category=decision,
                intent=decision,
                priority=decision,
                similar_cases=[ev.SimilarCase(ticket_id="0950", score=0.8)],
                open_signal_ids=[sig_id],
            ),
        ),
        ev.EscalationPacket(
            **base(tenant),
            payload=ev.EscalationPacketPayload(
                packet_id=uuid.uuid4(),
                ticket_id="1001",
                version=1,
                summary=[claim()],
                still_unknown=[ev.Unknown(text="Did the backup run?", missing_evidence="backup job log")],
            ),
        ),
        ev.AutomationRun(
            **base(tenant),
            payload=ev.AutomationRunPayload(
                run_id=run_id,
                steps=[ev.ActionStep(action="entra.reset_password", params={"user": "m@x"})],
                requested_by="user:alice",
                mode="manual",
            ),
        ),
        ev.AutomationResult(
            **base(tenant),
            payload=ev.AutomationResultPayload(
                run_id=run_id,
                outcome="failed",
                steps=[
                    ev.StepResult(
                        index=0,
                        action="entra.reset_password",
                        outcome="failed",
                        error_class="PermissionDenied",
                    )
                ],
            ),
        ),
        ev.AuditEvent(
            **base(tenant),
            payload=ev.AuditPayload(
                actor="service:ingest", action="ingest.alert.accepted", subject_kind="alert", subject_id="x"
            ),
        ),
    ]


VOCAB = {
    "Access": ["password", "reset", "locked", "account", "login", "mfa"],
    "Hardware": ["laptop", "screen", "keyboard", "dock", "broken", "charger"],
    "Purchase": ["order", "licence", "quote", "invoice", "buy", "renewal"],
}


def tickets(n: int, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    """Texts drawn from each category's words plus shared filler; vectors that carry the
    category (as a sentence embedding would) with noise."""
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    fixed = np.random.default_rng(0)  # the categories sit where they sit, whatever the sample
    centres = {c: fixed.normal(size=16) for c in VOCAB}
    texts, labels, vecs = [], [], []
    for _ in range(n):
        c = rng.choice(list(VOCAB))
        words = rng.sample(VOCAB[c], 3) + rng.sample(
            ["please", "help", "thanks", "user", "today", "urgent"], 3
        )
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(c)
        v = centres[c] + gen.normal(scale=0.8, size=16)
        vecs.append(v / np.linalg.norm(v))
    return texts, labels, np.array(vecs, dtype=np.float32)


def long_tail_tickets(
    per_large: int, per_rare: int, seed: int, rare: int = 6
) -> tuple[list[str], list[str], np.ndarray]:
    """Two large groups and `rare` small ones. A rare group's tickets read mostly like the
    first large group's (shared filler, two of its words) plus two words of their own, and a
    few large-group tickets carry a rare group's word too: the shape of a service desk where
    a handful of specialist groups sit under a big general one. Vectors carry the group
    (a rare group close to the first large one)."""
    rng = np.random.default_rng(seed)
    filler = [f"w{i}" for i in range(60)]
    words = {"general": [f"g{i}" for i in range(15)], "network": [f"n{i}" for i in range(15)]}
    own = {f"rare{k}": [f"r{k}", f"r{k}x"] for k in range(rare)}
    axes = np.eye(2 + rare)
    centres = {"general": axes[0], "network": axes[1]}
    centres.update({g: axes[0] + 0.6 * axes[2 + k] for k, g in enumerate(own)})
    groups = ["general"] * per_large + ["network"] * per_large + [g for g in own for _ in range(per_rare)]
    texts = []
    for g in groups:
        text = list(rng.choice(filler, 6))
        if g in own:
            text += list(rng.choice(words["general"], 2)) + own[g]
        else:
            text += list(rng.choice(words[g], 3))
            if rng.random() < 0.05:
                text.append(str(rng.choice([w for ws in own.values() for w in ws])))
        texts.append(" ".join(text))
    vecs = np.array([centres[g] for g in groups]) + rng.normal(scale=0.35, size=(len(groups), 2 + rare))
    return texts, groups, (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)


def write_csv(path: Path, texts: list[str], labels: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Document", "Topic_group"])
        w.writerows(zip(texts, labels, strict=True))
    return path


# The action catalogue and ticket the reasoning tests plan against.
CATALOGUE = [
    ActionSpec(
        name="ad.reset_password",
        description="Reset a user's password and require a change at next sign-in",
        examples=["reset the password for anna", "give bob a temporary password"],
        params=[ParamSpec(name="user", kind="user")],
    ),
    ActionSpec(
        name="ad.unlock_account",
        description="Unlock a locked-out user account",
        examples=["unlock anna's account", "the account is locked, unlock it"],
        params=[ParamSpec(name="user", kind="user")],
    ),
    ActionSpec(
        name="ad.add_to_group",
        description="Add a user to a security or distribution group",
        examples=["add anna to the finance group", "give her access to the sales team group"],
        params=[ParamSpec(name="user", kind="user"), ParamSpec(name="group", kind="group")],
    ),
    ActionSpec(
        name="rmm.restart_service",
        description="Restart a Windows service on a device",
        examples=["restart the spooler on PC-12", "restart the print service"],
        params=[
            ParamSpec(name="device", kind="device"),
            ParamSpec(name="service", kind="text", required=False),
        ],
    ),
]

TICKET = TicketContext(
    text="Anna cannot sign in since this morning",
    requester="anna.berg",
    users=["anna.berg"],
    emails=["anna.berg@acme.test"],
    devices=["PC-12"],
)
