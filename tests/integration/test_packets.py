"""Escalation packets on the real broker and PostgreSQL: the packet service's runtime in this
process, fed ticket, signal and triage events through Kafka, posting into a recording PSA on
loopback."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from libs.common.bus import EventProducer
from libs.common.crypto import SecretBox, new_key
from libs.common.events import (
    Decision,
    Envelope,
    Escalation,
    EscalationPacketPayload,
    EventSource,
    SignalAlert,
    SignalClustered,
    SignalPayload,
    SimilarCase,
    TicketEvent,
    TicketEventPayload,
    TicketNote,
    TicketSnapshot,
    TicketTriaged,
    TicketTriagedPayload,
)
from libs.common.inbox import counts
from libs.common.topics import ensure_topics
from services.packet import tables
from services.packet.app import assemble
from services.packet.settings import PacketSettings
from services.packet.store import projections, psa_writes, targets, versions
from tests.conftest import eventually, start_runtime, unique
from tests.fakes.psa_sink import PsaSink, psa_sink

pytestmark = pytest.mark.integration

RUNBOOK = """---
title: File server disk full
---
# File server disk full

## Meaning
A volume of a file server is nearly full; users cannot save files to the shares on it.

## Diagnosis
- Check which folders grew in the last week with a disk usage report.
- Check whether the shadow copies take more than 10% of the volume.
- Confirm the last backup of the volume completed.

## Mitigation
Move old project folders to the archive share and extend the volume if the datastore allows.
"""


def ticket(
    tenant: str, ticket_id: str, kind: str, *, event_id: uuid.UUID | None = None, **extra: Any
) -> TicketEvent:
    snap = {
        "ticket_id": ticket_id,
        "title": "Cannot save files to the S: drive",
        "description": "Since this morning saving to S: says the disk is full.",
        "devices": ["FS01"],
        "site": "hq",
        "requester": "maria@client.test",
        "url": f"https://psa.client.test/tickets/{ticket_id}",
    }
    return TicketEvent(
        event_id=event_id or uuid.uuid4(),
        tenant_id=tenant,
        occurred_at=datetime.now(UTC),
        source=EventSource(system="test-psa", reference=ticket_id),
        payload=TicketEventPayload(kind=kind, ticket=TicketSnapshot(**snap), **extra),  # type: ignore[arg-type]
    )


def escalation(tenant: str, ticket_id: str, event_id: uuid.UUID | None = None) -> TicketEvent:
    return ticket(
        tenant, ticket_id, "escalated", event_id=event_id, escalation=Escalation(from_tier="L1", to_tier="L2")
    )


def signal(
    tenant: str, device: str = "FS01", state: str = "opened", sid: uuid.UUID | None = None, revision: int = 1
) -> SignalClustered:
    now = datetime.now(UTC)
    return SignalClustered(
        event_id=uuid.uuid4(),
        tenant_id=tenant,
        occurred_at=now,
        source=EventSource(system="msp.triage"),
        payload=SignalPayload(
            signal_id=sid or uuid.uuid4(),
            state=state,  # type: ignore[arg-type]
            revision=revision,
            title=f"Disk D: above 97% on {device}",
            member_alert_ids=[uuid.uuid4()],
            devices=[device],
            sites=["hq"],
            severity="critical",
            first_seen=now,
            last_seen=now,
            count=3,
            confidence=0.9,
        ),
    )


class Packets:
    def __init__(self, bootstrap: str, db_url: str, tmp: Path, **settings: Any) -> None:
        self.bootstrap = bootstrap
        self.namespace = unique("pkt").replace("-", "")
        self.settings = PacketSettings(
            kafka_bootstrap_servers=bootstrap,
            topic_namespace=self.namespace,
            database_url=db_url,
            var_dir=tmp,
            consumer_group=f"g-{self.namespace}",
            psa_retry_base_s=0.2,
            **settings,
        )

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, namespace=self.namespace)
        self.service = assemble(self.settings)
        self.rt, self.app = self.service.rt, self.service.app
        await start_runtime(self.rt, "packet")
        self.producer = EventProducer(self.bootstrap, client_id="test", namespace=self.namespace)
        await self.producer.start()
        self._unconfirmed: list[Envelope] = []

    async def stop(self) -> None:
        await self.producer.stop()
        await self.rt.stop()

    async def send(self, *events: Envelope) -> None:
        """Publish in order. One tenant's events on one topic keep their order (one partition);
        nothing orders them across topics (each partition is fetched on its own), so before an
        event of another topic goes out, those sent before it must have been taken in: a signal
        sent before an escalation is in its first packet, not the cause of a second one."""
        for e in events:
            if self._unconfirmed and e.topic != self._unconfirmed[-1].topic:
                await self.taken_in(self._unconfirmed)
                self._unconfirmed = []
            await self.producer.publish(e)
            self._unconfirmed.append(e)

    async def taken_in(self, events: list[Envelope]) -> None:
        """Wait until the service has taken in every one of `events` (its inbox has them)."""
        ids = {str(e.event_id) for e in events}

        def all_in() -> bool:
            with self.rt.engine.connect() as conn:
                found = conn.execute(
                    select(func.count()).select_from(tables.inbox).where(tables.inbox.c.event_id.in_(ids))
                ).scalar_one()
            return found == len(ids)

        await eventually(all_in, f"{len(ids)} events taken in before one of another topic")

    def versions(self, tenant: str, ticket_id: str) -> list[dict[str, Any]]:
        latest = versions.latest_packet(self.rt.engine, tenant, ticket_id)
        return [] if latest is None else versions.packet_versions(self.rt.engine, tenant, latest["packet_id"])


@pytest.fixture(scope="module")
def sink() -> Any:
    with psa_sink() as (s, url):
        yield s, url


@pytest.fixture(scope="module")
async def packets(
    bootstrap: str, pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Packets]:
    p = Packets(bootstrap, pg_url, tmp_path_factory.mktemp("packets"))
    await p.start()
    yield p
    await p.stop()


async def handled_up_to_here(packets: Packets, tenant: str) -> str:
    """Send a sentinel escalation of the same tenant (its partition, its order) and wait for its
    packet: everything sent before it has been handled. Returns the sentinel's ticket id."""
    sentinel = f"S-{uuid.uuid4().hex[:8]}"
    await packets.send(escalation(tenant, sentinel))
    await eventually(lambda: len(packets.versions(tenant, sentinel)) == 1, "the sentinel's packet")
    return sentinel


def notes_for(sink: PsaSink, ticket_id: str) -> list[dict[str, Any]]:
    return [n for n in sink.notes if f"/tickets/{ticket_id}/notes" in n["path"]]


