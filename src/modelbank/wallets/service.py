"""Grant credits and read wallet balances (DESIGN §5).

Grants and burn-down live in :mod:`modelbank.wallets.grants`; this module is the entry point
other domains and the API call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.db.base import utcnow
from modelbank.ledger import service as ledger
from modelbank.users import service as users
from modelbank.wallets import alerts
from modelbank.wallets import grants as grant_book
from modelbank.wallets.grants import GrantInfo, GrantSource

__all__ = ["GrantSource", "WalletBalance", "balance", "grant", "grant_info"]


@dataclass(frozen=True, slots=True)
class WalletBalance:
    """A wallet in µcr: posted balance, pending holds and what is available to spend."""

    user_id: int
    balance_ucr: int
    pending_ucr: int
    available_ucr: int


def grant_info(
    session: Session,
    user_id: int,
    amount_ucr: int,
    *,
    source: GrantSource = GrantSource.PURCHASED,
    idempotency_key: str,
    expires_at: datetime | None = None,
    cost_basis_uusd: int = 0,
    priority: int | None = None,
    purchase_id: int | None = None,
    now: datetime | None = None,
) -> GrantInfo:
    """Credit ``amount_ucr`` µcr to the user's wallet as a grant (DESIGN §5); return it.

    ``source`` picks the account the credits come from; ``cost_basis_uusd`` is the cash paid
    for them (µUSD, purchased credits); ``expires_at`` (aware, in the future) ends them: the
    unspent remainder is swept to ``platform_promotions``; ``priority`` overrides the source's
    burn priority. A low-balance alert that is on is cleared when the balance recovers.
    Idempotent on ``idempotency_key``. Raises :class:`~modelbank.errors.InvalidInput`
    (amount ≤ 0, a naive or past ``expires_at``),
    :class:`~modelbank.users.errors.UserNotFound`,
    :class:`~modelbank.errors.IdempotencyConflict`.
    """
    now = now or utcnow()
    user = users.get_user(session, user_id)
    info = grant_book.issue(
        session,
        user_id,
        user.wallet_account_id,
        amount_ucr,
        source=GrantSource(source),
        idempotency_key=idempotency_key,
        cost_basis_uusd=cost_basis_uusd,
        expires_at=expires_at,
        priority=priority,
        purchase_id=purchase_id,
        ref=("purchase", purchase_id) if purchase_id is not None else None,
        now=now,
    )
    alerts.check(session, [user_id], now=now)
    return info


def grant(
    session: Session,
    user_id: int,
    amount_ucr: int,
    *,
    source: GrantSource = GrantSource.PURCHASED,
    idempotency_key: str,
    expires_at: datetime | None = None,
) -> int:
    """:func:`grant_info` returning the grant's transfer id (same errors)."""
    info = grant_info(
        session,
        user_id,
        amount_ucr,
        source=source,
        idempotency_key=idempotency_key,
        expires_at=expires_at,
    )
    assert info.transfer_id is not None
    audit.record(session, "grant.create", "user", user_id, after=info)
    return info.transfer_id


def balance(session: Session, user_id: int) -> WalletBalance:
    """The user's wallet balance. Raises :class:`~modelbank.users.errors.UserNotFound`."""
    user = users.get_user(session, user_id)
    account = ledger.get_balance(session, user.wallet_account_id)
    return WalletBalance(
        user_id=user_id,
        balance_ucr=account.balance,
        pending_ucr=account.debits_pending,
        available_ucr=account.available,
    )
