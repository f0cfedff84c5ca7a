"""Ledger tables: ``accounts`` and ``transfers`` (DESIGN §3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Table,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, UTCDateTime

MAX_ACCOUNT_TOTAL = 2**62
"""Ceiling of each running total of an account (µcr; 4.6 × 10¹² credits). Half of 2⁶³:
one request moves at most 10¹⁵ µcr and a batch at most 10¹⁸, so a total at the ceiling plus
any one statement's delta still fits a signed 64-bit integer. The CHECK constraint below
refuses the crossing on both databases (SQLite would otherwise turn the sum into a float,
PostgreSQL raise ``bigint out of range``); the ledger translates it into
:class:`~modelbank.ledger.errors.AccountTotalLimit`."""


class Account(Base):
    """An account. Balance = credits_posted − debits_posted (µcr); available additionally
    subtracts debits_pending. Totals are caches of the transfers, kept by the ledger service."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(32))
    owner_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    flags: Mapped[int] = mapped_column(default=0)
    debits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    debits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("uq_accounts_code_owner", "code", "owner_id", unique=True),
        CheckConstraint(
            "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0"
            " AND credits_pending >= 0",
            name="totals_non_negative",
        ),
        CheckConstraint(
            f"debits_posted <= {MAX_ACCOUNT_TOTAL} AND credits_posted <= {MAX_ACCOUNT_TOTAL}"
            f" AND debits_pending <= {MAX_ACCOUNT_TOTAL}"
            f" AND credits_pending <= {MAX_ACCOUNT_TOTAL}",
            name="totals_bounded",
        ),
    )


STORED_KEY_LENGTH = 256
"""Room for a caller's 200-character Idempotency-Key plus the prefix that scopes it
(``api:key:<id>:``, ``u<user id>:``): every role gets the full 200 the README promises."""


class Transfer(Base):
    """An immutable movement of ``amount`` µcr from ``debit_account_id`` to
    ``credit_account_id``. Holds are rows with the PENDING flag; posting or voiding one
    inserts a second row pointing to it through ``pending_id`` (unique: resolved once)."""

    __tablename__ = "transfers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str | None] = mapped_column(
        String(STORED_KEY_LENGTH), nullable=True, unique=True
    )
    debit_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    credit_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    code: Mapped[str] = mapped_column(String(32))
    flags: Mapped[int] = mapped_column(default=0)
    pending_id: Mapped[int | None] = mapped_column(
        ForeignKey("transfers.id"), nullable=True, unique=True
    )
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("transfers.id"), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ref_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ref_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    metadata_: Mapped[dict[str, Any] | None] = mapped_column(
        "metadata", JSON(none_as_null=True), nullable=True
    )
    chain_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Position in the transfers' hash chain (1, 2, …), set once by the sealer
    (:mod:`modelbank.chain`); NULL until sealed. Written unchained so that chaining never
    serialises writers."""
    chain_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """SHA-256 (hex) of the previous link's hash and this transfer's canonical content."""

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="distinct_accounts"),
        Index("ix_transfers_debit", "debit_account_id", "id"),
        Index("ix_transfers_credit", "credit_account_id", "id"),
        Index("ix_transfers_ref", "ref_type", "ref_id"),
        # Partial indexes: the sealer finds unsealed rows without a scan, and a sealed
        # position is taken once; neither costs an insert anything but the small first one.
        Index(
            "ix_transfers_unsealed",
            "id",
            sqlite_where=text("chain_seq IS NULL"),
            postgresql_where=text("chain_seq IS NULL"),
        ),
        Index(
            "uq_transfers_chain_seq",
            "chain_seq",
            unique=True,
            sqlite_where=text("chain_seq IS NOT NULL"),
            postgresql_where=text("chain_seq IS NOT NULL"),
        ),
    )


accounts_table = cast(Table, Account.__table__)
"""Core table of :class:`Account`, for the hot path."""
transfers_table = cast(Table, Transfer.__table__)
"""Core table of :class:`Transfer`, for the hot path."""
