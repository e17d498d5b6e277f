"""Ticket triage on the real broker and PostgreSQL, with the real embedding model: the triage
runtime in this process, fed ticket and signal events through Kafka, read back from
`tickets.triaged.v1`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from libs.common.events import (
    EventSource,
    TicketEvent,
    TicketEventPayload,
    TicketNote,
    TicketSnapshot,
)
from services.triage.tickets import store
from services.triage.tickets.api import drift
from tests.conftest import eventually, partition_twin, unique
from tests.integration.test_triage_alerts import Triage
from tests.messages_server import messages_server
from tests.samples import timed_alert

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

PRINTER = [
    "printer on the second floor is jammed and not printing",
    "cannot print to the office printer, jobs stuck in the queue",
    "the printer shows paper jam error again",
    "printing from excel gives an error on the hp printer",
    "new printer needs to be added to my laptop",
    "printer prints blank pages since yesterday",
    "toner empty on the reception printer",
]
ACCOUNT = [
    "please reset my password, i forgot it",
    "account locked after the holidays, cannot sign in",
    "user cannot log in to windows, password expired",
    "locked out of my account after too many attempts",
    "need a password reset for the new intern",
    "my password does not work anymore on the portal",
    "cannot sign in to outlook, says wrong password",
]


def ticket_event(
    tenant: str,
    ticket_id: str,
    title: str,
    *,
    kind: str = "created",
    category: str | None = None,
    devices: list[str] | None = None,
    site: str | None = None,
    note: str | None = None,
) -> TicketEvent:
    return TicketEvent(
        event_id=uuid.uuid4(),
        tenant_id=tenant,
        occurred_at=NOW,
        source=EventSource(system="test-psa", reference=ticket_id),
        payload=TicketEventPayload(
            kind=kind,  # type: ignore[arg-type]
            ticket=TicketSnapshot(
                ticket_id=ticket_id,
                title=title,
                category=category,
                devices=devices or [],
                site=site,
                requester="pat@example.test",
                url=f"https://psa.example.test/tickets/{ticket_id}",
            ),
            note=TicketNote(note_id=f"n-{ticket_id}", text=note) if note else None,
        ),
    )


class TriageWithTickets(Triage):
    """The triage runtime with ticket triage on, and a reader of `tickets.triaged.v1`."""

    reads = "tickets.triaged.v1"

    def __init__(self, *args: Any, **settings: Any) -> None:
        super().__init__(*args)
        self.settings = self.settings.model_copy(update={"embeddings_enabled": True, **settings})
        self.triaged = self.read

    async def start(self) -> None:
        await super().start()
        deadline = time.monotonic() + 120
        while not self.service.tickets.ready:
            assert time.monotonic() < deadline, "ticket triage never got ready"
            await asyncio.sleep(0.1)

    async def result(self, tenant: str, ticket_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            for ev in self.triaged:
                if ev["tenant_id"] == tenant and ev["payload"]["ticket_id"] == ticket_id:
                    return ev["payload"]
            assert time.monotonic() < deadline, f"no triage of {ticket_id}; got {len(self.triaged)} results"
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def triage(
    bootstrap: str, pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TriageWithTickets]:
    t = TriageWithTickets(
        bootstrap,
        pg_url,
        tmp_path_factory.mktemp("tickets"),
        tickets_min_history=12,
        tickets_abstain_below=0.2,
        tickets_default_mode="suggest",
    )
    await t.start()
    yield t
    await t.stop()
    await t.close()


async def teach(t: TriageWithTickets, tenant: str) -> None:
    """Fourteen resolved tickets of two categories: enough history for a tenant model."""
    events = [
        ticket_event(tenant, f"{prefix}-{i}", text, kind="resolved", category=cat, note=f"{cat} fix {i}")
        for prefix, cat, texts in (("p", "Printers", PRINTER), ("a", "Accounts", ACCOUNT))
        for i, text in enumerate(texts)
    ]
    await t.send(*events)  # type: ignore[arg-type]
    await eventually(
        lambda: t.service.tickets.status(tenant).get("model") == "tenant_model", "the tenant model"
    )


async def test_a_new_tenant_falls_back_to_the_global_model_and_gets_its_client_context(
    triage: TriageWithTickets,
) -> None:
    tenant = unique("new")
    # An alert, clustered into a signal: what tickets see of it is written at the clustering
    # checkpoint (about every five seconds), not read from the signal stream.
    firing = timed_alert(tenant, "fs01-smart", "Disk failure predicted on fs-01", device="fs-01", site="hq")
    firing = firing.model_copy(update={"payload": firing.payload.model_copy(update={"severity": "critical"})})
    await triage.send(firing)  # type: ignore[arg-type]
    await eventually(lambda: store.signals_near(triage.rt.engine, tenant, ["fs-01"], None), "the open signal")
    (seen,) = store.signals_near(triage.rt.engine, tenant, ["fs-01"], None)
    assert (seen["severity"], seen["devices"], seen["title"]) == (
        "critical",
        ["fs-01"],
        "Disk failure predicted on fs-01",
    )
    await triage.send(
        ticket_event(tenant, "T-1", "file share on fs-01 is very slow", devices=["fs-01"], site="hq")
    )  # type: ignore[arg-type]
    got = await triage.result(tenant, "T-1")
    assert got["category"]["method"] in ("global_model", "abstained:global_model")
    assert got["similar_cases"] == []
    assert got["context"]["devices"] == ["fs-01"] and got["context"]["site"] == "hq"
    assert got["context"]["requester"] == "pat@example.test"
    assert got["open_signal_ids"] == [seen["signal_id"]]
    assert got["context"]["open_signals"][0]["severity"] == "critical"
    assert got["priority"]["label"] == "critical" and got["priority"]["method"] == "priority_signals"
    assert got["rollout_mode"] == "suggest"
    # Another tenant's ticket on a device of the same name sees none of it.
    other = unique("other")
    await triage.send(ticket_event(other, "T-1", "file share on fs-01 is very slow", devices=["fs-01"]))  # type: ignore[arg-type]
    assert (await triage.result(other, "T-1"))["open_signal_ids"] == []


async def test_a_resolved_ticket_is_a_similar_case_at_once_and_never_for_another_tenant(
    triage: TriageWithTickets,
) -> None:
    a, b = unique("tenant-a"), unique("tenant-b")
    text = "vpn client fails with certificate error after the windows update"
    await triage.send(
        ticket_event(a, "A-1", text, kind="resolved", category="Network", note="reissued the vpn certificate")  # type: ignore[arg-type]
    )
    await eventually(lambda: triage.service.tickets.status(a).get("cases") == 1, "the case to be learned")
    await triage.send(ticket_event(a, "A-2", text), ticket_event(b, "B-2", text))  # type: ignore[arg-type]
    mine = await triage.result(a, "A-2")
    assert mine["similar_cases"][0]["ticket_id"] == "A-1"
    assert mine["similar_cases"][0]["resolution_summary"] == "reissued the vpn certificate"
    assert mine["similar_cases"][0]["url"].endswith("/tickets/A-1")
    assert mine["similar_cases"][0]["score"] > 0.99
    theirs = await triage.result(b, "B-2")
    assert theirs["similar_cases"] == [], "tenant B must not see tenant A's case, however identical"
    assert "A-1" not in json.dumps(theirs)


async def test_a_tenant_model_decides_once_history_allows_and_a_correction_is_counted(
    triage: TriageWithTickets,
) -> None:
    tenant = unique("acme")
    await teach(triage, tenant)
    await triage.send(ticket_event(tenant, "N-1", "the printer in room 4 is jammed and will not print"))  # type: ignore[arg-type]
    got = await triage.result(tenant, "N-1")
    assert (got["category"]["label"], got["category"]["method"]) == ("Printers", "tenant_model")
    assert got["intent"]["label"] == "printer"
    sources = got["category"]["rationale"]["sources"]
    assert sources and all(s["id"].startswith("p-") for s in sources), sources

    # An engineer files it elsewhere: a correction, counted and in the drift figures.
    def refiled() -> TicketEvent:
        text = "the printer in room 4 is jammed and will not print"
        return ticket_event(tenant, "N-1", text, kind="updated", category="Accounts")

    await triage.send(refiled())  # type: ignore[arg-type]
    await eventually(lambda: drift(triage.rt.engine, tenant, 200)["corrected"] == 1, "the correction")
    figures = drift(triage.rt.engine, tenant, 200)
    assert figures["reviewed"] == 1 and figures["correction_share"] == 1.0
    assert 0 < figures["mean_confidence"] <= 1
    # The same category again is not a second correction.
    await triage.send(refiled())  # type: ignore[arg-type]
    marker = partition_twin(tenant)  # handled after the refiled ticket: then it was handled too
    await triage.send(ticket_event(marker, "M-1", "printer jammed"))  # type: ignore[arg-type]
    await triage.result(marker, "M-1")
    assert drift(triage.rt.engine, tenant, 200)["corrected"] == 1
    # The SLA measures: the ticket's time to classify, and the correction as the counter-metric.
    from prometheus_client import REGISTRY

    classified = {"tenant": tenant, "kind": "ticket"}
    assert (REGISTRY.get_sample_value("msp_sla_time_to_classify_seconds_count", classified) or 0) >= 1
    corrected = {"tenant": tenant, "kind": "triage_corrected"}
    assert REGISTRY.get_sample_value("msp_sla_engineer_corrections_total", corrected) == 1


async def test_rollout_modes_decide_what_the_result_is_for(triage: TriageWithTickets) -> None:
    tenant = unique("roll")
    await teach(triage, tenant)
    engine = triage.rt.engine
    await asyncio.to_thread(store.set_rollout, engine, tenant, "*", "off", 0.9)
    await asyncio.to_thread(store.set_rollout, engine, tenant, "Printers", "auto", 0.0)
    await asyncio.to_thread(store.set_rollout, engine, tenant, "Accounts", "shadow", 0.9)
    await triage.send(
        ticket_event(tenant, "R-1", "printer jammed again on floor two"),  # type: ignore[arg-type]
        ticket_event(tenant, "R-2", "forgot my password, please reset it"),  # type: ignore[arg-type]
    )
    auto = await triage.result(tenant, "R-1")
    assert (auto["rollout_mode"], auto["apply_category"]) == ("auto", True)
    shadow = await triage.result(tenant, "R-2")
    assert (shadow["rollout_mode"], shadow["apply_category"]) == ("shadow", False)
    # The PSA echoing the category the platform set (`auto`) is no engineer's review: it
    # confirms nothing and feeds no drift figure; an engineer refiling it afterwards does.
    text = "printer jammed again on floor two"
    await triage.send(ticket_event(tenant, "R-1", text, kind="updated", category="Printers"))  # type: ignore[arg-type]
    marker = partition_twin(tenant)  # handled after the echo: then the echo was handled too
    await triage.send(ticket_event(marker, "M-0", "printer jammed"))  # type: ignore[arg-type]
    await triage.result(marker, "M-0")
    assert drift(engine, tenant, 200)["reviewed"] == 0
    await triage.send(ticket_event(tenant, "R-1", text, kind="updated", category="Accounts"))  # type: ignore[arg-type]
    await eventually(lambda: drift(engine, tenant, 200)["corrected"] == 1, "the engineer's correction")
    # One category off while another is on: nothing stored, published or audited for it. The
    # printer ticket sent after it is the marker that triage has moved past it.
    await asyncio.to_thread(store.set_rollout, engine, tenant, "Accounts", "off", 0.9)
    await triage.send(
        ticket_event(tenant, "R-5", "forgot my password again, please reset it"),  # type: ignore[arg-type]
        ticket_event(tenant, "R-6", "printer jammed on floor three"),  # type: ignore[arg-type]
    )
    assert (await triage.result(tenant, "R-6"))["rollout_mode"] == "auto"
    assert await asyncio.to_thread(store.last_decision, engine, tenant, "R-5") is None
    assert not [e for e in triage.triaged if e["payload"]["ticket_id"] == "R-5"]
    # All off: nothing computed, nothing published.
    await asyncio.to_thread(store.set_rollout, engine, tenant, "Printers", "off", 0.9)
    await asyncio.to_thread(store.set_rollout, engine, tenant, "Accounts", "off", 0.9)
    await triage.send(ticket_event(tenant, "R-3", "printer out of toner"), ticket_event(tenant, "R-4", "x"))  # type: ignore[arg-type]
    marker = partition_twin(tenant)  # another tenant on the same partition, handled after them
    await triage.send(ticket_event(marker, "M-1", "printer jammed"))  # type: ignore[arg-type]
    await triage.result(marker, "M-1")
    assert await asyncio.to_thread(store.last_decision, engine, tenant, "R-3") is None
    assert not [e for e in triage.triaged if e["payload"]["ticket_id"] in ("R-3", "R-4")]


async def test_a_tenants_own_intent_counts_for_it_alone(triage: TriageWithTickets) -> None:
    mine, other = unique("own"), unique("plain")
    intent = {
        "name": "badge_access",
        "description": "The door badge does not open a door.",
        "category": "Facilities",
        "keywords": ["badge", "door access"],
        "examples": ["my badge does not open the front door", "door access card stopped working"],
    }
    await asyncio.to_thread(store.save_intent, triage.rt.engine, mine, intent)
    text = "badge will not open the door to the server room"
    await triage.send(ticket_event(mine, "B-1", text), ticket_event(other, "B-1", text))  # type: ignore[arg-type]
    got = await triage.result(mine, "B-1")
    assert got["intent"]["label"] == "badge_access"
    assert "badge" in got["intent"]["rationale"]["text"]
    assert (await triage.result(other, "B-1"))["intent"]["label"] != "badge_access"


async def test_when_unsure_claude_is_asked_and_an_invalid_answer_leaves_it_to_a_human(
    bootstrap: str, pg_url: str, tmp_path: Path
) -> None:
    with messages_server() as (server, url):
        t = TriageWithTickets(
            bootstrap,
            pg_url,
            tmp_path,
            tickets_min_history=12,
            tickets_abstain_below=1.0,  # the local path is never sure enough: always ask
            anthropic_api_key=SecretStr("test-key"),
            anthropic_base_url=url,
        )
        await t.start()
        try:
            tenant = unique("llm")
            await teach(t, tenant)
            server.script = [
                {
                    "input": {
                        "label": "Printers",
                        "confidence": 0.8,
                        "rationale": "jammed printer, like p-0",
                        "evidence": ["p-0"],
                    }
                },
                {"input": {"label": "Printers", "confidence": 1.5, "rationale": "out of range"}},
                {"input": {"label": "Coffee machines", "confidence": 0.9, "rationale": "made up"}},
            ]
            await t.send(
                ticket_event(tenant, "L-1", "printer jammed on floor 3, mail me at ann@example.test")
            )  # type: ignore[arg-type]
            got = await t.result(tenant, "L-1")
            assert (got["category"]["label"], got["category"]["method"]) == ("Printers", "claude")
            assert [s["id"] for s in got["category"]["rationale"]["sources"]] == ["p-0"]
            assert not got["needs_human"]
            sent = json.dumps(server.requests[0]["body"])
            assert "ann@example.test" not in sent, "personal data is redacted before the prompt leaves"
            assert "Printers" in sent and "p-0" in sent, "candidates and similar cases go with the question"
            await t.send(ticket_event(tenant, "L-2", "printer jammed on floor 5"))  # type: ignore[arg-type]
            got = await t.result(tenant, "L-2")
            assert got["category"]["label"] is None and got["needs_human"]
            assert got["category"]["method"].startswith("abstained:")
            assert len(server.requests) == 3, "one question, then one repair of the invalid answer"
        finally:
            await t.stop()
            await t.close()


async def test_a_tenant_model_survives_a_restart_without_retraining(
    triage: TriageWithTickets, bootstrap: str, pg_url: str, tmp_path: Path
) -> None:
    tenant = unique("kept")
    await teach(triage, tenant)
    trained_on = triage.service.tickets.status(tenant)["trained_on"]
    # Another instance, as after a restart or a rebalance: the same database, nothing in memory.
    t = TriageWithTickets(bootstrap, pg_url, tmp_path, tickets_min_history=12, tickets_abstain_below=0.2)
    await t.start()
    try:
        await t.send(ticket_event(tenant, "K-1", "the printer in the lobby is jammed and will not print"))  # type: ignore[arg-type]
        got = await t.result(tenant, "K-1")
        assert (got["category"]["label"], got["category"]["method"]) == ("Printers", "tenant_model")
        status = t.service.tickets.status(tenant)
        assert status["trained_on"] == trained_on and not status["training"], (
            "the stored model, not a new one"
        )
    finally:
        await t.stop()
        await t.close()


async def test_the_rollout_and_intent_apis_validate_and_keep_per_tenant_settings(
    triage: TriageWithTickets,
) -> None:
    import httpx

    token = triage.settings.effective_admin_token()
    tenant, other = unique("api"), unique("api-other")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=triage.app),
        base_url="http://triage",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        assert (
            await client.get("/v1/rollout", params={"tenant_id": tenant}, headers={"Authorization": ""})
        ).status_code == 401
        bad = await client.put("/v1/rollout", json={"tenant_id": tenant, "mode": "yolo"})
        assert bad.status_code == 422 and "mode" in bad.text
        ok = await client.put(
            "/v1/rollout",
            json={"tenant_id": tenant, "category": "Printers", "mode": "auto", "auto_threshold": 0.95},
        )
        assert ok.status_code == 200
        got = (await client.get("/v1/rollout", params={"tenant_id": tenant})).json()
        assert got["modes"] == {"Printers": {"mode": "auto", "auto_threshold": 0.95}}
        assert (await client.get("/v1/rollout", params={"tenant_id": other})).json()["modes"] == {}
        intent = {
            "tenant_id": tenant,
            "name": "badge",
            "description": "door badge",
            "category": "Facilities",
            "examples": ["badge broken"],
        }
        assert (await client.put("/v1/intents", json=intent)).status_code == 422, "two examples at least"
        intent["examples"] = ["badge broken", "door will not open with my card"]
        assert (await client.put("/v1/intents", json=intent)).status_code == 200
        mine = (await client.get("/v1/intents", params={"tenant_id": tenant})).json()
        assert [i["name"] for i in mine["tenant"]] == ["badge"] and len(mine["catalogue"]) >= 16
        assert (await client.get("/v1/intents", params={"tenant_id": other})).json()["tenant"] == []
        missing = await client.get("/v1/tickets/nope/triage", params={"tenant_id": tenant})
        assert missing.status_code == 404
        drift = (await client.get("/v1/tickets/drift", params={"tenant_id": tenant})).json()
        assert drift["window"] == 0 and drift["mean_confidence"] is None
        assert (await client.get("/v1/tickets/drift", params={"tenant_id": "Bad Tenant"})).status_code == 422


async def test_a_global_model_that_cannot_be_built_makes_ticket_triage_unready_and_fail_loudly(
    bootstrap: str, pg_url: str
) -> None:
    """Today's failure mode was a consumer waiting forever with no error: now readiness says
    no, the reason is kept, and the consumer fails (its process exits for the supervisor)."""
    from libs.common.audit import AuditEmitter
    from libs.common.bus import EventProducer
    from libs.common.db import make_engine
    from libs.common.embeddings import shared_embedder
    from services.triage.tickets.engine import TicketTriage
    from services.triage.tickets.triager import TriageConfig

    producer = EventProducer(bootstrap, client_id="t")
    engine = make_engine(pg_url)
    triage = TicketTriage(
        engine=engine,
        producer=producer,
        audit=AuditEmitter(producer, "triage"),
        embedder=shared_embedder(),
        config=TriageConfig(),
        global_corpus=(["printer jammed", "vpn down"], ["Hardware"]),  # texts and labels do not pair up
    )
    await triage.start()
    try:
        assert triage._prepare is not None
        await asyncio.wait_for(asyncio.shield(triage._prepare), 120)
        assert triage.ready is False and triage.failed and "global ticket model" in triage.failed
        with pytest.raises(RuntimeError, match="global ticket model"):
            await asyncio.wait_for(triage.handle_batch([]), 5)
    finally:
        await triage.stop()
        engine.dispose()


def test_a_planted_pickle_in_the_models_table_is_never_loaded(pg_url: str, tmp_path: Path) -> None:
    """Whoever can write the models table must not run code in triage: a pickle that would
    create a file when loaded is refused (the tenant's model is trained again instead)."""
    import pickle

    from libs.common.db import make_engine, migrate
    from libs.common.events import utcnow
    from libs.common.settings import REPO_ROOT
    from services.triage.tickets.model import TicketClassifier
    from tests.samples import tickets

    migrate(pg_url, REPO_ROOT / "services" / "triage" / "migrations", "triage")
    engine = make_engine(pg_url)
    tenant = unique("pickle")
    texts, labels, vectors = tickets(300, seed=3)
    model = TicketClassifier().fit(texts, labels, vectors)
    assert store.save_model(engine, tenant, model, 300) > 0
    loaded, trained_on = store.load_model(engine, tenant)  # type: ignore[misc]
    assert trained_on == 300 and loaded.predict(texts[:3], vectors[:3])[0].label in set(labels)

    witness = tmp_path / "code-ran"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(witness), "w"))

    evil = pickle.dumps(Exploit())
    for blob in (evil, store.MODEL_MAGIC[:-1] + evil, store.MODEL_MAGIC + evil):
        with engine.begin() as conn:
            conn.execute(
                store.models.update()
                .where(store.models.c.tenant_id == tenant)
                .values(model=blob, created_at=utcnow())
            )
        assert store.load_model(engine, tenant) is None
    assert not witness.exists()
    engine.dispose()
