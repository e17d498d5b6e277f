"""Ingest over HTTP against the real broker and PostgreSQL: sources, errors, tenants, idempotency."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi.testclient import TestClient

from libs.common.events import AlertReceived, AuditEvent, TicketEvent
from services.ingest.app import build
from services.ingest.settings import IngestSettings
from tests.conftest import unique

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parents[1] / "fixtures" / "sources"
ADMIN = "a" * 40
PEPPER = "p" * 40


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class Reader:
    """Reads what landed on topics since it was made, as a read_committed consumer would."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap, self.topics = bootstrap, topics
        self.start = asyncio.run(self._ends())

    async def _consumer(self) -> AIOKafkaConsumer:
        c = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, isolation_level="read_committed", enable_auto_commit=False
        )
        await c.start()
        return c

    async def _ends(self) -> dict[TopicPartition, int]:
        c = await self._consumer()
        try:
            tps = [TopicPartition(t, p) for t in self.topics for p in range(12)]
            c.assign(tps)
            return await c.end_offsets(tps)
        finally:
            await c.stop()

    def events(self, tenant: str, settle_s: float = 1.5) -> list[dict[str, Any]]:
        return asyncio.run(self._read(tenant, settle_s))

    async def _read(self, tenant: str, settle_s: float) -> list[dict[str, Any]]:
        c = await self._consumer()
        out: list[dict[str, Any]] = []
        try:
            c.assign(list(self.start))
            for tp, off in self.start.items():
                c.seek(tp, off)
            deadline = time.monotonic() + settle_s
            while time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=200)
                for records in batch.values():
                    out.extend(
                        {"topic": r.topic, **json.loads(r.value)} for r in records if r.key == tenant.encode()
                    )
        finally:
            await c.stop()
        return out


@pytest.fixture(scope="module")
def settings(bootstrap: str, pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap_servers=bootstrap,
        database_url=pg_url,
        admin_token=ADMIN,
        signing_pepper=PEPPER,
        max_body_bytes=256 * 1024,
        max_events_per_request=500,
        var_dir=tmp_path_factory.mktemp("var"),
        key_cache_s=0.5,
    )


@pytest.fixture(scope="module")
def client(settings: IngestSettings) -> Iterator[TestClient]:
    _, app = build(settings)
    with TestClient(app) as c:
        yield c


def admin(client: TestClient, method: str, path: str, **kw: Any) -> Any:
    r = client.request(method, f"/v1/admin{path}", headers={"Authorization": f"Bearer {ADMIN}"}, **kw)
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


def new_tenant(client: TestClient, role: str = "integration") -> tuple[str, dict[str, str]]:
    tenant = unique("client")
    admin(client, "POST", "/tenants", json={"tenant_id": tenant, "name": "Client"})
    issued = admin(client, "POST", f"/tenants/{tenant}/keys", json={"role": role})
    return tenant, issued


def post(client: TestClient, path: str, key: str, body: Any) -> Any:
    return client.post(path, json=body, headers={"X-API-Key": key})


CANONICAL = {
    "fingerprint": "fs01-disk",
    "title": "Disk D: full on FS01",
    "device": "FS01",
    "starts_at": "2026-11-25T09:00:00Z",
}


@pytest.mark.parametrize(
    "path,fixture_name,topic,count",
    [
        ("/v1/sources/alertmanager", "alertmanager_firing.json", AlertReceived.topic, 2),
        ("/v1/sources/pagerduty", "pagerduty_trigger.json", AlertReceived.topic, 1),
        ("/v1/sources/datto", "datto_alert.json", AlertReceived.topic, 1),
        ("/v1/sources/ninjaone", "ninjaone_triggered.json", AlertReceived.topic, 1),
        ("/v1/sources/connectwise", "connectwise_ticket_added.json", TicketEvent.topic, 1),
        ("/v1/sources/halopsa", "halopsa_batch.json", TicketEvent.topic, 2),
    ],
)
def test_each_source_lands_on_its_topic_for_the_keys_tenant(
    client: TestClient, bootstrap: str, path: str, fixture_name: str, topic: str, count: int
) -> None:
    tenant, issued = new_tenant(client)
    reader = Reader(bootstrap, [AlertReceived.topic, TicketEvent.topic, AuditEvent.topic])
    r = post(client, path, issued["key"], fixture(fixture_name))
    assert r.status_code == 202, r.text
    ids = r.json()["event_ids"]
    assert len(ids) == count
    landed = reader.events(tenant)
    assert sorted(e["event_id"] for e in landed if e["topic"] == topic) == sorted(ids)
    assert all(e["tenant_id"] == tenant for e in landed)
    audits = [e for e in landed if e["topic"] == AuditEvent.topic]
    assert len(audits) == 1 and audits[0]["payload"]["details"]["event_ids"] == ids