async def test_an_escalation_posts_one_note_per_version_and_a_redelivery_posts_nothing(
    packets: Packets, sink: tuple[PsaSink, str]
) -> None:
    psa, url = sink
    tenant = unique("acme")
    engine = packets.rt.engine
    targets.set_target(
        engine,
        tenant,
        "connectwise",
        url,
        {"company": "msp", "public_key": "pk", "private_key": "sk", "client_id": "c1"},
        {},
        box=packets.service.packets.box,
    )
    packets.service.kb.put(tenant, "fileserver/disk-full.md", RUNBOOK, "https://kb.client.test/disk-full")
    sig = signal(tenant)
    await packets.send(sig, ticket(tenant, "T-1", "created"))
    await handled_up_to_here(packets, tenant)
    assert packets.versions(tenant, "T-1") == [], "no packet before the ticket escalates"
    esc_id = uuid.uuid4()
    await packets.send(escalation(tenant, "T-1", esc_id))
    await eventually(lambda: len(notes_for(psa, "T-1")) == 1, "the first note")
    (v1,) = packets.versions(tenant, "T-1")
    body = json.loads(v1["payload"])
    assert body["version"] == 1
    assert body["related_alerts"][0]["sources"][0] == {
        "kind": "signal",
        "id": str(sig.payload.signal_id),
        "url": f"http://127.0.0.1:8082/v1/signals/{sig.payload.signal_id}?tenant_id={tenant}",
        "excerpt": sig.payload.title,
    }
    runbook = body["runbook"][0]
    assert runbook["sources"][0]["url"].startswith("https://kb.client.test/disk-full#")
    assert any("backup" in u["text"] for u in body["still_unknown"]), body["still_unknown"]
    for part in ("summary", "related_alerts", "runbook", "already_tried", "similar_cases"):
        assert all(c["sources"] for c in body[part]), f"a {part} claim without a source"
    note = notes_for(psa, "T-1")[0]
    assert note["body"]["internalAnalysisFlag"] is True and note["body"]["detailDescriptionFlag"] is False
    assert f"msp-packet:{v1['packet_id']}:v1" in note["body"]["text"]

    # The same escalation again (a redelivery): nothing new, nothing posted.
    await packets.send(escalation(tenant, "T-1", esc_id))
    sentinel = await handled_up_to_here(packets, tenant)
    await eventually(lambda: len(notes_for(psa, sentinel)) == 1, "the sentinel's note, posted after")
    assert len(packets.versions(tenant, "T-1")) == 1 and len(notes_for(psa, "T-1")) == 1
    # Each ticket event counted once, in the transaction of what it changed (so already when
    # the sentinel's packet is there): created, two sentinels, the escalation but not its
    # redelivery.
    assert counts(engine, tables.inbox, tenant)["tickets.events.v1"] == 4

    # A note by L1 changes what the packet says: version 2, one more note.
    await packets.send(
        ticket(
            tenant,
            "T-1",
            "note_added",
            note=TicketNote(
                note_id="n1", text="Checked which folders grew: the CAD archive.", author="l1.sam"
            ),
        )
    )
    await eventually(lambda: len(notes_for(psa, "T-1")) == 2, "the second note")
    versions = packets.versions(tenant, "T-1")
    assert [v["version"] for v in versions] == [1, 2]
    v2 = json.loads(versions[1]["payload"])
    assert v2["already_tried"][0]["sources"][0]["kind"] == "note"
    assert (
        "msp-packet:" in notes_for(psa, "T-1")[1]["body"]["text"]
        and ":v2" in notes_for(psa, "T-1")[1]["body"]["text"]
    )
    # The signal resolving on the ticket's device: version 3.
    await packets.send(signal(tenant, state="resolved", sid=sig.payload.signal_id, revision=2))
    await eventually(lambda: len(notes_for(psa, "T-1")) == 3, "the third note")
    # The PSA has the note a moment before the delivery records it as posted.
    await eventually(
        lambda: all(v["status"] == "posted" for v in packets.versions(tenant, "T-1")), "recorded as posted"
    )
    assert all(v["attempts"] == 1 for v in packets.versions(tenant, "T-1"))


async def test_a_psa_outage_is_retried_until_the_note_is_posted(packets: Packets) -> None:
    # A PSA of its own: the scripted outage must meet this test's posts only.
    with psa_sink() as (psa, url):
        await _outage(packets, psa, url)


async def _outage(packets: Packets, psa: PsaSink, url: str) -> None:
    tenant = unique("outage")
    targets.set_target(
        packets.rt.engine,
        tenant,
        "autotask",
        url,
        {"integration_code": "x", "username": "u", "secret": "s"},
        {},
        box=packets.service.packets.box,
    )
    psa.failures = [503, 503, 429]
    await packets.send(escalation(tenant, "77"))
    await eventually(
        lambda: any("/Tickets/77/" in n["path"] for n in psa.notes), "the note after the outage", 30
    )
    # The PSA has the note a moment before the delivery records it as posted.
    await eventually(
        lambda: [v["status"] for v in packets.versions(tenant, "77")] == ["posted"], "recorded as posted"
    )
    (version,) = packets.versions(tenant, "77")
    assert version["status"] == "posted" and version["attempts"] == 4
    note = next(n for n in psa.notes if "/Tickets/77/" in n["path"])
    assert note["body"]["ticketID"] == 77 and note["body"]["publish"] == 2
    assert sum(1 for n in psa.notes if "/Tickets/77/" in n["path"]) == 1


async def test_packets_without_a_psa_are_kept_and_readable(packets: Packets) -> None:
    tenant = unique("nopsa")
    shadow = TicketTriaged(
        event_id=uuid.uuid4(),
        tenant_id=tenant,
        occurred_at=datetime.now(UTC),
        source=EventSource(system="msp.triage"),
        payload=TicketTriagedPayload(
            ticket_id="8",
            category=Decision(label="Storage", confidence=0.9, method="tenant_model"),
            intent=Decision(label="disk_space", confidence=0.8, method="intent_catalogue"),
            priority=Decision(label="high", confidence=0.6, method="priority_rules"),
            similar_cases=[SimilarCase(ticket_id="3", score=0.93, resolution_summary="shadow-only advice")],
            rollout_mode="shadow",
        ),
    )
    await packets.send(shadow, escalation(tenant, "8"))
    await eventually(lambda: len(packets.versions(tenant, "8")) == 1, "the packet of the shadow ticket")
    hidden = json.loads(packets.versions(tenant, "8")[0]["payload"])
    assert hidden["similar_cases"] == [] and "shadow-only advice" not in json.dumps(hidden), (
        "shadow is shown to nobody"
    )
    triaged = TicketTriaged(
        event_id=uuid.uuid4(),
        tenant_id=tenant,
        occurred_at=datetime.now(UTC),
        source=EventSource(system="msp.triage"),
        payload=TicketTriagedPayload(
            ticket_id="9",
            category=Decision(label="Storage", confidence=0.9, method="tenant_model"),
            intent=Decision(label="disk_space", confidence=0.8, method="intent_catalogue"),
            priority=Decision(label="high", confidence=0.6, method="priority_rules"),
            similar_cases=[
                SimilarCase(
                    ticket_id="4",
                    score=0.91,
                    resolution_summary="archived old CAD files",
                    url="https://psa/4",
                )
            ],
            rollout_mode="suggest",
        ),
    )
    await packets.send(triaged, escalation(tenant, "9"))
    await eventually(lambda: len(packets.versions(tenant, "9")) == 1, "the packet")
    (version,) = packets.versions(tenant, "9")
    # No PSA target: the packet is kept and its note waits, visibly.
    assert version["status"] == "waiting" and "PUT /v1/psa" in version["last_error"]
    body = json.loads(version["payload"])
    assert body["similar_cases"][0]["sources"][0]["id"] == "4"
    assert "archived old CAD files" in body["similar_cases"][0]["text"]
    assert any(u["text"].startswith("Which runbook") for u in body["still_unknown"])
    assert versions.waiting_notes(packets.rt.engine, tenant) == 2  # tickets 8 and 9


async def test_notes_that_waited_for_a_psa_target_are_posted_once_one_is_set(
    packets: Packets, sink: tuple[PsaSink, str]
) -> None:
    psa, url = sink
    tenant = unique("later")
    await packets.send(escalation(tenant, "31"))
    await eventually(lambda: len(packets.versions(tenant, "31")) == 1, "version 1")
    note = TicketNote(note_id="n1", text="Rebooted the file server.", author="l1")
    await packets.send(ticket(tenant, "31", "note_added", note=note))
    await eventually(lambda: len(packets.versions(tenant, "31")) == 2, "version 2")
    assert [v["status"] for v in packets.versions(tenant, "31")] == ["waiting", "waiting"]
    assert not any("/tickets/31/notes" in n["path"] for n in psa.notes)
    released = targets.set_target(
        packets.rt.engine, tenant, "halopsa", url, {"token": "t"}, {}, box=packets.service.packets.box
    )
    packets.service.packets.wake()
    assert released == 1
    await eventually(
        lambda: [v["status"] for v in packets.versions(tenant, "31")] == ["superseded", "posted"],
        "the latest version posted, the older one superseded",
    )
    posted = [n for n in psa.notes if n["kind"] == "halopsa" and n["body"][0]["ticket_id"] == 31]
    assert len(posted) == 1 and ":v2" in posted[0]["body"][0]["note_html"]


