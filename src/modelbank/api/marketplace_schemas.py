"""HTTP bodies of the marketplace's listings and pricing suggestion (DESIGN §10, §12) and
their presenters (orders, allocations, disputes:
:mod:`modelbank.api.marketplace_trade_schemas`). Credits ``*_ucr`` in µcr with a display
string beside them; quota ``*_uusd`` in µUSD of provider spend; stake quantities in basis
points of a model's earnings; times UTC ISO 8601.

Units of a listing: a **quota** or **bundle** listing's ``quantity`` is µUSD of provider
spend and its ``unit_price_ucr`` is µcr per **USD** of spend (1,000,000 µUSD); a **stake**
listing's ``quantity`` is basis points and ``unit_price_ucr`` µcr per basis point
(:data:`modelbank.marketplace.records.QUOTA_PRICE_UNIT_UUSD`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt, model_validator

from modelbank.api.schemas import Id, Strict, Timestamp
from modelbank.marketplace.records import ListingView, PriceSuggestion, Reputation
from modelbank.money import format_credits

MAX_QUANTITY = 10**15
"""Largest quantity of a listing or an order: µUSD of quota ($1e9, a resource's largest
quota); a stake never exceeds 10,000 bps (the service checks it)."""
MAX_UNIT_PRICE_UCR = 10**12
"""Largest unit price (µcr per USD of quota or per basis point): totals stay < 2⁶³."""
MAX_BUNDLE_ITEMS = 20
"""Resources in one bundle (the service's bound: bounded work per fill)."""
MAX_ALLOCATION_DAYS = 3_650
"""Longest life of an allocation filled from a listing (ten years)."""

Quantity = Annotated[StrictInt, Field(gt=0, le=MAX_QUANTITY, description="units (> 0)")]
UnitPrice = Annotated[
    StrictInt,
    Field(
        ge=0,
        le=MAX_UNIT_PRICE_UCR,
        description="µcr per unit: per USD of provider spend (quota, bundle) or per basis"
        " point (stake)",
    ),
]
Kind = Literal["quota", "stake", "bundle"]
ListingStatus = Literal["open", "filled", "cancelled", "expired", "closed"]


# ---------------------------------------------------------------- requests


class BundleItemIn(Strict):
    resource_id: Id
    quantity_uusd: Quantity


class ListingIn(Strict):
    kind: Kind = Field(
        description="quota: µUSD of one resource's market part; bundle: quota on several of"
        " the seller's resources, bought whole; stake: basis points of a model stake"
    )
    resource_id: Id | None = Field(default=None, description="quota: the seller's resource")
    model_id: Id | None = Field(default=None, description="stake: the model")
    items: list[BundleItemIn] | None = Field(
        default=None,
        min_length=2,
        max_length=MAX_BUNDLE_ITEMS,
        description="bundle: each resource and its µUSD (the quantity is their sum)",
    )
    quantity: Quantity | None = Field(
        default=None, description="µUSD (quota) or bps (stake); omitted for a bundle"
    )
    unit_price_ucr: UnitPrice
    min_fill: Quantity | None = Field(
        default=None,
        description="smallest quantity one order buys (default: 1 µUSD for quota, all of a"
        " stake; a bundle is bought whole)",
    )
    expires_at: Timestamp | None = Field(
        default=None, description="the listing closes then (must be in the future)"
    )
    allocation_days: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_ALLOCATION_DAYS,
        description="quota, bundle: bought quota expires this many days after the fill"
        " (its unconsumed escrow returns to the buyer); never when omitted",
    )
    seller_id: Id | None = Field(
        default=None,
        description="admin or service keys: the user who sells (a user key sells for itself)",
    )

    @model_validator(mode="after")
    def _shape(self) -> ListingIn:
        if self.kind == "bundle":
            if self.items is None or self.resource_id is not None or self.model_id is not None:
                raise ValueError("a bundle lists its resources in items (no resource_id/model_id)")
            if self.quantity is not None and self.quantity != sum(
                i.quantity_uusd for i in self.items
            ):
                raise ValueError("a bundle's quantity is the sum of its items")
            return self
        if self.items is not None:
            raise ValueError("items are for a bundle")
        if self.quantity is None:
            raise ValueError("quantity is required")
        if self.kind == "quota" and (self.resource_id is None or self.model_id is not None):
            raise ValueError("a quota listing names resource_id (and no model_id)")
        if self.kind == "stake" and (self.model_id is None or self.resource_id is not None):
            raise ValueError("a stake listing names model_id (and no resource_id)")
        if self.kind == "stake" and self.allocation_days is not None:
            raise ValueError("allocation_days is for quota")
        if self.min_fill is not None and self.min_fill > self.quantity:
            raise ValueError("min_fill cannot exceed quantity")
        return self


