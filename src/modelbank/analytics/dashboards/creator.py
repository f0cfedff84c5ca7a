"""A creator's earnings dashboard (DESIGN §8: total and per-model earnings, uses, tokens,
trends over 7/30/90/365 days, top models, payout history)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.analytics.dashboards._common import as_date, average, model_names, user_rows, window
from modelbank.catalog import service as catalog
from modelbank.earnings.models import payouts_table as payouts
from modelbank.ledger.service import get_balance
from modelbank.metering.rollups import creator_day_table as creator_day
from modelbank.users import service as users
from modelbank.wallets.refunds import open_debt

TOP_MODELS = 10
"""Models listed in ``top_models`` (all of them count in the totals)."""

PAYOUT_HISTORY = 20
"""Most recent payout requests listed."""


@dataclass(frozen=True, slots=True)
class CreatorModelLine:
    """One model's earnings for a creator in a period: the uses (and their tokens) that paid
    this creator, µcr earned, µcr reversed by refunds, and net (earned − reversed)."""

    model_id: int
    slug: str
    name: str
    uses: int
    tokens: int
    earnings_ucr: int
    reversed_ucr: int

    @property
    def net_ucr(self) -> int:
        """Earned − reversed, µcr."""
        return self.earnings_ucr - self.reversed_ucr


@dataclass(frozen=True, slots=True)
class CreatorDayLine:
    """One UTC day of a creator's earnings (µcr) and the uses that paid them."""

    day: date
    uses: int
    tokens: int
    earnings_ucr: int
    reversed_ucr: int

    @property
    def net_ucr(self) -> int:
        """Earned − reversed, µcr."""
        return self.earnings_ucr - self.reversed_ucr


@dataclass(frozen=True, slots=True)
class PayoutLine:
    """One payout request as stored: µcr asked, status (pending, completed, failed,
    cancelled), µUSD paid once completed."""

    id: int
    amount_ucr: int
    status: str
    amount_uusd: int | None
    created_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatorAnalytics:
    """A creator's dashboard for a period, optionally for one model.

    ``earnings_ucr`` gross, ``reversed_ucr`` taken back by refunds, ``net_earnings_ucr`` the
    difference; ``active_models`` the models with uses in the period; ``average_per_model_ucr``
    net ÷ active models, half-even; ``top_models`` by net earnings (at most
    :data:`TOP_MODELS`); ``daily`` every day of the period, zeros filled.

    Ignoring the period and model filters: ``payouts`` the last :data:`PAYOUT_HISTORY`
    requests, newest first; ``pending_payouts_ucr`` held for pending payouts;
    ``earnings_balance_ucr`` the earnings account's posted balance; ``owed_ucr`` open refund
    debt; ``available_ucr`` what a payout could withdraw now (balance − pending − owed, ≥ 0).
    """

    user_id: int
    period: str
    start: date
    end: date
    model_id: int | None
    earnings_ucr: int
    reversed_ucr: int
    net_earnings_ucr: int
    active_models: int
    uses: int
    tokens: int
    average_per_model_ucr: int
    top_models: list[CreatorModelLine]
    daily: list[CreatorDayLine]
    payouts: list[PayoutLine]
    pending_payouts_ucr: int
    earnings_balance_ucr: int
    owed_ucr: int
    available_ucr: int


