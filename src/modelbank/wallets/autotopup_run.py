"""The ``auto_topup`` task: start the purchase a crossing asked for (see
:mod:`modelbank.wallets.autotopup`).

Three short transactions, as :func:`modelbank.wallets.purchases.start`, so that no lock is
held while the provider is called:

1. **Decide** (the auto top-up row locked): still enabled, no top-up already in flight (a
   pending ``auto_topup`` purchase; the unique partial index makes a second insert fail
   anyway), the package on sale, the month's count and µUSD within the caps (purchases not
   failed or expired, since the first of the month UTC); then insert the pending purchase
   (``origin = "auto_topup"``). A purchase of an earlier attempt that never reached the
   provider is resumed once that attempt's lease ran out (same purchase id: the provider's
   idempotency key replays).
2. **Pay**: Stripe charges the saved card off-session (a PaymentIntent; the signed
   ``payment_intent.succeeded`` webhook grants the credits); the manual provider records a
   purchase an admin confirms, as any manual purchase.
3. **Record** the provider's id, or mark the purchase failed (a decline counts as a failure
   of auto top-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from modelbank.config import Settings
from modelbank.db.base import utcnow
from modelbank.tasks.service import LEASE_S, Handler
from modelbank.wallets import autotopup, packages, purchases
from modelbank.wallets.errors import PaymentProviderError
from modelbank.wallets.models import purchases_table
from modelbank.wallets.providers import (
    CheckoutRequest,
    ManualProvider,
    PaymentProvider,
    StripeProvider,
    stripe_from_settings,
)

RESUME_AFTER_S = LEASE_S
"""A pending top-up that never reached the provider is resumed only once the task lease of
the runner that made it has run out (that runner died); before, it is in flight."""
COUNTED = ("pending", "completed", "refunded")
"""Purchase statuses that count against the monthly caps (money taken or being taken)."""


def month_start(now: datetime) -> datetime:
    """The first instant of ``now``'s calendar month, UTC."""
    at = now.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def month_usage(session: Session, user_id: int, now: datetime) -> tuple[int, int]:
    """(count, µUSD) of the user's auto top-ups this calendar month that count against the
    caps (see :data:`COUNTED`)."""
    p = purchases_table
    row = (
        session.connection()
        .execute(
            select(func.count(), func.coalesce(func.sum(p.c.price_uusd), 0)).where(
                p.c.user_id == user_id,
                p.c.origin == autotopup.ORIGIN,
                p.c.status.in_(COUNTED),
                p.c.created_at >= month_start(now),
            )
        )
        .one()
    )
    return int(row[0]), int(row[1])


def _in_flight(session: Session, user_id: int) -> purchases.PurchaseInfo | None:
    p = purchases_table
    row = (
        session.connection()
        .execute(
            select(p.c.id).where(
                p.c.user_id == user_id, p.c.origin == autotopup.ORIGIN, p.c.status == "pending"
            )
        )
        .first()
    )
    return None if row is None else purchases.get_purchase(session, int(row.id))


def _decide(
    session: Session, user_id: int, provider: PaymentProvider, now: datetime
) -> tuple[str, purchases.PurchaseInfo | None, autotopup.AutoTopupInfo]:
    """Step 1 (see the module doc): ``("start" | "resume", purchase)`` or a reason to stop."""
    info = autotopup.get(session, user_id, lock=True)
    if not info.enabled or info.package_id is None:
        return "disabled", None, info
    flying = _in_flight(session, user_id)
    if flying is not None:
        stale = flying.created_at <= now - timedelta(seconds=RESUME_AFTER_S)
        resume = flying.external_id is None and flying.provider == provider.name and stale
        return ("resume" if resume else "in_flight"), flying, info
    package = packages.get_package(session, info.package_id)
    count, spent = month_usage(session, user_id, now)
    if count + 1 > info.monthly_cap_count or spent + package.price_uusd > info.monthly_cap_uusd:
        autotopup.note(session, user_id, "monthly cap reached", now=now)
        return "cap_reached", None, info
    if not package.is_active:
        return "package_inactive", None, info
    try:
        with session.begin_nested():
            purchase_id = purchases.record_pending(
                session, user_id, package, provider.name, origin=autotopup.ORIGIN, now=now
            )
    except IntegrityError:  # another runner's top-up got in first
        return "in_flight", None, info
    return "start", purchases.get_purchase(session, purchase_id), info


def _pay(
    provider: PaymentProvider, purchase: purchases.PurchaseInfo, info: autotopup.AutoTopupInfo
) -> str:
    """Step 2: the provider's id for the purchase. Raises :class:`PaymentProviderError`."""
    request = CheckoutRequest(
        purchase_id=purchase.id,
        user_id=purchase.user_id,
        package_name=f"package {purchase.package_id}",
        credits_ucr=purchase.credits_ucr,
        price_cents=purchase.price_uusd // packages.UUSD_PER_CENT,
        currency=purchase.currency,
        success_url="https://invalid/",
        cancel_url="https://invalid/",
    )
    if isinstance(provider, StripeProvider):
        if not info.stripe_customer_id or not info.stripe_payment_method_id:
            raise PaymentProviderError("no saved payment method", provider="stripe")
        return provider.charge_saved(
            request, info.stripe_customer_id, info.stripe_payment_method_id
        ).external_id
    return provider.create_checkout(request).external_id


def run(
    factory: sessionmaker[Session],
    provider: PaymentProvider,
    user_id: int,
    *,
    now: datetime | None = None,
) -> str:
    """Start the user's top-up (the task's work). Returns what happened: ``started``,
    ``failed`` (the provider declined; counted), ``in_flight``, ``cap_reached``,
    ``disabled``, ``package_inactive``. Idempotent: a retried task finds its purchase in
    flight (or resumes it when it never reached the provider)."""
    now = now or utcnow()
    with factory() as session, session.begin():
        verdict, purchase, info = _decide(session, user_id, provider, now)
    if verdict not in ("start", "resume"):
        return verdict
    assert purchase is not None
    try:
        external_id = _pay(provider, purchase, info)
    except PaymentProviderError as exc:
        with factory() as session, session.begin():
            purchases.fail(session, purchase.id, str(exc), now=now)
        return "failed"
    with factory() as session, session.begin():
        purchases.set_external(session, purchase.id, external_id)
    return "started"


def provider_for_settings(
    settings: Settings, *, http_client: stripe.HTTPClient | None = None
) -> PaymentProvider:
    """Stripe when a secret key is configured, else the manual provider."""
    if settings.stripe_secret_key is not None:
        return stripe_from_settings(settings, http_client=http_client)
    return ManualProvider()


def handler(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    http_client: stripe.HTTPClient | None = None,
    now: datetime | None = None,
) -> Handler:
    """The ``auto_topup`` task handler for :func:`modelbank.tasks.service.run_due`."""

    def work(task_id: int, user_id: int | None, payload: Mapping[str, Any]) -> None:
        assert user_id is not None
        run(factory, provider_for_settings(settings, http_client=http_client), user_id, now=now)

    return work
