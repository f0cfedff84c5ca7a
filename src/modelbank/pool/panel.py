"""The admin pool panel's data (DESIGN §9, §8 "pool status"): resources by status, quota and
consumption, deposit credit, fees and clawbacks, open debts, and the platform's spread on
usage the pool served (what users paid − provider cost at ``credits_per_usd``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.metering.models import usage_events_table as usage
from modelbank.money import DEFAULT_CREDITS_PER_USD, round_half_even, uusd_to_ucr
from modelbank.pool.models import RESOURCE_STATUSES
from modelbank.pool.models import pool_debts_table as debts
from modelbank.pool.models import resources_table as resources
from modelbank.pool.resources import LIST_LIMIT, ResourceInfo, list_resources


@dataclass(frozen=True, slots=True)
class Served:
    """Usage a resource served: requests charged, what users paid (µcr), provider cost
    (µUSD), and the spread: paid − cost × credits_per_usd, rounded once, half-even (µcr)."""

    requests: int = 0
    charge_ucr: int = 0
    cost_uusd: int = 0
    spread_ucr: int = 0


@dataclass(frozen=True, slots=True)
class ResourceLine:
    """One resource on the panel with the usage it served."""

    resource: ResourceInfo
    served: Served


@dataclass(frozen=True, slots=True)
class PoolSummary:
    """Totals over every resource (µUSD quotas, µcr credits) and up to
    :data:`~modelbank.pool.resources.LIST_LIMIT` resources after ``after_id``."""

    by_status: dict[str, int]
    quota_uusd: int
    market_quota_uusd: int
    consumed_uusd: int
    deposit_credit_ucr: int
    fee_ucr: int
    clawed_back_ucr: int
    debts_open_ucr: int
    served: Served
    resources: list[ResourceLine] = field(default_factory=list)


def _spread(charge_ucr: int, cost_uusd: int, credits_per_usd: Decimal) -> int:
    return charge_ucr - round_half_even(uusd_to_ucr(cost_uusd, credits_per_usd))


def served_by(
    session: Session, resource_ids: list[int] | None, credits_per_usd: Decimal
) -> dict[int, Served]:
    """Usage served per resource (all pool resources when ``resource_ids`` is None)."""
    query = select(
        usage.c.resource_id,
        func.count(),
        func.coalesce(func.sum(usage.c.charge_ucr), 0),
        func.coalesce(func.sum(usage.c.cost_uusd), 0),
    ).where(usage.c.resource_id.is_not(None))
    if resource_ids is not None:
        if not resource_ids:
            return {}
        query = query.where(usage.c.resource_id.in_(resource_ids))
    out: dict[int, Served] = {}
    for rid, count, charge, cost in session.connection().execute(
        query.group_by(usage.c.resource_id)
    ):
        out[int(rid)] = Served(
            int(count), int(charge), int(cost), _spread(int(charge), int(cost), credits_per_usd)
        )
    return out


def summary(
    session: Session,
    *,
    credits_per_usd: Decimal = DEFAULT_CREDITS_PER_USD,
    after_id: int = 0,
    limit: int = LIST_LIMIT,
) -> PoolSummary:
    """The panel's data (module docstring). Two aggregate queries plus one page of
    resources with their usage."""
    conn = session.connection()
    by_status = dict.fromkeys(RESOURCE_STATUSES, 0)
    totals = [0] * 6
    for row in conn.execute(
        select(
            resources.c.status,
            func.count(),
            func.sum(resources.c.quota_uusd),
            func.sum(resources.c.market_quota_uusd),
            func.sum(resources.c.consumed_uusd),
            func.sum(resources.c.deposit_credit_ucr),
            func.sum(resources.c.fee_ucr),
            func.sum(resources.c.clawed_back_ucr),
        ).group_by(resources.c.status)
    ):
        by_status[row[0]] = int(row[1])
        totals = [t + int(v or 0) for t, v in zip(totals, row[2:], strict=True)]
    debts_open = int(
        conn.execute(select(func.coalesce(func.sum(debts.c.remaining_ucr), 0))).scalar_one()
    )
    per_resource = served_by(session, None, credits_per_usd)
    requests = sum(s.requests for s in per_resource.values())
    charge = sum(s.charge_ucr for s in per_resource.values())
    cost = sum(s.cost_uusd for s in per_resource.values())
    page = list_resources(session, None, after_id=after_id, limit=limit)
    return PoolSummary(
        by_status=by_status,
        quota_uusd=totals[0],
        market_quota_uusd=totals[1],
        consumed_uusd=totals[2],
        deposit_credit_ucr=totals[3],
        fee_ucr=totals[4],
        clawed_back_ucr=totals[5],
        debts_open_ucr=debts_open,
        served=Served(requests, charge, cost, _spread(charge, cost, credits_per_usd)),
        resources=[ResourceLine(r, per_resource.get(r.id, Served())) for r in page],
    )
