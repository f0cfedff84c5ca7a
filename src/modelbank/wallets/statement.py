"""A user's statement: every posted movement of their wallet and earnings accounts in a
period, oldest first, as CSV rows (DESIGN §8 exports, §5 audit trail). Holds appear when
they are posted, not while pending."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime

from sqlalchemy.orm import Session

from modelbank.ledger.queries import list_transfers
from modelbank.money import format_credits
from modelbank.users import service as users

COLUMNS = (
    "transfer_id",
    "created_at",
    "account",
    "code",
    "kind",
    "direction",
    "amount_ucr",
    "amount",
    "ref_type",
    "ref_id",
    "reverses_id",
)
"""The statement's CSV header. ``account`` is ``wallet`` or ``earnings``; ``amount_ucr`` is
signed (credits in, debits out), so the rows of a whole history sum to the balances;
``kind`` is single or post (a captured hold)."""
PAGE = 1_000
"""Transfers read per query while streaming."""


def statement_csv(
    read: Callable[[], AbstractContextManager[Session]],
    user_id: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[str]:
    """CSV text chunks (header first) of the user's transfers with ``created_at`` in
    ``[since, until)``, oldest first, one short read transaction per page of
    :data:`PAGE` rows (``read`` opens one). Raises
    :class:`~modelbank.users.errors.UserNotFound` before yielding anything."""
    with read() as session:
        user = users.get_user(session, user_id)
    labels = {user.wallet_account_id: "wallet", user.earnings_account_id: "earnings"}
    return _chunks(read, labels, since, until)


def _chunks(
    read: Callable[[], AbstractContextManager[Session]],
    labels: dict[int, str],
    since: datetime | None,
    until: datetime | None,
) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    yield buffer.getvalue()
    after = 0
    while True:
        with read() as session:
            page = list_transfers(
                session,
                labels,
                since=since,
                until=until,
                after_id=after,
                oldest_first=True,
                limit=PAGE,
            )
        if not page:
            return
        buffer.seek(0)
        buffer.truncate()
        for t in page:
            if t.kind in ("pending", "void"):
                continue  # reservations move no posted credit; a posted hold is its "post"
            mine = t.credit_account_id if t.direction == "in" else t.debit_account_id
            signed = t.amount if t.direction == "in" else -t.amount
            writer.writerow(
                (
                    t.id,
                    t.created_at.isoformat(),
                    labels.get(mine, ""),
                    t.code,
                    t.kind,
                    t.direction,
                    signed,
                    format_credits(signed),
                    t.ref_type or "",
                    "" if t.ref_id is None else t.ref_id,
                    "" if t.reverses_id is None else t.reverses_id,
                )
            )
        yield buffer.getvalue()
        after = page[-1].id
        if len(page) < PAGE:
            return
