"""HTTP bodies of plans, subscriptions, referrals and promo codes (issue 13), and their
presenters. Amounts: ``*_ucr`` µcr with a display string; money ``*_uusd`` µUSD; fractions
``*_bps`` basis points (10,000 = 100 %)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt

from modelbank.api.schemas import Id, PositiveUcr, Strict, Timestamp, Ucr
from modelbank.api.wallet_schemas import Name, Slug, Url, Uusd
from modelbank.money import format_credits, format_usd
from modelbank.wallets.plans import PlanInfo
from modelbank.wallets.promos import PromoInfo, RedemptionInfo
from modelbank.wallets.subscriptions import PeriodInfo, SubscriptionInfo

Bps = Annotated[StrictInt, Field(ge=0, le=10_000, description="basis points (10000 = 100 %)")]
Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class PlanOut(BaseModel):
    id: int
    slug: str
    name: str
    price_uusd: int
    price: str
    currency: str
    interval: str
    credits_ucr: int = Field(description="credits granted each paid period (µcr)")
    credits: str
    rollover_bps: int = Field(description="share of a period's unspent credits that rolls over")
    first_period_bonus_ucr: int
    first_period_bonus: str
    is_active: bool
    sort_order: int


def plan_out(p: PlanInfo) -> PlanOut:
    return PlanOut(
        id=p.id,
        slug=p.slug,
        name=p.name,
        price_uusd=p.price_uusd,
        price=format_usd(p.price_uusd),
        currency=p.currency,
        interval=p.interval,
        credits_ucr=p.credits_ucr,
        credits=format_credits(p.credits_ucr),
        rollover_bps=p.rollover_bps,
        first_period_bonus_ucr=p.first_period_bonus_ucr,
        first_period_bonus=format_credits(p.first_period_bonus_ucr),
        is_active=p.is_active,
        sort_order=p.sort_order,
    )


class PlanList(BaseModel):
    items: list[PlanOut]


class PlanIn(Strict):
    slug: Slug
    name: Name
    price_uusd: Uusd
    credits_ucr: PositiveUcr
    rollover_bps: Bps = 0
    first_period_bonus_ucr: Ucr = 0
    interval: Literal["month"] = "month"
    sort_order: StrictInt = Field(default=0, ge=-1_000_000, le=1_000_000)


class PlanPatch(Strict):
    name: Name | None = None
    price_uusd: Uusd | None = None
    credits_ucr: PositiveUcr | None = None
    rollover_bps: Bps | None = None
    first_period_bonus_ucr: Ucr | None = None
    is_active: StrictBool | None = None
    sort_order: StrictInt | None = Field(default=None, ge=-1_000_000, le=1_000_000)


class SubscriptionIn(Strict):
    plan_id: Id
    provider: Literal["stripe", "manual"] | None = Field(
        default=None, description="default: stripe when configured, else manual"
    )
    success_url: Url | None = None
    cancel_url: Url | None = None


class SubscriptionOut(BaseModel):
    id: int
    user_id: int
    plan_id: int
    provider: str
    status: Literal["pending", "active", "past_due", "cancelled"]
    checkout_url: str | None
    periods_paid: int
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    created_at: datetime
    cancelled_at: datetime | None


def subscription_out(s: SubscriptionInfo) -> SubscriptionOut:
    """The API's view of a subscription (the same fields, read by attribute)."""
    return SubscriptionOut.model_validate(s, from_attributes=True)


class SubscriptionList(BaseModel):
    items: list[SubscriptionOut]


class PeriodOut(BaseModel):
    id: int
    subscription_id: int
    invoice_ref: str
    period_start: datetime
    period_end: datetime
    credits_ucr: int
    bonus_ucr: int
    price_uusd: int
    grant_id: int | None
    bonus_grant_id: int | None


def period_out(p: PeriodInfo) -> PeriodOut:
    """The API's view of a paid period (the same fields, read by attribute)."""
    return PeriodOut.model_validate(p, from_attributes=True)


class PeriodList(BaseModel):
    items: list[PeriodOut]


class ReferralOut(BaseModel):
    user_id: int
    code: str = Field(description="this user's referral code, to give to new users")
    referred_by_user_id: int | None
    referred_count: int
    rewarded_count: int


class ReferralIn(Strict):
    code: Code


class ReferralSettings(BaseModel):
    referral_referrer_bonus_ucr: int
    referral_referred_bonus_ucr: int
    referral_bonus_ttl_s: int = Field(description="seconds the bonus credits last; 0: never expire")


class ReferralSettingsIn(Strict):
    referral_referrer_bonus_ucr: Ucr | None = None
    referral_referred_bonus_ucr: Ucr | None = None
    referral_bonus_ttl_s: StrictInt | None = Field(default=None, ge=0, le=10 * 365 * 86_400)


class PromoIn(Strict):
    code: Code
    bonus_ucr: PositiveUcr
    expires_at: Timestamp | None = Field(default=None, description="last moment to redeem")
    grant_ttl_s: StrictInt | None = Field(
        default=None, ge=1, le=10 * 365 * 86_400, description="the credits' lifetime"
    )
    use_limit: StrictInt | None = Field(default=None, ge=1, le=10**9)
    per_user_once: StrictBool = True


class PromoOut(BaseModel):
    id: int
    code: str
    bonus_ucr: int
    bonus: str
    expires_at: datetime | None
    grant_ttl_s: int | None
    use_limit: int | None
    uses: int
    per_user_once: bool
    is_active: bool
    created_at: datetime


def promo_out(p: PromoInfo) -> PromoOut:
    return PromoOut(
        id=p.id,
        code=p.code,
        bonus_ucr=p.bonus_ucr,
        bonus=format_credits(p.bonus_ucr),
        expires_at=p.expires_at,
        grant_ttl_s=p.grant_ttl_s,
        use_limit=p.use_limit,
        uses=p.uses,
        per_user_once=p.per_user_once,
        is_active=p.is_active,
        created_at=p.created_at,
    )


class PromoList(BaseModel):
    items: list[PromoOut]


class RedemptionIn(Strict):
    code: Code


class RedemptionOut(BaseModel):
    id: int
    code: str
    user_id: int
    grant_id: int
    bonus_ucr: int
    bonus: str
    expires_at: datetime | None
    created_at: datetime
    replayed: bool = Field(description="true when this user had already redeemed the code")


def redemption_out(r: RedemptionInfo, *, replayed: bool = False) -> RedemptionOut:
    return RedemptionOut(
        id=r.id,
        code=r.code,
        user_id=r.user_id,
        grant_id=r.grant_id,
        bonus_ucr=r.bonus_ucr,
        bonus=format_credits(r.bonus_ucr),
        expires_at=r.expires_at,
        created_at=r.created_at,
        replayed=replayed,
    )


class RedemptionList(BaseModel):
    items: list[RedemptionOut]
