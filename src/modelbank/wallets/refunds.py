"""What refunds of usage charges leave behind in wallets (DESIGN §5, §7): the total
refunded, and the earnings creators still **owe** back.

Refunding a usage charge (:func:`modelbank.metering.refunds.refund_usage`) takes back from
each creator their share of what they earned from the event, as far as their earnings
balance allows; the rest, already paid out, stays owed as an
:class:`~modelbank.wallets.models.EarningsDebt` that later earnings settle
(:func:`settle_debts`) and that payouts cannot withdraw past (:func:`open_debt`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.users import service as users
from modelbank.wallets.models import debts_table as debts
from modelbank.wallets.models import refunds_table as refunds

DEBT_BATCH = 500
"""Debts settled per call of :func:`settle_debts`."""


def total_refunded(session: Session) -> int:
    """µcr of usage charges refunded, all time."""
    return int(
        session.connection()
        .execute(select(func.coalesce(func.sum(refunds.c.amount_ucr), 0)))
        .scalar_one()
    )


def open_debt(session: Session, user_id: int) -> int:
    """µcr ``user_id`` still owes back from refunded usage (payouts must leave it)."""
    return int(
        session.connection()
        .execute(
            select(func.coalesce(func.sum(debts.c.remaining_ucr), 0)).where(
                debts.c.user_id == user_id, debts.c.remaining_ucr > 0
            )
        )
        .scalar_one()
    )


def settle_debts(session: Session, *, now: datetime | None = None, limit: int = DEBT_BATCH) -> int:
    """Collect owed earnings from creators' earnings balances (earnings → ``platform_revenue``,
    code ``adjustment``), oldest debt first, up to ``limit`` debts; return µcr collected.
    Idempotent and bounded: what is collected is no longer owed."""
    now = now or utcnow()
    conn = session.connection()
    rows = conn.execute(
        select(debts.c.id, debts.c.user_id, debts.c.remaining_ucr)
        .where(debts.c.remaining_ucr > 0)
        .order_by(debts.c.id)
        .limit(limit)
    ).all()
    if not rows:
        return 0
    accounts = {
        uid: users.get_user(session, uid).earnings_account_id
        for uid in {int(r.user_id) for r in rows}
    }
    locked = ledger.lock_accounts(session, accounts.values())
    revenue = ledger.platform_account(session, AccountCode.PLATFORM_REVENUE)
    collected = 0
    specs: list[ledger.NewTransfer] = []
    spare = {a: max(locked[a].available, 0) for a in accounts.values()}
    for row in rows:
        account = accounts[int(row.user_id)]
        take = min(int(row.remaining_ucr), spare[account])
        if take <= 0:
            continue
        spare[account] -= take
        collected += take
        conn.execute(
            update(debts)
            .where(debts.c.id == row.id)
            .values(remaining_ucr=debts.c.remaining_ucr - take)
        )
        specs.append(
            ledger.NewTransfer(
                debit_account_id=account,
                credit_account_id=revenue,
                amount=take,
                code=TransferCode.ADJUSTMENT,
                ref_type="earnings_debt",
                ref_id=int(row.id),
            )
        )
    ledger.post_transfers(session, specs, now=now, locked=locked)
    return collected
