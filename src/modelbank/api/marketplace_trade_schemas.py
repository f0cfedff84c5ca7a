"""HTTP bodies of the marketplace's orders, allocations, disputes and admin view (DESIGN
§10, §12) and their presenters; the listings' are in :mod:`modelbank.api.marketplace_schemas`.
Credits ``*_ucr`` in µcr with a display string beside them; quota ``*_uusd`` in µUSD of
provider spend; times UTC ISO 8601."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from modelbank.api.marketplace_schemas import Kind
from modelbank.api.schemas import Strict
from modelbank.marketplace.records import (
    AllocationView,
    BuyResult,
    DisputeView,
    MarketSummary,
    OrderView,
)
from modelbank.money import format_credits, format_usd

MAX_REASON_LENGTH = 1_000
"""A dispute's or resolution's reason: a sentence or a short paragraph (the service's
bound)."""

Reason = Annotated[
    str, Field(min_length=1, max_length=MAX_REASON_LENGTH, pattern=r"^[^\x00]*\S[^\x00]*$")
]
OrderStatus = Literal["open", "closed"]
AllocationStatus = Literal["active", "exhausted", "returned", "expired", "refunded"]
DisputeStatus = Literal["open", "refunded", "released"]


class DisputeIn(Strict):
    reason: Reason = Field(description="what failed to serve")


class ResolutionIn(Strict):
    action: Literal["refund", "release"] = Field(
        description="refund: the unreleased escrow returns to the buyer; release: it is paid"
        " to the seller, less the commission, as if consumed"
    )
    reason: Reason = Field(description="recorded with the resolution")


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
