"""Tables of subscriptions and promotions (issue 13): plans, subscriptions and their paid
periods, the rollover rule of a period's grant, referral codes and referrals, promo codes and
their redemptions. Kept apart from :mod:`modelbank.wallets.models` (same domain, same
conventions) so the wallet's core tables stay one screen.

Money columns: ``*_ucr`` micro-credits, ``*_uusd`` micro-dollars, fractions in basis points
(``*_bps``: 10,000 = 100 %), all integers.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, UTCDateTime


class Plan(Base):
    """A subscription plan (admin-editable data): ``price_uusd`` per period buys
    ``credits_ucr`` each period; ``rollover_bps`` of what is left of a period's credits when
    the period ends moves into the next period; ``first_period_bonus_ucr`` free credits with
    the first period only. ``interval``: ``month`` (the only one for now)."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    price_uusd: Mapped[int] = mapped_column(BigInteger)
    credits_ucr: Mapped[int] = mapped_column(BigInteger)
    rollover_bps: Mapped[int] = mapped_column(default=0)
    first_period_bonus_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    interval: Mapped[str] = mapped_column(String(16), default="month")
    is_active: Mapped[bool] = mapped_column(default=True)
    sort_order: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(
            "credits_ucr > 0 AND price_uusd > 0 AND rollover_bps >= 0 AND rollover_bps <= 10000"
            " AND first_period_bonus_ucr >= 0",
            name="plan_amounts",
        ),
    )


class Subscription(Base):
    """A user's subscription to a plan. ``status``: pending (checkout not paid yet) → active
    (a period paid) ⇄ past_due (a renewal payment failed) → cancelled (no more periods; the
    credits already granted last until their period ends). ``external_id``: the Stripe
    subscription id (``sub_…``) once known; ``checkout_id``: the Checkout Session."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    provider: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    checkout_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    checkout_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    periods_paid: Mapped[int] = mapped_column(default=0)
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_subscriptions_user", "user_id", "id"),
        Index("uq_subscriptions_provider_external", "provider", "external_id", unique=True),
    )


class SubscriptionPeriod(Base):
    """One paid period of a subscription: its credits granted once (``invoice_ref`` is the
    Stripe invoice id, or ``manual:<n>`` for the n-th manually confirmed period; unique per
    subscription, so a duplicate or reordered ``invoice.paid`` grants nothing more)."""

    __tablename__ = "subscription_periods"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"))
    user_id: Mapped[int] = mapped_column(BigInteger)
    invoice_ref: Mapped[str] = mapped_column(String(255))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    credits_ucr: Mapped[int] = mapped_column(BigInteger)
    bonus_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    price_uusd: Mapped[int] = mapped_column(BigInteger)
    grant_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bonus_grant_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("uq_subscription_periods_invoice", "subscription_id", "invoice_ref", unique=True),
    )


class GrantRollover(Base):
    """The rollover rule of an expiring grant: when the expiry sweep reaches it,
    ``rollover_bps`` of the credits it would sweep (rounded down to the µcr) move into a new
    grant expiring at ``rolled_expires_at``, carrying their part of the cost basis;
    ``rolled_grant_id`` records it (set once: the sweep is idempotent)."""

    __tablename__ = "grant_rollovers"

    grant_id: Mapped[int] = mapped_column(ForeignKey("grants.id"), primary_key=True)
    rollover_bps: Mapped[int] = mapped_column()
    rolled_expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    rolled_grant_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (
        CheckConstraint("rollover_bps > 0 AND rollover_bps <= 10000", name="rollover_bps_range"),
    )


class ReferralCode(Base):
    """Each user's referral code (made on first use)."""

    __tablename__ = "referral_codes"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Referral(Base):
    """A user who signed up with another's code (one row per referred user: a user is
    referred once). ``rewarded_at``: when both bonus grants were made, after the referred
    user's first completed purchase."""

    __tablename__ = "referrals"

    referred_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    referrer_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    rewarded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reward_ref: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (Index("ix_referrals_referrer", "referrer_user_id"),)


class PromoCode(Base):
    """A promo code (admin): each redemption grants ``bonus_ucr`` free credits (expiring
    ``grant_ttl_s`` seconds after, or never); redeemable until ``expires_at`` and at most
    ``use_limit`` times in all (None: no limit), once per user when ``per_user_once``."""

    __tablename__ = "promo_codes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    bonus_ucr: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    grant_ttl_s: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    use_limit: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    uses: Mapped[int] = mapped_column(BigInteger, default=0)
    per_user_once: Mapped[bool] = mapped_column(default=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(
            "bonus_ucr > 0 AND uses >= 0 AND (use_limit IS NULL OR uses <= use_limit)",
            name="promo_amounts",
        ),
    )


class PromoRedemption(Base):
    """One redemption of a promo code by a user: the ``seq``-th by that user (always 1 for a
    once-per-user code: the unique index is the last line of defence against a double
    redemption)."""

    __tablename__ = "promo_redemptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    promo_code_id: Mapped[int] = mapped_column(ForeignKey("promo_codes.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    seq: Mapped[int] = mapped_column()
    grant_id: Mapped[int] = mapped_column(BigInteger)
    bonus_ucr: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("uq_promo_redemptions_user", "promo_code_id", "user_id", "seq", unique=True),
        Index("ix_promo_redemptions_user", "user_id", "id"),
    )


plans_table = cast(Table, Plan.__table__)
subscriptions_table = cast(Table, Subscription.__table__)
periods_table = cast(Table, SubscriptionPeriod.__table__)
rollovers_table = cast(Table, GrantRollover.__table__)
referral_codes_table = cast(Table, ReferralCode.__table__)
referrals_table = cast(Table, Referral.__table__)
promo_codes_table = cast(Table, PromoCode.__table__)
redemptions_table = cast(Table, PromoRedemption.__table__)
