"""The platform's analytics for admins (DESIGN §8: revenue, provider cost, margin per model
and category, earnings owed, payouts, top creators, daily series)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.analytics.dashboards._common import Window, as_date, model_names, window
from modelbank.analytics.dashboards.creator import pending_payouts
from modelbank.earnings.models import payouts_table as payouts
from modelbank.ledger.codes import AccountCode
from modelbank.ledger.queries import total_balance
from modelbank.metering.rollups import creator_day_table as creator_day
from modelbank.metering.rollups import model_day_table as model_day
from modelbank.money import DEFAULT_CREDITS_PER_USD, round_half_even, uusd_to_ucr
from modelbank.users.models import users_table as users

TOP_CREATORS = 10
"""Creators listed in ``top_creators``."""

MAX_MODEL_LINES = 1_000
"""Models listed in ``models`` (highest revenue first); every model counts in the totals
and categories."""


@dataclass(frozen=True, slots=True)
class Figures:
    """Money of a model, category, day or the whole period: uses, tokens, µcr charged
    (``revenue_ucr``) and refunded, provider cost (µUSD), creator earnings (µcr) and what
    refunds reversed of them, and the margin.

    ``margin_ucr`` = (revenue − refunded) − cost × credits_per_usd − (earnings − reversed),
    the cost converted once per line, rounded half-even. Provider cost is not refunded: a
    refunded call was still served."""

    uses: int
    tokens: int
    revenue_ucr: int
    refunded_ucr: int
    cost_uusd: int
    earnings_ucr: int
    reversed_ucr: int
    margin_ucr: int

    @property
    def net_revenue_ucr(self) -> int:
        """Charged − refunded, µcr."""
        return self.revenue_ucr - self.refunded_ucr

    @property
    def net_earnings_ucr(self) -> int:
        """Earned − reversed, µcr."""
        return self.earnings_ucr - self.reversed_ucr


@dataclass(frozen=True, slots=True)
class ModelFigures:
    """One model's :class:`Figures` in the period."""

    model_id: int
    slug: str
    name: str
    category: str
    figures: Figures


@dataclass(frozen=True, slots=True)
class CategoryFigures:
    """One category's :class:`Figures` (``models``: how many had activity)."""

    category: str
    models: int
    figures: Figures


@dataclass(frozen=True, slots=True)
class DayFigures:
    """One UTC day's :class:`Figures`."""

    day: date
    figures: Figures


@dataclass(frozen=True, slots=True)
class CreatorFigures:
    """One creator's earnings in the period (µcr): gross, reversed, from ``models`` models."""

    user_id: int
    external_id: str
    display_name: str
    models: int
    uses: int
    earnings_ucr: int
    reversed_ucr: int

    @property
    def net_ucr(self) -> int:
        """Earned − reversed, µcr."""
        return self.earnings_ucr - self.reversed_ucr


@dataclass(frozen=True, slots=True)
class PayoutStatusFigures:
    """Payout requests of one status created in the period: count, µcr, µUSD paid."""

    status: str
    count: int
    amount_ucr: int
    amount_uusd: int


@dataclass(frozen=True, slots=True)
class AdminAnalytics:
    """The admin view of a period: ``totals``; ``models`` (highest revenue first, at most
    :data:`MAX_MODEL_LINES`), ``categories`` and ``daily`` (every day, zeros filled)
    :class:`Figures`; ``top_creators`` by net earnings; ``payouts`` by status (requests
    created in the period). Period-independent: ``earnings_owed_ucr`` (Σ of the creators'
    earnings balances, unpaid), ``pending_payouts_ucr``."""

    period: str
    start: date
    end: date
    credits_per_usd: Decimal
    totals: Figures
    models: list[ModelFigures]
    categories: list[CategoryFigures]
    daily: list[DayFigures]
    top_creators: list[CreatorFigures]
    payouts: list[PayoutStatusFigures]
    earnings_owed_ucr: int
    pending_payouts_ucr: int


_COUNTERS = (
    model_day.c.uses,
    model_day.c.tokens,
    model_day.c.revenue_ucr,
    model_day.c.refunded_ucr,
    model_day.c.cost_uusd,
    model_day.c.earnings_ucr,
    model_day.c.reversed_ucr,
)


