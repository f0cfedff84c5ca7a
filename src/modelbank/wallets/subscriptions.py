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
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.users import service as users
from modelbank.wallets import alerts, grants, plans, promos
from modelbank.wallets.billing import (
    SubscriptionCheckoutRequest,
    SubscriptionEvent,
    SubscriptionEventKind,
    SubscriptionProvider,
)
from modelbank.wallets.billing_errors import SubscriptionNotFound, SubscriptionState
from modelbank.wallets.billing_models import periods_table as periods
from modelbank.wallets.billing_models import subscriptions_table as subscriptions
from modelbank.wallets.errors import PaymentProviderError
from modelbank.wallets.grants import GrantSource
from modelbank.wallets.models import payment_events_table as payment_events
from modelbank.wallets.packages import UUSD_PER_CENT
from modelbank.webhooks import service as webhooks

PENDING, ACTIVE, PAST_DUE, CANCELLED = "pending", "active", "past_due", "cancelled"
LIVE = (ACTIVE, PAST_DUE)
"""Statuses of a subscription that still renews (a user has at most one)."""

LATE_PAYMENT_GRACE = timedelta(hours=1)
"""A period paid after its end (a late webhook) grants credits that expire this long after
the payment was recorded rather than already expired."""

RENEW_BATCH = 200
"""Manual subscriptions renewed per call of :func:`renew_manual_due`."""


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


def _info(row: Any) -> SubscriptionInfo:
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


def _period(row: Any) -> PeriodInfo:
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
    return _info(row)


def list_subscriptions(session: Session, user_id: int) -> list[SubscriptionInfo]:
    """The user's subscriptions, newest first (at most 100)."""
    rows = session.connection().execute(
        select(subscriptions)
        .where(subscriptions.c.user_id == user_id)
        .order_by(subscriptions.c.id.desc())
        .limit(100)
    )
    return [_info(row) for row in rows]


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
    return [_period(row) for row in rows]


def _set(session: Session, subscription_id: int, now: datetime, **values: Any) -> None:
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
            _set(session, new_id, utcnow(), status=CANCELLED, cancelled_at=utcnow())
        raise
    with transaction() as session:
        _set(
            session,
            new_id,
            utcnow(),
            checkout_id=checkout.checkout_id,
            checkout_url=checkout.checkout_url,
        )
        return get_subscription(session, new_id)


def record_period(
    session: Session,
    subscription_id: int,
    invoice_ref: str,
    *,
    period_start: datetime,
    period_end: datetime,
    price_uusd: int | None = None,
    now: datetime | None = None,
) -> tuple[PeriodInfo, bool]:
    """Grant one paid period's credits, once per ``invoice_ref``; return (period, new).

    Under the subscription's lock: an invoice already recorded returns its period unchanged.
    Otherwise the plan's current credits are granted (``purchased``, cost basis
    ``price_uusd`` — the amount paid, default the plan's price — expiring at ``period_end``,
    or :data:`LATE_PAYMENT_GRACE` after ``now`` if that has passed), with the plan's rollover
    rule; the first paid period adds the plan's bonus (``bonus``, same expiry, no rollover)
    and counts as a first purchase for referral rewards. The subscription becomes active
    (a cancelled one stays cancelled: the money arrived, so the period is still granted),
    its current period moves forward (never back: reordered invoices), and
    ``subscription.period_paid`` is emitted. Raises :class:`SubscriptionNotFound`."""
    now = now or utcnow()
    sub = get_subscription(session, subscription_id, lock=True)
    conn = session.connection()
    found = conn.execute(
        select(periods).where(
            periods.c.subscription_id == subscription_id, periods.c.invoice_ref == invoice_ref
        )
    ).first()
    if found is not None:
        return _period(found), False
    plan = plans.get_plan(session, sub.plan_id)
    first = sub.periods_paid == 0
    paid = plan.price_uusd if price_uusd is None else price_uusd
    bonus = plan.first_period_bonus_ucr if first else 0
    period_id = int(
        conn.execute(
            insert(periods).returning(periods.c.id),
            {
                "subscription_id": subscription_id,
                "user_id": sub.user_id,
                "invoice_ref": invoice_ref,
                "period_start": period_start,
                "period_end": period_end,
                "credits_ucr": plan.credits_ucr,
                "bonus_ucr": bonus,
                "price_uusd": paid,
                "created_at": now,
            },
        ).scalar_one()
    )
    expires = max(period_end, now + LATE_PAYMENT_GRACE)
    wallet_id = users.get_user(session, sub.user_id).wallet_account_id
    grant = grants.issue(
        session,
        sub.user_id,
        wallet_id,
        plan.credits_ucr,
        source=GrantSource.PURCHASED,
        idempotency_key=f"subscription_period:{period_id}",
        cost_basis_uusd=paid,
        expires_at=expires,
        ref=("subscription_period", period_id),
        metadata={"subscription_id": subscription_id, "provider": sub.provider},
        now=now,
    )
    if plan.rollover_bps > 0:
        grants.set_rollover(
            session,
            grant.id,
            rollover_bps=plan.rollover_bps,
            rolled_expires_at=expires + (period_end - period_start),
        )
    values: dict[str, Any] = {"grant_id": grant.id}
    if bonus > 0:
        values["bonus_grant_id"] = grants.issue(
            session,
            sub.user_id,
            wallet_id,
            bonus,
            source=GrantSource.BONUS,
            idempotency_key=f"subscription_bonus:{period_id}",
            expires_at=expires,
            ref=("subscription_period", period_id),
            metadata={"subscription_id": subscription_id, "first_period_bonus": True},
            now=now,
        ).id
    conn.execute(update(periods).where(periods.c.id == period_id).values(**values))
    changes: dict[str, Any] = {"periods_paid": sub.periods_paid + 1}
    if sub.status != CANCELLED:
        changes["status"] = ACTIVE
    if sub.current_period_end is None or period_end > sub.current_period_end:
        changes.update(current_period_start=period_start, current_period_end=period_end)
    _set(session, subscription_id, now, **changes)
    period = _period(conn.execute(select(periods).where(periods.c.id == period_id)).one())
    webhooks.emit(session, "subscription.period_paid", _payload(period, sub), now=now)
    if first:
        promos.reward_referral(session, sub.user_id, reason=f"subscription:{sub.id}", now=now)
    alerts.check(session, [sub.user_id], now=now)
    return period, True


