"""HTTP bodies of the marketplace routes (DESIGN §10, §12) and their presenters. Credits
``*_ucr`` in µcr with a display string beside them; quota ``*_uusd`` in µUSD of provider
spend; stake quantities in basis points of a model's earnings; times UTC ISO 8601.

Units of a listing: a **quota** or **bundle** listing's ``quantity`` is µUSD of provider
spend and its ``unit_price_ucr`` is µcr per **USD** of spend (1,000,000 µUSD); a **stake**
listing's ``quantity`` is basis points and ``unit_price_ucr`` µcr per basis point
(:data:`modelbank.marketplace.records.QUOTA_PRICE_UNIT_UUSD`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from modelbank.api.schemas import Id, Strict, Timestamp
from modelbank.marketplace.records import (
    AllocationView,
    BuyResult,
    DisputeView,
    ListingView,
    MarketSummary,
    OrderView,
    PriceSuggestion,
    Reputation,
)
from modelbank.money import format_credits, format_usd

MAX_QUANTITY = 10**15
"""Largest quantity of a listing or an order: µUSD of quota ($1e9, a resource's largest
quota); a stake never exceeds 10,000 bps (the service checks it)."""
MAX_UNIT_PRICE_UCR = 10**12
"""Largest unit price (µcr per USD of quota or per basis point): totals stay < 2⁶³."""
MAX_BUNDLE_ITEMS = 20
"""Resources in one bundle (the service's bound: bounded work per fill)."""
MAX_ALLOCATION_DAYS = 3_650
"""Longest life of an allocation filled from a listing (ten years)."""
MAX_REASON_LENGTH = 1_000
"""A dispute's or resolution's reason: a sentence or a short paragraph."""

Quantity = Annotated[int, Field(gt=0, le=MAX_QUANTITY, description="units (> 0)")]
UnitPrice = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_UNIT_PRICE_UCR,
        description="µcr per unit: per USD of provider spend (quota, bundle) or per basis"
        " point (stake)",
    ),
]
Reason = Annotated[
    str, Field(min_length=1, max_length=MAX_REASON_LENGTH, pattern=r"^[^\x00]*\S[^\x00]*$")
]
Kind = Literal["quota", "stake", "bundle"]
ListingStatus = Literal["open", "filled", "cancelled", "expired", "closed"]
OrderStatus = Literal["open", "closed"]
AllocationStatus = Literal["active", "exhausted", "returned", "expired", "refunded"]
DisputeStatus = Literal["open", "refunded", "released"]


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
    allocation_days: int | None = Field(
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


class ListingPriceIn(Strict):
    unit_price_ucr: UnitPrice


class BuyIn(Strict):
    quantity: Quantity = Field(description="µUSD (quota), bps (stake); a bundle's whole size")
    buyer_id: Id | None = Field(
        default=None,
        description="admin or service keys: the user who buys (a user key buys for itself)",
    )


class DisputeIn(Strict):
    reason: Reason = Field(description="what failed to serve")


class ResolutionIn(Strict):
    action: Literal["refund", "release"] = Field(
        description="refund: the unreleased escrow returns to the buyer; release: it is paid"
        " to the seller, less the commission, as if consumed"
    )
    reason: Reason = Field(description="recorded with the resolution")


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


class AllocationOut(BaseModel):
    id: int
    order_id: int
    buyer_id: int
    seller_id: int
    resource_id: int
    quantity_uusd: int = Field(description="quota bought (µUSD of provider spend)")
    consumed_uusd: int
    held_uusd: int = Field(description="reserved by gateway calls in flight")
    remaining_uusd: int = Field(description="quantity − consumed")
    remaining: str
    paid_ucr: int = Field(description="this allocation's share of the order's payment")
    released_ucr: int = Field(description="escrow released: seller + commission")
    released: str
    seller_ucr: int
    commission_ucr: int
    returned_ucr: int = Field(description="escrow returned to the buyer")
    in_escrow_ucr: int = Field(description="paid − released − returned")
    status: AllocationStatus
    expires_at: datetime | None
    created_at: datetime
    closed_at: datetime | None


def allocation_out(a: AllocationView) -> AllocationOut:
    in_escrow = a.paid_ucr - a.released_ucr - a.returned_ucr
    return AllocationOut(
        id=a.id,
        order_id=a.order_id,
        buyer_id=a.buyer_id,
        seller_id=a.seller_id,
        resource_id=a.resource_id,
        quantity_uusd=a.quantity_uusd,
        consumed_uusd=a.consumed_uusd,
        held_uusd=a.held_uusd,
        remaining_uusd=a.remaining_uusd,
        remaining=format_usd(a.remaining_uusd, 6),
        paid_ucr=a.paid_ucr,
        released_ucr=a.released_ucr,
        released=format_credits(a.released_ucr),
        seller_ucr=a.seller_ucr,
        commission_ucr=a.commission_ucr,
        returned_ucr=a.returned_ucr,
        in_escrow_ucr=in_escrow,
        status=a.status,
        expires_at=a.expires_at,
        created_at=a.created_at,
        closed_at=a.closed_at,
    )


class AllocationPage(BaseModel):
    items: list[AllocationOut]
    next_cursor: str | None


class OrderOut(BaseModel):
    id: int
    listing_id: int
    buyer_id: int
    seller_id: int
    kind: Kind
    quantity: int
    unit_price_ucr: int
    paid_ucr: int = Field(description="moved from the buyer's wallet into escrow")
    paid: str
    commission_bps: int = Field(description="frozen at fill time")
    seller_ucr: int = Field(description="released to the seller so far")
    commission_ucr: int = Field(description="released to the platform's fees so far")
    returned_ucr: int = Field(description="returned to the buyer so far")
    in_escrow_ucr: int = Field(description="paid − seller − commission − returned")
    in_escrow: str
    status: OrderStatus
    created_at: datetime
    closed_at: datetime | None


def order_out(o: OrderView) -> OrderOut:
    return OrderOut(
        id=o.id,
        listing_id=o.listing_id,
        buyer_id=o.buyer_id,
        seller_id=o.seller_id,
        kind=o.kind,
        quantity=o.quantity,
        unit_price_ucr=o.unit_price_ucr,
        paid_ucr=o.paid_ucr,
        paid=format_credits(o.paid_ucr),
        commission_bps=o.commission_bps,
        seller_ucr=o.seller_ucr,
        commission_ucr=o.commission_ucr,
        returned_ucr=o.returned_ucr,
        in_escrow_ucr=o.in_escrow_ucr,
        in_escrow=format_credits(o.in_escrow_ucr),
        status=o.status,
        created_at=o.created_at,
        closed_at=o.closed_at,
    )


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None


class BuyOut(OrderOut):
    allocations: list[AllocationOut] = Field(
        description="quota and bundle: the quota now the buyer's (empty for a stake)"
    )


def buy_out(result: BuyResult) -> BuyOut:
    return BuyOut(
        **order_out(result.order).model_dump(),
        allocations=[allocation_out(a) for a in result.allocations],
    )


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


class DisputeOut(BaseModel):
    id: int
    allocation_id: int
    buyer_id: int
    reason: str
    status: DisputeStatus
    resolution: str | None = Field(description="the admin's reason")
    resolved_by: int | None = Field(description="the admin key that resolved it")
    amount_ucr: int = Field(description="µcr the resolution refunded or released")
    created_at: datetime
    resolved_at: datetime | None


def dispute_out(d: DisputeView) -> DisputeOut:
    return DisputeOut(
        id=d.id,
        allocation_id=d.allocation_id,
        buyer_id=d.buyer_id,
        reason=d.reason,
        status=d.status,
        resolution=d.resolution,
        resolved_by=d.resolved_by,
        amount_ucr=d.amount_ucr,
        created_at=d.created_at,
        resolved_at=d.resolved_at,
    )


class DisputePage(BaseModel):
    items: list[DisputeOut]
    next_cursor: str | None


class MarketPanelOut(BaseModel):
    orders: int
    volume_ucr: int = Field(description="µcr paid into escrow over every order")
    volume: str
    commission_ucr: int = Field(description="released to the platform's fees")
    commission: str
    open_escrow_ucr: int = Field(description="still held in marketplace_escrow")
    open_escrow: str
    listings_open: int
    allocations_active: int
    disputes_open: int
    disputes: list[DisputeOut] = Field(description="the oldest open disputes")


def panel_out(s: MarketSummary, disputes: list[DisputeView]) -> MarketPanelOut:
    return MarketPanelOut(
        orders=s.orders,
        volume_ucr=s.volume_ucr,
        volume=format_credits(s.volume_ucr),
        commission_ucr=s.commission_ucr,
        commission=format_credits(s.commission_ucr),
        open_escrow_ucr=s.open_escrow_ucr,
        open_escrow=format_credits(s.open_escrow_ucr),
        listings_open=s.listings_open,
        allocations_active=s.allocations_active,
        disputes_open=s.disputes_open,
        disputes=[dispute_out(d) for d in disputes],
    )
