"""A user's model analytics (DESIGN §8: spend by model, category and type, recent activity,
models owned vs available, most profitable owned model, stakes held)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from modelbank.analytics.dashboards._common import (
    Window,
    all_days,
    as_date,
    dates,
    model_names,
    of_user,
    window,
)
from modelbank.analytics.dashboards.creator import paid_out, pending_payouts
from modelbank.analytics.service import (
    CategorySpend,
    DayActivity,
    ModelEarningLine,
    UserModelAnalytics,
)
from modelbank.catalog.models import model_access_table as access
from modelbank.catalog.models import models_table as models
from modelbank.db.base import utcnow
from modelbank.earnings.models import beneficiaries_table as beneficiaries
from modelbank.metering.rollups import creator_day_table as creator_day
from modelbank.metering.rollups import user_day_table as user_day
from modelbank.users import service as users

ACTIVITY_DAYS = 30
"""Days of the ``activity`` series of the original model-analytics view."""

FULL_STAKE_BPS = 10_000
"""A creator's implicit stake in a model with no beneficiaries set (DESIGN §7)."""


@dataclass(frozen=True, slots=True)
class SpendLine:
    """Spend on one model, category or usage type (``key``) in a period: uses, tokens, µcr
    charged, µcr refunded, and net (charged − refunded). ``label``: the model's name, else
    the key."""

    key: str
    label: str
    uses: int
    tokens: int
    spent_ucr: int
    refunded_ucr: int

    @property
    def net_ucr(self) -> int:
        """Charged − refunded, µcr."""
        return self.spent_ucr - self.refunded_ucr


@dataclass(frozen=True, slots=True)
class UserDayLine:
    """One UTC day: the user's uses, tokens, µcr charged and refunded, and µcr earned net of
    reversals from others' use of their models."""

    day: date
    uses: int
    tokens: int
    spent_ucr: int
    refunded_ucr: int
    earned_ucr: int


@dataclass(frozen=True, slots=True)
class StakeLine:
    """A stake held: ``share_bps`` of a model's earnings (``implicit``: the creator's 100% of
    a model with no beneficiaries set), and what it earned net of reversals, in the period
    and all time (µcr)."""

    model_id: int
    slug: str
    name: str
    share_bps: int
    implicit: bool
    earned_period_ucr: int
    earned_total_ucr: int


@dataclass(frozen=True, slots=True)
class Portfolio:
    """Stakes held and money out: µcr earned net all time over every model (held or not),
    µcr and µUSD paid out by completed payouts, µcr in pending payouts."""

    stakes: list[StakeLine]
    earned_total_ucr: int
    paid_out_ucr: int
    paid_out_uusd: int
    pending_payouts_ucr: int


@dataclass(frozen=True, slots=True)
class UserAnalytics:
    """A user's analytics: ``overview`` (the original model-analytics view: all-time spend
    and earnings, gross; 30 days of activity) plus, for the period, spend by model (highest
    net first), by category and by usage type, a daily series (zeros filled), totals, and the
    portfolio."""

    overview: UserModelAnalytics
    period: str
    start: date
    end: date
    uses: int
    tokens: int
    spent_ucr: int
    refunded_ucr: int
    by_model: list[SpendLine]
    by_category: list[SpendLine]
    by_usage_type: list[SpendLine]
    daily: list[UserDayLine]
    portfolio: Portfolio

    @property
    def net_spent_ucr(self) -> int:
        """Charged − refunded in the period, µcr."""
        return self.spent_ucr - self.refunded_ucr


def user_analytics(
    session: Session, user_id: int, period: str = "30d", *, now: datetime | None = None
) -> UserAnalytics:
    """``user_id``'s analytics (:class:`UserAnalytics`) from ``rollup_user_day`` and
    ``rollup_creator_day`` (one primary-key probe per day), the catalog, stakes, model access
    and payouts. Raises :class:`~modelbank.errors.InvalidInput` (period),
    :class:`~modelbank.users.errors.UserNotFound`."""
    now = now or utcnow()
    span = window(period, now=now)
    users.get_user(session, user_id)
    spend = _spend(session, user_id, span)
    earned_by_day, earned_by_model = _earned(session, user_id, span)
    daily = []
    for day in span.days:
        uses, tokens, spent, refunded = spend.by_day.get(day, (0, 0, 0, 0))
        daily.append(UserDayLine(day, uses, tokens, spent, refunded, earned_by_day.get(day, 0)))
    names = model_names(session, [*spend.by_model, *earned_by_model])
    by_category: dict[str, list[int]] = {}
    for model_id, v in spend.by_model.items():
        into = by_category.setdefault(names.get(model_id, ("", "", "?"))[2], [0, 0, 0, 0])
        for i, value in enumerate(v):
            into[i] += value
    totals = [sum(v[i] for v in spend.by_model.values()) for i in range(4)]
    paid = paid_out(session, user_id)
    return UserAnalytics(
        overview=model_overview(session, user_id, now=now),
        period=span.period,
        start=span.start,
        end=span.end,
        uses=totals[0],
        tokens=totals[1],
        spent_ucr=totals[2],
        refunded_ucr=totals[3],
        by_model=_lines(
            ((str(m), names.get(m, ("", str(m), ""))[1], v) for m, v in spend.by_model.items())
        ),
        by_category=_lines((c, c, v) for c, v in by_category.items()),
        by_usage_type=_lines((t, t, v) for t, v in spend.by_type.items()),
        daily=daily,
        portfolio=Portfolio(
            stakes=_stakes(session, user_id, earned_by_model),
            earned_total_ucr=sum(total for _, total in earned_by_model.values()),
            paid_out_ucr=paid[0],
            paid_out_uusd=paid[1],
            pending_payouts_ucr=pending_payouts(session, user_id),
        ),
    )