def _payload(period: PeriodInfo, sub: SubscriptionInfo) -> dict[str, Any]:
    return {
        "subscription_id": sub.id,
        "user_id": sub.user_id,
        "plan_id": sub.plan_id,
        "invoice_ref": period.invoice_ref,
        "credits_ucr": period.credits_ucr,
        "bonus_ucr": period.bonus_ucr,
        "price_uusd": period.price_uusd,
        "period_end": period.period_end.isoformat(),
    }


def confirm_manual_period(
    session: Session, subscription_id: int, *, now: datetime | None = None
) -> PeriodInfo:
    """Record the next period of a ``manual`` subscription as paid (an admin confirms the
    payment): period n+1 runs from the current period's end (or ``now`` when there is none
    or it lapsed) for one month. Raises :class:`SubscriptionNotFound`,
    :class:`SubscriptionState` (not manual, or cancelled)."""
    now = now or utcnow()
    sub = get_subscription(session, subscription_id, lock=True)
    if sub.provider != "manual":
        raise SubscriptionState(
            f"subscription {subscription_id} is paid through {sub.provider}: its periods are"
            " granted when the provider confirms the payment",
            status=sub.status,
        )
    if sub.status == CANCELLED:
        raise SubscriptionState(f"subscription {subscription_id} is cancelled", status=CANCELLED)
    end = sub.current_period_end
    start_at = end if end is not None and end > now else now
    period, _ = record_period(
        session,
        subscription_id,
        f"manual:{sub.periods_paid + 1}",
        period_start=start_at,
        period_end=add_month(start_at),
        now=now,
    )
    return period


def cancel(
    session: Session,
    subscription_id: int,
    provider: SubscriptionProvider | None,
    *,
    now: datetime | None = None,
) -> SubscriptionInfo:
    """Stop a subscription renewing. Stripe with a known subscription: cancel at the
    period's end at Stripe (``cancel_at_period_end``; ``customer.subscription.deleted``
    makes it cancelled); otherwise it is cancelled now. Granted credits stay until their
    expiry. Idempotent. Emits ``subscription.cancelled`` when it becomes cancelled.
    Raises :class:`SubscriptionNotFound`, :class:`PaymentProviderError` (Stripe refused;
    nothing changes)."""
    now = now or utcnow()
    sub = get_subscription(session, subscription_id, lock=True)
    if sub.status == CANCELLED or sub.cancel_at_period_end:
        return sub
    if sub.provider == "stripe" and sub.external_id and sub.status in LIVE:
        assert provider is not None, "cancelling a Stripe subscription needs its provider"
        provider.cancel(sub.external_id, subscription_id=sub.id)
        _set(session, sub.id, now, cancel_at_period_end=True)
        return get_subscription(session, sub.id)
    _end(session, sub, now)
    return get_subscription(session, sub.id)


