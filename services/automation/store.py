"""Reading and writing the automation service's tables (tables.py). Every function takes the
tenant and finds nothing of another."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from libs.common.crypto import SecretBox
from libs.common.events import Envelope, utcnow
from libs.common.outbox import stage
from services.automation.policy import TenantPolicy
from services.automation.tables import always_allowed, ledger, outbox, plans, policies, runs, tools


def _j(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# --- tool maps and policies ---------------------------------------------------------------------


def put_tools(engine: Engine, box: SecretBox, tenant_id: str, tool_map: dict[str, dict[str, Any]]) -> None:
    row = {
        "sealed": box.seal(tool_map),
        "systems": _j({k: v["kind"] for k, v in tool_map.items()}),
        "updated_at": utcnow(),
    }
    with engine.begin() as conn:
        done = conn.execute(update(tools).where(tools.c.tenant_id == tenant_id).values(**row)).rowcount
        if not done:
            conn.execute(insert(tools).values(tenant_id=tenant_id, **row))


def get_tools(engine: Engine, box: SecretBox, tenant_id: str) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        sealed = conn.execute(select(tools.c.sealed).where(tools.c.tenant_id == tenant_id)).scalar()
    return box.open(sealed) if sealed else {}


def put_policy(engine: Engine, tenant_id: str, policy: TenantPolicy, by: str) -> None:
    row = {"doc": policy.model_dump_json(), "updated_by": by, "updated_at": utcnow()}
    with engine.begin() as conn:
        done = conn.execute(update(policies).where(policies.c.tenant_id == tenant_id).values(**row)).rowcount
        if not done:
            conn.execute(insert(policies).values(tenant_id=tenant_id, **row))


def get_policy(engine: Engine, tenant_id: str) -> TenantPolicy:
    with engine.connect() as conn:
        doc = conn.execute(select(policies.c.doc).where(policies.c.tenant_id == tenant_id)).scalar()
    return TenantPolicy.model_validate_json(doc) if doc else TenantPolicy()


def allowed_always(engine: Engine, tenant_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(always_allowed).where(always_allowed.c.tenant_id == tenant_id)).mappings()
        return [dict(r) for r in rows]


def set_always_allowed(
    engine: Engine,
    tenant_id: str,
    action: str,
    *,
    by: str,
    reason: str,
    on: bool,
    events: Sequence[Envelope],
    namespace: str = "",
) -> bool:
    """Grant or revoke; True when something changed. The audit goes out with the change."""
    with engine.begin() as conn:
        known = conn.execute(
            select(always_allowed.c.action).where(
                always_allowed.c.tenant_id == tenant_id, always_allowed.c.action == action
            )
        ).first()
        if on and known is None:
            conn.execute(
                insert(always_allowed).values(
                    tenant_id=tenant_id, action=action, granted_by=by, reason=reason, granted_at=utcnow()
                )
            )
        elif not on and known is not None:
            conn.execute(
                delete(always_allowed).where(
                    always_allowed.c.tenant_id == tenant_id, always_allowed.c.action == action
                )
            )
        else:
            return False
        stage(conn, outbox, events, namespace)
        return True


# --- plans -----------------------------------------------------------------------------------------


def _plan(row: Any) -> dict[str, Any]:
    out = dict(row)
    for k in ("ticket", "steps", "questions", "unmatched"):
        out[k] = json.loads(out[k])
    return out


def insert_plan(conn: Connection, plan: dict[str, Any]) -> None:
    conn.execute(
        insert(plans).values(
            **{**plan, **{k: _j(plan[k]) for k in ("ticket", "steps", "questions", "unmatched")}}
        )
    )


def insert_run(conn: Connection, run: dict[str, Any]) -> None:
    conn.execute(insert(runs).values(**{**run, "steps": _j(run["steps"])}))


def save_plan(
    engine: Engine, plan: dict[str, Any], events: Sequence[Envelope], *, namespace: str = ""
) -> None:
    with engine.begin() as conn:
        insert_plan(conn, plan)
        stage(conn, outbox, events, namespace)


def get_plan(
    engine: Engine, tenant_id: str, plan_id: str, conn: Connection | None = None
) -> dict[str, Any] | None:
    query = select(plans).where(plans.c.tenant_id == tenant_id, plans.c.plan_id == plan_id)
    if conn is not None:
        row = conn.execute(query).mappings().first()
    else:
        with engine.connect() as c:
            row = c.execute(query).mappings().first()
    return _plan(row) if row else None


def list_plans(engine: Engine, tenant_id: str, limit: int = 50) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(plans)
            .where(plans.c.tenant_id == tenant_id)
            .order_by(plans.c.created_at.desc())
            .limit(limit)
        ).mappings()
        return [_plan(r) for r in rows]


def decide_plan(
    engine: Engine,
    tenant_id: str,
    plan_id: str,
    *,
    expect: Sequence[str],
    values: dict[str, Any],
    events: Sequence[Envelope] = (),
    run: dict[str, Any] | None = None,
    namespace: str = "",
) -> bool:
    """Move a plan on from one of the `expect`ed states, with its events (and its run, when it
    starts one) in the same transaction; False when it was no longer in such a state."""
    with engine.begin() as conn:
        changed = conn.execute(
            update(plans)
            .where(
                plans.c.tenant_id == tenant_id, plans.c.plan_id == plan_id, plans.c.status.in_(list(expect))
            )
            .values(**values)
        ).rowcount
        if not changed:
            return False
        if run is not None:
            insert_run(conn, run)
        stage(conn, outbox, events, namespace)
        return True


# --- runs and the step ledger ---------------------------------------------------------------------


def add_run(engine: Engine, run: dict[str, Any], events: Sequence[Envelope], *, namespace: str = "") -> None:
    """A run that leaves its plan as it was (a dry run), with its event."""
    with engine.begin() as conn:
        insert_run(conn, run)
        stage(conn, outbox, events, namespace)


def _run(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["steps"] = json.loads(out["steps"])
    return out


def get_run(engine: Engine, tenant_id: str, run_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = (
            conn.execute(select(runs).where(runs.c.tenant_id == tenant_id, runs.c.run_id == run_id))
            .mappings()
            .first()
        )
    return _run(row) if row else None


def ensure_run(engine: Engine, run: dict[str, Any]) -> None:
    """A run the executor received without having it (started elsewhere, say an automation)."""
    with engine.begin() as conn:
        known = conn.execute(select(runs.c.run_id).where(runs.c.run_id == run["run_id"])).first()
        if known is None:
            insert_run(conn, run)


def set_run_status(engine: Engine, tenant_id: str, run_id: str, status: str, finished: bool = False) -> None:
    values: dict[str, Any] = {"status": status}
    if finished:
        values["finished_at"] = utcnow()
    with engine.begin() as conn:
        conn.execute(
            update(runs).where(runs.c.tenant_id == tenant_id, runs.c.run_id == run_id).values(**values)
        )


def steps_of(engine: Engine, tenant_id: str, run_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(ledger)
            .where(ledger.c.tenant_id == tenant_id, ledger.c.run_id == run_id)
            .order_by(ledger.c.step)
        ).mappings()
        return [{**dict(r), "response": json.loads(r["response"]) if r["response"] else None} for r in rows]


def ledger_row(engine: Engine, key: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(ledger).where(ledger.c.idempotency_key == key)).mappings().first()
    return dict(row) if row else None


def start_step(engine: Engine, *, key: str, run_id: str, tenant_id: str, step: int, action: str) -> int:
    """Record that a step is about to run (committed before the connector is called): after a
    crash, `started` means "may have run". Returns the attempt number."""
    now = utcnow()
    with engine.begin() as conn:
        row = conn.execute(select(ledger.c.attempts).where(ledger.c.idempotency_key == key)).first()
        if row is None:
            conn.execute(
                insert(ledger).values(
                    idempotency_key=key,
                    run_id=run_id,
                    tenant_id=tenant_id,
                    step=step,
                    action=action,
                    state="started",
                    attempts=1,
                    started_at=now,
                )
            )
            return 1
        conn.execute(
            update(ledger)
            .where(ledger.c.idempotency_key == key)
            .values(state="started", attempts=row[0] + 1, started_at=now)
        )
        return int(row[0]) + 1


def finish_step(
    engine: Engine,
    *,
    key: str,
    run_id: str,
    tenant_id: str,
    step: int,
    action: str,
    state: str,
    duration_ms: float,
    response: dict[str, Any],
    error_class: str | None,
    message: str,
    events: Sequence[Envelope],
    namespace: str = "",
) -> None:
    """The step's outcome and the events that report it (its result, its audit), in one
    transaction: either all of them or, after a crash, none (and the step is `started`). A
    step refused before it ran (policy, bad parameters) gets its row here."""
    now = utcnow()
    values = {
        "state": state,
        "finished_at": now,
        "duration_ms": duration_ms,
        "response": _j(response),
        "error_class": error_class,
        "message": message[:2000],
    }
    with engine.begin() as conn:
        done = conn.execute(update(ledger).where(ledger.c.idempotency_key == key).values(**values)).rowcount
        if not done:
            conn.execute(
                insert(ledger).values(
                    idempotency_key=key,
                    run_id=run_id,
                    tenant_id=tenant_id,
                    step=step,
                    action=action,
                    attempts=0,
                    started_at=now,
                    **values,
                )
            )
        stage(conn, outbox, events, namespace)


def stage_events(engine: Engine, events: Sequence[Envelope], *, namespace: str = "") -> None:
    with engine.begin() as conn:
        stage(conn, outbox, events, namespace)


def put_code(engine: Engine, tenant_id: str, run_id: str, step: int, sealed: str) -> bool:
    """Keep the code an engineer entered for a step that waits for one; False when no step of
    that run waits."""
    with engine.begin() as conn:
        return bool(
            conn.execute(
                update(ledger)
                .where(
                    ledger.c.tenant_id == tenant_id,
                    ledger.c.run_id == run_id,
                    ledger.c.step == step,
                    ledger.c.state == "awaiting_code",
                )
                .values(code_sealed=sealed)
            ).rowcount
        )


def take_code(engine: Engine, key: str) -> str | None:
    """The sealed code for a step, removed as it is taken (a code is checked once)."""
    with engine.begin() as conn:
        sealed = conn.execute(select(ledger.c.code_sealed).where(ledger.c.idempotency_key == key)).scalar()
        if sealed:
            conn.execute(update(ledger).where(ledger.c.idempotency_key == key).values(code_sealed=None))
        return sealed
