"""Refunds of usage charges (DESIGN §5, §7).

A refund of ``amount`` µcr of a charge of ``charge`` µcr, in one transaction:

1. ``platform_revenue`` → the user's wallet, ``amount`` (transfer code ``refund``, ref the
   usage event); the credits return to the grants the charge burned, the last burned first.
2. Each creator gives back the same fraction of what they earned from the event: earned ×
   refunded-so-far / charge, rounded half-even on the running total (so a full refund
   reverses exactly what was earned). It is taken from their earnings account (→
   ``platform_revenue``, code ``refund``) as far as the balance allows; the rest, already
   paid out, stays **owed** as an :class:`~modelbank.wallets.models.EarningsDebt` that later
   earnings settle (:func:`modelbank.wallets.refunds.settle_debts`) and that payouts cannot
   withdraw past.
3. The daily rollups take the refund back (:func:`modelbank.metering.rollups.record_refund`).
4. When the charge counted on a limited API key (the usage row's ``limited_key_id``,
   migration 0017; for older rows, the key of the hold it captured), the refunded µcr leave
   the key's spent counter, if the refund falls in the charge's limit period
   (:func:`modelbank.auth.limits.refund_charge`).

Debts, their settlement and the total refunded stay with the wallets
(:mod:`modelbank.wallets.refunds`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.auth import limits as key_limits
from modelbank.db.base import utcnow
from modelbank.earnings import service as earnings
from modelbank.earnings.payer import reversal_ucr
from modelbank.errors import InvalidInput
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.metering import rollups
from modelbank.metering import service as metering
from modelbank.users import service as users
from modelbank.wallets import alerts, grants, holds
from modelbank.wallets.errors import RefundExceedsCharge
from modelbank.wallets.models import debts_table as debts
from modelbank.wallets.models import refunds_table as refunds
from modelbank.webhooks import service as webhooks


@dataclass(frozen=True, slots=True)
class RefundInfo:
    """One refund of a usage charge (µcr): returned to the wallet, taken back from creators,
    and left owed by creators whose earnings were already paid out."""

    id: int
    usage_id: int
    user_id: int
    model_id: int
    amount_ucr: int
    earnings_reversed_ucr: int
    earnings_owed_ucr: int
    refunded_total_ucr: int
    charge_ucr: int
    reason: str | None
    created_at: datetime


def refunded_so_far(session: Session, usage_id: int) -> int:
    """µcr of usage ``usage_id`` refunded so far."""
    return int(
        session.connection()
        .execute(
            select(func.coalesce(func.sum(refunds.c.amount_ucr), 0)).where(
                refunds.c.usage_id == usage_id
            )
        )
        .scalar_one()
    )


def _reverse_earnings(
    usage: metering.UsageRecord,
    paid: Sequence[tuple[int, int]],
    before: int,
    after: int,
    earning_accounts: Mapping[int, int],
    locked: Mapping[int, ledger.AccountBalance],
    revenue: int,
    specs: list[ledger.NewTransfer],
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Each beneficiary gives back its share of the refund
    (:func:`~modelbank.earnings.payer.reversal_ucr`): what its earnings account still holds
    is taken now (appended to ``specs``), the rest is owed. Returns ((user id, µcr reversed),
    …) and ((user id, µcr owed), …)."""
    reversed_by: list[tuple[int, int]] = []
    owed: list[tuple[int, int]] = []
    for earner_id, earned in paid:
        back = reversal_ucr(earned, usage.charge_ucr, before, after)
        if back <= 0:
            continue
        account = locked[earning_accounts[earner_id]]
        take = min(back, max(account.available, 0))
        if take > 0:
            specs.append(
                ledger.NewTransfer(
                    debit_account_id=account.id,
                    credit_account_id=revenue,
                    amount=take,
                    code=TransferCode.REFUND,
                    ref_type="usage",
                    ref_id=usage.id,
                )
            )
        reversed_by.append((earner_id, back))
        if back > take:
            owed.append((earner_id, back - take))
    return reversed_by, owed


def _refund_amount(usage: metering.UsageRecord, before: int, asked: int | None) -> int:
    """µcr to refund: ``asked``, or all that is left. Raises :class:`InvalidInput`,
    :class:`RefundExceedsCharge`."""
    refundable = usage.charge_ucr - before
    if asked is not None and asked <= 0:
        raise InvalidInput("amount_ucr must be positive")
    amount = refundable if asked is None else asked
    if amount <= 0 or amount > refundable:
        raise RefundExceedsCharge(
            f"usage {usage.id}: {refundable} µcr left to refund, {amount} µcr asked",
            refundable_ucr=refundable,
        )
    return amount