def admin_analytics(
    session: Session,
    period: str = "30d",
    *,
    credits_per_usd: Decimal = DEFAULT_CREDITS_PER_USD,
    now: datetime | None = None,
) -> AdminAnalytics:
    """The platform's figures over ``period`` (:class:`AdminAnalytics`) from
    ``rollup_model_day`` and ``rollup_creator_day`` (a primary-key range of the period, a
    GROUP BY each), the models, users, payouts and ledger accounts tables. Provider cost is
    converted at ``credits_per_usd`` (credits per USD: 1 µUSD = that many µcr) for margins.
    Raises :class:`~modelbank.errors.InvalidInput` (period)."""
    span = window(period, now=now)
    conn = session.connection()
    in_period = model_day.c.day.between(span.start, span.end)
    sums = [func.sum(c) for c in _COUNTERS]
    per_model = {
        int(r[0]): [int(v) for v in r[1:]]
        for r in conn.execute(
            select(model_day.c.model_id, *sums).where(in_period).group_by(model_day.c.model_id)
        )
    }
    per_day = {
        as_date(r[0]): [int(v) for v in r[1:]]
        for r in conn.execute(
            select(model_day.c.day, *sums).where(in_period).group_by(model_day.c.day)
        )
    }
    names = model_names(session, per_model)
    lines = [
        ModelFigures(m, *names.get(m, ("", "", "?")), _figures(v, credits_per_usd))
        for m, v in per_model.items()
    ]
    lines.sort(key=lambda line: (-line.figures.revenue_ucr, line.model_id))
    categories: dict[str, list[list[int]]] = {}
    for m, v in per_model.items():
        categories.setdefault(names.get(m, ("", "", "?"))[2], []).append(v)
    return AdminAnalytics(
        period=span.period,
        start=span.start,
        end=span.end,
        credits_per_usd=credits_per_usd,
        totals=_figures(_add(per_model.values()), credits_per_usd),
        models=lines[:MAX_MODEL_LINES],
        categories=sorted(
            (
                CategoryFigures(c, len(vs), _figures(_add(vs), credits_per_usd))
                for c, vs in categories.items()
            ),
            key=lambda c: (-c.figures.revenue_ucr, c.category),
        ),
        daily=[
            DayFigures(d, _figures(per_day.get(d, [0] * len(_COUNTERS)), credits_per_usd))
            for d in span.days
        ],
        top_creators=_top_creators(session, span),
        payouts=_payouts(session, span),
        earnings_owed_ucr=total_balance(session, AccountCode.USER_EARNINGS),
        pending_payouts_ucr=pending_payouts(session),
    )


def _add(rows: Iterable[list[int]]) -> list[int]:
    total = [0] * len(_COUNTERS)
    for row in rows:
        for i, value in enumerate(row):
            total[i] += value
    return total


def _figures(v: list[int], credits_per_usd: Decimal) -> Figures:
    uses, tokens, revenue, refunded, cost, earned, reversed_ = v
    cost_ucr = round_half_even(uusd_to_ucr(cost, credits_per_usd))
    return Figures(
        uses=uses,
        tokens=tokens,
        revenue_ucr=revenue,
        refunded_ucr=refunded,
        cost_uusd=cost,
        earnings_ucr=earned,
        reversed_ucr=reversed_,
        margin_ucr=(revenue - refunded) - cost_ucr - (earned - reversed_),
    )


def _top_creators(session: Session, span: Window) -> list[CreatorFigures]:
    net = func.sum(creator_day.c.earnings_ucr) - func.sum(creator_day.c.reversed_ucr)
    top = (
        select(
            creator_day.c.user_id,
            func.count(creator_day.c.model_id.distinct()).label("models"),
            func.sum(creator_day.c.uses).label("uses"),
            func.sum(creator_day.c.earnings_ucr).label("earned"),
            func.sum(creator_day.c.reversed_ucr).label("reversed"),
        )
        .where(creator_day.c.day.between(span.start, span.end))
        .group_by(creator_day.c.user_id)
        .order_by(net.desc(), creator_day.c.user_id)
        .limit(TOP_CREATORS)
        .subquery()
    )
    rows = session.connection().execute(
        select(top, users.c.external_id, users.c.display_name)
        .join(users, users.c.id == top.c.user_id)
        .order_by((top.c.earned - top.c.reversed).desc(), top.c.user_id)
    )
    return [
        CreatorFigures(
            user_id=int(r.user_id),
            external_id=r.external_id,
            display_name=r.display_name,
            models=int(r.models),
            uses=int(r.uses),
            earnings_ucr=int(r.earned),
            reversed_ucr=int(r.reversed),
        )
        for r in rows
    ]


def _payouts(session: Session, span: Window) -> list[PayoutStatusFigures]:
    rows = session.connection().execute(
        select(
            payouts.c.status,
            func.count(),
            func.coalesce(func.sum(payouts.c.amount_ucr), 0),
            func.coalesce(func.sum(payouts.c.amount_uusd), 0),
        )
        .where(payouts.c.created_at >= span.since)
        .group_by(payouts.c.status)
        .order_by(payouts.c.status)
    )
    return [PayoutStatusFigures(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]
