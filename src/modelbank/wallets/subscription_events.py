"""Stripe's subscription events applied once (issue 13): :func:`apply_event` turns a
verified :class:`~modelbank.wallets.billing.SubscriptionEvent` into a period granted, a
subscription linked, past due or cancelled; duplicated and reordered deliveries change
nothing twice (event ids in ``payment_events``, periods unique per invoice).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.wallets.billing import (
    SubscriptionEvent,
    SubscriptionEventKind,
)
from modelbank.wallets.billing_models import periods_table as periods
from modelbank.wallets.billing_models import subscriptions_table as subscriptions
from modelbank.wallets.packages import UUSD_PER_CENT
from modelbank.wallets.purchases import record_payment_event
from modelbank.wallets.subscription_periods import record_period
from modelbank.wallets.subscriptions import (
    CANCELLED,
    PENDING,
    SubscriptionInfo,
    add_month,
    end_now,
    get_subscription,
    info_of,
    renewal_failed,
    update_subscription,
)


def _find(session: Session, event: SubscriptionEvent) -> SubscriptionInfo | None:
    conn = session.connection()
    if event.subscription_id is not None:
        row = conn.execute(
            select(subscriptions).where(subscriptions.c.id == event.subscription_id)
        ).first()
        if row is not None and row.provider == event.provider:
            return info_of(row)
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
                return info_of(row)
    return None


def _paid(session: Session, subscription_id: int, invoice_id: str) -> bool:
    """True when invoice ``invoice_id`` of the subscription is recorded as a paid period."""
    return (
        session.connection()
        .execute(
            select(periods.c.id).where(
                periods.c.subscription_id == subscription_id, periods.c.invoice_ref == invoice_id
            )
        )
        .first()
        is not None
    )


def apply_event(session: Session, event: SubscriptionEvent, *, now: datetime | None = None) -> str:
    """Apply a verified subscription event once; return what happened: ``duplicate``,
    ``ignored``, ``unknown_subscription``, ``period_granted``, ``period_already_granted``,
    ``linked``, ``cancelled``, ``renewal_failed``. Safe twice and in any order: the event id
    is recorded (``payment_events``), periods are unique per invoice, and the provider's
    subscription id is stored from whichever event names it first; a failed payment of an
    invoice already paid (a late delivery of a failed attempt) is ``ignored``."""
    now = now or utcnow()
    found = _find(session, event)
    if found is not None:
        found = get_subscription(session, found.id, lock=True)
    kind = f"sub_{event.kind.value}"[:16]
    if not record_payment_event(session, event.provider, event.event_id, kind, None, now):
        return "duplicate"
    if event.kind is SubscriptionEventKind.IGNORED:
        return "ignored"
    if found is None:
        return "unknown_subscription"
    if event.external_id and found.external_id is None:
        update_subscription(session, found.id, now, external_id=event.external_id)
    kind = event.kind
    if kind is SubscriptionEventKind.CHECKOUT_COMPLETED:
        return "linked"
    if kind is SubscriptionEventKind.CHECKOUT_EXPIRED:
        if found.status == PENDING:
            end_now(session, found, now)
            return "cancelled"
        return "ignored"
    if kind is SubscriptionEventKind.DELETED:
        if found.status != CANCELLED:
            end_now(session, found, now)
        return "cancelled"
    if kind is SubscriptionEventKind.PAYMENT_FAILED:
        if event.invoice_id and _paid(session, found.id, event.invoice_id):
            return "ignored"  # a failed attempt delivered after the invoice was paid
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