async def psa_target(packets: Packets, tenant: str) -> dict[str, Any]:
    """What `GET /v1/psa` says of the tenant's target, asked as the operator."""
    import httpx

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=packets.app),
        base_url="http://packet",
        headers={"Authorization": f"Bearer {packets.settings.effective_admin_token()}"},
    ) as api:
        got = await api.get("/v1/psa", params={"tenant_id": tenant})
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


async def test_a_target_the_service_cannot_decrypt_makes_notes_wait_until_it_is_set_again(
    packets: Packets, sink: tuple[PsaSink, str]
) -> None:
    """The secrets key changed (or the stored row was altered): packets are still built, and
    their notes wait with a reason that says so, instead of failing in a loop; set again,
    the target takes them."""
    psa, url = sink
    engine, service = packets.rt.engine, packets.service.packets
    tenant = unique("rekeyed")
    targets.set_target(engine, tenant, "halopsa", url, {"token": "t"}, {}, box=SecretBox(new_key()))
    await packets.send(escalation(tenant, "41"))
    await eventually(lambda: len(packets.versions(tenant, "41")) == 1, "the packet, built all the same")
    (built,) = packets.versions(tenant, "41")
    assert built["status"] == "waiting" and "cannot be decrypted" in built["last_error"], built
    # A version that was due when the target became unreadable waits as well.
    due = uuid.uuid4()
    versions.save_packet(
        engine,
        tenant_id=tenant,
        ticket_id="42",
        packet_id=due,
        version=1,
        content_hash="h",
        payload=built["payload"],
        cause_event_id=str(uuid.uuid4()),
        trigger_at=datetime.now(UTC),
        deliver=True,
    )
    service.wake()
    await eventually(
        lambda: versions.packet_versions(engine, tenant, str(due))[0]["status"] == "waiting",
        "the due one waits",
    )
    assert "cannot be decrypted" in versions.packet_versions(engine, tenant, str(due))[0]["last_error"]
    assert not any(n["kind"] == "halopsa" and n["body"][0]["ticket_id"] in (41, 42) for n in psa.notes)
    said = await psa_target(packets, tenant)
    assert said["configured"] is True and said["credentials_readable"] is False, said
    assert said["waiting_notes"] == 2 and "PUT /v1/psa" in said["detail"]
    assert "token" not in json.dumps(said), "credentials are never shown"
    released = targets.set_target(engine, tenant, "halopsa", url, {"token": "t"}, {}, box=service.box)
    service.forget_target(tenant)
    service.wake()
    assert released == 2
    await eventually(
        lambda: (
            [v["status"] for v in packets.versions(tenant, "41")] == ["posted"]
            and versions.packet_versions(engine, tenant, str(due))[0]["status"] == "posted"
        ),
        "both posted once the target is set again",
    )
    said = await psa_target(packets, tenant)
    assert said["credentials_readable"] is True and "waiting_notes" not in said, said


async def test_near_identical_tenants_never_cite_each_others_sources_over_thousands_of_packets(
    packets: Packets,
) -> None:
    from services.packet.known import merge_ticket

    engine, kb = packets.rt.engine, packets.service.kb
    tenants = [unique("twin-a"), unique("twin-b")]
    own: dict[str, set[str]] = {}
    for t in tenants:
        kb.put(t, "fileserver/disk-full.md", RUNBOOK, f"https://kb.{t}.test/disk-full")
        marks = {f"tenant:{t}", t}
        for device in ("FS01", "FS02"):
            sig = signal(t, device).payload.model_dump(mode="json")
            projections.apply_signal(engine, t, sig)
            marks |= {sig["signal_id"], *map(str, sig["member_alert_ids"])}
        own[t] = marks
    texts = [f"Cannot save files to share {n}: the disk is full on FS0{1 + n % 2}" for n in range(10)]
    built = {t: 0 for t in tenants}
    cited: dict[str, set[str]] = {t: set() for t in tenants}
    for n in range(1000):
        for t in tenants:
            tid = f"{t}-{n}"
            projections.save_triage(
                engine,
                t,
                tid,
                {
                    "similar_cases": [
                        {
                            "ticket_id": f"{t}-{n - 1}",
                            "score": 0.9,
                            "resolution_summary": "archived",
                            "url": f"https://{t}.psa.test/{n - 1}",
                        }
                    ]
                },
            )
            own[t] |= {tid, f"{t}-{n - 1}"}
            event = ticket(
                t,
                tid,
                "escalated",
                escalation=Escalation(from_tier="L1", to_tier="L2"),
                note=TicketNote(note_id=f"{t}-note-{n}", text="Cleared temp files on FS01; still full."),
            )
            event = event.model_copy(
                update={
                    "payload": event.payload.model_copy(
                        update={
                            "ticket": event.payload.ticket.model_copy(
                                update={"description": texts[n % 10], "url": f"https://{t}.psa.test/{n}"}
                            )
                        }
                    )
                }
            )
            payload = await packets.service.packets.rebuild(
                t, merge_ticket(None, event), event, trigger="test"
            )
            assert payload is not None
            built[t] += 1
            for part in ("summary", "related_alerts", "runbook", "already_tried", "similar_cases"):
                for claim in getattr(payload, part):
                    assert claim.sources, f"{part} claim without a source"
                    for s in claim.sources:
                        cited[t].add(s.id)
                        if s.url:
                            cited[t].add(s.url)
    a, b = tenants
    assert built == {a: 1000, b: 1000}
    for mine, theirs in ((a, b), (b, a)):
        leaked = {c for c in cited[mine] if any(m in c for m in own[theirs])}
        assert not leaked, f"{mine} cites {theirs}'s sources: {sorted(leaked)[:5]}"
        assert any(f"tenant:{mine}" in c for c in cited[mine]), "its own runbook is cited"
        assert own[mine] & cited[mine], "its own signals and tickets are cited"


async def test_the_runbook_an_alerts_rule_names_leads_the_packet(packets: Packets) -> None:
    """The ticket's words fit the disk-full runbook best; when the signal's alert comes from a
    rule whose runbook is another one, that one leads, with the confidence a name gives."""
    shadow = "# ShadowCopyStorageFull\n\n## Meaning\nThe shadow storage area of a volume is used up.\n"
    leads = {}
    for case, rule in (("text", None), ("rule", "ShadowCopyStorageFull")):
        tenant = unique("acme")  # a tenant per case: one case's signal would join the other's
        packets.service.kb.put(tenant, "fileserver/disk-full.md", RUNBOOK, None)
        packets.service.kb.put(tenant, "windows/shadow-storage.md", shadow, None)
        sig = signal(tenant)
        alert = SignalAlert(
            alert_id=uuid.uuid4(),
            title=sig.payload.title,
            device="FS01",
            severity="critical",
            status="firing",
            rule=rule,
            occurred_at=datetime.now(UTC),
        )
        sig = sig.model_copy(update={"payload": sig.payload.model_copy(update={"alerts": [alert]})})
        await packets.send(sig, escalation(tenant, "T-RB"))
        await eventually(lambda t=tenant: len(packets.versions(t, "T-RB")) == 1, f"the packet ({case})")
        leads[case] = json.loads(packets.versions(tenant, "T-RB")[0]["payload"])["runbook"][0]
    assert "File server disk full" in leads["text"]["text"] and leads["text"]["confidence"] < 0.95
    assert "ShadowCopyStorageFull" in leads["rule"]["text"] and leads["rule"]["confidence"] == 0.95