def _end(session: Session, sub: SubscriptionInfo, now: datetime) -> None:
    _set(session, sub.id, now, status=CANCELLED, cancelled_at=now)
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
        _set(session, sub.id, now, status=PAST_DUE)
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


def renew_manual_due(
    session: Session, *, now: datetime | None = None, limit: int = RENEW_BATCH
) -> int:
    """The jobs' step for ``manual`` subscriptions whose period has ended: those set to
    cancel at the period's end are cancelled; the others are renewed (next period granted,
    invoice ``manual:<n>``: idempotent). Run only when the operator turned automatic manual
    renewals on. Returns how many were handled."""
    now = now or utcnow()
    rows = session.connection().execute(
        select(subscriptions.c.id)
        .where(
            subscriptions.c.provider == "manual",
            subscriptions.c.status == ACTIVE,
            subscriptions.c.current_period_end <= now,
        )
        .order_by(subscriptions.c.id)
        .limit(limit)
    )
    done = 0
    for sub_id in [int(r) for r in rows.scalars()]:
        sub = get_subscription(session, sub_id, lock=True)
        end = sub.current_period_end
        if sub.status != ACTIVE or end is None or end > now:
            continue
        if sub.cancel_at_period_end:
            _end(session, sub, now)
        else:
            record_period(
                session,
                sub.id,
                f"manual:{sub.periods_paid + 1}",
                period_start=end,
                period_end=add_month(end),
                now=now,
            )
        done += 1
    return done


def _find(session: Session, event: SubscriptionEvent) -> SubscriptionInfo | None:
    conn = session.connection()
    if event.subscription_id is not None:
        row = conn.execute(
            select(subscriptions).where(subscriptions.c.id == event.subscription_id)
        ).first()
        if row is not None and row.provider == event.provider:
            return _info(row)
    for column, value in (
        (subscriptions.c.external_id, event.external_id),
        (subscriptions.c.checkout_id, event.checkout_id),
    ):
        if value:
            row = conn.execute(
                select(subscriptions).where(
                    subscriptions.c.provider == event.provider, column == value
                )
            ).first()
            if row is not None:
                return _info(row)
    return None


def apply_event(session: Session, event: SubscriptionEvent, *, now: datetime | None = None) -> str:
    """Apply a verified subscription event once; return what happened: ``duplicate``,
    ``ignored``, ``unknown_subscription``, ``period_granted``, ``period_already_granted``,
    ``linked``, ``cancelled``, ``renewal_failed``. Safe twice and in any order: the event id
    is recorded (``payment_events``), periods are unique per invoice, and the provider's
    subscription id is stored from whichever event names it first."""
    now = now or utcnow()
    found = _find(session, event)
    if found is not None:
        found = get_subscription(session, found.id, lock=True)
    conn = session.connection()
    seen = conn.execute(
        select(payment_events.c.id).where(
            payment_events.c.provider == event.provider,
            payment_events.c.event_id == event.event_id,
        )
    ).first()
    if seen is not None:
        return "duplicate"
    conn.execute(
        insert(payment_events).values(
            provider=event.provider,
            event_id=event.event_id,
            kind=f"sub_{event.kind.value}"[:16],
            purchase_id=None,
            received_at=now,
        )
    )
    if event.kind is SubscriptionEventKind.IGNORED:
        return "ignored"
    if found is None:
        return "unknown_subscription"
    if event.external_id and found.external_id is None:
        _set(session, found.id, now, external_id=event.external_id)
    kind = event.kind
    if kind is SubscriptionEventKind.CHECKOUT_COMPLETED:
        return "linked"
    if kind is SubscriptionEventKind.CHECKOUT_EXPIRED:
        if found.status == PENDING:
            _end(session, found, now)
            return "cancelled"
        return "ignored"
    if kind is SubscriptionEventKind.DELETED:
        if found.status != CANCELLED:
            _end(session, found, now)
        return "cancelled"
    if kind is SubscriptionEventKind.PAYMENT_FAILED:
        renewal_failed(session, found, now=now)
        return "renewal_failed"
    assert kind is SubscriptionEventKind.PERIOD_PAID
    start_at = event.period_start or now
    end_at = event.period_end or add_month(start_at)
    paid = None if event.amount_cents is None else event.amount_cents * UUSD_PER_CENT
    _, new = record_period(
        session,
        found.id,
        event.invoice_id or event.event_id,
        period_start=start_at,
        period_end=end_at,
        price_uusd=paid,
        now=now,
    )
    return "period_granted" if new else "period_already_granted"
