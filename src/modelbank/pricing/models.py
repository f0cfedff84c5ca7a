"""The ``price_versions`` table: one immutable row per price change of a model."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import cast

from sqlalchemy import ForeignKey, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, DecimalText, UTCDateTime


class PriceVersion(Base):
    """A model's price from ``effective_from`` until the next version: µcr rates charged to
    users, the µUSD provider cost it was derived from, and how (markups or explicit)."""

    __tablename__ = "price_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int]
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime())
    input_ucr_per_mtok: Mapped[Decimal] = mapped_column(DecimalText())
    output_ucr_per_mtok: Mapped[Decimal] = mapped_column(DecimalText())
    cache_read_ucr_per_mtok: Mapped[Decimal | None] = mapped_column(DecimalText(), nullable=True)
    per_request_ucr: Mapped[Decimal] = mapped_column(DecimalText())
    per_unit_ucr: Mapped[Decimal] = mapped_column(DecimalText())
    input_uusd_per_mtok: Mapped[Decimal] = mapped_column(DecimalText())
    output_uusd_per_mtok: Mapped[Decimal] = mapped_column(DecimalText())
    cache_read_uusd_per_mtok: Mapped[Decimal | None] = mapped_column(DecimalText(), nullable=True)
    per_request_uusd: Mapped[Decimal] = mapped_column(DecimalText())
    per_unit_uusd: Mapped[Decimal] = mapped_column(DecimalText())
    tier: Mapped[str] = mapped_column(String(16))
    tier_markup: Mapped[Decimal] = mapped_column(DecimalText())
    demand_markup: Mapped[Decimal] = mapped_column(DecimalText())
    credits_per_usd: Mapped[Decimal] = mapped_column(DecimalText())
    source: Mapped[str] = mapped_column(String(16))
    """``cost`` (derived from provider cost and markups) or ``explicit`` (set by an admin)."""
    reason: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("uq_price_versions_model_version", "model_id", "version", unique=True),
        Index("ix_price_versions_model_effective", "model_id", "effective_from"),
    )


price_versions_table = cast(Table, PriceVersion.__table__)