async def test_what_an_alerts_rule_watches_brings_its_runbook_into_the_packet(packets: Packets) -> None:
    """An alert from Prometheus links its rule's expression (`generatorURL`): where the ticket
    and the alert say only that something fired, the metrics the rule watches pick the runbook."""
    books = {
        "spooler": "# Print spooler stuck\n\n## Meaning\nThe print spooler holds jobs, printing nothing.\n",
        "shadow": "# Shadow storage used up\n\n## Meaning\nThe shadow storage area of a volume is used up.\n",
    }
    watches = {
        "spooler": 'sum(windows_print_spooler_jobs_queued{printer="floor-2"}) > 50',
        "shadow": "windows_shadow_storage_used_bytes / windows_shadow_storage_max_bytes > 0.95",
    }
    leads = {}
    for case, expr in watches.items():
        tenant = unique("acme")
        for name, text in books.items():
            packets.service.kb.put(tenant, f"windows/{name}.md", text, None)
        sig = signal(tenant)
        alert = SignalAlert(
            alert_id=uuid.uuid4(),
            title="Alert firing on FS01",
            device="FS01",
            severity="critical",
            status="firing",
            url=f"http://prom.test:9090/graph?{urlencode({'g0.expr': expr, 'g0.tab': '1'})}",
            occurred_at=datetime.now(UTC),
        )
        sig = sig.model_copy(
            update={
                "payload": sig.payload.model_copy(update={"title": "Alert firing on FS01", "alerts": [alert]})
            }
        )
        event = escalation(tenant, "T-EX")
        neutral = {"title": "Server alert on FS01", "description": "The monitoring raised an alert on FS01."}
        event = event.model_copy(
            update={
                "payload": event.payload.model_copy(
                    update={"ticket": event.payload.ticket.model_copy(update=neutral)}
                )
            }
        )
        await packets.send(sig, event)
        await eventually(lambda t=tenant: len(packets.versions(t, "T-EX")) == 1, f"the packet ({case})")
        claims = json.loads(packets.versions(tenant, "T-EX")[0]["payload"])["runbook"]
        leads[case] = claims[0]["text"] if claims else None
    assert leads["spooler"] is not None and "Print spooler stuck" in leads["spooler"], leads
    assert leads["shadow"] is not None and "Shadow storage used up" in leads["shadow"], leads


def test_the_knowledge_base_serves_a_tenant_its_own_runbooks_and_the_global_library(packets: Packets) -> None:
    kb = packets.service.kb
    a, b = unique("kb-a"), unique("kb-b")
    vpn = "# VPN tunnel down\n\n## Diagnosis\nCheck IPsec phase 1 on the gateway of {who}.\n"
    assert kb.put(a, "vpn.md", vpn.format(who=a))["changed"]
    assert not kb.put(a, "vpn.md", vpn.format(who=a))["changed"], "unchanged content is not embedded again"
    kb.put(
        None, f"global-{a}.md", "# Printer offline\n\n## Diagnosis\nPing the printer, then check its queue.\n"
    )
    mine = kb.search(a, "IPsec tunnel to the branch is down", k=5)
    assert mine[0].scope == f"tenant:{a}" and mine[0].path == "vpn.md"
    theirs = kb.search(b, "IPsec tunnel to the branch is down", k=50)
    assert all(h.scope in (f"tenant:{b}", "global") for h in theirs), "another tenant's runbook surfaced"
    assert any(h.path == f"global-{a}.md" for h in theirs), "the global library serves every tenant"
    with pytest.raises(ValueError, match="relative"):
        kb.put(a, "../etc/passwd", vpn)
    assert kb.remove(a, "vpn.md") and not kb.remove(a, "vpn.md")
    assert all(h.path != "vpn.md" for h in kb.search(a, "IPsec tunnel", k=50))


async def test_claude_writes_the_summary_when_configured_and_sourceless_sentences_fall_back(
    bootstrap: str, pg_url: str, tmp_path: Path
) -> None:
    from pydantic import SecretStr

    from tests.messages_server import messages_server

    with messages_server() as (server, url):
        p = Packets(bootstrap, pg_url, tmp_path, anthropic_api_key=SecretStr("k"), anthropic_base_url=url)
        await p.start()
        try:
            tenant = unique("llm")
            server.script = [
                {
                    "input": {
                        "sentences": [
                            {
                                "text": "Users at hq cannot save to S:, the disk is full.",
                                "sources": ["ticket"],
                            }
                        ]
                    }
                },
                {"input": {"sentences": [{"text": "Made up.", "sources": ["nowhere"]}]}},
            ]
            first = escalation(tenant, "L-1")
            snap = first.payload.ticket.model_copy(
                update={"description": "Disk full. Call maria@client.test back."}
            )
            await p.send(
                first.model_copy(update={"payload": first.payload.model_copy(update={"ticket": snap})})
            )
            await eventually(lambda: len(p.versions(tenant, "L-1")) == 1, "the first packet")
            body = json.loads(p.versions(tenant, "L-1")[0]["payload"])
            assert body["summary"] == [
                {
                    "text": "Users at hq cannot save to S:, the disk is full.",
                    "confidence": 0.8,
                    "sources": [body["summary"][0]["sources"][0]],
                }
            ]
            assert body["summary"][0]["sources"][0]["id"] == "L-1"
            assert "maria@client.test" not in json.dumps(server.requests[0]["body"]), "personal data redacted"
            await p.send(escalation(tenant, "L-2"))
            await eventually(lambda: len(p.versions(tenant, "L-2")) == 1, "the second packet")
            body = json.loads(p.versions(tenant, "L-2")[0]["payload"])
            assert body["summary"][0]["text"].startswith("Cannot save files"), (
                "the extractive summary stood in"
            )
        finally:
            await p.stop()


async def test_platform_actions_on_the_ticket_make_a_new_version_and_a_growing_signal_waits(
    packets: Packets,
) -> None:
    from libs.common.events import (
        ActionStep,
        AutomationResult,
        AutomationResultPayload,
        AutomationRun,
        AutomationRunPayload,
        StepResult,
    )

    tenant = unique("ran")
    sig = signal(tenant)
    await packets.send(sig, escalation(tenant, "R-1"))
    await eventually(lambda: len(packets.versions(tenant, "R-1")) == 1, "the first version")
    run_id = uuid.uuid4()
    now = datetime.now(UTC)
    envelope = {"tenant_id": tenant, "occurred_at": now}
    step = ActionStep(action="rmm.run_script", params={"script": "cleanup"})
    await packets.send(
        AutomationRun(
            event_id=uuid.uuid4(),
            source=EventSource(system="msp.automation"),
            payload=AutomationRunPayload(
                run_id=run_id, ticket_id="R-1", steps=[step], requested_by="engineer:sam", mode="manual"
            ),
            **envelope,  # type: ignore[arg-type]
        ),
        AutomationResult(
            event_id=uuid.uuid4(),
            source=EventSource(system="msp.executor"),
            payload=AutomationResultPayload(
                run_id=run_id,
                outcome="succeeded",
                steps=[StepResult(index=0, action="rmm.run_script", outcome="succeeded")],
            ),
            **envelope,  # type: ignore[arg-type]
        ),
    )
    await eventually(lambda: len(packets.versions(tenant, "R-1")) == 2, "the version with the run")
    tried = json.loads(packets.versions(tenant, "R-1")[1]["payload"])["already_tried"]
    assert tried[-1]["text"] == "The platform ran rmm.run_script(script=cleanup): succeeded"
    assert tried[-1]["sources"][0]["kind"] == "execution" and tried[-1]["sources"][0]["id"] == f"{run_id}/0"
    # More alerts joining the open signal within a minute of the last version: no new note yet.
    grown = signal(tenant, state="updated", sid=sig.payload.signal_id, revision=2)
    grown = grown.model_copy(
        update={"payload": grown.payload.model_copy(update={"added_alert_ids": [uuid.uuid4()], "count": 9})}
    )
    await packets.send(grown)
    await handled_up_to_here(packets, tenant)
    assert len(packets.versions(tenant, "R-1")) == 2


