"""Paid periods of subscriptions (issue 13): :func:`record_period` grants one period's
credits once per invoice (the plan's credits as a ``purchased`` grant with its rollover rule,
the first period's bonus), :func:`confirm_manual_period` is an admin confirming a ``manual``
subscription's next period, :func:`renew_manual_due` the jobs' renewal of manual
subscriptions. See :mod:`modelbank.wallets.subscriptions` for the rules.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.db.base import utcnow
from modelbank.users import service as users
from modelbank.wallets import alerts, grants, plans, referrals
from modelbank.wallets.billing_errors import SubscriptionState
from modelbank.wallets.billing_models import periods_table as periods
from modelbank.wallets.billing_models import subscriptions_table as subscriptions
from modelbank.wallets.grants import GrantSource
from modelbank.wallets.subscriptions import (
    ACTIVE,
    CANCELLED,
    PeriodInfo,
    SubscriptionInfo,
    add_month,
    end_now,
    get_subscription,
    period_info,
    update_subscription,
)
from modelbank.webhooks import service as webhooks

LATE_PAYMENT_GRACE = timedelta(hours=1)
"""A period paid after its end (a late webhook) grants credits that expire this long after
the payment was recorded rather than already expired."""

RENEW_BATCH = 200
"""Manual subscriptions renewed per call of :func:`renew_manual_due`."""


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
    rule; the user's first paid period (of any subscription) adds the plan's bonus
    (``bonus``, same expiry, no rollover); a subscription's first paid period counts as a
    first purchase for referral rewards. The subscription becomes active (a cancelled one
    stays cancelled: the money arrived, so the period is still granted), its current period
    moves forward (never back: reordered invoices), and ``subscription.period_paid`` is
    emitted. Raises :class:`SubscriptionNotFound`."""
    now = now or utcnow()
    sub = get_subscription(session, subscription_id, lock=True)
    conn = session.connection()
    found = conn.execute(
        select(periods).where(
            periods.c.subscription_id == subscription_id, periods.c.invoice_ref == invoice_ref
        )
    ).first()
    if found is not None:
        return period_info(found), False
    plan = plans.get_plan(session, sub.plan_id)
    first = sub.periods_paid == 0
    # The plan's bonus comes with the user's first paid period ever, not each new
    # subscription's (cancelling and subscribing again earns no second bonus).
    earlier = conn.execute(
        select(periods.c.id).where(periods.c.user_id == sub.user_id).limit(1)
    ).first()
    paid = plan.price_uusd if price_uusd is None else price_uusd
    bonus = plan.first_period_bonus_ucr if first and earlier is None else 0
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
    update_subscription(session, subscription_id, now, **changes)
    period = period_info(conn.execute(select(periods).where(periods.c.id == period_id)).one())
    webhooks.emit(session, "subscription.period_paid", _payload(period, sub), now=now)
    if first:
        referrals.reward_referral(session, sub.user_id, reason=f"subscription:{sub.id}", now=now)
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
    audit.record(
        session,
        "subscription.period.confirm",
        "subscription",
        subscription_id,
        after=period,
        now=now,
    )
    return period


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
            end_now(session, sub, now)
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
