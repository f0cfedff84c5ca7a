"""Clawback debts (DESIGN §9): deposit credit a withdrawal or failure could not take back
because the depositor's wallet no longer held it, collected from the depositor's later
credits by the jobs (:func:`settle_debts`), as refunded earnings are
(:func:`modelbank.wallets.refunds.settle_debts`).

A collection is one more partial reversal of the resource's deposit credit transfer (wallet
→ ``pool_deposits``), burning the wallet's grants in burn-down order, so that per resource
``Σ reversals of its deposit + Σ debts remaining = clawed_back_ucr`` at every moment.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.pool.lifecycle import deposit_transfer_id
from modelbank.pool.models import pool_debts_table as debts
from modelbank.wallets import alerts, grants

DEBT_BATCH = 500
"""Debts settled per call of :func:`settle_debts` (bounded work per transaction)."""


def open_debt(session: Session, user_id: int) -> int:
    """µcr ``user_id`` still owes the pool from clawbacks."""
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
    """Collect open clawback debts from the debtors' available wallet balances, oldest debt
    first, up to ``limit`` debts; return µcr collected. Idempotent and bounded: what is
    collected is no longer owed, and a wallet with nothing available is skipped."""
    now = now or utcnow()
    conn = session.connection()
    rows = conn.execute(
        select(debts.c.id, debts.c.user_id, debts.c.resource_id, debts.c.remaining_ucr)
        .where(debts.c.remaining_ucr > 0)
        .order_by(debts.c.id)
        .limit(limit)
    ).all()
    if not rows:
        return 0
    owners = sorted({int(r.user_id) for r in rows})
    wallets = ledger.lock_user_accounts(session, owners, AccountCode.USER_WALLET)
    book = grants.GrantBook.load(session, wallets, now=now)  # sweeps expired grants first
    spare = {user: max(wallet.available, 0) for user, wallet in wallets.items()}
    collected = 0
    touched: set[int] = set()
    plans: list[tuple[int, int, int, int]] = []  # (debt id, resource id, remaining, take)
    for row in rows:
        user = int(row.user_id)
        take = min(int(row.remaining_ucr), spare.get(user, 0))
        if take <= 0:
            continue
        spare[user] -= take
        book.burn(user, take, "pool_debt", int(row.id), now=now)
        plans.append((int(row.id), int(row.resource_id), int(row.remaining_ucr), take))
        touched.add(user)
    book.flush(session, now=now)
    for debt_id, resource_id, remaining, take in plans:
        original = deposit_transfer_id(session, resource_id)
        assert original is not None, f"debt {debt_id} of a resource without a deposit"
        ledger.reverse(
            session,
            original,
            amount=take,
            # unique per collection: the remaining amount only ever falls
            idempotency_key=f"pool:debt:{debt_id}:{remaining}",
            now=now,
            metadata={"pool_debt_id": debt_id},
        )
        conn.execute(
            update(debts)
            .where(debts.c.id == debt_id)
            .values(remaining_ucr=debts.c.remaining_ucr - take)
        )
        collected += take
    if touched:
        alerts.check(session, sorted(touched), now=now)
    return collected
