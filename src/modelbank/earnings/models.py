"""Earnings tables: rules (versioned), beneficiaries, per-model aggregates, earning lines."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Table
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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_earnings_user_model", "user_id", "model_id"),
        Index("ix_earnings_usage", "usage_id"),
    )


earnings_rules_table = cast(Table, EarningsRuleVersion.__table__)
beneficiaries_table = cast(Table, Beneficiary.__table__)
model_stats_table = cast(Table, ModelStats.__table__)
earnings_table = cast(Table, Earning.__table__)
