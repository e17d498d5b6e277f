"""Engineers' verdicts on packets and their claims, with the time they spent reviewing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from libs.common.events import utcnow
from services.packet.tables import feedback


def add_feedback(engine: Engine, row: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(feedback.insert().values(**row, created_at=utcnow()))


def feedback_of(engine: Engine, tenant_id: str, packet_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                feedback.c.version,
                feedback.c.claim,
                feedback.c.verdict,
                feedback.c.review_seconds,
                feedback.c.engineer,
            )
            .where(feedback.c.tenant_id == tenant_id, feedback.c.packet_id == packet_id)
            .order_by(feedback.c.created_at)
        ).mappings()
        return [dict(r) for r in rows]