@dataclass
class _Spend:
    by_model: dict[int, list[int]]
    by_type: dict[str, list[int]]
    by_day: dict[date, list[int]]


def _spend(session: Session, user_id: int, span: Window) -> _Spend:
    """The period's spend summed in SQL by (model, usage type) and by day."""
    conn = session.connection()
    found = _Spend({}, {}, {})
    counters = (
        func.sum(user_day.c.uses),
        func.sum(user_day.c.tokens),
        func.sum(user_day.c.spend_ucr),
        func.sum(user_day.c.refunded_ucr),
    )
    by_kind = of_user(
        user_day, user_id, span.days, user_day.c.model_id, user_day.c.usage_type, *counters
    ).group_by(user_day.c.model_id, user_day.c.usage_type)
    for model_id, usage_type, *values in conn.execute(by_kind):
        counts = [int(v) for v in values]
        for into in (
            found.by_model.setdefault(int(model_id), [0, 0, 0, 0]),
            found.by_type.setdefault(usage_type, [0, 0, 0, 0]),
        ):
            for i, value in enumerate(counts):
                into[i] += value
    by_day = of_user(user_day, user_id, span.days, user_day.c.day, *counters).group_by(
        user_day.c.day
    )
    for day, *values in conn.execute(by_day):
        found.by_day[as_date(day)] = [int(v) for v in values]
    return found


def _earned(
    session: Session, user_id: int, span: Window
) -> tuple[dict[date, int], dict[int, tuple[int, int]]]:
    """Net earnings by day of the period, and by model: (in the period, all time)."""
    conn = session.connection()
    net = creator_day.c.earnings_ucr - creator_day.c.reversed_ucr
    in_period = case((creator_day.c.day >= span.start, net), else_=0)
    days = all_days(session, creator_day, until=span.end)
    by_model = {
        int(m): (int(period), int(total))
        for m, period, total in conn.execute(
            of_user(
                creator_day,
                user_id,
                days,
                creator_day.c.model_id,
                func.sum(in_period),
                func.sum(net),
            ).group_by(creator_day.c.model_id)
        )
    }
    by_day = {
        as_date(day): int(value)
        for day, value in conn.execute(
            of_user(creator_day, user_id, span.days, creator_day.c.day, func.sum(net)).group_by(
                creator_day.c.day
            )
        )
    }
    return by_day, by_model


def _lines(items: Iterable[tuple[str, str, list[int]]]) -> list[SpendLine]:
    lines = [SpendLine(key, label, *v) for key, label, v in items]
    lines.sort(key=lambda line: (-line.net_ucr, -line.uses, line.key))
    return lines


def _stakes(session: Session, user_id: int, earned: dict[int, tuple[int, int]]) -> list[StakeLine]:
    """Explicit stakes (model_beneficiaries) and the implicit 100% of own models without
    beneficiaries, by model id."""
    conn = session.connection()
    held = {
        int(r.model_id): (int(r.share_bps), False)
        for r in conn.execute(
            select(beneficiaries.c.model_id, beneficiaries.c.share_bps).where(
                beneficiaries.c.user_id == user_id
            )
        )
    }
    own = [
        int(v)
        for v in conn.execute(select(models.c.id).where(models.c.creator_id == user_id)).scalars()
    ]
    if own:
        split = {
            int(v)
            for v in conn.execute(
                select(beneficiaries.c.model_id).where(beneficiaries.c.model_id.in_(own)).distinct()
            ).scalars()
        }
        held.update({m: (FULL_STAKE_BPS, True) for m in own if m not in split})
    names = model_names(session, held)
    return [
        StakeLine(
            model_id=m,
            slug=names.get(m, ("", "", ""))[0],
            name=names.get(m, ("", "", ""))[1],
            share_bps=bps,
            implicit=implicit,
            earned_period_ucr=earned.get(m, (0, 0))[0],
            earned_total_ucr=earned.get(m, (0, 0))[1],
        )
        for m, (bps, implicit) in sorted(held.items())
    ]