def refund_usage(
    session: Session,
    usage_id: int,
    *,
    amount_ucr: int | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> RefundInfo:
    """Refund ``amount_ucr`` µcr (default: all that is left) of a usage charge, with its
    creator earnings, as the module doc describes; emit ``usage.refunded``.

    Raises :class:`~modelbank.metering.errors.UsageNotFound`, :class:`InvalidInput`
    (``amount_ucr`` ≤ 0), :class:`RefundExceedsCharge` (more than is left to refund, or the
    charge was 0)."""
    now = now or utcnow()
    usage = metering.get_usage(session, usage_id)
    user = users.get_user(session, usage.user_id)
    paid = earnings.earnings_by_usage(session, [usage_id]).get(usage_id, [])
    earning_accounts = {
        user_id: users.get_user(session, user_id).earnings_account_id for user_id, _ in paid
    }
    # Lock the wallet and the earnings accounts (id order), then read what was refunded.
    locked = ledger.lock_accounts(session, [user.wallet_account_id, *earning_accounts.values()])
    before = refunded_so_far(session, usage_id)
    amount = _refund_amount(usage, before, amount_ucr)
    after = before + amount
    revenue = ledger.platform_account(session, AccountCode.PLATFORM_REVENUE)
    specs = [
        ledger.NewTransfer(
            debit_account_id=revenue,
            credit_account_id=user.wallet_account_id,
            amount=amount,
            code=TransferCode.REFUND,
            ref_type="usage",
            ref_id=usage_id,
        )
    ]
    reversed_by, owed = _reverse_earnings(
        usage, paid, before, after, earning_accounts, locked, revenue, specs
    )
    reversed_total = sum(back for _, back in reversed_by)
    ledger.post_transfers(session, specs, now=now, locked=locked)
    burned = grants.burns_for(session, "usage", [usage_id]).get(usage_id, [])
    grants.restore(session, burned, amount, ref_type="usage_refund", ref_id=usage_id, now=now)
    key_id = usage.limited_key_id or holds.limited_key_of_usage(session, usage_id)
    if key_id is not None:
        key_limits.refund_charge(session.connection(), key_id, amount, usage.created_at, now)
    owed_total = sum(a for _, a in owed)
    refund_id = _record(session, usage, amount, reversed_total, owed, reason, now)
    rollups.record_refund(
        session,
        user_id=usage.user_id,
        model_id=usage.model_id,
        usage_type=usage.usage_type,
        refunded_ucr=amount,
        reversed=reversed_by,
        now=now,
    )
    info = RefundInfo(
        id=refund_id,
        usage_id=usage_id,
        user_id=usage.user_id,
        model_id=usage.model_id,
        amount_ucr=amount,
        earnings_reversed_ucr=reversed_total,
        earnings_owed_ucr=owed_total,
        refunded_total_ucr=after,
        charge_ucr=usage.charge_ucr,
        reason=reason,
        created_at=now,
    )
    audit.record(
        session,
        "usage.refund",
        "usage",
        usage_id,
        before={"refunded_ucr": before, "charge_ucr": usage.charge_ucr},
        after=info,
        now=now,
    )
    webhooks.emit(session, "usage.refunded", _event_payload(info), now=now)
    alerts.check(session, [usage.user_id], now=now)
    return info


def _record(
    session: Session,
    usage: metering.UsageRecord,
    amount: int,
    reversed_total: int,
    owed: Sequence[tuple[int, int]],
    reason: str | None,
    now: datetime,
) -> int:
    """The refund row and one debt per beneficiary that still owes; returns the refund id."""
    conn = session.connection()
    refund_id = int(
        conn.execute(
            insert(refunds).returning(refunds.c.id),
            {
                "usage_id": usage.id,
                "user_id": usage.user_id,
                "model_id": usage.model_id,
                "amount_ucr": amount,
                "earnings_reversed_ucr": reversed_total,
                "earnings_owed_ucr": sum(a for _, a in owed),
                "reason": reason,
                "created_at": now,
            },
        ).scalar_one()
    )
    for earner_id, amount_owed in owed:
        conn.execute(
            insert(debts).values(
                user_id=earner_id,
                refund_id=refund_id,
                amount_ucr=amount_owed,
                remaining_ucr=amount_owed,
                created_at=now,
            )
        )
    return refund_id


def _event_payload(info: RefundInfo) -> dict[str, int]:
    """The ``usage.refunded`` webhook's data."""
    return {
        "refund_id": info.id,
        "usage_id": info.usage_id,
        "user_id": info.user_id,
        "model_id": info.model_id,
        "amount_ucr": info.amount_ucr,
        "refunded_total_ucr": info.refunded_total_ucr,
        "charge_ucr": info.charge_ucr,
        "earnings_reversed_ucr": info.earnings_reversed_ucr,
    }


def list_refunds(session: Session, usage_id: int) -> list[RefundInfo]:
    """The refunds of one usage event, oldest first."""
    usage = metering.get_usage(session, usage_id)
    rows = session.connection().execute(
        select(refunds).where(refunds.c.usage_id == usage_id).order_by(refunds.c.id)
    )
    out: list[RefundInfo] = []
    total = 0
    for row in rows:
        total += int(row.amount_ucr)
        out.append(
            RefundInfo(
                id=int(row.id),
                usage_id=usage_id,
                user_id=int(row.user_id),
                model_id=int(row.model_id),
                amount_ucr=int(row.amount_ucr),
                earnings_reversed_ucr=int(row.earnings_reversed_ucr),
                earnings_owed_ucr=int(row.earnings_owed_ucr),
                refunded_total_ucr=total,
                charge_ucr=usage.charge_ucr,
                reason=row.reason,
                created_at=row.created_at,
            )
        )
    return out
