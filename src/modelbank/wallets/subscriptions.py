"""Subscriptions with monthly credits (issue 13).

A subscription to a plan grants, for each **paid period**, a ``purchased`` grant of the
plan's credits (cost basis: the price paid) that expires at the period's end, plus, with the
first period only, a ``bonus`` grant (from ``platform_promotions``) of the plan's first-period
bonus expiring with it. When the plan has a rollover fraction, the period's grant carries a
rollover rule (:func:`modelbank.wallets.grants.set_rollover`): the expiry sweep moves that
fraction of what is left into a new grant, with its cost basis, expiring at the end of the
following period (it does not roll again).

Each period is granted **once**: ``subscription_periods`` is unique on (subscription,
invoice), the grant's idempotency key is ``subscription_period:<id>``, and provider events
are de-duplicated by event id (``payment_events``), so duplicated and reordered Stripe
deliveries grant nothing twice. Periods are applied under the subscription's row lock.

Statuses: pending → active ⇄ past_due → cancelled (see
:class:`~modelbank.wallets.billing_models.Subscription`).
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.users import service as users
from modelbank.wallets import plans
from modelbank.wallets.billing import (
    SubscriptionCheckoutRequest,
    SubscriptionProvider,
)
from modelbank.wallets.billing_errors import SubscriptionNotFound, SubscriptionState
from modelbank.wallets.billing_models import periods_table as periods
from modelbank.wallets.billing_models import subscriptions_table as subscriptions
from modelbank.wallets.errors import PaymentProviderError, PaymentProviderNotConfigured
from modelbank.webhooks import service as webhooks

PENDING, ACTIVE, PAST_DUE, CANCELLED = "pending", "active", "past_due", "cancelled"
LIVE = (ACTIVE, PAST_DUE)
"""Statuses of a subscription that still renews (a user has at most one)."""


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """A subscription (see the table's doc for the statuses)."""

    id: int
    user_id: int
    plan_id: int
    provider: str
    status: str
    external_id: str | None
    checkout_id: str | None
    checkout_url: str | None
    periods_paid: int
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    created_at: datetime
    cancelled_at: datetime | None


@dataclass(frozen=True, slots=True)
class PeriodInfo:
    """A paid period: ``credits_ucr`` (+ ``bonus_ucr``) granted for ``price_uusd``."""

    id: int
    subscription_id: int
    invoice_ref: str
    period_start: datetime
    period_end: datetime
    credits_ucr: int
    bonus_ucr: int
    price_uusd: int
    grant_id: int | None
    bonus_grant_id: int | None


def info_of(row: Any) -> SubscriptionInfo:
    """A ``subscriptions`` row as a :class:`SubscriptionInfo`."""
    return SubscriptionInfo(
        id=int(row.id),
        user_id=int(row.user_id),
        plan_id=int(row.plan_id),
        provider=row.provider,
        status=row.status,
        external_id=row.external_id,
        checkout_id=row.checkout_id,
        checkout_url=row.checkout_url,
        periods_paid=int(row.periods_paid),
        current_period_start=row.current_period_start,
        current_period_end=row.current_period_end,
        cancel_at_period_end=bool(row.cancel_at_period_end),
        created_at=row.created_at,
        cancelled_at=row.cancelled_at,
    )


def period_info(row: Any) -> PeriodInfo:
    """A ``subscription_periods`` row as a :class:`PeriodInfo`."""
    return PeriodInfo(
        id=int(row.id),
        subscription_id=int(row.subscription_id),
        invoice_ref=row.invoice_ref,
        period_start=row.period_start,
        period_end=row.period_end,
        credits_ucr=int(row.credits_ucr),
        bonus_ucr=int(row.bonus_ucr),
        price_uusd=int(row.price_uusd),
        grant_id=None if row.grant_id is None else int(row.grant_id),
        bonus_grant_id=None if row.bonus_grant_id is None else int(row.bonus_grant_id),
    )


def add_month(at: datetime) -> datetime:
    """``at`` one calendar month later, the day clamped to the month's length (Jan 31 →
    Feb 28/29), as Stripe bills monthly."""
    year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def get_subscription(
    session: Session, subscription_id: int, *, lock: bool = False
) -> SubscriptionInfo:
    """The subscription (``lock``: FOR UPDATE). Raises :class:`SubscriptionNotFound`."""
    query = select(subscriptions).where(subscriptions.c.id == subscription_id)
    if lock:
        query = query.with_for_update()
    row = session.connection().execute(query).first()
    if row is None:
        raise SubscriptionNotFound(
            f"no subscription {subscription_id}", subscription_id=subscription_id
        )
    return info_of(row)


def list_subscriptions(session: Session, user_id: int) -> list[SubscriptionInfo]:
    """The user's subscriptions, newest first (at most 100)."""
    rows = session.connection().execute(
        select(subscriptions)
        .where(subscriptions.c.user_id == user_id)
        .order_by(subscriptions.c.id.desc())
        .limit(100)
    )
    return [info_of(row) for row in rows]


def list_manual(session: Session, *, limit: int = 200) -> list[SubscriptionInfo]:
    """``manual`` subscriptions that are pending or renewing (an admin confirms their
    periods), those whose period ends first first, then the newest pending ones."""
    rows = session.connection().execute(
        select(subscriptions)
        .where(
            subscriptions.c.provider == "manual",
            subscriptions.c.status.in_([PENDING, *LIVE]),
        )
        .order_by(
            subscriptions.c.current_period_end.is_(None),
            subscriptions.c.current_period_end,
            subscriptions.c.id,
        )
        .limit(limit)
    )
    return [info_of(row) for row in rows]


def current(session: Session, user_id: int) -> SubscriptionInfo | None:
    """The user's live (active or past-due) subscription, else the newest one, else None."""
    found = list_subscriptions(session, user_id)
    live = [s for s in found if s.status in LIVE]
    chosen = live or found
    return chosen[0] if chosen else None


def list_periods(session: Session, subscription_id: int) -> list[PeriodInfo]:
    """The paid periods of a subscription, oldest first."""
    rows = session.connection().execute(
        select(periods).where(periods.c.subscription_id == subscription_id).order_by(periods.c.id)
    )
    return [period_info(row) for row in rows]


def update_subscription(
    session: Session, subscription_id: int, now: datetime, **values: Any
) -> None:
    """Set columns of a subscription (and ``updated_at``), in the caller's transaction."""
    session.connection().execute(
        update(subscriptions)
        .where(subscriptions.c.id == subscription_id)
        .values(updated_at=now, **values)
    )


Transaction = Callable[[], AbstractContextManager[Session]]
"""Opens a write transaction that commits when the block ends (the API's ``db.write``)."""


def start(
    transaction: Transaction,
    provider: SubscriptionProvider,
    user_id: int,
    plan_id: int,
    *,
    success_url: str,
    cancel_url: str,
) -> SubscriptionInfo:
    """Subscribe ``user_id`` to ``plan_id`` through ``provider``: record a pending
    subscription, start the provider's checkout (Stripe: a Checkout Session in subscription
    mode; no lock held meanwhile), store its id and URL. Nothing is granted until a period is
    paid. A provider failure cancels the pending row and is raised.

    Raises :class:`~modelbank.users.errors.UserNotFound`,
    :class:`~modelbank.wallets.billing_errors.PlanNotFound`, :class:`SubscriptionState`
    (the user already has a live subscription, or the plan is off sale),
    :class:`PaymentProviderError`."""
    with transaction() as session:
        users.get_user(session, user_id)
        plan = plans.get_plan(session, plan_id)
        if not plan.is_active:
            raise SubscriptionState(f"plan {plan.slug!r} is not on sale", status="inactive")
        live = current(session, user_id)
        if live is not None and live.status in LIVE:
            raise SubscriptionState(
                f"user {user_id} already has subscription {live.id} ({live.status});"
                " cancel it first",
                status=live.status,
            )
        now = utcnow()
        new_id = int(
            session.connection()
            .execute(
                insert(subscriptions).returning(subscriptions.c.id),
                {
                    "user_id": user_id,
                    "plan_id": plan_id,
                    "provider": provider.name,
                    "status": PENDING,
                    "periods_paid": 0,
                    "cancel_at_period_end": False,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            .scalar_one()
        )
    request = SubscriptionCheckoutRequest(
        subscription_id=new_id,
        user_id=user_id,
        plan_id=plan.id,
        plan_name=plan.name,
        price_cents=plan.price_cents,
        currency=plan.currency,
        interval=plan.interval,
        success_url=success_url,
        cancel_url=cancel_url,
    )
    try:
        checkout = provider.create_checkout(request)
    except PaymentProviderError:
        with transaction() as session:
            update_subscription(session, new_id, utcnow(), status=CANCELLED, cancelled_at=utcnow())
        raise
    with transaction() as session:
        update_subscription(
            session,
            new_id,
            utcnow(),
            checkout_id=checkout.checkout_id,
            checkout_url=checkout.checkout_url,
        )
        return get_subscription(session, new_id)


def cancel(
    transaction: Transaction,
    subscription_id: int,
    provider: SubscriptionProvider | None,
    *,
    check: Callable[[SubscriptionInfo], None] | None = None,
) -> SubscriptionInfo:
    """Stop a subscription renewing. Stripe with a known subscription: cancel at the
    period's end at Stripe (``cancel_at_period_end``; ``customer.subscription.deleted``
    makes it cancelled), with no database lock held while Stripe is called; otherwise it is
    cancelled now. Granted credits stay until their expiry. Idempotent. Emits
    ``subscription.cancelled`` when it becomes cancelled. ``check(subscription)`` runs first
    (the caller's visibility rule: it raises to refuse).
    Raises :class:`SubscriptionNotFound`, :class:`PaymentProviderError` (Stripe refused;
    nothing changes), :class:`PaymentProviderNotConfigured` (a Stripe subscription without
    Stripe settings)."""
    with transaction() as session:
        sub = get_subscription(session, subscription_id, lock=True)
        if check is not None:
            check(sub)
        if sub.status == CANCELLED or sub.cancel_at_period_end:
            return sub
        if not (sub.provider == "stripe" and sub.external_id and sub.status in LIVE):
            end_now(session, sub, utcnow())
            return get_subscription(session, sub.id)
    if provider is None:
        raise PaymentProviderNotConfigured(
            "Stripe is not configured (MODELBANK_STRIPE_SECRET_KEY): a Stripe subscription"
            " cannot be cancelled",
            provider="stripe",
            setting="stripe_secret_key",
        )
    assert sub.external_id is not None
    provider.cancel(sub.external_id, subscription_id=sub.id)
    with transaction() as session:
        update_subscription(session, sub.id, utcnow(), cancel_at_period_end=True)
        return get_subscription(session, sub.id)


def end_now(session: Session, sub: SubscriptionInfo, now: datetime) -> None:
    """Cancel ``sub`` now and emit ``subscription.cancelled``."""
    update_subscription(session, sub.id, now, status=CANCELLED, cancelled_at=now)
    webhooks.emit(
        session,
        "subscription.cancelled",
        {"subscription_id": sub.id, "user_id": sub.user_id, "plan_id": sub.plan_id},
        now=now,
    )


def renewal_failed(session: Session, sub: SubscriptionInfo, *, now: datetime) -> None:
    """A renewal payment failed: the subscription is past due and
    ``subscription.renewal_failed`` is emitted (the hook an email notice hangs on: the outbox
    event carries the user, plan and period end)."""
    if sub.status != CANCELLED:
        update_subscription(session, sub.id, now, status=PAST_DUE)
    webhooks.emit(
        session,
        "subscription.renewal_failed",
        {
            "subscription_id": sub.id,
            "user_id": sub.user_id,
            "plan_id": sub.plan_id,
            "current_period_end": None
            if sub.current_period_end is None
            else sub.current_period_end.isoformat(),
        },
        now=now,
    )
