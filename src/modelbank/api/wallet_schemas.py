"""HTTP bodies of the wallet routes (packages, purchases, grants, holds, refunds, alerts) and
their presenters from the wallets domain's dataclasses. Amounts: ``*_ucr`` µcr with a display
string; money ``*_uusd`` µUSD with a display string."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt, model_validator

from modelbank.api.schemas import (
    NO_NUL,
    CharacterId,
    Count,
    Id,
    Metadata,
    PositiveUcr,
    RecognitionOut,
    Strict,
    Timestamp,
    Ucr,
)
from modelbank.metering.refunds import RefundInfo
from modelbank.metering.service import ChargeResult
from modelbank.money import format_credits, format_usd
from modelbank.wallets.alerts import AlertState
from modelbank.wallets.grants import GrantInfo, Recognition
from modelbank.wallets.holds import HoldInfo
from modelbank.wallets.packages import PackageInfo
from modelbank.wallets.purchases import PurchaseInfo

Uusd = Annotated[StrictInt, Field(gt=0, le=10**13, description="micro-dollars, whole cents")]
Slug = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]
Url = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^https?://[^\s\x00]+$")]


class PackageOut(BaseModel):
    id: int
    slug: str
    name: str
    credits_ucr: int
    credits: str
    price_uusd: int
    price: str = Field(description="price for display, e.g. $17.99")
    currency: str
    price_per_credit_uusd: int = Field(description="µUSD per credit, rounded half-even")
    price_per_credit: str
    highlighted: bool
    is_active: bool
    sort_order: int


def package_out(p: PackageInfo) -> PackageOut:
    return PackageOut(
        id=p.id,
        slug=p.slug,
        name=p.name,
        credits_ucr=p.credits_ucr,
        credits=format_credits(p.credits_ucr),
        price_uusd=p.price_uusd,
        price=format_usd(p.price_uusd),
        currency=p.currency,
        price_per_credit_uusd=p.uusd_per_credit,
        price_per_credit=format_usd(p.uusd_per_credit, places=4),
        highlighted=p.highlighted,
        is_active=p.is_active,
        sort_order=p.sort_order,
    )


class PackageList(BaseModel):
    items: list[PackageOut]


class PackageIn(Strict):
    slug: Slug
    name: Name
    credits_ucr: PositiveUcr
    price_uusd: Uusd
    highlighted: StrictBool = False
    sort_order: StrictInt = Field(default=0, ge=0, le=10_000)


class PackagePatch(Strict):
    name: Name | None = None
    credits_ucr: PositiveUcr | None = None
    price_uusd: Uusd | None = None
    highlighted: StrictBool | None = None
    is_active: StrictBool | None = None
    sort_order: StrictInt | None = Field(default=None, ge=0, le=10_000)


class PurchaseIn(Strict):
    package_id: Id
    provider: Literal["manual", "stripe"] | None = Field(
        default=None, description="default: stripe when configured, else manual"
    )
    success_url: Url | None = None
    cancel_url: Url | None = None


class PurchaseOut(BaseModel):
    id: int
    user_id: int
    package_id: int
    provider: str
    status: Literal["pending", "completed", "expired", "refunded", "failed"]
    credits_ucr: int
    credits: str
    price_uusd: int
    price: str
    currency: str
    checkout_url: str | None = Field(description="where the buyer pays (Stripe); null for manual")
    external_id: str | None
    grant_id: int | None
    refunded_ucr: int
    refunded_uusd: int
    created_at: datetime
    completed_at: datetime | None


def purchase_out(p: PurchaseInfo) -> PurchaseOut:
    return PurchaseOut(
        id=p.id,
        user_id=p.user_id,
        package_id=p.package_id,
        provider=p.provider,
        status=p.status,
        credits_ucr=p.credits_ucr,
        credits=format_credits(p.credits_ucr),
        price_uusd=p.price_uusd,
        price=format_usd(p.price_uusd),
        currency=p.currency,
        checkout_url=p.checkout_url,
        external_id=p.external_id,
        grant_id=p.grant_id,
        refunded_ucr=p.refunded_ucr,
        refunded_uusd=p.refunded_uusd,
        created_at=p.created_at,
        completed_at=p.completed_at,
    )


class PurchasePage(BaseModel):
    items: list[PurchaseOut]
    next_cursor: str | None


class PurchaseRefundIn(Strict):
    amount_ucr: PositiveUcr | None = Field(
        default=None, description="default: all that is unspent of the purchase's grant"
    )


class PurchaseRefundOut(BaseModel):
    purchase: PurchaseOut
    reversed_ucr: int
    reversed: str


class StripeWebhookOut(BaseModel):
    result: str = Field(description="what the event did: completed, duplicate, ignored …")


class GrantOut(BaseModel):
    id: int
    user_id: int
    source: str
    amount_ucr: int
    remaining_ucr: int
    remaining: str
    cost_basis_uusd: int
    priority: int
    expires_at: datetime | None
    expired: bool
    transfer_id: int | None
    purchase_id: int | None
    created_at: datetime


def grant_out(g: GrantInfo, now: datetime) -> GrantOut:
    return GrantOut(
        id=g.id,
        user_id=g.user_id,
        source=g.source,
        amount_ucr=g.amount_ucr,
        remaining_ucr=g.remaining_ucr,
        remaining=format_credits(g.remaining_ucr),
        cost_basis_uusd=g.cost_basis_uusd,
        priority=g.priority,
        expires_at=g.expires_at,
        expired=g.expires_at is not None and g.expires_at <= now,
        transfer_id=g.transfer_id,
        purchase_id=g.purchase_id,
        created_at=g.created_at,
    )


class GrantPage(BaseModel):
    items: list[GrantOut]
    next_cursor: str | None


class _ModelOrCharacter(Strict):
    """A body naming its model by ``model`` or ``character_id``, at most one of the two."""

    model: Id | Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)] | None = None
    character_id: CharacterId | None = Field(
        default=None, description="instead of model: the active model of this character"
    )

    @model_validator(mode="after")
    def _at_most_one_model_reference(self) -> _ModelOrCharacter:
        if self.model is not None and self.character_id is not None:
            raise ValueError("give model or character_id, not both")
        return self


class HoldIn(_ModelOrCharacter):
    amount_ucr: PositiveUcr
    timeout_s: StrictInt = Field(ge=1, le=7 * 24 * 3600, description="seconds until it expires")


class CaptureIn(_ModelOrCharacter):
    amount_ucr: Ucr = Field(description="µcr to charge, ≤ the held amount; the rest is released")
    usage_type: Annotated[str, Field(min_length=1, max_length=32, pattern=NO_NUL)] = "other"
    input_tokens: Count = 0
    output_tokens: Count = 0
    units: Count = 0
    metadata: Metadata = None


class HoldOut(BaseModel):
    id: int
    user_id: int
    model_id: int | None
    amount_ucr: int
    amount: str
    status: Literal["pending", "posted", "voided"]
    captured_ucr: int
    usage_id: int | None
    reason: str | None
    created_at: datetime | None
    expires_at: datetime | None
    resolved_at: datetime | None


def hold_out(h: HoldInfo) -> HoldOut:
    return HoldOut(
        id=h.id,
        user_id=h.user_id,
        model_id=h.model_id,
        amount_ucr=h.amount_ucr,
        amount=format_credits(h.amount_ucr),
        status=h.status,
        captured_ucr=h.captured_ucr,
        usage_id=h.usage_id,
        reason=h.reason,
        created_at=h.created_at,
        expires_at=h.expires_at,
        resolved_at=h.resolved_at,
    )


class HoldList(BaseModel):
    items: list[HoldOut]
    next_cursor: str | None


class CaptureOut(BaseModel):
    hold: HoldOut
    usage_id: int | None
    charge_ucr: int
    charge: str
    earnings_ucr: int
    balance_ucr: int | None


def capture_out(h: HoldInfo, r: ChargeResult) -> CaptureOut:
    return CaptureOut(
        hold=hold_out(h),
        usage_id=r.usage_id,
        charge_ucr=r.charge_ucr,
        charge=format_credits(r.charge_ucr),
        earnings_ucr=r.earnings_ucr,
        balance_ucr=r.balance_ucr,
    )


class UsageRefundIn(Strict):
    amount_ucr: PositiveUcr | None = Field(
        default=None, description="default: all that is left of the charge"
    )
    reason: Annotated[str, Field(max_length=500, pattern=NO_NUL)] | None = None


class UsageRefundOut(BaseModel):
    id: int
    usage_id: int
    user_id: int
    model_id: int
    amount_ucr: int
    amount: str
    refunded_total_ucr: int
    charge_ucr: int
    earnings_reversed_ucr: int
    earnings_owed_ucr: int = Field(description="already paid out: owed back by the creators")
    reason: str | None
    created_at: datetime


def refund_out(r: RefundInfo) -> UsageRefundOut:
    return UsageRefundOut(
        id=r.id,
        usage_id=r.usage_id,
        user_id=r.user_id,
        model_id=r.model_id,
        amount_ucr=r.amount_ucr,
        amount=format_credits(r.amount_ucr),
        refunded_total_ucr=r.refunded_total_ucr,
        charge_ucr=r.charge_ucr,
        earnings_reversed_ucr=r.earnings_reversed_ucr,
        earnings_owed_ucr=r.earnings_owed_ucr,
        reason=r.reason,
        created_at=r.created_at,
    )


class LowBalanceIn(Strict):
    threshold_ucr: Ucr | None = Field(description="µcr; null: back to the platform default")


class DefaultThresholdIn(Strict):
    threshold_ucr: Ucr


class LowBalanceOut(BaseModel):
    user_id: int
    threshold_ucr: int
    threshold: str
    custom: bool = Field(description="false: the platform default applies")
    available_ucr: int
    alerted: bool = Field(description="at or below the threshold (warning shown)")
    alerted_at: datetime | None


def low_balance_out(a: AlertState) -> LowBalanceOut:
    return LowBalanceOut(
        user_id=a.user_id,
        threshold_ucr=a.threshold_ucr,
        threshold=format_credits(a.threshold_ucr),
        custom=a.custom,
        available_ucr=a.available_ucr,
        alerted=a.alerted,
        alerted_at=a.alerted_at,
    )


class DefaultThresholdOut(BaseModel):
    threshold_ucr: int
    threshold: str


def recognition_out(r: Recognition) -> RecognitionOut:
    return RecognitionOut(
        purchased_ucr=r.purchased_ucr,
        purchased=format_credits(r.purchased_ucr),
        purchased_basis_uusd=r.purchased_basis_uusd,
        purchased_basis=format_usd(r.purchased_basis_uusd),
        bonus_ucr=r.bonus_ucr,
        bonus=format_credits(r.bonus_ucr),
        by_source_ucr=r.by_source_ucr,
    )


class StatementQuery(Strict):
    since: Timestamp | None = None
    until: Timestamp | None = None