def test_a_retried_webhook_gets_the_same_event_ids(client: TestClient) -> None:
    _, issued = new_tenant(client)
    first = post(client, "/v1/sources/alertmanager", issued["key"], fixture("alertmanager_firing.json"))
    retry = post(client, "/v1/sources/alertmanager", issued["key"], fixture("alertmanager_firing.json"))
    assert first.status_code == retry.status_code == 202
    assert first.json() == retry.json()


def test_request_errors_have_the_right_codes(client: TestClient) -> None:
    tenant_a, a = new_tenant(client)
    tenant_b, _ = new_tenant(client)
    r = client.post(
        "/v1/alerts",
        content=b'{"fingerprint": ',
        headers={"X-API-Key": a["key"], "content-type": "application/json"},
    )
    assert r.status_code == 400 and "malformed JSON" in r.text
    r = post(client, "/v1/alerts", a["key"], {"title": "", "severity": "apocalyptic"})
    assert r.status_code == 422
    fields = {tuple(e["loc"]) for e in r.json()["detail"]}
    assert {("body", "fingerprint"), ("body", "title"), ("body", "severity")} <= fields
    assert post(client, "/v1/alerts", "", CANONICAL).status_code == 401
    assert post(client, "/v1/alerts", a["key"][:-2] + "zz", CANONICAL).status_code == 401
    assert client.post("/v1/alerts", json=CANONICAL).status_code == 401
    assert post(client, "/v1/alerts", a["key"], {**CANONICAL, "tenant_id": tenant_b}).status_code == 403
    big = {"alerts": [{**CANONICAL, "fingerprint": f"fp-{i}", "description": "x" * 600} for i in range(450)]}
    assert post(client, "/v1/alerts/batch", a["key"], big).status_code == 413
    too_many = {"alerts": [{**CANONICAL, "fingerprint": f"fp-{i}"} for i in range(501)]}
    assert post(client, "/v1/alerts/batch", a["key"], too_many).status_code == 413
    assert post(client, "/v1/alerts", a["key"], {**CANONICAL, "tenant_id": tenant_a}).status_code == 202


def test_an_engineer_key_may_not_post_events(client: TestClient) -> None:
    _, issued = new_tenant(client, role="engineer")
    assert post(client, "/v1/alerts", issued["key"], CANONICAL).status_code == 403


def test_a_revoked_key_stops_working(client: TestClient, settings: IngestSettings) -> None:
    tenant, issued = new_tenant(client)
    assert post(client, "/v1/alerts", issued["key"], CANONICAL).status_code == 202
    admin(client, "DELETE", f"/tenants/{tenant}/keys/{issued['key_id']}")
    time.sleep(settings.key_cache_s + 0.2)
    assert post(client, "/v1/alerts", issued["key"], CANONICAL).status_code == 401