def creator_analytics(
    session: Session,
    user_id: int,
    period: str = "30d",
    model_id: int | None = None,
    *,
    now: datetime | None = None,
) -> CreatorAnalytics:
    """``user_id``'s earnings dashboard (:class:`CreatorAnalytics`) over ``period`` ending on
    ``now``'s UTC day: ``rollup_creator_day`` read with one primary-key probe per day, the
    payouts table by its user index, the earnings account and open debt.

    Raises :class:`~modelbank.errors.InvalidInput` (period),
    :class:`~modelbank.users.errors.UserNotFound`,
    :class:`~modelbank.catalog.errors.ModelNotFound` (``model_id``)."""
    span = window(period, now=now)
    user = users.get_user(session, user_id)
    if model_id is not None:
        catalog.get_model(session, model_id)
    columns = (
        creator_day.c.day,
        creator_day.c.model_id,
        creator_day.c.uses,
        creator_day.c.tokens,
        creator_day.c.earnings_ucr,
        creator_day.c.reversed_ucr,
    )
    by_day = {day: [0, 0, 0, 0] for day in span.days}
    by_model: dict[int, list[int]] = {}
    for row in user_rows(session, creator_day, user_id, span.days, *columns):
        if model_id is not None and int(row.model_id) != model_id:
            continue
        counts = (int(row.uses), int(row.tokens), int(row.earnings_ucr), int(row.reversed_ucr))
        for into in (by_day[as_date(row.day)], by_model.setdefault(int(row.model_id), [0] * 4)):
            for i, value in enumerate(counts):
                into[i] += value
    names = model_names(session, by_model)
    lines = [
        CreatorModelLine(
            model_id=m,
            slug=names.get(m, ("", "", ""))[0],
            name=names.get(m, ("", "", ""))[1],
            uses=v[0],
            tokens=v[1],
            earnings_ucr=v[2],
            reversed_ucr=v[3],
        )
        for m, v in by_model.items()
    ]
    lines.sort(key=lambda line: (-line.net_ucr, -line.uses, line.model_id))
    uses, tokens, earned, reversed_ = (sum(v[i] for v in by_model.values()) for i in range(4))
    active = sum(1 for v in by_model.values() if v[0] > 0)
    account = get_balance(session, user.earnings_account_id)
    owed = open_debt(session, user_id)
    return CreatorAnalytics(
        user_id=user_id,
        period=span.period,
        start=span.start,
        end=span.end,
        model_id=model_id,
        earnings_ucr=earned,
        reversed_ucr=reversed_,
        net_earnings_ucr=earned - reversed_,
        active_models=active,
        uses=uses,
        tokens=tokens,
        average_per_model_ucr=average(earned - reversed_, active),
        top_models=lines[:TOP_MODELS],
        daily=[CreatorDayLine(d, *v) for d, v in sorted(by_day.items())],
        payouts=payout_history(session, user_id),
        pending_payouts_ucr=pending_payouts(session, user_id),
        earnings_balance_ucr=account.balance,
        owed_ucr=owed,
        available_ucr=max(account.available - owed, 0),
    )


def payout_history(session: Session, user_id: int, limit: int = PAYOUT_HISTORY) -> list[PayoutLine]:
    """``user_id``'s last ``limit`` payout requests, newest first (the payouts table, read
    directly: analytics is the read side)."""
    return [
        PayoutLine(
            id=int(r.id),
            amount_ucr=int(r.amount_ucr),
            status=r.status,
            amount_uusd=None if r.amount_uusd is None else int(r.amount_uusd),
            created_at=r.created_at,
            resolved_at=r.resolved_at,
        )
        for r in session.connection().execute(
            select(
                payouts.c.id,
                payouts.c.amount_ucr,
                payouts.c.status,
                payouts.c.amount_uusd,
                payouts.c.created_at,
                payouts.c.resolved_at,
            )
            .where(payouts.c.user_id == user_id)
            .order_by(payouts.c.id.desc())
            .limit(limit)
        )
    ]


def pending_payouts(session: Session, user_id: int | None = None) -> int:
    """µcr of payout requests still pending (of ``user_id``, or of everyone)."""
    query = select(func.coalesce(func.sum(payouts.c.amount_ucr), 0)).where(
        payouts.c.status == "pending"
    )
    if user_id is not None:
        query = query.where(payouts.c.user_id == user_id)
    return int(session.connection().execute(query).scalar_one())


def paid_out(session: Session, user_id: int) -> tuple[int, int]:
    """(µcr, µUSD) of ``user_id``'s completed payouts."""
    found = (
        session.connection()
        .execute(
            select(
                func.coalesce(func.sum(payouts.c.amount_ucr), 0),
                func.coalesce(func.sum(payouts.c.amount_uusd), 0),
            ).where(payouts.c.user_id == user_id, payouts.c.status == "completed")
        )
        .one()
    )
    return int(found[0]), int(found[1])
