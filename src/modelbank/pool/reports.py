"""What the pool pages show (DESIGN §9 "Pages"): each resource with the usage it served,
its shared health and the figures derived from them, and route logs newest first.

Read-only. Money stays integer (µUSD quota, µcr credits); ratios are basis points,
truncated toward zero (display figures, never booked). Health comes from the
:class:`~modelbank.pool.health.HealthStore` (its own round trip, outside the caller's read
transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbank.catalog import service as catalog
from modelbank.money import DEFAULT_CREDITS_PER_USD
from modelbank.pool.health import Health, HealthStore
from modelbank.pool.lifecycle import ENDED
from modelbank.pool.models import route_logs_table as logs
from modelbank.pool.panel import PoolSummary, Served, served_by, summary
from modelbank.pool.resources import (
    BPS,
    LIST_LIMIT,
    ResourceInfo,
    get_resource,
    list_resources,
    unconsumed_credit,
)
from modelbank.pool.routelog import MAX_PAGE, RouteLogRow

Reader = Callable[[], AbstractContextManager[Session]]
"""Opens one read transaction: ``Database.read``."""


def ratio_bps(part: int, whole: int) -> int | None:
    """``part / whole`` in basis points, truncated toward zero; None when ``whole`` ≤ 0."""
    return None if whole <= 0 else part * BPS // whole


@dataclass(frozen=True, slots=True)
class ResourceReport:
    """One resource as a page shows it: the resource (never the key), the usage it served
    (requests charged, what users paid µcr, provider cost µUSD, spread µcr) and its
    shared health (breaker, EWMA latencies, in flight, attempt counters)."""

    resource: ResourceInfo
    served: Served
    health: Health

    @property
    def used_bps(self) -> int | None:
        """Consumed provider spend as a share of the pool part (bps); None without one."""
        r = self.resource
        return ratio_bps(r.consumed_uusd, r.pool_quota_uusd)

    @property
    def attempts(self) -> int:
        """Attempts on this resource with a verdict (successes and upstream failures)."""
        return self.health.breaker.requests

    @property
    def success_bps(self) -> int | None:
        """All-time success rate of those attempts (bps): (attempts − failures) / attempts;
        None before the first one. Errors the caller caused never count (DESIGN §9)."""
        b = self.health.breaker
        return ratio_bps(b.requests - b.failures, b.requests)

    @property
    def recent_success_bps(self) -> int:
        """The breaker's success-rate EWMA (roughly the last ``window`` attempts), bps."""
        return int(Decimal(repr(self.health.breaker.success_rate)) * BPS)

    @property
    def outstanding_ucr(self) -> int:
        """Deposit credit whose quota is not consumed yet (what a withdrawal now would claw
        back); 0 once the resource ended (its clawback is booked)."""
        r = self.resource
        if r.status in ENDED:
            return 0
        return unconsumed_credit(r.pool_credit_ucr, r.pool_quota_uusd, r.consumed_uusd)


def _reports(
    found: Sequence[ResourceInfo], served: dict[int, Served], health: HealthStore
) -> list[ResourceReport]:
    states = health.snapshot([r.id for r in found])
    return [
        ResourceReport(r, served.get(r.id, Served()), states.get(r.id) or Health(r.id))
        for r in found
    ]


def owner_reports(
    read: Reader,
    owner_id: int,
    health: HealthStore,
    *,
    credits_per_usd: Decimal = DEFAULT_CREDITS_PER_USD,
    limit: int = LIST_LIMIT,
) -> list[ResourceReport]:
    """The resources ``owner_id`` deposited (oldest first, at most ``limit``), each with
    its usage and health."""
    with read() as session:
        found = list_resources(session, owner_id, limit=limit)
        served = served_by(session, [r.id for r in found], credits_per_usd)
    return _reports(found, served, health)


def resource_report(
    read: Reader,
    resource_id: int,
    health: HealthStore,
    *,
    owner_id: int | None = None,
    admin: bool = False,
    credits_per_usd: Decimal = DEFAULT_CREDITS_PER_USD,
) -> ResourceReport:
    """One resource with its usage and health, if visible (``admin``, or it belongs to
    ``owner_id``). Raises :class:`~modelbank.pool.errors.ResourceNotFound`."""
    with read() as session:
        found = get_resource(session, resource_id, owner_id=owner_id, admin=admin)
        served = served_by(session, [found.id], credits_per_usd)
    return _reports([found], served, health)[0]


@dataclass(frozen=True, slots=True)
class PanelPage:
    """The admin panel: totals over the pool and one page of resources with health."""

    summary: PoolSummary
    resources: list[ResourceReport]


def panel(
    read: Reader,
    health: HealthStore,
    *,
    credits_per_usd: Decimal = DEFAULT_CREDITS_PER_USD,
    after_id: int = 0,
    limit: int = 100,
) -> PanelPage:
    """:func:`~modelbank.pool.panel.summary` (totals, spread, fees) plus the health of the
    resources on its page (``after_id``, ``limit``)."""
    with read() as session:
        found = summary(session, credits_per_usd=credits_per_usd, after_id=after_id, limit=limit)
    lines = found.resources
    states = health.snapshot([line.resource.id for line in lines])
    return PanelPage(
        found,
        [
            ResourceReport(
                line.resource, line.served, states.get(line.resource.id) or Health(line.resource.id)
            )
            for line in lines
        ],
    )


@dataclass(frozen=True, slots=True)
class LogPage:
    """Route log rows newest first, the slug of each model they name, and the id to pass
    as ``before_id`` for the next (older) page, None on the last."""

    rows: list[RouteLogRow]
    model_slugs: dict[int, str]
    next_before_id: int | None


def recent_logs(
    session: Session,
    *,
    resource_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> LogPage:
    """Route log rows, newest first: those ``resource_id`` served (the caller checked the
    viewer may see it), or every row (admin) when None; ids below ``before_id``; at most
    ``limit`` (≤ :data:`~modelbank.pool.routelog.MAX_PAGE`). No prompt is ever stored."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(logs)
    if resource_id is not None:
        query = query.where(logs.c.resource_id == resource_id)
    if before_id is not None:
        query = query.where(logs.c.id < before_id)
    rows = [
        RouteLogRow(**dict(row._mapping))
        for row in session.execute(query.order_by(logs.c.id.desc()).limit(limit))
    ]
    ids = {r.model_id for r in rows if r.model_id is not None}
    models = catalog.resolve_models(session, ids, active_only=False)
    slugs = {ref: m.slug for ref, m in models.items() if isinstance(ref, int)}
    return LogPage(rows, slugs, rows[-1].id if len(rows) == limit else None)


__all__ = [
    "ENDED",
    "LogPage",
    "PanelPage",
    "ResourceReport",
    "owner_reports",
    "panel",
    "ratio_bps",
    "recent_logs",
    "resource_report",
]
