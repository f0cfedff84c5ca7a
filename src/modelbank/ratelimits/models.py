"""Rate-limit tables: the plans (limits by credit balance) and the shared window counters."""

from __future__ import annotations

from typing import cast

from sqlalchemy import BigInteger, Integer, PrimaryKeyConstraint, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId


class RateLimitPlan(Base):
    """One tier of the per-user limits: a user whose wallet holds at least
    ``min_balance_ucr`` (available, µcr) and less than the next tier's gets
    ``requests_per_s`` and ``tokens_per_min`` (0: unlimited). Seeded by migration 0015;
    an empty table means the built-in :data:`~modelbank.ratelimits.plans.DEFAULT_PLANS`."""

    __tablename__ = "rate_limit_plans"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    min_balance_ucr: Mapped[int] = mapped_column(BigInteger, unique=True)
    requests_per_s: Mapped[int] = mapped_column(Integer)
    tokens_per_min: Mapped[int] = mapped_column(BigInteger)


class RateLimitCounter(Base):
    """Hits of one bucket (``k:<key id>:r``, ``u:<user id>:t``…) in one fixed window
    (``window`` = Unix time // window length). Used by the database store only; rows older
    than two minutes are deleted as the store goes."""

    __tablename__ = "rate_limit_counters"

    bucket: Mapped[str] = mapped_column(String(64))
    window: Mapped[int] = mapped_column(BigInteger)
    hits: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (PrimaryKeyConstraint("bucket", "window", name="pk_rate_limit_counters"),)


rate_limit_plans_table = cast(Table, RateLimitPlan.__table__)
rate_limit_counters_table = cast(Table, RateLimitCounter.__table__)
