"""Each tenant's PSA target (kind, base URL, options; credentials sealed at rest). Setting one
releases the notes that waited for it.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from libs.common.crypto import SecretBox, SecretBoxError
from libs.common.db import reading, upsert
from libs.common.events import utcnow
from services.packet.store import dumps
from services.packet.tables import deliveries, psa_writes, targets


def set_target(
    engine: Engine,
    tenant_id: str,
    kind: str,
    base_url: str,
    credentials: dict[str, Any],
    options: dict[str, Any],
    *,
    box: SecretBox,
) -> int:
    """Set the tenant's PSA target; the notes that waited for one are released: the latest
    version of each packet is posted, its older waiting versions are superseded by it.
    Returns how many notes were released."""
    row = {
        "tenant_id": tenant_id,
        "kind": kind,
        "base_url": base_url,
        "credentials": box.seal(credentials),  # encrypted at rest
        "options": dumps(options),
        "updated_at": utcnow(),
    }
    with engine.begin() as conn:
        conn.execute(upsert(engine, targets, ["tenant_id"]), [row])
        waiting = conn.execute(
            select(deliveries.c.packet_id, deliveries.c.version).where(
                deliveries.c.tenant_id == tenant_id, deliveries.c.status == "waiting"
            )
        ).all()
        newest: dict[str, int] = {}
        for packet_id, version in waiting:
            newest[packet_id] = max(version, newest.get(packet_id, 0))
        for packet_id, version in waiting:
            released = version == newest[packet_id]
            conn.execute(
                update(deliveries)
                .where(deliveries.c.packet_id == packet_id, deliveries.c.version == version)
                .values(
                    status="pending" if released else "superseded",
                    next_at=utcnow(),
                    last_error=None if released else "a later version of the packet was posted instead",
                )
            )
        notes = conn.execute(
            update(psa_writes)
            .where(psa_writes.c.tenant_id == tenant_id, psa_writes.c.status == "waiting")
            .values(status="pending", next_at=utcnow(), last_error=None)
        ).rowcount
    return len(newest) + notes


def _stored(bind: Engine | Connection, tenant_id: str) -> tuple[dict[str, Any], str] | None:
    """The tenant's target without its credentials, and the credentials as sealed."""
    with reading(bind) as conn:
        row = conn.execute(select(targets).where(targets.c.tenant_id == tenant_id)).mappings().first()
    if row is None:
        return None
    plain = {"kind": row["kind"], "base_url": row["base_url"], "options": json.loads(row["options"])}
    return plain, row["credentials"]


def get_target(bind: Engine | Connection, tenant_id: str, *, box: SecretBox) -> dict[str, Any] | None:
    stored = _stored(bind, tenant_id)
    if stored is None:
        return None
    plain, sealed = stored
    return {**plain, "credentials": box.open(sealed)}


def describe_target(bind: Engine | Connection, tenant_id: str, *, box: SecretBox) -> dict[str, Any] | None:
    """The tenant's target without its credentials, and whether this process can decrypt
    them (`credentials_readable`: false after the secrets key changed)."""
    stored = _stored(bind, tenant_id)
    if stored is None:
        return None
    plain, sealed = stored
    try:
        box.open(sealed)
        readable = True
    except SecretBoxError:
        readable = False
    return {**plain, "credentials_readable": readable}