class MarketPartIn(Strict):
    amount_uusd: Quantity = Field(
        description="µUSD of the resource's unconsumed pool part to move to its market part"
    )


class ListingPriceIn(Strict):
    unit_price_ucr: UnitPrice


class BuyIn(Strict):
    quantity: Quantity = Field(description="µUSD (quota), bps (stake); a bundle's whole size")
    max_unit_price_ucr: UnitPrice | None = Field(
        default=None,
        description="the most paid per unit (the price the buyer saw): a listing re-priced"
        " above it is refused with 409 market_price_changed",
    )
    buyer_id: Id | None = Field(
        default=None,
        description="admin or service keys: the user who buys (a user key buys for itself)",
    )


# ---------------------------------------------------------------- responses


def _unit(kind: str) -> str:
    return "bps" if kind == "stake" else "usd"


class ReputationOut(BaseModel):
    resource_id: int
    success_rate: float = Field(description="the router's success rate EWMA, 0…1 (measured)")
    latency_ms: float | None = Field(description="EWMA latency (None before any request)")
    ttft_ms: float | None = Field(description="EWMA time to first token")
    requests: int
    fills: int = Field(description="allocations sold on this resource")
    allocations_exhausted: int = Field(description="consumed in full")
    allocations_returned: int = Field(description="returned: the resource failed or left")


def reputation_out(r: Reputation) -> ReputationOut:
    return ReputationOut(
        resource_id=r.resource_id,
        success_rate=r.success_rate,
        latency_ms=r.latency_ms,
        ttft_ms=r.ttft_ms,
        requests=r.requests,
        fills=r.fills,
        allocations_exhausted=r.allocations_exhausted,
        allocations_returned=r.allocations_returned,
    )


class BundleItemOut(BaseModel):
    resource_id: int
    quantity_uusd: int


class ListingOut(BaseModel):
    id: int
    seller_id: int
    kind: Kind
    resource_id: int | None
    model_id: int | None
    items: list[BundleItemOut] = Field(description="a bundle's resources (empty otherwise)")
    quantity: int = Field(description="µUSD (quota, bundle) or bps (stake)")
    filled: int
    available: int = Field(description="quantity − filled while open; 0 otherwise")
    min_fill: int
    unit: Literal["usd", "bps"] = Field(description="what unit_price_ucr is per")
    unit_price_ucr: int
    unit_price: str
    price_ucr_per_mtok: int | None = Field(
        description="quota: µcr for 1M input + 1M output tokens of the cheapest model served,"
        " at this price (compare with the platform's); None for stakes or unknown costs"
    )
    models: list[int] = Field(description="catalog model ids the quota serves (the stake's)")
    reputation: list[ReputationOut] = Field(description="measured, per resource")
    status: ListingStatus
    expires_at: datetime | None
    allocation_days: int | None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None


def listing_out(v: ListingView) -> ListingOut:
    return ListingOut(
        id=v.id,
        seller_id=v.seller_id,
        kind=v.kind,
        resource_id=v.resource_id,
        model_id=v.model_id,
        items=[
            BundleItemOut(resource_id=i.resource_id, quantity_uusd=i.quantity_uusd) for i in v.items
        ],
        quantity=v.quantity,
        filled=v.filled,
        available=v.available,
        min_fill=v.min_fill,
        unit=_unit(v.kind),
        unit_price_ucr=v.unit_price_ucr,
        unit_price=format_credits(v.unit_price_ucr),
        price_ucr_per_mtok=v.price_ucr_per_mtok,
        models=list(v.models),
        reputation=[reputation_out(r) for r in v.reputation],
        status=v.status,
        expires_at=v.expires_at,
        allocation_days=v.allocation_days,
        created_at=v.created_at,
        updated_at=v.updated_at,
        closed_at=v.closed_at,
    )


class ListingPage(BaseModel):
    items: list[ListingOut]
    next_cursor: str | None


class PriceSuggestionOut(BaseModel):
    resource_id: int
    unit_price_ucr: int = Field(description="suggested µcr per USD of provider spend")
    unit_price: str
    platform_ucr: int | None = Field(
        description="the platform's own price for the same spend (None: no price in force)"
    )
    floor_ucr: int = Field(description="the least that returns the seller's cost basis")
    undercut_bps: int
    commission_bps: int


def suggestion_out(s: PriceSuggestion) -> PriceSuggestionOut:
    return PriceSuggestionOut(
        resource_id=s.resource_id,
        unit_price_ucr=s.unit_price_ucr,
        unit_price=format_credits(s.unit_price_ucr),
        platform_ucr=s.platform_ucr,
        floor_ucr=s.floor_ucr,
        undercut_bps=s.undercut_bps,
        commission_bps=s.commission_bps,
    )