async def test_the_packet_apis_refuse_bad_input_clearly(packets: Packets) -> None:
    import httpx

    token = packets.settings.effective_admin_token()
    tenant = unique("papi")
    await packets.send(escalation(tenant, "A-1"))
    await eventually(lambda: len(packets.versions(tenant, "A-1")) == 1, "the packet")
    pid = packets.versions(tenant, "A-1")[0]["packet_id"]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=packets.app),
        base_url="http://packet",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        cw = {
            "tenant_id": tenant,
            "kind": "connectwise",
            "base_url": "https://cw.example",
            "credentials": {"company": "x"},
        }
        r = await client.put("/v1/psa", json=cw)
        assert r.status_code == 422 and "public_key" in r.text
        r = await client.put("/v1/psa", json={**cw, "base_url": "ftp://cw.example"})
        assert r.status_code == 422
        none = (await client.get("/v1/psa", params={"tenant_id": tenant})).json()
        assert none["configured"] is False and none["waiting_notes"] == 1 and "PUT /v1/psa" in none["detail"]
        r = await client.post(
            f"/v1/packets/{pid}/feedback",
            json={"tenant_id": tenant, "version": 1, "claim": "runbook/7", "verdict": "wrong"},
        )
        assert r.status_code == 422 and "no claim runbook/7" in r.text
        r = await client.post(f"/v1/packets/{pid}/feedback", json={"tenant_id": tenant, "version": 1})
        assert r.status_code == 422 and "verdict" in r.text
        r = await client.post(
            f"/v1/packets/{pid}/feedback", json={"tenant_id": tenant, "version": 9, "verdict": "useful"}
        )
        assert r.status_code == 404
        r = await client.post(
            f"/v1/packets/{pid}/feedback",
            json={"tenant_id": tenant, "version": 1, "claim": "summary/0", "verdict": "useful"},
        )
        assert r.status_code == 201
        r = await client.put(
            "/v1/kb/runbooks", json={"tenant_id": tenant, "path": "../secrets.md", "markdown": "# x\ny"}
        )
        assert r.status_code == 422 and "relative" in r.text
        r = await client.delete("/v1/kb/runbooks", params={"tenant_id": tenant, "path": "absent.md"})
        assert r.status_code == 404
        page = await client.get(f"/v1/packets/{pid}/page", params={"tenant_id": tenant})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


