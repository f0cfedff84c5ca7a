"""Purchases of credit packages with real money (DESIGN §5).

Lifecycle: ``pending`` (a checkout was started with a payment provider) → ``completed`` (the
payment was confirmed: the package's credits are granted **once**, as a ``purchased`` grant
whose cost basis is the price paid) or ``expired`` (the checkout lapsed unpaid). A completed
purchase can be refunded, wholly or in part, but only from what is left unspent of its grant
(``refunded_ucr`` / ``refunded_uusd`` grow; the status becomes ``refunded`` once nothing is
left).

Provider events are applied by :func:`apply_event`, which makes them safe to deliver twice
or out of order: each provider event id is recorded once (``payment_events``), the
purchase row is locked while an event is applied, a grant has a per-purchase idempotency
key, a late ``expired`` never undoes a completion, and a refund that arrives before its
completion completes the purchase first (the provider only refunds payments it took).

A completion whose amount or currency differ from what the purchase recorded (its price in
cents, its currency) grants nothing: the purchase is marked ``failed`` and the mismatch is
recorded with reason ``amount_mismatch`` (the provider event row's kind, an audit record
``purchase.amount_mismatch``, a ``purchase.amount_mismatch`` webhook event and a warning in
the log) for an operator to settle with the provider (refund, or a manual grant).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.users import service as users
from modelbank.users.errors import UserNotFound
from modelbank.wallets import alerts, autotopup, grants, packages, referrals
from modelbank.wallets.errors import PaymentProviderError, PurchaseNotFound, PurchaseState
from modelbank.wallets.grants import GrantSource
from modelbank.wallets.models import payment_events_table as payment_events
from modelbank.wallets.models import purchases_table as purchases
from modelbank.wallets.providers import (
    Checkout,
    CheckoutRequest,
    PaymentEvent,
    PaymentEventKind,
    PaymentProvider,
)
from modelbank.webhooks import service as webhooks

PENDING, COMPLETED, EXPIRED, REFUNDED, FAILED = (
    "pending",
    "completed",
    "expired",
    "refunded",
    "failed",
)
STATUSES = (PENDING, COMPLETED, EXPIRED, REFUNDED, FAILED)

AMOUNT_MISMATCH = "amount_mismatch"
"""Why a paid completion was not granted: its amount or currency differ from the purchase's."""

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PurchaseInfo:
    """A purchase. Credits in µcr, money in µUSD (``price_uusd`` is whole cents)."""

    id: int
    user_id: int
    package_id: int
    provider: str
    status: str
    credits_ucr: int
    price_uusd: int
    currency: str
    external_id: str | None
    payment_reference: str | None
    checkout_url: str | None
    grant_id: int | None
    refunded_ucr: int
    refunded_uusd: int
    created_at: datetime
    completed_at: datetime | None
    origin: str = "checkout"
    """``checkout`` (the user started it) or ``auto_topup``."""


def _info(row: Any) -> PurchaseInfo:
    return PurchaseInfo(
        id=int(row.id),
        user_id=int(row.user_id),
        package_id=int(row.package_id),
        provider=row.provider,
        status=row.status,
        credits_ucr=int(row.credits_ucr),
        price_uusd=int(row.price_uusd),
        currency=row.currency,
        external_id=row.external_id,
        payment_reference=row.payment_reference,
        checkout_url=row.checkout_url,
        grant_id=None if row.grant_id is None else int(row.grant_id),
        refunded_ucr=int(row.refunded_ucr),
        refunded_uusd=int(row.refunded_uusd),
        created_at=row.created_at,
        completed_at=row.completed_at,
        origin=row.origin,
    )


def get_purchase(session: Session, purchase_id: int, *, lock: bool = False) -> PurchaseInfo:
    """The purchase ``purchase_id`` (``lock``: FOR UPDATE on PostgreSQL). Raises
    :class:`PurchaseNotFound`."""
    query = select(purchases).where(purchases.c.id == purchase_id)
    if lock:
        query = query.with_for_update()
    row = session.connection().execute(query).first()
    if row is None:
        raise PurchaseNotFound(f"no purchase {purchase_id}", purchase_id=purchase_id)
    return _info(row)


