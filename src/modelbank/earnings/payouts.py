"""Payouts: creators withdraw their earnings (DESIGN §7, issue "Creator economy").

Life of a payout, each step one transaction (the caller's; nothing here commits):

* :func:`request` — at least the platform minimum (``payout_minimum_ucr``, default 100
  credits), at most what is **available**: the earnings account's posted balance − pending
  holds − what the creator still owes back from refunded usage
  (:func:`modelbank.wallets.refunds.open_debt`). Refunds come first, so a creator never
  withdraws credits earned from a refunded usage. The amount becomes a ledger hold
  (earnings → ``world_payouts``, code ``payout``, ref ``("payout", id)``, no expiry):
  status ``pending``.
* :func:`complete` (admin) — posts the hold: the credits leave through ``world_payouts``;
  records the µUSD paid at the payout rate (:func:`uusd_at`) and the external reference.
* :func:`fail` (admin) — voids the hold (credits back to the earnings balance), with a reason.
* :func:`cancel` (the creator) — voids the hold while pending.

Statuses only move pending → completed | failed | cancelled (:class:`PayoutStateConflict`
otherwise). Each change emits its ``payout.*`` webhook in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, case, func, insert, literal, or_, select, text, update
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.db.base import utcnow
from modelbank.earnings.errors import (
    PayoutBelowMinimum,
    PayoutBlockedByDebt,
    PayoutExceedsAvailable,
    PayoutNotFound,
    PayoutStateConflict,
)
from modelbank.earnings.models import payouts_table as payouts
from modelbank.earnings.payout_adapters import AdapterResult, ManualAdapter, PayoutAdapter
from modelbank.errors import InvalidInput
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.money import DEFAULT_CREDITS_PER_USD, UCR_PER_CREDIT, round_half_even
from modelbank.notices import service as notices
from modelbank.platform import service as platform
from modelbank.users import service as users
from modelbank.wallets import refunds
from modelbank.webhooks import service as webhooks

MINIMUM_KEY = "payout_minimum_ucr"
"""``platform_settings`` key of the smallest payout (µcr)."""
DEFAULT_MINIMUM_UCR = 100 * UCR_PER_CREDIT
"""100 credits ($1 at 100 credits/USD): below that a payout costs more to send than it pays."""
MAX_MINIMUM_UCR = 10**15
"""Largest minimum an admin may set (the API's largest amount, 1e9 credits)."""
MAX_REFERENCE_LENGTH = 255
"""The ``external_reference`` column's size (bank or provider ids are far shorter)."""
MAX_REASON_LENGTH = 500
"""The ``failure_reason`` column's size."""
MAX_PAGE = 500
"""Largest page of a listing."""
REF_TYPE = "payout"
"""``ref_type`` of the ledger transfers of a payout (the hold and its posting or voiding)."""

# 60 significant digits: the quotient of a 19-digit µcr amount by a rate is exact enough
# that the single half-even rounding below sees the true value.
_EXACT = Context(prec=60, rounding=ROUND_HALF_EVEN)


class PayoutStatus(StrEnum):
    """Where a payout is. Only ``pending`` ever changes."""

    PENDING = "pending"
    """Requested: the amount is held on the earnings account, awaiting an admin."""
    COMPLETED = "completed"
    """Paid: the hold was posted to ``world_payouts``; ``amount_uusd`` at ``credits_per_usd``."""
    FAILED = "failed"
    """Refused by an admin (``failure_reason``): the hold was voided, the credits are back."""
    CANCELLED = "cancelled"
    """Withdrawn by the creator while pending: the hold was voided."""


@dataclass(frozen=True, slots=True)
class PayoutInfo:
    """A payout: ``amount_ucr`` µcr of ``user_id``'s earnings, held by ledger hold
    ``hold_id``; once completed, ``amount_uusd`` µUSD paid at ``credits_per_usd``."""

    id: int
    user_id: int
    amount_ucr: int
    status: PayoutStatus
    hold_id: int
    adapter: str
    external_reference: str | None
    amount_uusd: int | None
    credits_per_usd: Decimal | None
    failure_reason: str | None
    created_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class PayoutSummary:
    """A creator's earnings as payouts see them (µcr): ``balance_ucr`` posted on the
    earnings account, ``pending_ucr`` held by pending payouts, ``owed_ucr`` owed back from
    refunded usage, ``available_ucr`` = max(balance − pending − owed, 0) (what a payout may
    take) and the platform's ``minimum_ucr``."""

    user_id: int
    balance_ucr: int
    pending_ucr: int
    owed_ucr: int
    available_ucr: int
    minimum_ucr: int


@dataclass(frozen=True, slots=True)
class PayoutPage:
    """Up to ``limit`` payouts and the position (rank, id) to continue after (None: no
    more). ``rank`` is 0 for every row, or, with ``pending_first``, 0 pending / 1 others."""

    items: list[PayoutInfo]
    next_after: tuple[int, int] | None


# ---------------------------------------------------------------- settings, formula


def get_minimum(session: Session) -> int:
    """The smallest payout (µcr): setting ``payout_minimum_ucr``, default 100 credits."""
    return platform.get(session, MINIMUM_KEY, DEFAULT_MINIMUM_UCR)


def set_minimum(session: Session, minimum_ucr: int, *, now: datetime | None = None) -> int:
    """Set the smallest payout (µcr, 1…1e15); return it. Raises :class:`InvalidInput`."""
    if isinstance(minimum_ucr, bool) or not isinstance(minimum_ucr, int):
        raise InvalidInput("minimum_ucr must be an integer µcr")
    if not 1 <= minimum_ucr <= MAX_MINIMUM_UCR:
        raise InvalidInput(f"minimum_ucr must be 1…{MAX_MINIMUM_UCR} µcr", minimum_ucr=minimum_ucr)
    return platform.put(session, MINIMUM_KEY, minimum_ucr, now=now)


def uusd_at(amount_ucr: int, credits_per_usd: Decimal) -> int:
    """µUSD paid for ``amount_ucr`` µcr at ``credits_per_usd``: 1 credit = 1/rate USD, so
    1 µcr = 1/rate µUSD; ``round_half_even(amount_ucr / rate)`` once (DESIGN §2). At the
    default 100 credits/USD, 100 credits (1e8 µcr) → $1 (1e6 µUSD)."""
    return round_half_even(_EXACT.divide(Decimal(amount_ucr), credits_per_usd))


def summary(session: Session, user_id: int) -> PayoutSummary:
    """What ``user_id`` may withdraw now (see :class:`PayoutSummary`). Raises
    :class:`~modelbank.users.errors.UserNotFound`."""
    user = users.get_user(session, user_id)
    account = ledger.get_balance(session, user.earnings_account_id)
    return _summary(session, user_id, account)


def _summary(session: Session, user_id: int, account: ledger.AccountBalance) -> PayoutSummary:
    owed = refunds.open_debt(session, user_id)
    return PayoutSummary(
        user_id=user_id,
        balance_ucr=account.balance,
        pending_ucr=account.debits_pending,
        owed_ucr=owed,
        available_ucr=max(account.available - owed, 0),
        minimum_ucr=get_minimum(session),
    )


# ---------------------------------------------------------------- the life of a payout


def request(
    session: Session,
    user_id: int,
    amount_ucr: int,
    *,
    adapter: PayoutAdapter | None = None,
    credits_per_usd: Decimal = DEFAULT_CREDITS_PER_USD,
    now: datetime | None = None,
) -> PayoutInfo:
    """Ask to withdraw ``amount_ucr`` µcr of ``user_id``'s earnings: hold it (earnings →
    ``world_payouts``, no expiry), record a pending payout, emit ``payout.requested``, then
    hand it to ``adapter`` (default :class:`ManualAdapter`) and apply its answer
    (:func:`apply_adapter_result`; ``credits_per_usd`` is the rate if it completes at once).

    Under the earnings account's row lock: ``available = posted − pending − owed`` (owed:
    :func:`modelbank.wallets.refunds.open_debt`). Raises :class:`InvalidInput` (amount not a
    positive integer), :class:`~modelbank.users.errors.UserNotFound`,
    :class:`PayoutBelowMinimum`, :class:`PayoutExceedsAvailable` (context ``available_ucr``,
    ``owed_ucr``), the adapter's errors; nothing is written then.
    """
    if isinstance(amount_ucr, bool) or not isinstance(amount_ucr, int) or amount_ucr <= 0:
        raise InvalidInput("amount_ucr must be a positive integer µcr", amount_ucr=amount_ucr)
    now = now or utcnow()
    adapter = adapter or ManualAdapter()
    user = users.get_user(session, user_id)
    account = ledger.lock_accounts(session, [user.earnings_account_id])[user.earnings_account_id]
    state = _summary(session, user_id, account)
    if amount_ucr < state.minimum_ucr:
        raise PayoutBelowMinimum(
            f"a payout must be at least {state.minimum_ucr} µcr, {amount_ucr} µcr asked",
            amount_ucr=amount_ucr,
            minimum_ucr=state.minimum_ucr,
            available_ucr=state.available_ucr,
        )
    if amount_ucr > state.available_ucr:
        raise PayoutExceedsAvailable(
            f"{state.available_ucr} µcr of earnings available to pay out"
            f" ({state.owed_ucr} µcr owed back from refunds), {amount_ucr} µcr asked",
            amount_ucr=amount_ucr,
            available_ucr=state.available_ucr,
            owed_ucr=state.owed_ucr,
        )
    payout_id = _next_id(session)
    hold_id = ledger.create_hold(
        session,
        ledger.NewTransfer(
            debit_account_id=account.id,
            credit_account_id=ledger.platform_account(session, AccountCode.WORLD_PAYOUTS),
            amount=amount_ucr,
            code=TransferCode.PAYOUT,
            ref_type=REF_TYPE,
            ref_id=payout_id,
        ),
        timeout_s=None,
        now=now,
    )
    session.connection().execute(
        insert(payouts).values(
            id=payout_id,
            user_id=user_id,
            amount_ucr=amount_ucr,
            status=PayoutStatus.PENDING.value,
            hold_id=hold_id,
            adapter=adapter.name,
            created_at=now,
        )
    )
    info = get_payout(session, payout_id)
    audit.record(session, "payout.request", "payout", payout_id, after=info, now=now)
    webhooks.emit(session, "payout.requested", _payload(info), now=now)
    return apply_adapter_result(
        session, payout_id, adapter.send(info), credits_per_usd=credits_per_usd, now=now
    )


def apply_adapter_result(
    session: Session,
    payout_id: int,
    result: AdapterResult,
    *,
    credits_per_usd: Decimal,
    now: datetime | None = None,
) -> PayoutInfo:
    """Apply an adapter's answer to a pending payout: ``pending`` keeps it pending (storing
    the reference, if any), ``completed`` :func:`complete`\\ s it, ``failed``
    :func:`fail`\\ s it. Raises what those raise."""
    if result.state == "completed":
        return complete(
            session,
            payout_id,
            result.external_reference or "",
            credits_per_usd=credits_per_usd,
            now=now,
        )
    if result.state == "failed":
        return fail(session, payout_id, result.reason or "refused by the payout adapter", now=now)
    info = _pending(session, payout_id, "updated")
    if result.external_reference is not None:
        reference = _text(result.external_reference, "external_reference", MAX_REFERENCE_LENGTH)
        _set(session, payout_id, external_reference=reference)
        info = get_payout(session, payout_id)
    return info


def complete(
    session: Session,
    payout_id: int,
    external_reference: str,
    *,
    credits_per_usd: Decimal,
    now: datetime | None = None,
) -> PayoutInfo:
    """Mark a pending payout paid (an admin, after paying it outside, or an adapter): post
    its hold (the credits leave through ``world_payouts``), record ``external_reference``,
    ``amount_uusd = uusd_at(amount_ucr, credits_per_usd)`` and the rate; emit
    ``payout.completed``.

    Refused while the creator owes back more (from usage refunded after the request) than
    the rest of their earnings covers: paying would withdraw refunded earnings. Raises
    :class:`PayoutNotFound`, :class:`PayoutStateConflict`, :class:`InvalidInput` (empty or
    long reference, rate ≤ 0), :class:`PayoutBlockedByDebt`.
    """
    now = now or utcnow()
    info = _pending(session, payout_id, "completed")
    reference = _text(external_reference, "external_reference", MAX_REFERENCE_LENGTH)
    if not credits_per_usd.is_finite() or credits_per_usd <= 0:
        raise InvalidInput("credits_per_usd must be a positive number", rate=str(credits_per_usd))
    user = users.get_user(session, info.user_id)
    account = ledger.lock_accounts(session, [user.earnings_account_id])[user.earnings_account_id]
    owed = refunds.open_debt(session, info.user_id)
    spare = max(account.available, 0)
    if owed > spare:
        raise PayoutBlockedByDebt(
            f"payout {payout_id}: the creator owes {owed} µcr back from refunded usage and has"
            f" {spare} µcr of other earnings to cover it; fail this payout (its credits then"
            " settle the debt) or wait for new earnings",
            payout_id=payout_id,
            owed_ucr=owed,
            available_ucr=spare,
            shortfall_ucr=owed - spare,
        )
    ledger.post_hold(session, info.hold_id, now=now, ref=(REF_TYPE, payout_id))
    _set(
        session,
        payout_id,
        status=PayoutStatus.COMPLETED.value,
        external_reference=reference,
        amount_uusd=uusd_at(info.amount_ucr, credits_per_usd),
        credits_per_usd=credits_per_usd,
        resolved_at=now,
    )
    done = get_payout(session, payout_id)
    audit.record(session, "payout.complete", "payout", payout_id, before=info, after=done, now=now)
    webhooks.emit(session, "payout.completed", _payload(done), now=now)
    notices.notify(
        session,
        done.user_id,
        "payout_completed",
        {"payout_id": payout_id, "amount_ucr": done.amount_ucr, "amount_uusd": done.amount_uusd},
        now=now,
    )
    return done


def fail(
    session: Session, payout_id: int, reason: str, *, now: datetime | None = None
) -> PayoutInfo:
    """Mark a pending payout failed (an admin, or an adapter's refusal) with ``reason``: its
    hold is voided, the credits are available again; emit ``payout.failed``. Raises
    :class:`PayoutNotFound`, :class:`PayoutStateConflict`, :class:`InvalidInput` (empty or
    long reason)."""
    now = now or utcnow()
    info = _pending(session, payout_id, "failed")
    why = _text(reason, "reason", MAX_REASON_LENGTH)
    ledger.void_hold(session, info.hold_id, now=now, reason="payout_failed")
    _set(session, payout_id, status=PayoutStatus.FAILED.value, failure_reason=why, resolved_at=now)
    done = get_payout(session, payout_id)
    audit.record(session, "payout.fail", "payout", payout_id, before=info, after=done, now=now)
    webhooks.emit(session, "payout.failed", _payload(done), now=now)
    return done


def cancel(
    session: Session, payout_id: int, *, user_id: int | None = None, now: datetime | None = None
) -> PayoutInfo:
    """Withdraw a pending payout: its hold is voided; emit ``payout.cancelled``. ``user_id``:
    the creator cancelling (None: an admin or service acting for them); another user's
    payout is :class:`PayoutNotFound`. Raises :class:`PayoutNotFound`,
    :class:`PayoutStateConflict`."""
    now = now or utcnow()
    info = get_payout(session, payout_id, lock=True)
    if user_id is not None and info.user_id != user_id:
        raise PayoutNotFound(f"no payout {payout_id}", payout_id=payout_id)
    _require_pending(info, "cancelled")
    ledger.void_hold(session, info.hold_id, now=now, reason="payout_cancelled")
    _set(session, payout_id, status=PayoutStatus.CANCELLED.value, resolved_at=now)
    done = get_payout(session, payout_id)
    audit.record(session, "payout.cancel", "payout", payout_id, before=info, after=done, now=now)
    webhooks.emit(session, "payout.cancelled", _payload(done), now=now)
    return done


# ---------------------------------------------------------------- reads


def get_payout(session: Session, payout_id: int, *, lock: bool = False) -> PayoutInfo:
    """The payout ``payout_id`` (``lock``: FOR UPDATE on PostgreSQL; SQLite's writer lock
    is already held). Raises :class:`PayoutNotFound`."""
    query = select(payouts).where(payouts.c.id == payout_id)
    if lock:
        query = query.with_for_update()
    row = session.connection().execute(query).first()
    if row is None:
        raise PayoutNotFound(f"no payout {payout_id}", payout_id=payout_id)
    return _info(row)


def list_payouts(
    session: Session,
    *,
    user_id: int | None = None,
    status: str | None = None,
    after: tuple[int, int] | None = None,
    limit: int = 50,
    pending_first: bool = False,
) -> PayoutPage:
    """Payouts, of ``user_id`` and in ``status`` when given, oldest first — with
    ``pending_first``, pending ones first (the admin's queue), then the rest, each oldest
    first. ``after`` is a previous page's ``next_after``; ``limit`` 1…500. Raises
    :class:`InvalidInput` for an unknown status or a bad limit."""
    if status is not None and status not in {s.value for s in PayoutStatus}:
        raise InvalidInput(
            f"status must be one of {', '.join(PayoutStatus)}, got {status!r}", status=status
        )
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1…{MAX_PAGE}", limit=limit)
    rank = (
        case((payouts.c.status == PayoutStatus.PENDING.value, 0), else_=1)
        if pending_first
        else literal(0)
    )
    query = select(payouts, rank.label("rank"))
    if user_id is not None:
        query = query.where(payouts.c.user_id == user_id)
    if status is not None:
        query = query.where(payouts.c.status == status)
    if after is not None:
        query = query.where(or_(rank > after[0], and_(rank == after[0], payouts.c.id > after[1])))
    rows = session.connection().execute(query.order_by(rank, payouts.c.id).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return PayoutPage(
        items=[_info(row) for row in rows],
        next_after=(int(rows[-1].rank), int(rows[-1].id)) if more else None,
    )


# ---------------------------------------------------------------- internals


def _next_id(session: Session) -> int:
    """The id the next payout gets, taken before its row exists so that its ledger hold can
    point at it (``ref ("payout", id)``; transfers are immutable, so it cannot be added later
    and the row cannot come first: it points at the hold). PostgreSQL: the column's
    sequence. SQLite: max + 1, safe because the transaction holds the single writer lock
    (``BEGIN IMMEDIATE``) and payouts are never deleted."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        query = text("SELECT nextval(pg_get_serial_sequence('payouts', 'id'))")
        return int(conn.execute(query).scalar_one())
    return int(conn.execute(select(func.coalesce(func.max(payouts.c.id), 0) + 1)).scalar_one())


def _pending(session: Session, payout_id: int, verb: str) -> PayoutInfo:
    """The payout, locked, if it is pending; else :class:`PayoutStateConflict`."""
    return _require_pending(get_payout(session, payout_id, lock=True), verb)


def _require_pending(info: PayoutInfo, verb: str) -> PayoutInfo:
    if info.status is not PayoutStatus.PENDING:
        raise PayoutStateConflict(
            f"payout {info.id} is {info.status.value}: only a pending payout can be {verb}",
            payout_id=info.id,
            status=info.status.value,
        )
    return info


def _text(value: str, field: str, limit: int) -> str:
    cleaned = value.strip() if isinstance(value, str) else ""
    if not cleaned or len(cleaned) > limit or "\x00" in cleaned:
        raise InvalidInput(f"{field} must be 1…{limit} characters", field=field)
    return cleaned


def _set(session: Session, payout_id: int, **values: Any) -> None:
    session.connection().execute(update(payouts).where(payouts.c.id == payout_id).values(**values))


def _info(row: Any) -> PayoutInfo:
    return PayoutInfo(
        id=int(row.id),
        user_id=int(row.user_id),
        amount_ucr=int(row.amount_ucr),
        status=PayoutStatus(row.status),
        hold_id=int(row.hold_id),
        adapter=row.adapter,
        external_reference=row.external_reference,
        amount_uusd=None if row.amount_uusd is None else int(row.amount_uusd),
        credits_per_usd=row.credits_per_usd,
        failure_reason=row.failure_reason,
        created_at=row.created_at,
        resolved_at=row.resolved_at,
    )


def _payload(info: PayoutInfo) -> dict[str, Any]:
    """The ``payout.*`` webhook data: ids, status, amounts (integers; the rate as text)."""
    return {
        "payout_id": info.id,
        "user_id": info.user_id,
        "status": info.status.value,
        "amount_ucr": info.amount_ucr,
        "adapter": info.adapter,
        "external_reference": info.external_reference,
        "amount_uusd": info.amount_uusd,
        "credits_per_usd": None if info.credits_per_usd is None else str(info.credits_per_usd),
        "failure_reason": info.failure_reason,
    }
