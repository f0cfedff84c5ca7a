"""HTTP bodies of the creator-economy routes (stakes, stake listings, earnings rules, the
monetisation switches, one usage event's earnings explained) and their presenters from the
earnings domain's dataclasses. Amounts: ``*_ucr`` µcr with a display string; stakes in basis
points (10,000 = the whole); multipliers as exact decimal strings."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, Field, StrictBool, StrictInt

from modelbank.analytics.explain import UsageEarnings
from modelbank.api import present
from modelbank.api.schemas import EarningsRuleIn, EarningsRuleOut, Id, Strict, Timestamp, Ucr
from modelbank.catalog.service import ModelInfo
from modelbank.earnings.explain import RuleVersion
from modelbank.earnings.rules import BPS
from modelbank.earnings.stakes import Listing, Stake
from modelbank.money import format_credits

Bps = Annotated[StrictInt, Field(ge=1, le=BPS, description="basis points, 1…10,000")]

# ---------------------------------------------------------------- stakes


class StakeIn(Strict):
    user_id: Id
    share_bps: Bps


class StakesIn(Strict):
    stakes: list[StakeIn] = Field(
        min_length=1, max_length=100, description="shares summing to 10,000 bps, users distinct"
    )


class StakeOut(BaseModel):
    user_id: int
    share_bps: int
    listed_bps: int = Field(description="part of this stake offered in open listings")


class StakesOut(BaseModel):
    model_id: int
    stakes: list[StakeOut] = Field(
        description="largest first; the creator at 10,000 when none were set"
    )


def stakes_out(model_id: int, stakes: list[Stake], listed: dict[int, int]) -> StakesOut:
    return StakesOut(
        model_id=model_id,
        stakes=[
            StakeOut(user_id=s.user_id, share_bps=s.share_bps, listed_bps=listed.get(s.user_id, 0))
            for s in stakes
        ],
    )


# ---------------------------------------------------------------- listings


class ListingIn(Strict):
    share_bps: Bps
    price_ucr: Ucr = Field(description="µcr; 0 gives the stake away")
    seller_id: Id | None = Field(
        default=None, description="admin/service keys: the seller; user keys: omit (themselves)"
    )


class ListingOut(BaseModel):
    id: int
    model_id: int
    seller_id: int
    share_bps: int
    price_ucr: int
    price: str
    status: str = Field(description="open, sold or cancelled")
    buyer_id: int | None
    transfer_id: int | None = Field(description="the payment (None for a free listing)")
    created_at: datetime
    closed_at: datetime | None


def listing_out(listing: Listing) -> ListingOut:
    return ListingOut(
        id=listing.id,
        model_id=listing.model_id,
        seller_id=listing.seller_id,
        share_bps=listing.share_bps,
        price_ucr=listing.price_ucr,
        price=format_credits(listing.price_ucr),
        status=listing.status,
        buyer_id=listing.buyer_id,
        transfer_id=listing.transfer_id,
        created_at=listing.created_at,
        closed_at=listing.closed_at,
    )


class ListingPage(BaseModel):
    items: list[ListingOut]
    next_cursor: str | None


class BuyIn(Strict):
    buyer_id: Id | None = Field(
        default=None, description="admin/service keys: the buyer; user keys: omit (themselves)"
    )


class SaleOut(BaseModel):
    listing: ListingOut
    stakes: StakesOut = Field(description="the model's stakes after the sale")


# ---------------------------------------------------------------- earnings rules


class EarningsRulePut(EarningsRuleIn):
    effective_from: Timestamp | None = Field(
        default=None, description="when the new version takes effect (now when omitted; never past)"
    )


class RuleVersionOut(EarningsRuleOut):
    effective_from: datetime | None = Field(description="None for version 0, the default rule")
    created_at: datetime | None


def rule_version_out(version: RuleVersion) -> RuleVersionOut:
    shown = present.rule(version.rule)
    assert shown is not None
    return RuleVersionOut(
        **shown.model_dump(),
        effective_from=version.effective_from,
        created_at=version.created_at,
    )


class RuleHistoryOut(BaseModel):
    model_id: int
    current: RuleVersionOut = Field(description="the version in force now")
    versions: list[RuleVersionOut] = Field(description="every stored version, oldest first")


# ---------------------------------------------------------------- monetisation


class MonetisationIn(Strict):
    enabled: StrictBool


class ModelMonetisationOut(BaseModel):
    model_id: int
    enabled: bool = Field(description="this model's switch")
    platform_enabled: bool = Field(description="the platform-wide switch")
    earning: bool = Field(description="both on: usage of the model earns its beneficiaries")


def model_monetisation_out(model: ModelInfo, platform_enabled: bool) -> ModelMonetisationOut:
    return ModelMonetisationOut(
        model_id=model.id,
        enabled=model.monetised,
        platform_enabled=platform_enabled,
        earning=model.monetised and platform_enabled,
    )


class PlatformMonetisationOut(BaseModel):
    enabled: bool


# ---------------------------------------------------------------- one usage event explained


class EarningLineOut(BaseModel):
    user_id: int
    amount_ucr: int
    amount: str
    rule_version: int
    popularity_multiplier: str | None
    type_multiplier: str | None
    share_bps: int | None = Field(description="the beneficiary's stake at that moment")


class BurnOut(BaseModel):
    grant_id: int
    amount_ucr: int


class UsageEarningsOut(BaseModel):
    usage_id: int
    model_id: int
    payer_id: int | None = Field(description="hidden (None) from beneficiaries who did not pay")
    usage_type: str
    input_tokens: int
    output_tokens: int
    charge_ucr: int
    charge: str
    earnings_ucr: int
    earnings: str
    platform_kept_ucr: int = Field(description="charge minus earnings")
    earnings_note: str | None = Field(
        description="why nothing was earned: self_usage, no_creator, zero, monetisation_off,"
        " monetisation_off_platform, prepaid (served from a marketplace allocation)"
    )
    occurred_at: datetime
    lines: list[EarningLineOut]
    rule: EarningsRuleOut | None = Field(description="the rule version the earnings used")
    burns: list[BurnOut] | None = Field(
        description="the payer's grants the charge burned (net of refunds); None for others"
    )


def _multiplier(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def usage_earnings_out(found: UsageEarnings) -> UsageEarningsOut:
    return UsageEarningsOut(
        usage_id=found.usage_id,
        model_id=found.model_id,
        payer_id=found.payer_id,
        usage_type=found.usage_type,
        input_tokens=found.input_tokens,
        output_tokens=found.output_tokens,
        charge_ucr=found.charge_ucr,
        charge=format_credits(found.charge_ucr),
        earnings_ucr=found.earnings_ucr,
        earnings=format_credits(found.earnings_ucr),
        platform_kept_ucr=found.platform_kept_ucr,
        earnings_note=found.earnings_note,
        occurred_at=found.occurred_at,
        lines=[
            EarningLineOut(
                user_id=line.user_id,
                amount_ucr=line.amount_ucr,
                amount=format_credits(line.amount_ucr),
                rule_version=line.rule_version,
                popularity_multiplier=_multiplier(line.popularity_multiplier),
                type_multiplier=_multiplier(line.type_multiplier),
                share_bps=line.share_bps,
            )
            for line in found.lines
        ],
        rule=present.rule(found.rule),
        burns=None
        if found.burns is None
        else [BurnOut(grant_id=g, amount_ucr=a) for g, a in found.burns],
    )
