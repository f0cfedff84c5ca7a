"""A quota listing's reputation (DESIGN §10: "from facts the platform measured"): the
router's shared health of the resource (success rate EWMA, latency and time-to-first-token
EWMAs, requests seen) and the marketplace's own record (fills completed, allocations
exhausted and returned). Nothing here is self-reported by the seller."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.marketplace.models import allocations_table as allocations
from modelbank.marketplace.records import Reputation
from modelbank.pool.models import resource_health_table as health


def reputations(session: Session, resource_ids: Sequence[int]) -> dict[int, Reputation]:
    """Resource id → :class:`Reputation` for ``resource_ids`` (a resource the router never
    measured shows success rate 1.0, no latency, 0 requests). Two queries."""
    ids = sorted(set(resource_ids))
    if not ids:
        return {}
    conn = session.connection()
    measured = {
        int(row.resource_id): row
        for row in conn.execute(select(health).where(health.c.resource_id.in_(ids)))
    }
    counts: dict[int, dict[str, int]] = {}
    for resource_id, status, n in conn.execute(
        select(allocations.c.resource_id, allocations.c.status, func.count())
        .where(allocations.c.resource_id.in_(ids))
        .group_by(allocations.c.resource_id, allocations.c.status)
    ):
        counts.setdefault(int(resource_id), {})[status] = int(n)
    out = {}
    for resource_id in ids:
        row = measured.get(resource_id)
        mine = counts.get(resource_id, {})
        out[resource_id] = Reputation(
            resource_id=resource_id,
            success_rate=1.0 if row is None else float(row.success_rate),
            latency_ms=None if row is None else row.ewma_latency_ms,
            ttft_ms=None if row is None else row.ewma_ttft_ms,
            requests=0 if row is None else int(row.requests),
            fills=sum(mine.values()),
            allocations_exhausted=mine.get("exhausted", 0),
            allocations_returned=mine.get("returned", 0),
        )
    return out