def test_a_psa_company_mapped_to_another_tenant_is_refused(client: TestClient, bootstrap: str) -> None:
    owner, _ = new_tenant(client)
    attacker, a = new_tenant(client)
    admin(
        client,
        "POST",
        f"/tenants/{owner}/mappings",
        json={"source_system": "connectwise", "external_id": "250"},
    )
    dup = client.post(
        f"/v1/admin/tenants/{attacker}/mappings",
        json={"source_system": "connectwise", "external_id": "250"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert dup.status_code == 409  # one company, one tenant
    reader = Reader(bootstrap, [TicketEvent.topic])
    r = post(client, "/v1/sources/connectwise", a["key"], fixture("connectwise_ticket_added.json"))
    assert r.status_code == 403 and "another tenant" in r.text
    assert reader.events(attacker) == [] and reader.events(owner, settle_s=0.3) == []


def test_autotask_posts_are_checked_against_the_keys_signing_secret(client: TestClient) -> None:
    _, issued = new_tenant(client)
    body = json.dumps(fixture("autotask_ticket_update.json")).encode()
    good = base64.b64encode(hmac.new(issued["signing_secret"].encode(), body, hashlib.sha1).digest()).decode()
    url = f"/v1/sources/autotask?key_id={issued['key_id']}"
    headers = {"content-type": "application/json"}
    r = client.post(url, content=body, headers={**headers, "X-Hook-Signature": good})
    assert r.status_code == 202, r.text
    assert (
        client.post(url, content=body + b" ", headers={**headers, "X-Hook-Signature": good}).status_code
        == 401
    )
    assert client.post(url, content=body, headers=headers).status_code == 401  # no signature, no key
    # A full sender key does not replace the signature: Autotask is a signed source.
    for creds in ({"X-API-Key": issued["key"]}, {"Authorization": f"Bearer {issued['key']}"}):
        unsigned = client.post(url, content=body, headers={**headers, **creds})
        assert unsigned.status_code == 401 and "X-Hook-Signature" in unsigned.text
    full_key_only = client.post(
        f"/v1/sources/autotask?api_key={issued['key']}", content=body, headers=headers
    )
    assert full_key_only.status_code == 401
    other_secret = base64.b64encode(hmac.new(b"guess", body, hashlib.sha1).digest()).decode()
    assert (
        client.post(url, content=body, headers={**headers, "X-Hook-Signature": other_secret}).status_code
        == 401
    )


def test_pagerduty_routing_key_can_carry_the_sender_key(client: TestClient) -> None:
    _, issued = new_tenant(client)
    doc = {**fixture("pagerduty_trigger.json"), "routing_key": issued["key"]}
    assert client.post("/v1/sources/pagerduty", json=doc).status_code == 202
    assert client.post("/v1/sources/pagerduty", json=fixture("pagerduty_trigger.json")).status_code == 401


def test_psa_updates_become_escalations_resolutions_and_reopens(client: TestClient, bootstrap: str) -> None:
    tenant, issued = new_tenant(client)
    reader = Reader(bootstrap, [TicketEvent.topic])
    raw = fixture("connectwise_ticket_added.json")
    entity = json.loads(raw["Entity"])
    entity["company"]["id"] = int(hashlib.sha1(tenant.encode()).hexdigest()[:7], 16)  # mapped to no one

    def send(message_id: str, action: str, **changes: Any) -> None:
        entity.update(changes)
        doc = {**raw, "MessageId": message_id, "Action": action, "Entity": json.dumps(entity)}
        assert post(client, "/v1/sources/connectwise", issued["key"], doc).status_code == 202

    send("m1", "added")
    send("m2", "updated", board={"id": 2, "name": "Service Desk L2"})
    send("m3", "updated", status={"id": 20, "name": "Resolved"})
    send("m4", "updated", status={"id": 21, "name": "Re-opened"})
    kinds = [e["payload"]["kind"] for e in reader.events(tenant)]
    assert kinds == ["created", "escalated", "resolved", "reopened"]


def test_rate_limit_per_tenant_answers_429_with_retry_after(settings: IngestSettings) -> None:
    limited = settings.model_copy(update={"rate_limit_eps": 1.0, "rate_limit_burst": 3})
    _, app = build(limited)
    with TestClient(app) as c:
        _, a = new_tenant(c)
        _, b = new_tenant(c)
        codes = [
            post(c, "/v1/alerts", a["key"], {**CANONICAL, "fingerprint": f"f{i}"}).status_code
            for i in range(4)
        ]
        assert codes == [202, 202, 202, 429]
        r = post(c, "/v1/alerts", a["key"], CANONICAL)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert post(c, "/v1/alerts", b["key"], CANONICAL).status_code == 202  # other tenants unaffected


def test_admin_api_needs_the_admin_token(client: TestClient) -> None:
    assert client.get("/v1/admin/tenants").status_code == 401
    assert client.get("/v1/admin/tenants", headers={"Authorization": "Bearer wrong"}).status_code == 401
    tenant, issued = new_tenant(client)
    bad = client.post(
        "/v1/admin/tenants",
        json={"tenant_id": "Not Valid", "name": "x"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert bad.status_code == 422
    again = client.post(
        "/v1/admin/tenants",
        json={"tenant_id": tenant, "name": "x"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert again.status_code == 409
    keys = admin(client, "GET", f"/tenants/{tenant}/keys")
    assert [k["key_id"] for k in keys] == [issued["key_id"]]
    assert "secret_hash" not in keys[0]
    # A tenant key is no admin token.
    assert (
        client.get("/v1/admin/tenants", headers={"Authorization": f"Bearer {issued['key']}"}).status_code
        == 401
    )
