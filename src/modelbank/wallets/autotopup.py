"""Auto top-up settings and state (issue 13): buy a package when the balance runs low.

Per user: ``enabled``, ``threshold_ucr``, ``package_id``, ``monthly_cap_count`` and
``monthly_cap_uusd`` (per calendar month, UTC). The rule, in the order things happen:

1. **Crossing** (:func:`on_balance`, called by :func:`modelbank.wallets.alerts.check` in the
   transaction of every charge, capture, hold and sweep, from the same one-query read): when
   the available balance is below the threshold and no crossing is pending
   (``triggered_at`` NULL), one conditional ``UPDATE … WHERE triggered_at IS NULL`` marks it
   and one ``auto_topup`` task is queued (:mod:`modelbank.tasks`). Concurrent charges
   serialise on the wallet row and on that update, so a crossing queues one task.
2. **Purchase** (:mod:`modelbank.wallets.autotopup_run`, after the commit): at most one in
   flight per user (a unique partial index on ``purchases``), within the monthly cap.
3. **Outcome**: a completed top-up (:func:`record_success`) resets the failure count and
   re-arms the trigger; a failed one (:func:`record_failure`) counts, re-arms, and after
   the platform's ``auto_topup_max_failures`` in a row switches auto top-up off and emits
   ``wallet.auto_topup_failed``. A balance back at or above the threshold re-arms too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.ledger import service as ledger
from modelbank.money import format_credits
from modelbank.notices import service as notices
from modelbank.platform import service as platform
from modelbank.tasks import service as tasks
from modelbank.users import service as users
from modelbank.wallets import packages
from modelbank.wallets.errors import PaymentMethodRequired
from modelbank.wallets.models import auto_topups_table as topups
from modelbank.webhooks import service as webhooks

TASK = "auto_topup"
"""Task kind of a top-up purchase to start."""
ORIGIN = "auto_topup"
"""``purchases.origin`` of a purchase auto top-up started."""
FAILED_EVENT = "wallet.auto_topup_failed"
MAX_FAILURES_KEY = "auto_topup_max_failures"
"""``platform_settings`` key: consecutive failures that switch auto top-up off."""
DEFAULT_MAX_FAILURES = 3
"""Three declines in a row: the card is not coming back by itself."""
MAX_CAP_COUNT = 1_000
"""Largest monthly count cap accepted (a top-up a day is 31)."""


@dataclass(frozen=True, slots=True)
class AutoTopupInfo:
    """A user's auto top-up. Credits in µcr, money in µUSD. ``has_payment_method``: a card
    is saved with Stripe; ``disabled_reason``: ``failures`` when it switched itself off."""

    user_id: int
    enabled: bool
    threshold_ucr: int
    package_id: int | None
    monthly_cap_count: int
    monthly_cap_uusd: int
    consecutive_failures: int
    last_error: str | None
    disabled_reason: str | None
    triggered_at: datetime | None
    has_payment_method: bool
    stripe_customer_id: str | None
    stripe_payment_method_id: str | None


def _info(user_id: int, row: Any) -> AutoTopupInfo:
    if row is None:
        return AutoTopupInfo(user_id, False, 0, None, 0, 0, 0, None, None, None, False, None, None)
    return AutoTopupInfo(
        user_id=user_id,
        enabled=bool(row.enabled),
        threshold_ucr=int(row.threshold_ucr),
        package_id=None if row.package_id is None else int(row.package_id),
        monthly_cap_count=int(row.monthly_cap_count),
        monthly_cap_uusd=int(row.monthly_cap_uusd),
        consecutive_failures=int(row.consecutive_failures),
        last_error=row.last_error,
        disabled_reason=row.disabled_reason,
        triggered_at=row.triggered_at,
        has_payment_method=row.stripe_payment_method_id is not None,
        stripe_customer_id=row.stripe_customer_id,
        stripe_payment_method_id=row.stripe_payment_method_id,
    )


def get(session: Session, user_id: int, *, lock: bool = False) -> AutoTopupInfo:
    """The user's auto top-up (off with zero amounts when never set). ``lock``: FOR UPDATE.
    Raises :class:`~modelbank.users.errors.UserNotFound`."""
    users.get_user(session, user_id)
    query = select(topups).where(topups.c.user_id == user_id)
    if lock:
        query = query.with_for_update()
    return _info(user_id, session.connection().execute(query).first())


def _upsert(session: Session, user_id: int, now: datetime, **values: Any) -> None:
    conn = session.connection()
    values["updated_at"] = now
    if not conn.execute(
        update(topups).where(topups.c.user_id == user_id).values(**values)
    ).rowcount:
        conn.execute(insert(topups).values(user_id=user_id, created_at=now, **values))


def configure(
    session: Session,
    user_id: int,
    *,
    enabled: bool,
    threshold_ucr: int,
    package_id: int,
    monthly_cap_count: int,
    monthly_cap_uusd: int,
    provider: str,
    now: datetime | None = None,
) -> AutoTopupInfo:
    """Set the user's auto top-up (``provider``: the payment provider top-ups will use).
    Enabling resets the failure count and, when the balance is already below the threshold,
    queues a top-up at once. Raises :class:`InvalidInput` (negative amounts, a cap over
    :data:`MAX_CAP_COUNT`, a package not on sale), :class:`PaymentMethodRequired` (Stripe
    without a saved card), ``UserNotFound``, ``PackageNotFound``."""
    now = now or utcnow()
    if threshold_ucr < 0 or monthly_cap_count < 0 or monthly_cap_uusd < 0:
        raise InvalidInput("threshold_ucr and the monthly caps must be ≥ 0")
    if monthly_cap_count > MAX_CAP_COUNT:
        raise InvalidInput(f"monthly_cap_count: at most {MAX_CAP_COUNT}")
    package = packages.get_package(session, package_id)
    if not package.is_active:
        raise InvalidInput(f"package {package.slug!r} is not on sale", package_id=package_id)
    current = get(session, user_id, lock=True)
    if enabled and provider == "stripe" and not current.has_payment_method:
        raise PaymentMethodRequired(
            "auto top-up through Stripe needs a saved card: save one first"
            " (POST /api/v1/users/{user_id}/auto-topup/payment-method)",
            user_id=user_id,
        )
    values: dict[str, Any] = {
        "enabled": enabled,
        "threshold_ucr": threshold_ucr,
        "package_id": package_id,
        "monthly_cap_count": monthly_cap_count,
        "monthly_cap_uusd": monthly_cap_uusd,
        "triggered_at": None,
    }
    if enabled and not current.enabled:
        values.update(consecutive_failures=0, disabled_reason=None, last_error=None)
    _upsert(session, user_id, now, **values)
    if enabled:
        wallet = ledger.lock_accounts(session, [users.get_user(session, user_id).wallet_account_id])
        available = next(iter(wallet.values())).available
        on_balance(session, user_id, available, True, threshold_ucr, None, now=now)
    return get(session, user_id)


def on_balance(
    session: Session,
    user_id: int,
    available_ucr: int,
    enabled: Any,
    threshold_ucr: Any,
    triggered_at: Any,
    *,
    now: datetime,
) -> bool:
    """Apply a wallet's new available balance to its auto top-up (the row's ``enabled``,
    ``threshold_ucr``, ``triggered_at`` as read; None when it has no row). Below the
    threshold and not yet triggered: mark it and queue one task (True). At or above it:
    re-arm. Nothing is written otherwise."""
    if not enabled or threshold_ucr is None:
        return False
    if available_ucr < int(threshold_ucr):
        if triggered_at is not None:
            return False
        won = (
            session.connection()
            .execute(
                update(topups)
                .where(
                    topups.c.user_id == user_id,
                    topups.c.enabled.is_(True),
                    topups.c.triggered_at.is_(None),
                )
                .values(triggered_at=now)
            )
            .rowcount
        )
        if won:
            tasks.enqueue(session, TASK, {"available_ucr": available_ucr}, user_id=user_id, now=now)
        return bool(won)
    if triggered_at is not None:
        _rearm(session, user_id)
    return False


def _rearm(session: Session, user_id: int) -> None:
    session.connection().execute(
        update(topups).where(topups.c.user_id == user_id).values(triggered_at=None)
    )


def save_payment_method(
    session: Session,
    user_id: int,
    customer_id: str,
    payment_method_id: str,
    *,
    now: datetime | None = None,
) -> AutoTopupInfo:
    """Record the card a Stripe setup session saved (``customer_id``, ``payment_method_id``)."""
    _upsert(
        session,
        user_id,
        now or utcnow(),
        stripe_customer_id=customer_id,
        stripe_payment_method_id=payment_method_id,
    )
    return get(session, user_id)


def save_customer(
    session: Session, user_id: int, customer_id: str, *, now: datetime | None = None
) -> None:
    """Remember the Stripe customer made for ``user_id`` (before a card is saved)."""
    _upsert(session, user_id, now or utcnow(), stripe_customer_id=customer_id)


def note(session: Session, user_id: int, message: str, *, now: datetime | None = None) -> None:
    """Record why the latest crossing bought nothing (``last_error``), e.g. the monthly cap;
    the trigger stays set until the balance recovers, so no further task is queued."""
    _upsert(session, user_id, now or utcnow(), last_error=message[:500])


def max_failures(session: Session) -> int:
    """Consecutive failures that switch auto top-up off (platform setting)."""
    return platform.get(session, MAX_FAILURES_KEY, DEFAULT_MAX_FAILURES)


def record_success(
    session: Session, user_id: int, purchase: dict[str, Any], *, now: datetime | None = None
) -> None:
    """A top-up purchase completed: reset the failure count, re-arm, send the notice.
    ``purchase``: ``purchase_id``, ``credits_ucr``, ``price_uusd``."""
    now = now or utcnow()
    _upsert(session, user_id, now, consecutive_failures=0, last_error=None, triggered_at=None)
    info = get(session, user_id)
    wallet = users.get_user(session, user_id).wallet_account_id
    balance = ledger.get_balance(session, wallet).available
    notices.notify(
        session,
        user_id,
        "auto_topup_succeeded",
        {**purchase, "threshold_ucr": info.threshold_ucr, "balance_ucr": balance},
        now=now,
    )


def record_failure(
    session: Session,
    user_id: int,
    reason: str,
    purchase: dict[str, Any],
    *,
    now: datetime | None = None,
) -> AutoTopupInfo:
    """A top-up failed (``reason``: why, no secrets): count it and re-arm; at the platform's
    :func:`max_failures` in a row switch auto top-up off and emit ``wallet.auto_topup_failed``.
    Sends the failure notice either way. Returns the new state."""
    now = now or utcnow()
    current = get(session, user_id, lock=True)
    failures = current.consecutive_failures + 1
    switched_off = current.enabled and failures >= max_failures(session)
    values: dict[str, Any] = {
        "consecutive_failures": failures,
        "last_error": reason[:500],
        "triggered_at": None,
    }
    if switched_off:
        values.update(enabled=False, disabled_reason="failures")
    _upsert(session, user_id, now, **values)
    if switched_off:
        webhooks.emit(
            session,
            FAILED_EVENT,
            {
                "user_id": user_id,
                "consecutive_failures": failures,
                "reason": reason[:500],
                "threshold_ucr": current.threshold_ucr,
                "threshold": format_credits(current.threshold_ucr),
                "package_id": current.package_id,
            },
            now=now,
        )
    notices.notify(
        session,
        user_id,
        "auto_topup_failed",
        {
            **purchase,
            "reason": reason[:200],
            "failures": failures,
            "switched_off": switched_off,
            "threshold_ucr": current.threshold_ucr,
        },
        now=now,
    )
    return get(session, user_id)
