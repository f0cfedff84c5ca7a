"""Account kinds, transfer codes and flags. Each value's meaning is fixed; never reuse one."""

from __future__ import annotations

from enum import IntFlag, StrEnum


class AccountCode(StrEnum):
    """The kind of an account (DESIGN §3). ``owner_id`` is a user id or NULL for platform."""

    USER_WALLET = "user_wallet"
    """A user's spendable credits. Flagged: never negative."""
    USER_EARNINGS = "user_earnings"
    """Credits a creator earned from others' usage, withdrawable by payout. Flagged."""
    PLATFORM_REVENUE = "platform_revenue"
    """Credits charged for usage; creator earnings are paid out of it."""
    PLATFORM_FEES = "platform_fees"
    """Fees the platform keeps (pool deposits, marketplace)."""
    PLATFORM_PROMOTIONS = "platform_promotions"
    """Source of free credits (bonus grants); receives swept expired grants."""
    WORLD_SALES = "world_sales"
    """Issuance of credits against cash received. Its debit balance is credits sold."""
    WORLD_PAYOUTS = "world_payouts"
    """Credits that left the system as cash payouts."""
    POOL_DEPOSITS = "pool_deposits"
    """Credit value of provider keys deposited in the resource pool."""
    MARKETPLACE_ESCROW = "marketplace_escrow"
    """Buyer credits held until a marketplace trade completes."""


PLATFORM_ACCOUNT_CODES = (
    AccountCode.PLATFORM_REVENUE,
    AccountCode.PLATFORM_FEES,
    AccountCode.PLATFORM_PROMOTIONS,
    AccountCode.WORLD_SALES,
    AccountCode.WORLD_PAYOUTS,
    AccountCode.POOL_DEPOSITS,
    AccountCode.MARKETPLACE_ESCROW,
)
"""Singleton accounts owned by the platform (``owner_id`` NULL), created by migration."""

USER_ACCOUNT_CODES = (AccountCode.USER_WALLET, AccountCode.USER_EARNINGS)
"""Accounts every user has, both flagged non-negative."""


class AccountFlags(IntFlag):
    """Account flags (TigerBeetle naming)."""

    NONE = 0
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1
    """debits_posted + debits_pending ≤ credits_posted at all times: the balance never goes
    below zero, and pending holds count against it."""


class TransferFlags(IntFlag):
    """Transfer flags (TigerBeetle's two-phase transfers)."""

    NONE = 0
    PENDING = 1
    """A hold: reserves ``amount`` in the pending columns until posted, voided or expired."""
    POST_PENDING = 2
    """Posts the hold named by ``pending_id`` for ``amount`` ≤ the held amount."""
    VOID_PENDING = 4
    """Voids the hold named by ``pending_id`` (also used when it expires)."""


class TransferCode(StrEnum):
    """Why credits moved (DESIGN §3)."""

    PURCHASE = "purchase"
    GRANT = "grant"
    USAGE_CHARGE = "usage_charge"
    EARNING = "earning"
    REFUND = "refund"
    PAYOUT = "payout"
    FEE = "fee"
    DEPOSIT = "deposit"
    TRADE = "trade"
    EXPIRY = "expiry"
    ADJUSTMENT = "adjustment"
    ACCESS_PURCHASE = "access_purchase"
    """A user bought access to a premium model (wallet → platform revenue)."""