def list_purchases(
    session: Session,
    *,
    user_id: int | None = None,
    status: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[PurchaseInfo]:
    """Purchases by id, newest last, filtered by user and status."""
    query = select(purchases).where(purchases.c.id > after_id)
    if user_id is not None:
        query = query.where(purchases.c.user_id == user_id)
    if status is not None:
        query = query.where(purchases.c.status == status)
    rows = session.connection().execute(query.order_by(purchases.c.id).limit(limit))
    return [_info(row) for row in rows]


Transaction = Callable[[], AbstractContextManager[Session]]
"""Opens a write transaction that commits when the block ends (the API's ``db.write``)."""


def start(
    transaction: Transaction,
    provider: PaymentProvider,
    user_id: int,
    package_id: int,
    *,
    success_url: str,
    cancel_url: str,
    on_recorded: Callable[[Session, int], None] | None = None,
) -> PurchaseInfo:
    """Start buying package ``package_id`` for ``user_id`` through ``provider``.

    Three short transactions, so that no database lock is held while the provider is called:
    the pending purchase is recorded, the provider's checkout is created (Stripe: a Checkout
    Session, with an idempotency key per purchase), then its id and URL are stored. If the
    provider fails, the purchase is marked ``failed`` and the provider's error raised.
    ``on_recorded(session, purchase_id)`` runs at the end of the first transaction (a caller
    records its own idempotency key with the new purchase there).
    Raises :class:`~modelbank.users.errors.UserNotFound`,
    :class:`~modelbank.wallets.errors.PackageNotFound`, :class:`InvalidInput` (inactive
    package), :class:`~modelbank.wallets.errors.PaymentProviderError`,
    :class:`~modelbank.wallets.errors.PaymentProviderNotConfigured`.
    """
    with transaction() as session:
        users.get_user(session, user_id)
        package = packages.get_package(session, package_id)
        if not package.is_active:
            raise InvalidInput(f"package {package.slug!r} is not on sale", package_id=package_id)
        purchase_id = record_pending(session, user_id, package, provider.name, now=utcnow())
        if on_recorded is not None:
            on_recorded(session, purchase_id)
    request = CheckoutRequest(
        purchase_id=purchase_id,
        user_id=user_id,
        package_name=package.name,
        credits_ucr=package.credits_ucr,
        price_cents=package.price_cents,
        currency=package.currency,
        success_url=success_url,
        cancel_url=cancel_url,
    )
    try:
        checkout: Checkout = provider.create_checkout(request)
    except PaymentProviderError:
        with transaction() as session:
            _set(session, purchase_id, status=FAILED)
        raise
    with transaction() as session:
        _set(
            session,
            purchase_id,
            external_id=checkout.external_id,
            checkout_url=checkout.checkout_url,
        )
        return get_purchase(session, purchase_id)


def record_pending(
    session: Session,
    user_id: int,
    package: packages.PackageInfo,
    provider: str,
    *,
    origin: str = "checkout",
    now: datetime,
) -> int:
    """Insert a pending purchase of ``package`` (its amounts copied); return its id. A second
    pending ``auto_topup`` purchase of one user raises ``IntegrityError`` (the unique partial
    index ``uq_purchases_auto_topup_in_flight``)."""
    return int(
        session.connection()
        .execute(
            insert(purchases).returning(purchases.c.id),
            {
                "user_id": user_id,
                "package_id": package.id,
                "provider": provider,
                "status": PENDING,
                "credits_ucr": package.credits_ucr,
                "price_uusd": package.price_uusd,
                "currency": package.currency,
                "refunded_ucr": 0,
                "refunded_uusd": 0,
                "origin": origin,
                "created_at": now,
                "updated_at": now,
            },
        )
        .scalar_one()
    )


def set_external(session: Session, purchase_id: int, external_id: str) -> None:
    """Store the provider's id of a started purchase (a PaymentIntent's id is also its
    payment reference)."""
    values: dict[str, Any] = {"external_id": external_id}
    if external_id.startswith("pi_"):
        values["payment_reference"] = external_id
    _set(session, purchase_id, **values)


def _set(session: Session, purchase_id: int, **values: Any) -> None:
    values["updated_at"] = utcnow()
    session.connection().execute(
        update(purchases).where(purchases.c.id == purchase_id).values(**values)
    )


def complete(
    session: Session,
    purchase_id: int,
    *,
    payment_reference: str | None = None,
    now: datetime | None = None,
) -> tuple[PurchaseInfo, bool]:
    """Confirm the payment of a purchase: grant its credits (a ``purchased`` grant, cost
    basis = price paid) and emit ``purchase.completed``. Returns (purchase, newly completed).

    Idempotent: a completed or refunded purchase is returned unchanged. An expired purchase
    can still be completed (the money arrived), and so can a failed one that reached the
    provider (a decline reported before a later success). A purchase auto top-up started
    resets its failure count (:func:`~modelbank.wallets.autotopup.record_success`).
    Raises :class:`PurchaseNotFound`, :class:`PurchaseState` (a purchase that failed to
    start)."""
    now = now or utcnow()
    purchase = get_purchase(session, purchase_id, lock=True)
    if purchase.status in (COMPLETED, REFUNDED):
        return purchase, False
    started = purchase.external_id is not None or purchase.origin == autotopup.ORIGIN
    if purchase.status == FAILED and not started:
        raise PurchaseState(
            f"purchase {purchase_id} failed to start and cannot be completed", status=FAILED
        )
    grant = grants.issue(
        session,
        purchase.user_id,
        users.get_user(session, purchase.user_id).wallet_account_id,
        purchase.credits_ucr,
        source=GrantSource.PURCHASED,
        idempotency_key=f"purchase:{purchase_id}",
        cost_basis_uusd=purchase.price_uusd,
        purchase_id=purchase_id,
        ref=("purchase", purchase_id),
        metadata={"provider": purchase.provider},
        now=now,
    )
    values: dict[str, Any] = {"status": COMPLETED, "grant_id": grant.id, "completed_at": now}
    if payment_reference:
        values["payment_reference"] = payment_reference
    _set(session, purchase_id, **values)
    done = get_purchase(session, purchase_id)
    audit.record(
        session, "purchase.confirm", "purchase", purchase_id, before=purchase, after=done, now=now
    )
    webhooks.emit(session, "purchase.completed", _payload(done), now=now)
    if done.origin == autotopup.ORIGIN:
        autotopup.record_success(session, done.user_id, _payload(done), now=now)
    referrals.reward_referral(session, purchase.user_id, reason=f"purchase:{purchase_id}", now=now)
    alerts.check(session, [purchase.user_id], now=now)
    return done, True


def fail(
    session: Session, purchase_id: int, reason: str, *, now: datetime | None = None
) -> tuple[PurchaseInfo, bool]:
    """Mark a pending (or expired) purchase failed: the provider declined the payment.
    Returns (purchase, newly failed); any other status is kept (a completion that arrived
    first wins). A purchase auto top-up started counts as a failure of it
    (:func:`~modelbank.wallets.autotopup.record_failure`), once. Raises
    :class:`PurchaseNotFound`."""
    purchase = get_purchase(session, purchase_id, lock=True)
    if purchase.status not in (PENDING, EXPIRED):
        return purchase, False
    _set(session, purchase_id, status=FAILED)
    done = get_purchase(session, purchase_id)
    if done.origin == autotopup.ORIGIN:
        autotopup.record_failure(session, done.user_id, reason, _payload(done), now=now)
    return done, True


def expire(session: Session, purchase_id: int, *, now: datetime | None = None) -> PurchaseInfo:
    """Mark a pending purchase expired (its checkout lapsed); any other status is kept
    (a completion that arrived first wins). Raises :class:`PurchaseNotFound`."""
    purchase = get_purchase(session, purchase_id, lock=True)
    if purchase.status == PENDING:
        _set(session, purchase_id, status=EXPIRED)
        purchase = get_purchase(session, purchase_id)
    return purchase


def refund(
    session: Session,
    purchase_id: int,
    *,
    amount_ucr: int | None = None,
    target_refunded_ucr: int | None = None,
    now: datetime | None = None,
) -> tuple[PurchaseInfo, int]:
    """Reverse unspent credits of a completed purchase: ``amount_ucr`` more (default: all that
    is left of its grant), or up to ``target_refunded_ucr`` in total (a provider's cumulative
    refund). Takes them from that grant only (wallet → ``world_sales``, a reversing transfer of
    the purchase) and records the µUSD they carried. Returns (purchase, µcr reversed now).

    Credits already spent, or reserved by pending holds, cannot be reversed: the refund is
    capped there (a target beyond it is reached as far as it can be). Idempotent for a
    target. Emits ``purchase.refunded``. Raises :class:`PurchaseNotFound`,
    :class:`PurchaseState` (not completed), :class:`InvalidInput` (``amount_ucr`` ≤ 0 or more
    than is unspent)."""
    now = now or utcnow()
    purchase = get_purchase(session, purchase_id, lock=True)
    if purchase.status not in (COMPLETED, REFUNDED) or purchase.grant_id is None:
        raise PurchaseState(
            f"purchase {purchase_id} is {purchase.status}: only completed purchases are refunded",
            status=purchase.status,
        )
    user = users.get_user(session, purchase.user_id)
    wallet = ledger.lock_accounts(session, [user.wallet_account_id])[user.wallet_account_id]
    book = grants.GrantBook.load(session, {purchase.user_id: wallet}, now=now)
    grant_left = book.remaining(purchase.user_id, purchase.grant_id)
    unspent = min(grant_left, wallet.available)
    amount = _refund_amount(purchase, unspent, amount_ucr, target_refunded_ucr)
    if amount <= 0:
        book.flush(session, now=now)  # expired grants swept while loading
        return purchase, 0
    basis = book.take(purchase.user_id, purchase.grant_id, amount, "purchase_refund", purchase_id)
    book.flush(session, now=now)
    _post_refund(session, wallet, purchase_id, amount, basis, now)
    done = _record_refund(session, purchase, amount, basis, grant_left - amount, now)
    alerts.check(session, [purchase.user_id], now=now)
    return done, amount


def _refund_amount(
    purchase: PurchaseInfo,
    unspent: int,
    amount_ucr: int | None,
    target_refunded_ucr: int | None,
) -> int:
    """µcr to reverse now, capped at the ``unspent`` µcr of the purchase's grant: up to
    ``target_refunded_ucr`` in total, else ``amount_ucr``, else all that is unspent. Raises
    :class:`InvalidInput` (``amount_ucr`` ≤ 0 or more than is unspent)."""
    if target_refunded_ucr is not None:
        wanted = min(target_refunded_ucr, purchase.credits_ucr) - purchase.refunded_ucr
        return max(0, min(wanted, unspent))
    if amount_ucr is None:
        return unspent
    if amount_ucr <= 0:
        raise InvalidInput("amount_ucr must be positive")
    if amount_ucr > unspent:
        raise InvalidInput(
            f"only {unspent} µcr of purchase {purchase.id} are unspent", unspent_ucr=unspent
        )
    return amount_ucr


def _post_refund(
    session: Session,
    wallet: ledger.AccountBalance,
    purchase_id: int,
    amount: int,
    basis: int,
    now: datetime,
) -> None:
    """Post the refund: ``amount`` µcr wallet → ``world_sales`` (a reversing transfer of the
    purchase that records the ``basis`` µUSD it carried); the wallet is locked already."""
    ledger.post_transfers(
        session,
        [
            ledger.NewTransfer(
                debit_account_id=wallet.id,
                credit_account_id=ledger.platform_account(session, AccountCode.WORLD_SALES),
                amount=amount,
                code=TransferCode.REFUND,
                ref_type="purchase",
                ref_id=purchase_id,
                metadata={"refunded_uusd": basis},
            )
        ],
        now=now,
        locked={wallet.id: wallet},
    )


def _record_refund(
    session: Session,
    purchase: PurchaseInfo,
    amount: int,
    basis: int,
    left: int,
    now: datetime,
) -> PurchaseInfo:
    """Record ``amount`` µcr (``basis`` µUSD) more refunded on the purchase (``refunded``
    once ``left`` = 0 µcr of its grant remain), audit it and emit ``purchase.refunded``."""
    _set(
        session,
        purchase.id,
        refunded_ucr=purchase.refunded_ucr + amount,
        refunded_uusd=purchase.refunded_uusd + basis,
        status=REFUNDED if left == 0 else COMPLETED,
    )
    done = get_purchase(session, purchase.id)
    audit.record(
        session, "purchase.refund", "purchase", purchase.id, before=purchase, after=done, now=now
    )
    webhooks.emit(
        session,
        "purchase.refunded",
        {**_payload(done), "reversed_ucr": amount, "reversed_uusd": basis},
        now=now,
    )
    return done


def _payload(p: PurchaseInfo) -> dict[str, Any]:
    return {
        "purchase_id": p.id,
        "user_id": p.user_id,
        "package_id": p.package_id,
        "provider": p.provider,
        "status": p.status,
        "credits_ucr": p.credits_ucr,
        "price_uusd": p.price_uusd,
        "refunded_ucr": p.refunded_ucr,
        "origin": p.origin,
    }


def apply_event(session: Session, event: PaymentEvent, *, now: datetime | None = None) -> str:
    """Apply a verified payment-provider event; return what happened: ``duplicate`` (this
    event id was applied before), ``ignored``, ``unknown_purchase``, ``completed``,
    ``already_completed``, ``expired``, ``failed``, ``refunded``, ``payment_method_saved``,
    ``amount_mismatch`` (a completion that paid another amount or currency than the
    purchase's price: nothing granted, the purchase failed; see the module doc).

    Safe to receive twice and out of order (see the module doc). Raises nothing for events
    about purchases this installation does not know: they are recorded and ignored."""
    now = now or utcnow()
    purchase = _find(session, event)
    if purchase is not None:
        purchase = get_purchase(session, purchase.id, lock=True)  # serialise per purchase
    purchase_id = None if purchase is None else purchase.id
    if not record_payment_event(
        session, event.provider, event.event_id, event.kind.value, purchase_id, now
    ):
        return "duplicate"
    if event.kind is PaymentEventKind.IGNORED:
        return "ignored"
    if event.kind is PaymentEventKind.PAYMENT_METHOD_SAVED:
        return _save_payment_method(session, event, now)
    if purchase is None:
        return "unknown_purchase"
    if event.kind is PaymentEventKind.EXPIRED:
        after = expire(session, purchase.id, now=now)
        return "expired" if after.status == EXPIRED else "already_completed"
    if event.kind is PaymentEventKind.FAILED:
        after, _ = fail(session, purchase.id, event.reason or "payment declined", now=now)
        return "failed" if after.status == FAILED else "already_completed"
    if _refuse_mismatch(session, purchase, event, now):
        return AMOUNT_MISMATCH
    if purchase.status in (PENDING, EXPIRED, FAILED):
        _, new = complete(session, purchase.id, payment_reference=event.payment_reference, now=now)
        if event.kind is PaymentEventKind.COMPLETED:
            return "completed" if new else "already_completed"
    elif event.kind is PaymentEventKind.COMPLETED:
        return "already_completed"
    _refund_to_provider_total(session, purchase.id, event, now)
    return "refunded"


def record_payment_event(
    session: Session,
    provider: str,
    event_id: str,
    kind: str,
    purchase_id: int | None,
    now: datetime,
) -> bool:
    """Record a provider event id once (``payment_events``, ``kind`` as stored, at most 16
    characters); False when it was seen before (Stripe delivers at least once). Shared by
    purchases and subscriptions (:mod:`modelbank.wallets.subscription_events`)."""
    conn = session.connection()
    seen = conn.execute(
        select(payment_events.c.id).where(
            payment_events.c.provider == provider,
            payment_events.c.event_id == event_id,
        )
    ).first()
    if seen is not None:
        return False
    conn.execute(
        insert(payment_events).values(
            provider=provider,
            event_id=event_id,
            kind=kind,
            purchase_id=purchase_id,
            received_at=now,
        )
    )
    return True


def _save_payment_method(session: Session, event: PaymentEvent, now: datetime) -> str:
    """Save the card of a ``payment_method_saved`` event for auto top-up; ``ignored`` when the
    event names no (known) user, customer or card, or another customer than the user's."""
    if event.user_id is None or not event.customer_id or not event.payment_method_id:
        return "ignored"
    try:
        users.get_user(session, event.user_id)
    except UserNotFound:  # no such user (deleted, forged): a 404 Stripe would retry for days
        return "ignored"
    known = autotopup.get(session, event.user_id).stripe_customer_id
    if known is not None and known != event.customer_id:
        return "ignored"  # a card saved for another customer than the one we made
    autotopup.save_payment_method(
        session, event.user_id, event.customer_id, event.payment_method_id, now=now
    )
    return "payment_method_saved"


def _refuse_mismatch(
    session: Session, purchase: PurchaseInfo, event: PaymentEvent, now: datetime
) -> bool:
    """True when the event is refused for an amount mismatch: a completion of an open purchase
    that paid another amount or currency, or a refund of such a payment that overtook its
    completion (both flagged here, see the module doc), or any later refund of it."""
    if purchase.status not in (PENDING, EXPIRED, FAILED):
        return False
    if event.kind is PaymentEventKind.COMPLETED:
        paid = event
    elif event.kind is PaymentEventKind.REFUNDED:
        # The mismatched payment is being refunded: it granted nothing, so nothing to take
        # back (completing it first, as for a refund that overtook its completion, would
        # grant the package's credits for whatever was paid).
        if _had_mismatch(session, purchase.id):
            return True
        if event.charged_cents is None:  # the manual provider's refund states no charge
            return False
        paid = replace(event, amount_cents=event.charged_cents)
    else:
        return False
    mismatch = _payment_mismatch(purchase, paid)
    if mismatch is None:
        return False
    session.connection().execute(
        update(payment_events)
        .where(
            payment_events.c.provider == event.provider,
            payment_events.c.event_id == event.event_id,
        )
        .values(kind=AMOUNT_MISMATCH)
    )
    _flag_mismatch(session, purchase, event, mismatch, now)
    return True


def _refund_to_provider_total(
    session: Session, purchase_id: int, event: PaymentEvent, now: datetime
) -> None:
    """Apply a ``refunded`` event: the provider's cumulative refunded cash (cents; the whole
    price when the event states none), as credits of this purchase."""
    purchase = get_purchase(session, purchase_id)
    price_cents = purchase.price_uusd // packages.UUSD_PER_CENT
    asked = price_cents if event.amount_cents is None else event.amount_cents
    refunded_cents = max(0, min(asked, price_cents))
    target = purchase.credits_ucr * refunded_cents // price_cents
    refund(session, purchase.id, target_refunded_ucr=target, now=now)


def _payment_mismatch(purchase: PurchaseInfo, event: PaymentEvent) -> dict[str, Any] | None:
    """What a completion paid against what the purchase expects (cents, currency), when
    they differ (for a payment provider, an amount or currency the event does not state
    differs too); None when they match. The manual provider's completion is an admin's
    confirmation that the package was paid: it states no amount and is not compared."""
    if event.provider == "manual" and event.amount_cents is None and event.currency is None:
        return None
    expected_cents = purchase.price_uusd // packages.UUSD_PER_CENT
    expected_currency = purchase.currency.lower()
    if event.amount_cents == expected_cents and event.currency == expected_currency:
        return None
    return {
        "reason": AMOUNT_MISMATCH,
        "expected_cents": expected_cents,
        "expected_currency": expected_currency,
        "paid_cents": event.amount_cents,
        "paid_currency": event.currency,
        "event_id": event.event_id,
    }


def _had_mismatch(session: Session, purchase_id: int) -> bool:
    """True when a completion of the purchase was refused for an amount mismatch."""
    return (
        session.connection()
        .execute(
            select(payment_events.c.id).where(
                payment_events.c.purchase_id == purchase_id,
                payment_events.c.kind == AMOUNT_MISMATCH,
            )
        )
        .first()
        is not None
    )


def _flag_mismatch(
    session: Session,
    purchase: PurchaseInfo,
    event: PaymentEvent,
    mismatch: dict[str, Any],
    now: datetime,
) -> None:
    """Fail the purchase (nothing granted) and record the mismatch: audit, webhook, log."""
    if purchase.status != FAILED:
        fail(session, purchase.id, AMOUNT_MISMATCH, now=now)
    if event.payment_reference and not purchase.payment_reference:
        _set(session, purchase.id, payment_reference=event.payment_reference)
    done = get_purchase(session, purchase.id)
    audit.record(
        session,
        "purchase.amount_mismatch",
        "purchase",
        purchase.id,
        before=purchase,
        after={**_payload(done), **mismatch},
        now=now,
    )
    webhooks.emit(session, "purchase.amount_mismatch", {**_payload(done), **mismatch}, now=now)
    log.warning(
        "purchase %s: %s event %s paid %s %s, the purchase expects %s %s; nothing granted,"
        " purchase marked failed (amount_mismatch)",
        purchase.id,
        event.provider,
        event.event_id,
        mismatch["paid_cents"],
        mismatch["paid_currency"],
        mismatch["expected_cents"],
        mismatch["expected_currency"],
    )


def _find(session: Session, event: PaymentEvent) -> PurchaseInfo | None:
    conn = session.connection()
    if event.purchase_id is not None:
        row = conn.execute(select(purchases).where(purchases.c.id == event.purchase_id)).first()
        if row is not None and row.provider == event.provider:
            return _info(row)
    for column, value in (
        (purchases.c.external_id, event.external_id),
        (purchases.c.payment_reference, event.payment_reference),
    ):
        if value:
            row = conn.execute(
                select(purchases).where(purchases.c.provider == event.provider, column == value)
            ).first()
            if row is not None:
                return _info(row)
    return None
