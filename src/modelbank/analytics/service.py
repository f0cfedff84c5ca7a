"""Analytics queries for users, creators and admins (DESIGN §8, issue "HTTP API").

Analytics is the read side: it reads the usage, earnings, catalog and access tables directly
(one GROUP BY each) instead of going through every domain's write services. The HTTP
dashboards now read the daily rollups instead (:mod:`modelbank.analytics.dashboards`,
DESIGN §16); these functions, which scan the usage or earnings rows of one user or one
period by index, remain for ``/users/{id}/earnings`` and ``/admin/stats``.
Amounts in µcr, provider cost in µUSD, days are UTC dates (``YYYY-MM-DD``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.catalog.models import model_access_table as access
from modelbank.catalog.models import models_table as models
from modelbank.db.base import utcnow
from modelbank.earnings.models import earnings_table as earnings
from modelbank.errors import InvalidInput
from modelbank.ledger.codes import AccountCode
from modelbank.ledger.queries import total_balance
from modelbank.metering.models import usage_events_table as usage
from modelbank.users.models import users_table as users

PERIODS = {"7d": 7, "30d": 30, "90d": 90, "365d": 365, "all": None}
"""Period names accepted by the analytics endpoints → days (None: all time)."""


def period_start(period: str, *, now: datetime | None = None) -> datetime | None:
    """The start of ``period`` (``7d``, ``30d``, ``90d``, ``365d``; ``all`` → None).
    Raises :class:`InvalidInput` for another name."""
    if period not in PERIODS:
        raise InvalidInput(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
    days = PERIODS[period]
    return None if days is None else (now or utcnow()) - timedelta(days=days)


@dataclass(frozen=True, slots=True)
class ModelEarningLine:
    """One model's earnings for a creator in a period."""

    model_id: int
    name: str
    uses: int
    tokens: int
    earnings_ucr: int
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatorEarnings:
    """A creator's earnings in a period: totals and per model, highest earnings first."""

    user_id: int
    since: datetime | None
    total_ucr: int
    total_tokens: int
    total_uses: int
    models: list[ModelEarningLine]


def creator_earnings(
    session: Session, user_id: int, *, since: datetime | None = None
) -> CreatorEarnings:
    """What ``user_id`` earned from others' usage since ``since`` (all time when None),
    grouped by model. A use is one usage event that paid this user."""
    query = (
        select(
            earnings.c.model_id,
            models.c.name,
            func.count().label("uses"),
            func.coalesce(func.sum(earnings.c.tokens), 0).label("tokens"),
            func.coalesce(func.sum(earnings.c.amount_ucr), 0).label("earned"),
            func.max(earnings.c.created_at).label("last_used_at"),
        )
        .join(models, models.c.id == earnings.c.model_id)
        .where(earnings.c.user_id == user_id)
        .group_by(earnings.c.model_id, models.c.name)
    )
    if since is not None:
        query = query.where(earnings.c.created_at >= since)
    lines = [
        ModelEarningLine(
            model_id=int(r.model_id),
            name=r.name,
            uses=int(r.uses),
            tokens=int(r.tokens),
            earnings_ucr=int(r.earned),
            last_used_at=r.last_used_at,
        )
        for r in session.connection().execute(query)
    ]
    lines.sort(key=lambda line: (-line.earnings_ucr, line.model_id))
    return CreatorEarnings(
        user_id=user_id,
        since=since,
        total_ucr=sum(line.earnings_ucr for line in lines),
        total_tokens=sum(line.tokens for line in lines),
        total_uses=sum(line.uses for line in lines),
        models=lines,
    )


@dataclass(frozen=True, slots=True)
class CategorySpend:
    """Spend of one user in one model category."""

    category: str
    uses: int
    spent_ucr: int


@dataclass(frozen=True, slots=True)
class DayActivity:
    """One UTC day of a user's activity: usage events, credits spent, credits earned."""

    day: date
    uses: int
    spent_ucr: int
    earned_ucr: int


@dataclass(frozen=True, slots=True)
class UserModelAnalytics:
    """The seed's "Model Analytics" tab for one user."""

    user_id: int
    models_available: int
    models_purchased: int
    models_owned: int
    credits_spent_ucr: int
    usage_spent_ucr: int
    access_spent_ucr: int
    earnings_from_owned_ucr: int
    most_profitable_model: ModelEarningLine | None
    by_category: list[CategorySpend]
    activity: list[DayActivity] = field(default_factory=list)


def user_model_analytics(
    session: Session, user_id: int, *, now: datetime | None = None
) -> UserModelAnalytics:
    """Models available vs purchased vs owned, credits spent (usage + access purchases),
    earnings from owned models, the most profitable owned model, spend by category and a
    zero-filled daily series of the last 30 days (UTC), read from the daily rollups
    (:func:`modelbank.analytics.dashboards.user.model_overview`)."""
    from modelbank.analytics.dashboards.user import model_overview  # it builds on this module

    return model_overview(session, user_id, now=now or utcnow())


@dataclass(frozen=True, slots=True)
class PlatformStats:
    """Platform totals: usage revenue, access revenue (µcr), provider cost (µUSD), margin
    after provider cost and creator earnings (µcr), earnings paid and still owed to creators
    (balances of their earnings accounts), credits held in wallets, counts."""

    usage_revenue_ucr: int
    access_revenue_ucr: int
    provider_cost_uusd: int
    margin_ucr: int
    creator_earnings_ucr: int
    earnings_owed_ucr: int
    wallet_balances_ucr: int
    users: int
    active_models: int
    usage_events: int


def platform_stats(session: Session) -> PlatformStats:
    """All-time platform totals (admin dashboard)."""
    conn = session.connection()
    events, revenue, cost, margin, earned = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(usage.c.charge_ucr), 0),
            func.coalesce(func.sum(usage.c.cost_uusd), 0),
            func.coalesce(func.sum(usage.c.margin_ucr), 0),
            func.coalesce(func.sum(usage.c.earnings_ucr), 0),
        )
    ).one()
    access_revenue = conn.execute(
        select(func.coalesce(func.sum(access.c.price_ucr), 0))
    ).scalar_one()
    user_count = conn.execute(select(func.count()).select_from(users)).scalar_one()
    active = conn.execute(
        select(func.count()).select_from(models).where(models.c.is_active.is_(True))
    ).scalar_one()
    return PlatformStats(
        usage_revenue_ucr=int(revenue),
        access_revenue_ucr=int(access_revenue),
        provider_cost_uusd=int(cost),
        margin_ucr=int(margin),
        creator_earnings_ucr=int(earned),
        earnings_owed_ucr=total_balance(session, AccountCode.USER_EARNINGS),
        wallet_balances_ucr=total_balance(session, AccountCode.USER_WALLET),
        users=int(user_count),
        active_models=int(active),
        usage_events=int(events),
    )


def _as_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