async def test_a_packet_cites_each_alert_with_its_own_text_and_every_source_links_somewhere(
    packets: Packets,
) -> None:
    """Escalation packets quote an alert with its own text (not its signal's title), link every
    source (the alert's own page, the signal, the ticket and its notes on the packet page, the
    runbook's page), and take a paraphrased note as the answer to a runbook check."""
    import httpx

    tenant = unique("links")
    packets.service.kb.put(tenant, "fileserver/disk-full.md", RUNBOOK, None)
    sig = signal(tenant)
    fs02 = uuid.uuid4()
    alerts = [
        SignalAlert(
            alert_id=sig.payload.member_alert_ids[0],
            title="Filesystem D: on FS01 has less than 5% space left",
            device="FS01",
            rule="FilesystemAlmostFull",
            url="http://prom.client.test/graph?g0.expr=fs01",
        ),
        SignalAlert(
            alert_id=fs02,
            title="Filesystem D: on FS02 has less than 3% space left",
            device="FS02",
            rule="FilesystemAlmostFull",
            url=None,
        ),
    ]
    sig = sig.model_copy(
        update={
            "payload": sig.payload.model_copy(
                update={"alerts": alerts, "member_alert_ids": [a.alert_id for a in alerts]}
            )
        }
    )
    snap = {"url": None}
    created = ticket(tenant, "L-1", "created")
    created = created.model_copy(
        update={
            "payload": created.payload.model_copy(
                update={"ticket": created.payload.ticket.model_copy(update=snap)}
            )
        }
    )
    # A paraphrase of the runbook's shadow-copy check, and a note that answers none of them.
    paraphrase = TicketNote(
        note_id="n-1", text="Looked at shadow copies: they use only 2% of the volume.", author="l1"
    )
    unrelated = TicketNote(note_id="n-2", text="Rebooted the user's laptop.", author="l1")
    esc = escalation(tenant, "L-1")
    esc = esc.model_copy(
        update={
            "payload": esc.payload.model_copy(update={"ticket": esc.payload.ticket.model_copy(update=snap)})
        }
    )
    notes = [
        ticket(tenant, "L-1", "note_added", note=n).model_copy(
            update={
                "payload": ticket(tenant, "L-1", "note_added", note=n).payload.model_copy(
                    update={"ticket": created.payload.ticket}
                )
            }
        )
        for n in (paraphrase, unrelated)
    ]
    await packets.send(sig, created, *notes, esc)
    await eventually(lambda: len(packets.versions(tenant, "L-1")) == 1, "the packet")
    body = json.loads(packets.versions(tenant, "L-1")[-1]["payload"])
    cited = [
        src
        for part in ("summary", "related_alerts", "runbook", "already_tried")
        for c in body[part]
        for src in c["sources"]
    ]
    assert cited and all(src["url"] for src in cited), [s for s in cited if not s["url"]]
    alert_sources = {src["id"]: src for src in cited if src["kind"] == "alert"}
    assert alert_sources[str(fs02)]["excerpt"].startswith("Filesystem D: on FS02 has less than 3%")
    assert alert_sources[str(alerts[0].alert_id)]["url"] == "http://prom.client.test/graph?g0.expr=fs01"
    assert "/v1/signals/" in alert_sources[str(fs02)]["url"]  # no link of its own: its signal's
    kinds = {src["kind"] for src in cited}
    assert {"ticket", "note", "signal", "alert", "runbook"} <= kinds
    unknown = " ".join(u["text"] for u in body["still_unknown"])
    assert "shadow copies" not in unknown, "a paraphrased note answers the shadow-copy check"
    assert "backup" in unknown and "folders grew" in unknown

    # Every platform link on the page opens, signed, with no other credential.
    pid = body["packet_id"]
    token = packets.settings.effective_admin_token()
    transport = httpx.ASGITransport(app=packets.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://packet") as anonymous:
        r = await anonymous.get(f"/v1/packets/{pid}/page", params={"tenant_id": tenant})
        assert (
            r.status_code == 401 and "engineer" in r.json()["detail"] and "admin-token" in r.json()["detail"]
        )
        page = await anonymous.get(
            f"/v1/packets/{pid}/page",
            params={"tenant_id": tenant},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert page.status_code == 200
        import re

        hrefs = [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', page.text)]
        own = [h for h in hrefs if h.startswith(packets.settings.effective_page_base_url)]
        assert own and all("sig=" in h for h in own)
        for h in own:
            path = h[len(packets.settings.effective_page_base_url) :].split("#")[0]
            opened = await anonymous.get(path)
            assert opened.status_code == 200, (h, opened.text)
            anchor = h.split("#", 1)[1] if "#" in h else None
            if anchor:
                assert f'id="{anchor}"' in opened.text, (anchor, h)
        # A signed link opens its own path only, its own tenant only, and not after it expires.
        link = next(h for h in own if "/page?" in h)[len(packets.settings.effective_page_base_url) :].split(
            "#"
        )[0]
        assert (await anonymous.get(link.replace("/page?", "?"))).status_code == 401
        assert (
            await anonymous.get(link.replace(f"tenant_id={tenant}", "tenant_id=other"))
        ).status_code == 401
        from libs.common.access import link_secret, sign_url

        old = sign_url(f"http://x{link}", link_secret(token), ttl_s=-1)[len("http://x") :]
        expired = await anonymous.get(old)
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]
        # The operator lists the tenant's packets, newest first.
        listed = await anonymous.get(
            "/v1/packets", params={"tenant_id": tenant}, headers={"Authorization": f"Bearer {token}"}
        )
        assert [p["packet_id"] for p in listed.json()["packets"]] == [pid]


@pytest.mark.parametrize(
    ("note", "answers"),
    [
        ("Checked shadow copies: they use 2% of the volume.", "shadow"),
        ("Shadow copy storage is only 3% of D:, not the problem.", "shadow"),
        ("Ran a disk usage report: the Projects folder grew by 40 GB this week.", "folders"),
        ("Last night's backup of the volume finished successfully.", "backup"),
        ("Rebooted the server and cleared the print queue.", None),
        ("Cleared temp folders on FS01, freed 2 GB; still 96% full.", None),
    ],
)
def test_a_note_answers_a_runbook_check_by_meaning_not_by_its_words(
    packets: Packets, note: str, answers: str | None
) -> None:
    from services.packet.builder import note_sentences

    checks = {
        "folders": "Check which folders grew in the last week with a disk usage report.",
        "shadow": "Check whether the shadow copies take more than 10% of the volume.",
        "backup": "Confirm the last backup of the volume completed.",
    }
    done = packets.service.packets._answered(list(checks.values()), note_sentences(note))
    assert {name for name, hit in zip(checks, done, strict=True) if hit} == ({answers} if answers else set())


async def test_a_version_its_event_and_its_audit_are_written_together_and_published_as_written(
    packets: Packets,
) -> None:
    """The version, its packets.escalation.v1 event and its audit are written in one
    transaction; the outbox relay publishes the stored bytes (a retry of the same escalation
    finds the version and stages nothing new)."""
    from aiokafka import AIOKafkaConsumer
    from sqlalchemy import select

    from libs.common.topics import physical

    tenant = unique("outbox")
    esc = escalation(tenant, "O-1")
    await packets.send(esc, esc)  # the second one: a redelivery
    await eventually(lambda: len(packets.versions(tenant, "O-1")) == 1, "the version")

    def staged() -> list[Any]:
        with packets.rt.engine.connect() as conn:
            return list(
                conn.execute(
                    select(tables.outbox.c.value, tables.outbox.c.published_at).where(
                        tables.outbox.c.value.contains(tenant.encode())
                    )
                )
            )

    await eventually(lambda: len(staged()) == 2 and all(r.published_at for r in staged()), "relayed")
    consumer = AIOKafkaConsumer(
        physical("packets.escalation.v1", packets.namespace),
        bootstrap_servers=packets.bootstrap,
        group_id=unique("packet-reader"),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: list[bytes] = []
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while not found and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found += [r.value for r in records if tenant.encode() in r.value]
    finally:
        await consumer.stop()
    assert len(packets.versions(tenant, "O-1")) == 1
    assert found == [r.value for r in staged() if b'"packet_id"' in r.value]


@pytest.mark.parametrize("kind", ["connectwise", "autotask", "halopsa"])
async def test_a_note_posted_just_before_a_crash_is_found_in_the_psa_and_not_posted_again(
    packets: Packets, sink: tuple[PsaSink, str], kind: str
) -> None:
    """The process died after the PSA took the note and before the delivery was marked posted:
    the delivery is left `posting` with its lease running out. The next worker looks the note
    up in the PSA by its version marker and records it instead of posting a second one."""
    import httpx

    from services.packet import psa

    psa_fake, url = sink
    credentials = {
        "connectwise": {"company": "msp", "public_key": "pk", "private_key": "sk", "client_id": "c1"},
        "autotask": {"integration_code": "x", "username": "u", "secret": "s"},
        "halopsa": {"token": "t"},
    }[kind]
    tenant = unique(f"crash-{kind[:4]}")
    engine = packets.rt.engine
    await packets.send(escalation(tenant, "555"))
    await eventually(lambda: len(packets.versions(tenant, "555")) == 1, "the version")
    (version,) = packets.versions(tenant, "555")
    # What the dead worker did: it held the delivery (a lease of two seconds, as a claim
    # leaves it) and the PSA took its post; then it died before recording the outcome.
    from datetime import timedelta

    from sqlalchemy import update

    with engine.begin() as conn:
        conn.execute(
            update(tables.deliveries)
            .where(tables.deliveries.c.packet_id == version["packet_id"])
            .values(status="posting", next_at=datetime.now(UTC) + timedelta(seconds=2))
        )
    targets.set_target(engine, tenant, kind, url, credentials, {}, box=packets.service.packets.box)
    packet = EscalationPacketPayload.model_validate_json(version["payload"])
    async with httpx.AsyncClient() as client:
        await psa.post(client, psa.Target(kind, url, credentials, {}), tenant, "555", packet, None)

    def posted_for_555() -> list[dict[str, Any]]:
        return [n for n in psa_fake.notes if n["kind"] == kind and psa_marker(n, packet)]

    assert len(posted_for_555()) == 1
    looked = psa_fake.lookups
    packets.service.packets.wake()
    await eventually(lambda: packets.versions(tenant, "555")[0]["status"] == "posted", "recorded as posted")
    assert psa_fake.lookups > looked, "the PSA was asked first"
    assert len(posted_for_555()) == 1, "exactly one note for the version"


def psa_marker(note: dict[str, Any], packet: EscalationPacketPayload) -> bool:
    from services.packet.psa import marker

    return marker(packet) in json.dumps(note["body"])


async def test_psa_credentials_are_stored_encrypted_and_never_returned(packets: Packets) -> None:
    import httpx
    from sqlalchemy import select

    tenant = unique("secret")
    token = packets.settings.effective_admin_token()
    body = {
        "tenant_id": tenant,
        "kind": "halopsa",
        "base_url": "https://halo.client.test",
        "credentials": {"token": "hunter2-very-secret-token"},
    }
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=packets.app),
        base_url="http://packet",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        put = await client.put("/v1/psa", json=body)
        got = await client.get("/v1/psa", params={"tenant_id": tenant})
    assert put.status_code == got.status_code == 200
    assert "hunter2" not in put.text and "hunter2" not in got.text
    with packets.rt.engine.connect() as conn:
        stored = conn.execute(
            select(tables.targets.c.credentials).where(tables.targets.c.tenant_id == tenant)
        ).scalar()
    assert stored and "hunter2" not in stored, "encrypted at rest"
    box = packets.service.packets.box
    assert targets.get_target(packets.rt.engine, tenant, box=box)["credentials"] == body["credentials"]
    from libs.common.crypto import SecretBox, SecretBoxError, new_key

    with pytest.raises(SecretBoxError, match="cannot be decrypted"):
        targets.get_target(packets.rt.engine, tenant, box=SecretBox(new_key()))


def triaged(tenant: str, ticket_id: str, mode: str, *, apply: bool, label: str = "Storage") -> TicketTriaged:
    return TicketTriaged(
        event_id=uuid.uuid4(),
        tenant_id=tenant,
        occurred_at=datetime.now(UTC),
        source=EventSource(system="msp.triage"),
        payload=TicketTriagedPayload(
            ticket_id=ticket_id,
            category=Decision(label=label, confidence=0.93, method="tenant_model"),
            intent=Decision(label="disk_space", confidence=0.8, method="intent_catalogue"),
            priority=Decision(label="high", confidence=0.6, method="priority_rules"),
            rollout_mode=mode,  # type: ignore[arg-type]
            apply_category=apply,
        ),
    )


CREDENTIALS: dict[str, dict[str, Any]] = {
    "connectwise": {"company": "msp", "public_key": "pk", "private_key": "sk", "client_id": "c1"},
    "autotask": {"integration_code": "x", "username": "u", "secret": "s"},
    "halopsa": {"token": "t"},
    "webhook": {"secret": "hook-secret"},
}


@pytest.mark.parametrize("kind", ["connectwise", "autotask", "halopsa", "webhook"])
async def test_auto_mode_sets_the_category_in_the_psa_once_audited_and_no_other_mode_does(
    packets: Packets, sink: tuple[PsaSink, str], kind: str
) -> None:
    """`auto` above the threshold: the tenant's PSA writer sets the category, once per (ticket,
    category) however often the decision is delivered, with an audit; `suggest`, `shadow`,
    `auto` below the threshold, and a ticket that already has a category are left alone."""
    from sqlalchemy import select

    psa_fake, url = sink
    tenant = unique(f"auto-{kind[:4]}")
    engine = packets.rt.engine
    import httpx

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=packets.app),
        base_url="http://packet",
        headers={"Authorization": f"Bearer {packets.settings.effective_admin_token()}"},
    ) as client:
        put = await client.put(
            "/v1/psa",
            json={
                "tenant_id": tenant,
                "kind": kind,
                "base_url": f"{url}/hook" if kind == "webhook" else url,
                "credentials": CREDENTIALS[kind],
                "options": {"category_ids": {"Storage": 7}} if kind == "autotask" else {},
            },
        )
    assert put.status_code == 200, put.text
    # Ticket numbers: 7101 auto, 7102 suggest, 7103 shadow, 7104 auto below the threshold,
    # 7105 auto but the ticket already carries a category.
    n = {
        k: str(7100 + i + 10 * ["connectwise", "autotask", "halopsa", "webhook"].index(kind))
        for i, k in enumerate(["auto", "suggest", "shadow", "low", "kept"], start=1)
    }
    await packets.send(ticket(tenant, n["kept"], "created"))
    kept = ticket(tenant, n["kept"], "updated")
    kept = kept.model_copy(
        update={
            "payload": kept.payload.model_copy(
                update={"ticket": kept.payload.ticket.model_copy(update={"category": "Network"})}
            )
        }
    )
    decision = triaged(tenant, n["auto"], "auto", apply=True)
    await packets.send(
        kept,
        decision,
        decision,  # a redelivery
        triaged(tenant, n["suggest"], "suggest", apply=False),
        triaged(tenant, n["shadow"], "shadow", apply=False),
        triaged(tenant, n["low"], "auto", apply=False),
        triaged(tenant, n["kept"], "auto", apply=True),
    )

    def set_for(ticket_id: str) -> list[dict[str, Any]]:
        return [
            c
            for c in psa_fake.categories
            if c["kind"] == kind and ticket_id in json.dumps(c["body"]) + c["path"]
        ]

    await eventually(lambda: len(set_for(n["auto"])) == 1, "the category set in the PSA")
    # The same decision again, then a sentinel whose note is posted after it: still one write.
    await packets.send(decision)
    sentinel = await handled_up_to_here(packets, tenant)
    await eventually(lambda: any(sentinel in json.dumps(x) for x in psa_fake.notes), "the sentinel's note")
    assert len(set_for(n["auto"])) == 1
    for other in ("suggest", "shadow", "low", "kept"):
        assert set_for(n[other]) == [], f"{other}: nothing is set"
    (write,) = psa_writes.psa_writes_of(engine, tenant, n["auto"], "category")
    assert (write["status"], write["attempts"], write["text"]) == ("posted", 1, "Storage")

    call = set_for(n["auto"])[0]
    if kind == "connectwise":
        assert call["path"].endswith(f"/service/tickets/{n['auto']}")
        assert call["body"] == [{"op": "replace", "path": "type", "value": {"name": "Storage"}}]
    elif kind == "autotask":
        assert call["body"] == {"id": int(n["auto"]), "issueType": 7}
    elif kind == "halopsa":
        assert call["body"] == [{"id": int(n["auto"]), "category_1": "Storage"}]
    else:
        assert call["body"]["set_category"]["category"] == "Storage"
        assert call["headers"]["x-msp-signature"].startswith("sha256=")

    def audited() -> list[dict[str, Any]]:
        with engine.connect() as conn:
            rows = conn.execute(
                select(tables.outbox.c.value).where(tables.outbox.c.value.contains(tenant.encode()))
            )
            return [json.loads(r[0]) for r in rows if b"packet.category" in r[0]]

    await eventually(lambda: len(audited()) == 1, "one audit of the write")
    (event,) = audited()
    assert event["payload"]["action"] == "packet.category.set"
    assert event["payload"]["details"]["category"] == "Storage" and event["payload"]["details"]["psa"] == kind


