"""Earnings tables: rules (versioned), beneficiaries, per-model aggregates, earning lines."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, DecimalText, UTCDateTime


class EarningsRuleVersion(Base):
    """One version of a model's earnings rule (DESIGN §7); never edited, superseded."""

    __tablename__ = "earnings_rules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int]
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime())
    per_use_ucr: Mapped[int] = mapped_column(BigInteger)
    per_token_ucr: Mapped[Decimal] = mapped_column(DecimalText())
    share_bps: Mapped[int]
    popularity_tiers: Mapped[list[Any]] = mapped_column(JSON)
    """``[[min_uses, "multiplier"], …]``: multipliers as decimal strings (exact)."""
    type_multipliers: Mapped[dict[str, Any]] = mapped_column(JSON)
    """``{usage_type: "multiplier"}``; key ``"*"`` is the multiplier of unlisted types."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("uq_earnings_rules_model_version", "model_id", "version", unique=True),)


class Beneficiary(Base):
    """A user entitled to ``share_bps`` of a model's earnings (creator 10,000 by default)."""

    __tablename__ = "model_beneficiaries"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    share_bps: Mapped[int]


class ModelStats(Base):
    """Lifetime aggregates of a model, updated in the charge's transaction."""

    __tablename__ = "model_stats"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    use_count: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    revenue_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    earnings_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Earning(Base):
    """One beneficiary's earning from one usage event (the ledger transfer is its twin)."""

    __tablename__ = "earnings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    usage_id: Mapped[int] = mapped_column(BigInteger)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    amount_ucr: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger)
    rule_version: Mapped[int]
    popularity_multiplier: Mapped[Decimal | None] = mapped_column(DecimalText(), nullable=True)
    """The popularity tier's multiplier this earning used (why it is what it is)."""
    type_multiplier: Mapped[Decimal | None] = mapped_column(DecimalText(), nullable=True)
    """The usage type's multiplier this earning used."""
    share_bps: Mapped[int | None] = mapped_column(nullable=True)
    """The beneficiary's stake in the model at that moment (basis points)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_earnings_user_model", "user_id", "model_id"),
        Index("ix_earnings_usage", "usage_id"),
    )


class Payout(Base):
    """A creator's request to withdraw earnings (DESIGN §7). ``status``: pending (the amount is
    held on the earnings account by the ledger hold ``hold_id``), completed (posted to
    ``world_payouts``; ``amount_uusd`` at ``usd_per_credit_rate``), failed (hold voided,
    ``failure_reason``) or cancelled (by the creator while pending)."""

    __tablename__ = "payouts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    amount_ucr: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    hold_id: Mapped[int] = mapped_column(ForeignKey("transfers.id"))
    adapter: Mapped[str] = mapped_column(String(32))
    external_reference: Mapped[str | None] = mapped_column(String(255), nullable=True)
    amount_uusd: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    credits_per_usd: Mapped[Decimal | None] = mapped_column(DecimalText(), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint("amount_ucr > 0", name="payout_positive"),
        Index("ix_payouts_status", "status", "id"),
        Index("ix_payouts_user", "user_id", "id"),
    )


class StakeListing(Base):
    """An offer by ``seller_id`` to sell ``share_bps`` of their stake in a model for
    ``price_ucr``. ``status``: open, sold (to ``buyer_id``; ``transfer_id`` is the payment) or
    cancelled."""

    __tablename__ = "stake_listings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    seller_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    share_bps: Mapped[int]
    price_ucr: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    buyer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    transfer_id: Mapped[int | None] = mapped_column(ForeignKey("transfers.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint("share_bps > 0 AND share_bps <= 10000 AND price_ucr >= 0", name="listing"),
        Index("ix_stake_listings_model", "model_id", "status", "id"),
    )


earnings_rules_table = cast(Table, EarningsRuleVersion.__table__)
beneficiaries_table = cast(Table, Beneficiary.__table__)
model_stats_table = cast(Table, ModelStats.__table__)
earnings_table = cast(Table, Earning.__table__)
payouts_table = cast(Table, Payout.__table__)
listings_table = cast(Table, StakeListing.__table__)
