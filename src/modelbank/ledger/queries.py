"""Read side of the ledger: an account holder's transfer history, newest first."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from modelbank.ledger.codes import TransferCode, TransferFlags
from modelbank.ledger.models import accounts_table as accounts
from modelbank.ledger.models import transfers_table as transfers


@dataclass(frozen=True, slots=True)
class TransferView:
    """One transfer as its holder sees it. ``amount`` in µcr; ``direction`` is ``in`` when
    one of the holder's accounts is credited, ``out`` when one is debited."""

    id: int
    code: str
    amount: int
    direction: str
    debit_account_id: int
    credit_account_id: int
    flags: int
    pending_id: int | None
    reverses_id: int | None
    ref_type: str | None
    ref_id: int | None
    created_at: datetime
    metadata: dict[str, Any] | None

    @property
    def kind(self) -> str:
        """``pending`` (a hold), ``post`` / ``void`` (its resolution) or ``single``."""
        flags = TransferFlags(self.flags)
        if TransferFlags.PENDING in flags:
            return "pending"
        if TransferFlags.POST_PENDING in flags:
            return "post"
        if TransferFlags.VOID_PENDING in flags:
            return "void"
        return "single"


def list_transfers(
    session: Session,
    account_ids: Iterable[int],
    *,
    code: TransferCode | str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    after_id: int | None = None,
    oldest_first: bool = False,
    limit: int = 50,
) -> list[TransferView]:
    """Transfers touching any of ``account_ids``, newest first (id descending; or oldest
    first), with ids below ``before_id`` / above ``after_id`` (the cursors), ``created_at``
    in ``[since, until)``; at most ``limit``."""
    ids = sorted(set(account_ids))
    if not ids:
        return []
    query = (
        select(transfers)
        .where(or_(transfers.c.debit_account_id.in_(ids), transfers.c.credit_account_id.in_(ids)))
        .order_by(transfers.c.id.asc() if oldest_first else transfers.c.id.desc())
        .limit(limit)
    )
    if after_id is not None:
        query = query.where(transfers.c.id > after_id)
    if code is not None:
        query = query.where(transfers.c.code == TransferCode(code).value)
    if since is not None:
        query = query.where(transfers.c.created_at >= since)
    if until is not None:
        query = query.where(transfers.c.created_at < until)
    if before_id is not None:
        query = query.where(transfers.c.id < before_id)
    mine = set(ids)
    return [
        TransferView(
            id=int(row.id),
            code=row.code,
            amount=int(row.amount),
            direction="in" if row.credit_account_id in mine else "out",
            debit_account_id=int(row.debit_account_id),
            credit_account_id=int(row.credit_account_id),
            flags=int(row.flags),
            pending_id=row.pending_id,
            reverses_id=row.reverses_id,
            ref_type=row.ref_type,
            ref_id=row.ref_id,
            created_at=row.created_at,
            metadata=row._mapping["metadata"],
        )
        for row in session.connection().execute(query)
    ]


def total_balance(session: Session, code: str) -> int:
    """Σ (credits_posted − debits_posted) over every account of kind ``code``, in µcr
    (e.g. all creators' unpaid earnings for ``user_earnings``)."""
    return int(
        session.connection()
        .execute(
            select(
                func.coalesce(func.sum(accounts.c.credits_posted - accounts.c.debits_posted), 0)
            ).where(accounts.c.code == code)
        )
        .scalar_one()
    )