async def test_an_autotask_category_without_a_picklist_value_fails_clearly_and_is_not_retried(
    packets: Packets, sink: tuple[PsaSink, str]
) -> None:
    psa_fake, url = sink
    tenant = unique("auto-nomap")
    engine = packets.rt.engine
    targets.set_target(
        engine, tenant, "autotask", url, CREDENTIALS["autotask"], {}, box=packets.service.packets.box
    )
    await packets.send(triaged(tenant, "7201", "auto", apply=True))
    await eventually(
        lambda: (
            [w["status"] for w in psa_writes.psa_writes_of(engine, tenant, "7201", "category")] == ["failed"]
        ),
        "the write given up",
    )
    (write,) = psa_writes.psa_writes_of(engine, tenant, "7201", "category")
    assert write["attempts"] == 1 and "category_ids" in write["last_error"]
    assert not [c for c in psa_fake.categories if "7201" in json.dumps(c["body"])]


async def test_the_ticket_lifecycle_gives_each_tenant_its_sla_figures_once_per_event(
    packets: Packets,
) -> None:
    """Escalation and resolution times in the PSA's clock, with and without a packet, reopens;
    a redelivered event changes nothing; another tenant's figures stay its own."""
    from datetime import timedelta

    import httpx
    from prometheus_client import REGISTRY

    tenant, other = unique("acme"), unique("acme")
    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def at(ev: TicketEvent, minutes: int) -> TicketEvent:
        return ev.model_copy(update={"occurred_at": t0 + timedelta(minutes=minutes)})

    escalated = at(escalation(tenant, "L-1", uuid.uuid4()), 60)
    await packets.send(at(ticket(tenant, "L-1", "created"), 0), escalated)
    await eventually(lambda: len(packets.versions(tenant, "L-1")) == 1, "the packet")
    resolved = at(ticket(tenant, "L-1", "resolved"), 180)
    await packets.send(
        resolved,
        at(ticket(tenant, "L-1", "closed"), 185),  # closed after resolved: not a second resolution
        at(ticket(tenant, "L-1", "reopened"), 240),
        at(ticket(tenant, "L-1", "resolved"), 300),
        escalated,  # redeliveries
        resolved,
        # A ticket resolved by L1, never escalated; another tenant's ticket.
        at(ticket(tenant, "L-2", "created"), 10),
        at(ticket(tenant, "L-2", "resolved"), 40),
        at(ticket(other, "X-1", "created"), 0),
        at(escalation(other, "X-1"), 5),
    )
    await handled_up_to_here(packets, tenant)
    await handled_up_to_here(packets, other)
    token = packets.settings.effective_admin_token()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=packets.app),
        base_url="http://packet",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        window = {"since": "2026-11-01T00:00:00Z", "until": "2026-11-03T00:00:00Z"}
        r = await client.get("/v1/sla", params={"tenant_id": tenant, **window})
        assert r.status_code == 200, r.text
        figures = r.json()
        assert figures["tickets"] == 2 and figures["escalated"] == 1
        assert figures["mean_time_to_escalate_s"] == 3600.0
        assert figures["resolved_after_escalation"] == {
            "with_packet": {"tickets": 1, "mean_s": 7200.0},
            "without_packet": {"tickets": 0, "mean_s": None},
        }
        assert (figures["resolved"], figures["reopened"], figures["reopen_rate"]) == (2, 1, 0.5)
        theirs = (await client.get("/v1/sla", params={"tenant_id": other, **window})).json()
        assert (theirs["tickets"], theirs["escalated"], theirs["mean_time_to_escalate_s"]) == (1, 1, 300.0)
        assert theirs["resolved"] == 0 and theirs["reopen_rate"] is None
        # Up to now (by default): the sentinel escalation of today as well, escalated at once.
        later = (
            await client.get("/v1/sla", params={"tenant_id": tenant, "since": "2026-11-03T00:00:00Z"})
        ).json()
        assert (later["tickets"], later["escalated"], later["mean_time_to_escalate_s"]) == (1, 1, 0.0)
        # A window that ends before it starts holds nothing; one at the calendar's edge is clamped.
        empty = await client.get(
            "/v1/sla", params={"tenant_id": tenant, "since": "2026-11-03", "until": "2026-11-02"}
        )
        assert empty.status_code == 200 and empty.json()["tickets"] == 0
        edge = await client.get("/v1/sla", params={"tenant_id": tenant, "until": "0001-01-02T00:00:00+05:00"})
        assert edge.status_code == 200 and edge.json()["tickets"] == 0
        bad = await client.get("/v1/sla", params={"tenant_id": tenant, "since": "yesterday"})
        assert bad.status_code == 422

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"tenant": tenant, **labels})

    assert sample("msp_sla_time_to_escalate_seconds_sum") == 3600.0
    assert sample("msp_sla_time_to_resolve_after_escalation_seconds_sum", packet="yes") == 7200.0
    assert sample("msp_sla_time_to_resolve_after_escalation_seconds_count", packet="yes") == 1
    assert sample("msp_sla_ticket_transitions_total", transition="resolved") == 3  # L-1 twice, L-2
    assert sample("msp_sla_ticket_transitions_total", transition="reopened") == 1
    assert sample("msp_sla_ticket_transitions_total", transition="escalated") == 2  # and the sentinel


