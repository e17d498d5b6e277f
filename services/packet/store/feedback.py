"""Engineers' verdicts on packets and their claims, with the time they spent reviewing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

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


def review_totals(engine: Engine, tenant_id: str, since: datetime, until: datetime) -> dict[str, Any]:
    """What engineers reported about packets in [since, until): review time in all (the honest
    counter-metric) and claims they marked wrong."""
    f = feedback.c
    in_window = (f.tenant_id == tenant_id, f.created_at >= since, f.created_at < until)
    with engine.connect() as conn:
        seconds, reviews = conn.execute(
            select(func.coalesce(func.sum(f.review_seconds), 0), func.count(f.review_seconds)).where(
                *in_window
            )
        ).one()
        wrong = conn.execute(select(func.count()).where(*in_window, f.verdict == "wrong")).scalar_one()
    return {
        "packet_review_s": float(seconds),
        "packet_reviews": int(reviews),
        "claims_marked_wrong": int(wrong),
    }
