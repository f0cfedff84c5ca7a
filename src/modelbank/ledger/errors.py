"""Ledger errors (stable codes, no HTTP)."""

from __future__ import annotations

from modelbank.errors import DomainError, NotFound


class LedgerError(DomainError):
    """Base of ledger refusals."""

    code = "ledger_error"


class InsufficientFunds(LedgerError):
    """A flagged account would go below zero. Context: account_id, available_ucr, needed_ucr."""

    code = "insufficient_funds"


class AccountNotFound(NotFound):
    """No such account."""

    code = "account_not_found"


class TransferNotFound(NotFound):
    """No such transfer (or hold)."""

    code = "transfer_not_found"


class InvalidTransfer(LedgerError):
    """Amount ≤ 0, same debit and credit account, or a bad reversal amount."""

    code = "invalid_transfer"


class HoldNotPending(LedgerError):
    """The hold was already posted, voided or expired."""

    code = "hold_not_pending"


class HoldExpired(LedgerError):
    """The hold's timeout passed; it can only be voided (by the expiry job)."""

    code = "hold_expired"


class HoldAmountExceeded(LedgerError):
    """Posting more than the held amount."""

    code = "hold_amount_exceeded"


class AccountTotalLimit(LedgerError):
    """A transfer would carry an account's running total past
    :data:`modelbank.ledger.models.MAX_ACCOUNT_TOTAL` (a CHECK constraint on both databases
    refuses it before any 64-bit overflow); nothing was written."""

    code = "account_total_limit"
