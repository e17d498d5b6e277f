"""Migrations and stores on PostgreSQL: the audit trail is append-only and idempotent."""

import asyncio
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, text
from sqlalchemy.exc import DBAPIError

from libs.common.bus import EventConsumer, EventProducer
from libs.common.db import make_engine, migrate
from libs.common.events import AuditEvent, SignalPayload
from libs.common.settings import REPO_ROOT
from services.audit import store
from services.audit.stream import make_handler
from services.packet.store import projections as pkt_seen  # what the packet service has seen
from services.packet.store import versions as pkt_versions
from services.triage.tickets import store as tickets
from services.triage.tickets.triager import Case
from tests.conftest import unique
from tests.samples import every_event

pytestmark = pytest.mark.integration
SERVICES = ["ingest", "triage", "packet", "automation", "audit"]


@pytest.fixture(scope="module")
def engine(pg_url: str) -> Engine:
    for name in SERVICES:
        migrate(pg_url, REPO_ROOT / "services" / name / "migrations", name)
    return make_engine(pg_url)


def audit(tenant: str) -> AuditEvent:
    return next(e for e in every_event(tenant) if isinstance(e, AuditEvent))


def test_every_service_migrates_postgres_and_a_second_run_changes_nothing(
    pg_url: str, engine: Engine
) -> None:
    for name in SERVICES:
        migrate(pg_url, REPO_ROOT / "services" / name / "migrations", name)
    with engine.connect() as conn:
        versions = {
            name: conn.execute(text(f"SELECT version_num FROM alembic_version_{name}")).scalar_one()
            for name in SERVICES
        }
    heads = {
        name: ScriptDirectory(str(REPO_ROOT / "services" / name / "migrations")).get_current_head()
        for name in SERVICES
    }
    assert versions == heads
    assert heads["audit"] == "audit_0002" and heads["ingest"] == "ingest_0003"


def test_the_audit_table_refuses_updates_deletes_and_truncate(engine: Engine) -> None:
    tenant = unique("acme")
    assert store.append(engine, audit(tenant))
    for stmt in (
        "UPDATE audit_events SET actor = 'x' WHERE tenant_id = :t",
        "DELETE FROM audit_events WHERE tenant_id = :t",
        "TRUNCATE audit_events",
    ):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(stmt), {"t": tenant})
    assert store.verify_tenant(engine, tenant).ok


