"""Grant credits and read wallet balances."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy.orm import Session

from modelbank.errors import InvalidInput
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.users import service as users


class GrantSource(StrEnum):
    """Where granted credits come from (DESIGN §5)."""

    PURCHASED = "purchased"
    """Paid for: issued against cash from ``world_sales``."""
    BONUS = "bonus"
    """Free: from ``platform_promotions``."""


_SOURCE_ACCOUNT = {
    GrantSource.PURCHASED: (AccountCode.WORLD_SALES, TransferCode.PURCHASE),
    GrantSource.BONUS: (AccountCode.PLATFORM_PROMOTIONS, TransferCode.GRANT),
}


@dataclass(frozen=True, slots=True)
class WalletBalance:
    """A wallet in µcr: posted balance, pending holds and what is available to spend."""

    user_id: int
    balance_ucr: int
    pending_ucr: int
    available_ucr: int


def grant(
    session: Session,
    user_id: int,
    amount_ucr: int,
    *,
    source: GrantSource = GrantSource.PURCHASED,
    idempotency_key: str,
    expires_at: datetime | None = None,
) -> int:
    """Credit ``amount_ucr`` µcr to the user's wallet; return the transfer id.

    ``expires_at`` (aware, in the future) is recorded with the grant; sweeping expired
    remainders comes with grant burn-down (issue "Wallets", DESIGN §5).
    Idempotent on ``idempotency_key``. Raises :class:`InvalidInput` (amount ≤ 0, a naive or
    past ``expires_at``),
    :class:`~modelbank.users.errors.UserNotFound`,
    :class:`~modelbank.errors.IdempotencyConflict`.
    """
    if amount_ucr <= 0:
        raise InvalidInput(f"grant amount must be positive µcr, got {amount_ucr}")
    metadata: dict[str, str] = {"source": GrantSource(source).value}
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidInput("expires_at must carry a time zone")
        if expires_at <= datetime.now(UTC):
            raise InvalidInput("expires_at must be in the future")
        metadata["expires_at"] = expires_at.astimezone(UTC).isoformat()
    user = users.get_user(session, user_id)
    account_code, transfer_code = _SOURCE_ACCOUNT[GrantSource(source)]
    return ledger.transfer(
        session,
        ledger.NewTransfer(
            debit_account_id=ledger.platform_account(session, account_code),
            credit_account_id=user.wallet_account_id,
            amount=amount_ucr,
            code=transfer_code,
            ref_type="user",
            ref_id=user_id,
            idempotency_key=idempotency_key,
            metadata=metadata,
        ),
    )


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
