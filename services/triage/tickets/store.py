"""Ticket triage state in the service's database: each tenant's resolved cases (with their
embedding, so a restart does not re-encode the history), the last decision per ticket, the
rollout modes, the tenants' own intents and the open signals triage reads its context from.

Every function takes the tenant explicitly; no query spans tenants.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    select,
)

from libs.common.db import upsert, writing
from libs.common.events import Envelope, utcnow
from libs.common.outbox import stage
from services.triage.tables import (
    cases,
    intents,
    models,
    open_signals,
    outbox,
    rollout,
    tickets,
)
from services.triage.tickets.model import TicketClassifier
from services.triage.tickets.triager import Case

log = logging.getLogger(__name__)
MODEL_MAGIC = b"MSPMODEL1\n"  # then a NumPy .npz archive: arrays and JSON, loaded without pickle

# --- cases ------------------------------------------------------------------------------------


def save_case(engine: Engine, tenant_id: str, case: Case, vector: np.ndarray) -> None:
    row = {
        "tenant_id": tenant_id,
        "ticket_id": case.ticket_id,
        "text": case.text,
        "category": case.category,
        "priority": case.priority,
        "resolution": case.resolution,
        "url": case.url,
        "vector": np.asarray(vector, dtype=np.float32).tobytes(),
        "updated_at": utcnow(),
    }
    with engine.begin() as conn:
        conn.execute(upsert(engine, cases, ["tenant_id", "ticket_id"]), [row])


def load_cases(engine: Engine, tenant_id: str) -> list[tuple[Case, np.ndarray]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(cases).where(cases.c.tenant_id == tenant_id).order_by(cases.c.updated_at)
        ).mappings()
        return [
            (
                Case(r["ticket_id"], r["text"], r["category"], r["priority"], r["resolution"], r["url"]),
                np.frombuffer(r["vector"], dtype=np.float32),
            )
            for r in rows
        ]


# --- models -----------------------------------------------------------------------------------
# A tenant's model is kept as plain arrays and JSON in a compressed NumPy archive (never
# pickle: whoever can write this table must not be able to run code in triage).


def save_model(engine: Engine, tenant_id: str, model: TicketClassifier, trained_on: int) -> int:
    buffer = io.BytesIO()
    arrays: dict[str, Any] = model.to_arrays()
    np.savez_compressed(buffer, **arrays)
    blob = MODEL_MAGIC + buffer.getvalue()
    row = {"tenant_id": tenant_id, "trained_on": trained_on, "model": blob, "created_at": utcnow()}
    with engine.begin() as conn:
        conn.execute(upsert(engine, models, ["tenant_id"]), [row])
    return len(blob)


def load_model(engine: Engine, tenant_id: str) -> tuple[TicketClassifier, int] | None:
    """The tenant's stored model; None when there is none, or when what is stored is not a
    model in the platform's own format (an older pickled one, or anything else): such a blob
    is never loaded (loading must not be able to run code), and the model is trained again."""
    with engine.connect() as conn:
        row = conn.execute(
            select(models.c.model, models.c.trained_on).where(models.c.tenant_id == tenant_id)
        ).first()
    if row is None:
        return None
    blob = bytes(row[0])
    if not blob.startswith(MODEL_MAGIC):
        log.warning(
            "stored ticket model is not in the platform's format; ignored", extra={"tenant_id": tenant_id}
        )
        return None
    try:
        with np.load(io.BytesIO(blob[len(MODEL_MAGIC) :]), allow_pickle=False) as arrays:
            return TicketClassifier.from_arrays(arrays), int(row[1])
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign model is retrained, never trusted
        log.warning(
            "stored ticket model cannot be read; ignored", extra={"tenant_id": tenant_id, "error": repr(exc)}
        )
        return None


# --- decisions --------------------------------------------------------------------------------


def last_decision(engine: Engine, tenant_id: str, ticket_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(tickets).where(tickets.c.tenant_id == tenant_id, tickets.c.ticket_id == ticket_id)
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None


def save_decision(
    engine: Engine,
    row: dict[str, Any],
    events: Sequence[Envelope] = (),
    namespace: str = "",
) -> None:
    """The decision and what announces it (the triage result, its audit), in one transaction:
    the outbox relay publishes the events once Kafka takes them."""
    with engine.begin() as conn:
        conn.execute(upsert(engine, tickets, ["tenant_id", "ticket_id"]), [{**row, "decided_at": utcnow()}])
        stage(conn, outbox, list(events), namespace)


def mark_final(engine: Engine, tenant_id: str, ticket_id: str, category: str, corrected: bool) -> None:
    with engine.begin() as conn:
        conn.execute(
            tickets.update()
            .where(tickets.c.tenant_id == tenant_id, tickets.c.ticket_id == ticket_id)
            .values(final_category=category, corrected=corrected)
        )


# --- rollout ----------------------------------------------------------------------------------


def rollout_modes(engine: Engine, tenant_id: str) -> dict[str, tuple[str, float]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(rollout.c.category, rollout.c.mode, rollout.c.auto_threshold).where(
                rollout.c.tenant_id == tenant_id
            )
        )
        return {r[0]: (r[1], r[2]) for r in rows}


def set_rollout(engine: Engine, tenant_id: str, category: str, mode: str, auto_threshold: float) -> None:
    row = {
        "tenant_id": tenant_id,
        "category": category,
        "mode": mode,
        "auto_threshold": auto_threshold,
        "updated_at": utcnow(),
    }
    with engine.begin() as conn:
        conn.execute(upsert(engine, rollout, ["tenant_id", "category"]), [row])


# --- intents ----------------------------------------------------------------------------------


def tenant_intents(engine: Engine, tenant_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(intents).where(intents.c.tenant_id == tenant_id).order_by(intents.c.name))
        return [
            {
                "name": r.name,
                "description": r.description,
                "category": r.category,
                "keywords": json.loads(r.keywords),
                "examples": json.loads(r.examples),
            }
            for r in rows
        ]


def save_intent(engine: Engine, tenant_id: str, intent: dict[str, Any]) -> None:
    row = {
        "tenant_id": tenant_id,
        "name": intent["name"],
        "description": intent["description"],
        "category": intent["category"],
        "keywords": json.dumps(intent["keywords"]),
        "examples": json.dumps(intent["examples"]),
        "updated_at": utcnow(),
    }
    with engine.begin() as conn:
        conn.execute(upsert(engine, intents, ["tenant_id", "name"]), [row])


# --- open signals -----------------------------------------------------------------------------


def apply_signals(bind: Engine | Connection, signals: list[tuple[str, dict[str, Any]]]) -> None:
    """Keep the latest revision of each signal (the tickets' context), in one statement: an
    older revision, late or replayed, changes nothing. `signals`: (tenant, a dict with the
    `SignalPayload` fields below). Written by alert clustering at each checkpoint, in the
    checkpoint's transaction when given its connection."""
    latest: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for tenant_id, signal in signals:  # one row per signal: a multi-row upsert may not touch a row twice
        key = (tenant_id, str(signal["signal_id"]))
        if key not in latest or latest[key][1]["revision"] < signal["revision"]:
            latest[key] = (tenant_id, signal)
    if not latest:
        return
    rows = [
        {
            "tenant_id": tenant_id,
            "signal_id": str(signal["signal_id"]),
            "revision": signal["revision"],
            "state": signal["state"],
            "title": signal["title"],
            "severity": signal["severity"],
            "devices": json.dumps(signal["devices"]),
            "sites": json.dumps(signal["sites"]),
            "last_seen": signal["last_seen"],
        }
        for tenant_id, signal in latest.values()
    ]
    with writing(bind) as conn:
        conn.execute(upsert(conn, open_signals, ["tenant_id", "signal_id"], newer="revision"), rows)


def signals_near(
    engine: Engine, tenant_id: str, devices: list[str], site: str | None, limit: int = 50
) -> list[dict[str, Any]]:
    """The tenant's open signals on any of `devices` or at `site`, latest first."""
    if not devices and not site:
        return []
    wanted = set(devices)
    out = []
    with engine.connect() as conn:
        rows = conn.execute(
            select(open_signals)
            .where(open_signals.c.tenant_id == tenant_id, open_signals.c.state.in_(("opened", "updated")))
            .order_by(open_signals.c.last_seen.desc())
            .limit(2000)
        ).mappings()
        for r in rows:
            on = json.loads(r["devices"])
            if wanted.intersection(on) or (site is not None and site in json.loads(r["sites"])):
                out.append(
                    {
                        "signal_id": r["signal_id"],
                        "title": r["title"],
                        "severity": r["severity"],
                        "devices": on,
                    }
                )
                if len(out) >= limit:
                    break
    return out