async def test_a_monthly_report_draft_traces_every_figure_matches_the_api_and_renders_to_pdf(
    packets: Packets,
) -> None:
    """A month of one tenant becomes a draft: its service levels are GET /v1/sla's, every
    figure names its query and every sentence its figures or sources; it renders to HTML and
    PDF, is never sent, and an approval records the turnaround. Another tenant sees nothing."""
    from datetime import timedelta

    import httpx
    from prometheus_client import REGISTRY

    from libs.common.events import (
        ActionStep,
        AutomationResult,
        AutomationResultPayload,
        AutomationRun,
        AutomationRunPayload,
        StepResult,
    )

    tenant, other = unique("rep"), unique("rep")
    now = datetime.now(UTC)
    month = now.strftime("%Y-%m")
    t0 = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)

    def at(ev: TicketEvent, minutes: int) -> TicketEvent:
        return ev.model_copy(update={"occurred_at": t0 + timedelta(minutes=minutes)})

    def filed(tid: str, kind: str, category: str) -> TicketEvent:
        ev = ticket(tenant, tid, kind)
        snap = ev.payload.ticket.model_copy(
            update={"category": category, "title": f"{category} problem {tid}"}
        )
        return ev.model_copy(update={"payload": ev.payload.model_copy(update={"ticket": snap})})

    events = []
    for i, tid in enumerate(("P-1", "P-2", "P-3")):  # three printer tickets, two hours each
        events += [
            at(filed(tid, "created", "Printers"), 10 * i),
            at(filed(tid, "resolved", "Printers"), 10 * i + 120),
        ]
    events += [  # one escalated account ticket, resolved after 90 minutes, then reopened
        at(filed("A-1", "created", "Accounts"), 0),
        at(escalation(tenant, "A-1"), 30),
        at(filed("A-1", "resolved", "Accounts"), 120),
        at(filed("A-1", "reopened", "Accounts"), 180),
    ]
    await packets.send(signal(tenant, device="FS09"), *events)
    await eventually(lambda: len(packets.versions(tenant, "A-1")) >= 1, "the escalation's packet")
    run_id = uuid.uuid4()
    envelope = {"tenant_id": tenant, "occurred_at": now}
    await packets.send(
        AutomationRun(
            event_id=uuid.uuid4(),
            source=EventSource(system="msp.automation"),
            payload=AutomationRunPayload(
                run_id=run_id,
                ticket_id="P-3",
                steps=[ActionStep(action="rmm.restart_service", params={"service": "Spooler"})],
                requested_by="engineer:sam",
                mode="manual",
            ),
            **envelope,  # type: ignore[arg-type]
        ),
        AutomationResult(
            event_id=uuid.uuid4(),
            source=EventSource(system="msp.executor"),
            payload=AutomationResultPayload(
                run_id=run_id,
                outcome="succeeded",
                steps=[
                    StepResult(index=0, action="rmm.restart_service", outcome="succeeded", duration_ms=60_000)
                ],
            ),
            **envelope,  # type: ignore[arg-type]
        ),
    )
    await handled_up_to_here(packets, tenant)
    token = packets.settings.effective_admin_token()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=packets.app),
        base_url="http://packet",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        r = await client.post("/v1/reports", json={"tenant_id": tenant, "month": month})
        assert r.status_code == 201, r.text
        report = r.json()
        assert report["status"] == "draft" and report["approved_at"] is None
        figures = {f["id"]: f for f in report["figures"]}
        assert all(f["query"] for f in figures.values()), "a figure without its query"
        for section in report["sections"]:
            for s in section["sentences"]:
                assert s["figures"] or s["sources"], f"an untraceable sentence: {s['text']}"
                assert set(s["figures"]) <= set(figures), s
        # The service levels are the API's, for the same month.
        start = t0.isoformat()
        end = (t0 + timedelta(days=32)).replace(day=1).isoformat()
        api = (await client.get("/v1/sla", params={"tenant_id": tenant, "since": start, "until": end})).json()
        assert figures["escalated"]["value"] == api["escalated"]
        assert figures["mean_time_to_escalate_s"]["value"] == api["mean_time_to_escalate_s"]
        assert figures["reopen_rate"]["value"] == api["reopen_rate"]
        with_packet = api["resolved_after_escalation"]["with_packet"]["mean_s"]
        assert figures["resolve_with_packet_s"]["value"] == with_packet == 5400.0
        # Tickets by category; the sentinel escalation of handled_up_to_here is this month's too.
        assert figures["tickets.Printers"]["value"] == 3 and figures["tickets.Accounts"]["value"] == 1
        assert figures["runs.succeeded"]["value"] == api["automation_runs"]["succeeded"] == 1
        # Time saved: the median printer ticket without automation took 2 h, the run 1 min.
        assert figures["time_saved_s"]["value"] == 7200 - 60
        recurring = next(s for s in report["sections"] if s["title"] == "Recurring issues")
        assert recurring["sentences"][0]["text"].startswith("Printers came back 3 times")
        assert {"kind": "execution", "id": str(run_id)} in recurring["sentences"][0]["sources"]
        html = await client.get(f"/v1/reports/{report['report_id']}/html", params={"tenant_id": tenant})
        assert html.status_code == 200 and "Printers came back 3 times" in html.text and "DRAFT" in html.text
        pdf = await client.get(f"/v1/reports/{report['report_id']}/pdf", params={"tenant_id": tenant})
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        assert pdf.content.startswith(b"%PDF") and len(pdf.content) > 5000
        # Never another tenant's.
        theirs = await client.get(f"/v1/reports/{report['report_id']}", params={"tenant_id": other})
        assert theirs.status_code == 404
        assert (
            await client.post(
                f"/v1/reports/{report['report_id']}/approve", json={"tenant_id": other, "approved_by": "x"}
            )
        ).status_code == 404
        # An engineer approves it: the turnaround is measured; it is not redrafted after.
        ok = await client.post(
            f"/v1/reports/{report['report_id']}/approve",
            json={"tenant_id": tenant, "approved_by": "lead.sam"},
        )
        assert (
            ok.status_code == 200
            and ok.json()["status"] == "approved"
            and ok.json()["approved_by"] == "lead.sam"
        )
        again = await client.post(
            f"/v1/reports/{report['report_id']}/approve", json={"tenant_id": tenant, "approved_by": "x"}
        )
        assert again.status_code == 409
        redraft = await client.post("/v1/reports", json={"tenant_id": tenant, "month": month})
        assert redraft.status_code == 409
        bad = await client.post("/v1/reports", json={"tenant_id": tenant, "month": "2026-13"})
        assert bad.status_code == 422
    assert REGISTRY.get_sample_value("msp_sla_report_turnaround_seconds_count", {"tenant": tenant}) == 1


async def test_a_client_visible_question_whose_answer_the_ticket_already_holds_is_a_repeat_question(
    packets: Packets,
) -> None:
    from prometheus_client import REGISTRY

    tenant = unique("ask")

    def noted(note_id: str, text: str, internal: bool) -> TicketEvent:
        return ticket(
            tenant, "Q-1", "note_added", note=TicketNote(note_id=note_id, text=text, internal=internal)
        )

    await packets.send(
        ticket(tenant, "Q-1", "created"),
        noted("n1", "Customer reports the error message says: disk quota exceeded for user maria.", True),
        # Asks for what note n1 holds: a repeat. Then something nobody asked yet: not one.
        noted("n2", "Hello Maria, could you tell us what the error message says?", False),
        noted("n3", "Which printer model is on your desk?", False),
        noted("n2", "Hello Maria, could you tell us what the error message says?", False),  # redelivered
    )
    await handled_up_to_here(packets, tenant)
    assert REGISTRY.get_sample_value("msp_sla_repeat_questions_total", {"tenant": tenant}) == 1
