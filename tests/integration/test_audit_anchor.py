"""The audit chain anchored outside its database: a full rewrite of the trail in the database
(every hash recomputed, the head too) passes the chain check but not the anchored head."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text, update

from libs.common.bus import EventProducer
from libs.common.db import make_engine, migrate
from libs.common.settings import REPO_ROOT
from libs.common.topics import ensure_topics
from services.audit import store
from services.audit.anchor import Anchoring, check_against
from services.audit.chain import GENESIS, entry_hash
from services.audit.tables import audit_events, chain_heads
from tests.conftest import eventually, unique
from tests.integration.test_database import audit

pytestmark = pytest.mark.integration


async def test_a_trail_rewritten_in_the_database_fails_against_its_anchored_head(
    bootstrap: str, pg_url: str
) -> None:
    migrate(pg_url, REPO_ROOT / "services" / "audit" / "migrations", "audit")
    engine = make_engine(pg_url)
    namespace = unique("anchor").replace("-", "")
    await ensure_topics(bootstrap, namespace=namespace)
    producer = EventProducer(bootstrap, client_id="audit-test", namespace=namespace)
    await producer.start()
    anchoring = Anchoring(engine, producer, b"anchor-key", bootstrap, namespace=namespace, every_s=3600)
    await anchoring.start()
    tenant = unique("acme")
    try:
        for _ in range(3):
            store.append(engine, audit(tenant))
        assert await anchoring.publish_heads() >= 1
        await eventually(lambda: tenant in anchoring.latest, "the checkpoint read back", 30)
        anchor = anchoring.latest[tenant]
        assert anchor.tenant_seq == 3 and anchor.valid
        assert check_against(anchor, store.hash_at(engine, tenant, 3)) is None
        assert await anchoring.publish_heads() == 0 or tenant not in [], (
            "an unchanged head is not published again"
        )

        # Whoever holds the database rewrites the whole trail consistently.
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change"))
            rows = conn.execute(
                select(audit_events.c.tenant_seq, audit_events.c.body)
                .where(audit_events.c.tenant_id == tenant)
                .order_by(audit_events.c.tenant_seq)
            ).all()
            prev = GENESIS
            for seq, body in rows:
                forged = body.replace("service:", "service:forged-") if seq == 2 else body
                digest = entry_hash(prev, seq, forged)
                conn.execute(
                    update(audit_events)
                    .where(audit_events.c.tenant_id == tenant, audit_events.c.tenant_seq == seq)
                    .values(body=forged, prev_hash=prev, hash=digest)
                )
                prev = digest
            conn.execute(update(chain_heads).where(chain_heads.c.tenant_id == tenant).values(hash=prev))
            conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_change"))
        assert store.verify_tenant(engine, tenant).ok, "the chain alone cannot tell"
        reason = check_against(anchor, store.hash_at(engine, tenant, 3))
        assert reason and "rewritten" in reason
        # A checkpoint not signed with the service's key is not trusted either.
        other = Anchoring(engine, producer, b"another-key", bootstrap, namespace=namespace, every_s=3600)
        await other.start()
        try:
            await eventually(lambda: tenant in other.latest, "the checkpoint read back", 30)
            assert other.latest[tenant].valid is False
            assert "signature" in (check_against(other.latest[tenant], anchor.hash) or "")
        finally:
            await other.stop()
    finally:
        await anchoring.stop()
        await producer.stop()
        engine.dispose()
