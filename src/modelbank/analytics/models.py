"""Daily rollups (DESIGN §8, §16): the tables dashboards read instead of scanning usage rows.

Maintained in the charge's transaction, once per batch (:mod:`modelbank.analytics.rollups`),
adjusted by refunds, and recomputable from the usage, earnings and refund rows by
``modelbank rollups rebuild``. ``day`` is the UTC date on which the charge was posted (the
ledger's day; each usage row keeps its own ``occurred_at``). Amounts in µcr, cost in µUSD.
"""

from __future__ import annotations

from datetime import date
from typing import cast

from sqlalchemy import BigInteger, Date, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base


class ModelDay(Base):
    """One model's day: uses, tokens, revenue charged, provider cost, creator earnings paid,
    and what refunds took back (``refunded_ucr`` of revenue, ``reversed_ucr`` of earnings)."""

    __tablename__ = "rollup_model_day"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uses: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    revenue_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_uusd: Mapped[int] = mapped_column(BigInteger, default=0)
    earnings_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    reversed_ucr: Mapped[int] = mapped_column(BigInteger, default=0)


class UserDay(Base):
    """One user's day of spending on one model for one usage type."""

    __tablename__ = "rollup_user_day"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    usage_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    uses: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    spend_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_ucr: Mapped[int] = mapped_column(BigInteger, default=0)


class CreatorDay(Base):
    """One beneficiary's day of earnings from one model (others' uses only)."""

    __tablename__ = "rollup_creator_day"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uses: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    earnings_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    reversed_ucr: Mapped[int] = mapped_column(BigInteger, default=0)


model_day_table = cast(Table, ModelDay.__table__)
user_day_table = cast(Table, UserDay.__table__)
creator_day_table = cast(Table, CreatorDay.__table__)
