"""Wallet tables (DESIGN §5): credit packages, purchases, grants and their burn-down, holds
on wallets, low-balance alert state, usage refunds and payment-provider events.

Money columns: ``*_ucr`` micro-credits, ``*_uusd`` micro-dollars, all integers.
"""

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


class CreditPackage(Base):
    """A package of credits sold for real money (admin-editable data)."""

    __tablename__ = "credit_packages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    credits_ucr: Mapped[int] = mapped_column(BigInteger)
    price_uusd: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    highlighted: Mapped[bool] = mapped_column(default=False)
    is_active: Mapped[bool] = mapped_column(default=True)
    sort_order: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("credits_ucr > 0 AND price_uusd > 0", name="package_positive"),
    )


class Purchase(Base):
    """One attempt to buy a package. ``status``: pending → completed (credits granted once)
    or expired; a completed purchase may later be (partly) refunded (``refunded_ucr``)."""

    __tablename__ = "purchases"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    package_id: Mapped[int] = mapped_column(ForeignKey("credit_packages.id"))
    provider: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    credits_ucr: Mapped[int] = mapped_column(BigInteger)
    price_uusd: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    payment_reference: Mapped[str | None] = mapped_column(String(255), nullable=True)
    checkout_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    grant_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    refunded_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_uusd: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("uq_purchases_provider_external", "provider", "external_id", unique=True),
        Index("ix_purchases_user", "user_id", "id"),
        Index("ix_purchases_payment_reference", "payment_reference"),
    )


class PaymentEventRow(Base):
    """A payment-provider webhook event already handled (deduplication by event id)."""

    __tablename__ = "payment_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    purchase_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("uq_payment_events_provider_event", "provider", "event_id", unique=True),
    )


class Grant(Base):
    """Credits that entered a wallet, burned down by spending (DESIGN §5).

    ``remaining_ucr`` is what is left to spend; a user's grants' remainders sum to the
    wallet's posted balance (checked by ``verify``). ``cost_basis_uusd`` is the cash paid for
    the whole ``amount_ucr`` (0 for bonus credits). Burn order: ``expires_at`` (soonest
    first, none last), then ``priority`` (lower first), then ``id`` (oldest first)."""

    __tablename__ = "grants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    source: Mapped[str] = mapped_column(String(16))
    amount_ucr: Mapped[int] = mapped_column(BigInteger)
    remaining_ucr: Mapped[int] = mapped_column(BigInteger)
    cost_basis_uusd: Mapped[int] = mapped_column(BigInteger, default=0)
    priority: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    transfer_id: Mapped[int | None] = mapped_column(ForeignKey("transfers.id"), nullable=True)
    purchase_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(
            "amount_ucr > 0 AND remaining_ucr >= 0 AND remaining_ucr <= amount_ucr"
            " AND cost_basis_uusd >= 0",
            name="grant_amounts",
        ),
        Index(
            "ix_grants_open",
            "user_id",
            "id",
            sqlite_where=text("remaining_ucr > 0"),
            postgresql_where=text("remaining_ucr > 0"),
        ),
        Index("ix_grants_expiring", "expires_at", postgresql_where=text("remaining_ucr > 0")),
        Index("ix_grants_user", "user_id", "id"),
    )


class GrantBurn(Base):
    """Credits taken from (positive) or returned to (negative) a grant, and why.

    ``ref_type``: ``usage`` (a charge; ``ref_id`` the usage id), ``access`` (a premium access
    purchase), ``expiry`` (swept when the grant expired), ``rollover`` (moved into a new grant
    by the grant's rollover rule), ``purchase_refund``,
    ``usage_refund`` (negative: credits returned). ``basis_uusd`` is the part of the grant's
    cost basis these credits carry (exact in total: a fully burned grant's burns sum to its
    basis)."""

    __tablename__ = "grant_burns"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("grants.id"))
    user_id: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))
    amount_ucr: Mapped[int] = mapped_column(BigInteger)
    basis_uusd: Mapped[int] = mapped_column(BigInteger)
    ref_type: Mapped[str] = mapped_column(String(32))
    ref_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("amount_ucr <> 0", name="burn_nonzero"),
        Index("ix_grant_burns_ref", "ref_type", "ref_id"),
        Index("ix_grant_burns_grant", "grant_id"),
        Index("ix_grant_burns_created", "created_at"),
    )


class WalletHold(Base):
    """A hold on a wallet placed over HTTP: the ledger's pending transfer ``transfer_id``
    plus what it is for. Its status (pending / posted / voided) is the ledger's."""

    __tablename__ = "wallet_holds"

    transfer_id: Mapped[int] = mapped_column(ForeignKey("transfers.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    model_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    usage_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    api_key_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The limited API key this hold's amount is reserved on (None: no key limit)."""

    __table_args__ = (Index("ix_wallet_holds_user", "user_id", "transfer_id"),)


class WalletAlert(Base):
    """Low-balance alert settings and state of one wallet. ``threshold_ucr`` NULL means the
    configured default; ``alerted`` is set when the available balance falls to or below the
    threshold (one ``wallet.low_balance`` event) and cleared when it recovers above it."""

    __tablename__ = "wallet_alerts"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    threshold_ucr: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    alerted: Mapped[bool] = mapped_column(default=False)
    alerted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class UsageRefund(Base):
    """A (partial) refund of a usage charge: ``amount_ucr`` back to the wallet,
    ``earnings_reversed_ucr`` taken back from creators (``earnings_owed_ucr`` of it could
    not be taken because it was already paid out: it stays owed as a debt)."""

    __tablename__ = "usage_refunds"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    usage_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    model_id: Mapped[int] = mapped_column(BigInteger)
    amount_ucr: Mapped[int] = mapped_column(BigInteger)
    earnings_reversed_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    earnings_owed_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    metadata_: Mapped[dict[str, Any] | None] = mapped_column(
        "metadata", JSON(none_as_null=True), nullable=True
    )

    __table_args__ = (
        CheckConstraint("amount_ucr > 0", name="refund_positive"),
        Index("ix_usage_refunds_usage", "usage_id"),
        Index("ix_usage_refunds_created", "created_at"),
    )


class EarningsDebt(Base):
    """Earnings a creator owes back: a refunded usage whose earnings had already left the
    earnings account. Settled from later earnings (``remaining_ucr`` falls to 0); payouts
    may only withdraw the earnings balance minus open debt."""

    __tablename__ = "earnings_debts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    refund_id: Mapped[int] = mapped_column(ForeignKey("usage_refunds.id"))
    amount_ucr: Mapped[int] = mapped_column(BigInteger)
    remaining_ucr: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(
            "amount_ucr > 0 AND remaining_ucr >= 0 AND remaining_ucr <= amount_ucr",
            name="debt_amounts",
        ),
        Index("ix_earnings_debts_user", "user_id", "id"),
    )


packages_table = cast(Table, CreditPackage.__table__)
purchases_table = cast(Table, Purchase.__table__)
payment_events_table = cast(Table, PaymentEventRow.__table__)
grants_table = cast(Table, Grant.__table__)
burns_table = cast(Table, GrantBurn.__table__)
holds_table = cast(Table, WalletHold.__table__)
alerts_table = cast(Table, WalletAlert.__table__)
refunds_table = cast(Table, UsageRefund.__table__)
debts_table = cast(Table, EarningsDebt.__table__)