def model_overview(session: Session, user_id: int, *, now: datetime) -> UserModelAnalytics:
    """The original model-analytics view (:func:`modelbank.analytics.service.
    user_model_analytics`) from the rollups: all-time gross spend and earnings, spend by
    category, and ``ACTIVITY_DAYS`` days of activity (uses, µcr charged, µcr earned gross)
    by posting day."""
    conn = session.connection()
    today = now.astimezone(UTC).date()
    available = conn.execute(
        select(func.count()).select_from(models).where(models.c.is_active.is_(True))
    ).scalar_one()
    owned = conn.execute(
        select(func.count())
        .select_from(models)
        .where(models.c.is_active.is_(True), models.c.creator_id == user_id)
    ).scalar_one()
    purchased, access_spent = conn.execute(
        select(func.count(), func.coalesce(func.sum(access.c.price_ucr), 0)).where(
            access.c.user_id == user_id
        )
    ).one()
    recent_days = dates(today - timedelta(days=ACTIVITY_DAYS - 1), today)
    recent = {d: [0, 0, 0] for d in recent_days}
    spent_by_model = {
        int(m): (int(uses), int(spent))
        for m, uses, spent in conn.execute(
            of_user(
                user_day,
                user_id,
                all_days(session, user_day, until=today),
                user_day.c.model_id,
                func.sum(user_day.c.uses),
                func.sum(user_day.c.spend_ucr),
            ).group_by(user_day.c.model_id)
        )
    }
    for day, uses, spent in conn.execute(
        of_user(
            user_day,
            user_id,
            recent_days,
            user_day.c.day,
            func.sum(user_day.c.uses),
            func.sum(user_day.c.spend_ucr),
        ).group_by(user_day.c.day)
    ):
        recent[as_date(day)][:2] = [int(uses), int(spent)]
    earned = _earned_gross(session, user_id, today, recent)
    names = model_names(session, [*spent_by_model, *earned])
    categories: dict[str, list[int]] = {}
    for model_id, (uses, spent) in spent_by_model.items():
        c = categories.setdefault(names.get(model_id, ("", "", "?"))[2], [0, 0])
        c[0] += uses
        c[1] += spent
    by_category = [
        CategorySpend(category=k, uses=u, spent_ucr=s) for k, (u, s) in categories.items()
    ]
    by_category.sort(key=lambda c: (-c.spent_ucr, c.category))
    usage_spent = sum(c.spent_ucr for c in by_category)
    best = min(earned, key=lambda m: (-earned[m][2], m)) if earned else None
    return UserModelAnalytics(
        user_id=user_id,
        models_available=int(available),
        models_purchased=int(purchased),
        models_owned=int(owned),
        credits_spent_ucr=usage_spent + int(access_spent),
        usage_spent_ucr=usage_spent,
        access_spent_ucr=int(access_spent),
        earnings_from_owned_ucr=sum(v[2] for v in earned.values()),
        most_profitable_model=None
        if best is None
        else ModelEarningLine(
            model_id=best,
            name=names.get(best, ("", "", ""))[1],
            uses=earned[best][0],
            tokens=earned[best][1],
            earnings_ucr=earned[best][2],
            last_used_at=earned[best][3],
        ),
        by_category=by_category,
        activity=[DayActivity(d, u, s, e) for d, (u, s, e) in sorted(recent.items())],
    )


def _earned_gross(
    session: Session, user_id: int, today: date, recent: dict[date, list[int]]
) -> dict[int, tuple[int, int, int, datetime | None]]:
    """model id → (uses, tokens, µcr earned gross, 00:00 UTC of the last day it paid) over all
    time; puts each recent day's gross earnings into ``recent[day][2]``."""
    conn = session.connection()
    paid_day = case((creator_day.c.uses > 0, creator_day.c.day), else_=None)
    totals = {}
    for m, uses, tokens, earned, last in conn.execute(
        of_user(
            creator_day,
            user_id,
            all_days(session, creator_day, until=today),
            creator_day.c.model_id,
            func.sum(creator_day.c.uses),
            func.sum(creator_day.c.tokens),
            func.sum(creator_day.c.earnings_ucr),
            func.max(paid_day),
        ).group_by(creator_day.c.model_id)
    ):
        at = None if last is None else datetime.combine(as_date(last), datetime.min.time(), UTC)
        totals[int(m)] = (int(uses), int(tokens), int(earned), at)
    for day, earned in conn.execute(
        of_user(
            creator_day,
            user_id,
            list(recent),
            creator_day.c.day,
            func.sum(creator_day.c.earnings_ucr),
        ).group_by(creator_day.c.day)
    ):
        recent[as_date(day)][2] = int(earned)
    return totals