async def test_a_redelivered_audit_event_does_not_create_a_second_row(bootstrap: str, engine: Engine) -> None:
    tenant = unique("acme")
    event = audit(tenant)
    producer = EventProducer(bootstrap, client_id=unique("p"))
    await producer.start()
    consumer = EventConsumer(
        service="audit",
        topics=[AuditEvent.topic],
        group_id=unique("audit"),
        bootstrap_servers=bootstrap,
        handler=make_handler(engine),
        producer=producer,
        auto_offset_reset="latest",
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(100):  # wait for the assignment, so "latest" is before our posts
            if consumer.assigned:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        await producer.publish(event)
        await producer.publish(event)  # the same event id, delivered again
        for _ in range(100):
            if consumer.stats.handled >= 2:
                break
            await asyncio.sleep(0.1)
        assert consumer.stats.handled >= 2
        assert store.count(engine, tenant) == 1
        assert store.verify_tenant(engine, tenant).ok
    finally:
        consumer.request_stop()
        await task
        await consumer.stop()
        await producer.stop()


def test_audit_queries_never_return_another_tenants_rows(engine: Engine) -> None:
    a, b = unique("acme"), unique("globex")
    a_events = [audit(a), audit(a)]
    for e in (*a_events, audit(b)):
        store.append(engine, e)
    rows_b = store.query(engine, b)
    assert len(rows_b) == 1
    assert {r["event_id"] for r in rows_b}.isdisjoint({str(e.event_id) for e in a_events})
    # An attacker-controlled filter cannot widen the tenant scope.
    assert store.query(engine, b, subject_id="x' OR '1'='1") == []
    assert store.count(engine, a) == 2 and store.verify_tenant(engine, a).entries == 2


def test_chains_are_per_tenant_and_tampering_is_detected(engine: Engine) -> None:
    tenant = unique("acme")
    for _ in range(3):
        store.append(engine, audit(tenant))
    # A superuser bypassing the trigger to rewrite history is still caught by the chain.
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change"))
        conn.execute(
            text(
                "UPDATE audit_events SET body = replace(body, 'service:ingest', 'service:evil') "
                "WHERE tenant_id = :t AND tenant_seq = 2"
            ),
            {"t": tenant},
        )
        conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_change"))
    result = store.verify_tenant(engine, tenant)
    assert not result.ok and result.first_bad_seq == 2


def test_sqlite_embedded_default_migrates_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    migrate(url, REPO_ROOT / "services" / "audit" / "migrations", "audit")
    engine = make_engine(url)
    event = audit(unique("acme"))
    assert store.append(engine, event)
    assert not store.append(engine, event)
    assert store.count(engine, event.tenant_id) == 1
    assert store.verify_tenant(engine, event.tenant_id).ok
    engine.dispose()


@contextmanager
def on_backend(backend: str, engine: Engine, tmp_path: Path, service: str) -> Iterator[Engine]:
    """The module's PostgreSQL engine, or a fresh SQLite file migrated for `service`."""
    if backend == "postgresql":
        yield engine
        return
    url = f"sqlite:///{tmp_path / (service + '.db')}"
    migrate(url, REPO_ROOT / "services" / service / "migrations", service)
    lite = make_engine(url)
    try:
        yield lite
    finally:
        lite.dispose()


def disk_signal(now: datetime, **fields: Any) -> SignalPayload:
    """A signal revision on FS01 at site hq."""
    return SignalPayload(
        signal_id=uuid.uuid4(),
        state="opened",
        title="Disk full on FS01",
        member_alert_ids=[uuid.uuid4()],
        devices=["FS01"],
        sites=["hq"],
        severity="critical",
        first_seen=now,
        last_seen=now,
        count=1,
        confidence=0.9,
        **fields,
    )


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_ticket_triage_tables_keep_signals_cases_and_decisions_per_tenant(
    backend: str, engine: Engine, tmp_path: Path
) -> None:
    with on_backend(backend, engine, tmp_path, "triage") as db:
        a, b = unique("a"), unique("b")
        now = datetime.now(UTC)
        signal = disk_signal(now, revision=2).model_dump()
        tickets.apply_signals(db, [(a, signal)])
        assert [s["signal_id"] for s in tickets.signals_near(db, a, ["FS01"], None)] == [
            str(signal["signal_id"])
        ]
        assert tickets.signals_near(db, a, [], "hq") and not tickets.signals_near(db, a, ["WS-1"], "branch")
        assert tickets.signals_near(db, b, ["FS01"], "hq") == [], "another tenant's signal is not context"
        tickets.apply_signals(db, [(a, {**signal, "revision": 1, "state": "resolved"})])  # older: ignored
        assert tickets.signals_near(db, a, ["FS01"], None)
        tickets.apply_signals(db, [(a, {**signal, "revision": 3, "state": "resolved"})])
        assert tickets.signals_near(db, a, ["FS01"], None) == []
        # In bulk, as the consumer writes them: several revisions of one signal, out of order.
        reopened = [
            (a, {**signal, "revision": r, "state": s})
            for r, s in ((5, "updated"), (4, "opened"), (2, "resolved"))
        ]
        tickets.apply_signals(db, reopened)
        assert [s["signal_id"] for s in tickets.signals_near(db, a, ["FS01"], None)] == [
            str(signal["signal_id"])
        ]

        vector = np.arange(384, dtype=np.float32) / 384
        tickets.save_case(db, a, Case("T-1", "printer jammed", "Printers", "P3", "cleared it", None), vector)
        tickets.save_case(db, a, Case("T-1", "printer jammed", "Hardware", "P3", "cleared it", None), vector)
        ((case, stored),) = tickets.load_cases(db, a)
        assert case.category == "Hardware" and np.array_equal(stored, vector)
        assert tickets.load_cases(db, b) == []


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_packet_tables_keep_signals_packets_and_deliveries_per_tenant(
    backend: str, engine: Engine, tmp_path: Path
) -> None:
    with on_backend(backend, engine, tmp_path, "packet") as db:
        a, b = unique("a"), unique("b")
        now = datetime.now(UTC)
        signal = disk_signal(now).model_dump(mode="json")
        assert pkt_seen.apply_signal(db, a, signal)
        assert not pkt_seen.apply_signal(db, a, signal), "the same revision again changes nothing"
        window = (now - timedelta(hours=1), now + timedelta(minutes=1))
        assert [str(s.signal_id) for s in pkt_seen.signals_around(db, a, ["FS01"], None, *window)] == [
            signal["signal_id"]
        ]
        assert pkt_seen.signals_around(db, b, ["FS01"], "hq", *window) == []
        assert (
            pkt_seen.signals_around(db, a, ["FS01"], None, now + timedelta(hours=1), now + timedelta(hours=2))
            == []
        )

        pid = uuid.uuid4()
        pkt_versions.save_packet(
            db, tenant_id=a, ticket_id="T-1", packet_id=pid, version=1, content_hash="h", payload="{}",
            cause_event_id=str(uuid.uuid4()), trigger_at=now, deliver=True,
        )  # fmt: skip
        (claimed,) = [d for d in pkt_versions.claim_deliveries(db, 1000, 60.0) if d["packet_id"] == str(pid)]
        assert (claimed["tenant_id"], claimed["payload"], claimed["attempts"]) == (a, "{}", 0)
        assert all(d["packet_id"] != str(pid) for d in pkt_versions.claim_deliveries(db, 1000, 60.0)), (
            "a claimed delivery is not taken twice"
        )
        pkt_versions.finish_delivery(db, str(pid), 1, status="posted", attempts=1, remote_id="n-1")
        assert pkt_versions.packet_versions(db, a, str(pid))[0]["status"] == "posted"
        assert pkt_versions.packet_versions(db, b, str(pid)) == [], (
            "a packet is not found under another tenant"
        )


def test_posters_claiming_at_once_take_each_due_delivery_once(engine: Engine, tmp_path: Path) -> None:
    """Four posters (threads, each its own connection) claim due deliveries ten at a time, at
    once, on PostgreSQL: every version is taken by exactly one of them."""
    with on_backend("postgresql", engine, tmp_path, "packet") as db:
        tenant, now = unique("a"), datetime.now(UTC)
        wanted = []
        for n in range(60):
            pid = uuid.uuid4()
            pkt_versions.save_packet(
                db, tenant_id=tenant, ticket_id=f"T-{n}", packet_id=pid, version=1, content_hash="h",
                payload=f'{{"n": {n}}}', cause_event_id=str(uuid.uuid4()), trigger_at=now, deliver=True,
            )  # fmt: skip
            wanted.append(str(pid))
        start = threading.Barrier(4)

        def poster() -> list[str]:
            start.wait()
            taken: list[str] = []
            while batch := [
                d for d in pkt_versions.claim_deliveries(db, 10, 60.0) if d["tenant_id"] == tenant
            ]:
                taken += [d["packet_id"] for d in batch]
            return taken

        with ThreadPoolExecutor(4) as pool:
            runs = list(pool.map(lambda _: poster(), range(4)))
        every = [p for run in runs for p in run]
        assert sorted(every) == sorted(wanted), "each due delivery is claimed once, none is left"
        assert sum(1 for run in runs if run) >= 2, "the posters shared the work"


def test_every_table_is_declared_as_its_migrations_create_it(pg_url: str) -> None:
    """Each service's tables (`services/<name>/tables.py`, one metadata) and its Alembic
    migrations describe the same schema on PostgreSQL, with all five services in one database
    (the equivalent of `alembic check`): a column, index or constraint added to one and not the
    other fails here. `msp migration --check` does the same on SQLite."""
    import importlib
    import uuid as _uuid

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from libs.common.db import schema_drift

    services = ("audit", "automation", "ingest", "packet", "triage")
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    name = f"msp_schema_{_uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    fresh = make_engine(url)
    try:
        for service in services:
            migrate(url, REPO_ROOT / "services" / service / "migrations", service)
        with fresh.connect() as conn:
            drift = {
                service: schema_drift(
                    conn, importlib.import_module(f"services.{service}.tables").metadata, service
                )
                for service in services
            }
        assert drift == dict.fromkeys(services, [])
    finally:
        fresh.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_migration_is_generated_from_the_tables_and_then_they_agree(tmp_path: Path) -> None:
    """`msp migration`'s generator: a column declared in the tables and missing from the
    migrations becomes the next revision (numbered after the last), and once it runs the
    database and the tables agree; with nothing to do it writes nothing."""
    import shutil

    from sqlalchemy import Column, String

    from libs.common.db import generate_migration, schema_drift
    from services.packet import tables

    migrations = tmp_path / "migrations"
    shutil.copytree(REPO_ROOT / "services" / "packet" / "migrations", migrations)
    assert generate_migration("packet", tables.metadata, migrations, "nothing") is None
    changed = MetaData()
    for table in tables.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["packet_feedback"].append_column(Column("reviewer_note", String(200)))
    with pytest.raises(ValueError, match="message"):
        generate_migration("packet", changed, migrations, " ")
    written = generate_migration("packet", changed, migrations, "Feedback keeps the reviewer's note")
    latest = max(
        int(p.name[:4]) for p in (migrations / "versions").glob("[0-9][0-9][0-9][0-9]_*.py") if p != written
    )
    assert written is not None and written.name.startswith(f"{latest + 1:04d}_")
    source = written.read_text()
    assert (
        f'down_revision = "packet_{latest:04d}"' in source
        or f"down_revision = 'packet_{latest:04d}'" in source
    )
    assert "add_column" in source and "reviewer_note" in source and "drop_column" in source
    url = f"sqlite:///{tmp_path}/packet.db"
    migrate(url, migrations, "packet")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert schema_drift(conn, changed, "packet") == []
            assert schema_drift(conn, tables.metadata, "packet") != []
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_the_inbox_records_a_batch_once_and_counts_only_what_is_new(
    backend: str, engine: Engine, tmp_path: Path
) -> None:
    from libs.common.inbox import counts, record_all
    from services.triage import tables as triage_tables
    from tests.samples import alert

    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'triage.db'}")
        migrate(str(engine.url), REPO_ROOT / "services" / "triage" / "migrations", "triage")
    tenant, other = unique("t"), unique("t")
    batch = [alert(tenant=tenant) for _ in range(300)] + [alert(tenant=other)]
    assert record_all(engine, triage_tables.inbox, batch + batch[:5]) == 301  # a repeat inside counts once
    assert record_all(engine, triage_tables.inbox, batch[100:] + [alert(tenant=tenant)]) == 1  # a redelivery
    assert record_all(engine, triage_tables.inbox, []) == 0
    assert counts(engine, triage_tables.inbox, tenant) == {"alerts.raw.v1": 301}
    assert counts(engine, triage_tables.inbox, other) == {"alerts.raw.v1": 1}


async def test_replicas_that_do_not_migrate_refuse_to_start_until_msp_migrate_ran(bootstrap: str) -> None:
    """What a deployment with a migration job does: `msp migrate` once, replicas only check."""
    import os
    import subprocess
    import sys
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from libs.common.settings import REPO_ROOT, SettingsError
    from services.audit.app import build
    from services.audit.settings import AuditSettings

    admin_url = os.environ["MSP_TEST_DATABASE_URL"]
    name = f"msp_migrate_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        settings = AuditSettings(kafka_bootstrap_servers=bootstrap, database_url=url, migrate_on_start=False)
        rt, _ = build(settings)
        with pytest.raises(SettingsError, match="msp migrate"):
            await rt.start()
        await rt.stop()
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "cli.main", "migrate"],
            env={**os.environ, "MSP_DATABASE_URL": url},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("tables at their newest revision") == 5
        rt, _ = build(settings)
        await rt.start()  # now at head: starts without migrating
        await rt.stop()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
