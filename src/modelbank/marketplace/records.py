"""What the marketplace's service functions return (frozen dataclasses; no ORM objects).

Money: ``*_ucr`` micro-credits, ``*_uusd`` micro-dollars, all integers; rates that are
measurements (success rate, latency) are floats, never money.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

QUOTA_PRICE_UNIT_UUSD = 1_000_000
"""A quota listing's ``unit_price_ucr`` is per USD of provider spend (1,000,000 µUSD): per
µUSD an integer price would move in steps of 1 % of the platform's cost-equivalent."""


@dataclass(frozen=True, slots=True)
class Reputation:
    """Facts the platform measured about a quota listing's resource (DESIGN §10): the
    router's success rate (EWMA, 0…1) and latency (EWMA ms, None before any request),
    requests seen, fills completed (orders on its listings), allocations exhausted
    (consumed in full) and returned (its resource failed or was withdrawn)."""

    resource_id: int
    success_rate: float
    latency_ms: float | None
    ttft_ms: float | None
    requests: int
    fills: int
    allocations_exhausted: int
    allocations_returned: int


@dataclass(frozen=True, slots=True)
class BundleItem:
    """One resource's quota in a bundle: ``quantity_uusd`` µUSD."""

    resource_id: int
    quantity_uusd: int


@dataclass(frozen=True, slots=True)
class ListingView:
    """A listing as shown to anyone. ``available`` = quantity − filled while open (0
    otherwise). ``models``: catalog model ids the quota serves (quota and bundle; the
    stake's model for a stake). ``price_ucr_per_mtok``: for quota, the price of 1M tokens
    of the cheapest-per-token model served at this listing's price (input + output rates
    of its provider cost, the "price per 1M tokens equivalent" to compare with the
    platform's), None when the cost is unknown."""

    id: int
    seller_id: int
    kind: str
    resource_id: int | None
    model_id: int | None
    quantity: int
    filled: int
    available: int
    min_fill: int
    unit_price_ucr: int
    status: str
    expires_at: datetime | None
    allocation_days: int | None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    items: tuple[BundleItem, ...] = ()
    models: tuple[int, ...] = ()
    price_ucr_per_mtok: int | None = None
    reputation: tuple[Reputation, ...] = ()


@dataclass(frozen=True, slots=True)
class ListingPage:
    """A page of listings; ``next_after_id`` is the cursor of the next page (None: last)."""

    items: list[ListingView]
    next_after_id: int | None


@dataclass(frozen=True, slots=True)
class OrderView:
    """A fill. ``in_escrow_ucr`` = paid − seller − commission − returned (0 once closed)."""

    id: int
    listing_id: int
    buyer_id: int
    seller_id: int
    kind: str
    quantity: int
    unit_price_ucr: int
    paid_ucr: int
    commission_bps: int
    seller_ucr: int
    commission_ucr: int
    returned_ucr: int
    in_escrow_ucr: int
    status: str
    created_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class AllocationView:
    """Quota a buyer holds on a resource. ``remaining_uusd`` = quantity − consumed (the part
    not yet consumed; ``held_uusd`` of it is reserved by calls in flight);
    ``released_ucr`` = seller + commission."""

    id: int
    order_id: int
    buyer_id: int
    seller_id: int
    resource_id: int
    quantity_uusd: int
    consumed_uusd: int
    held_uusd: int
    remaining_uusd: int
    paid_ucr: int
    released_ucr: int
    seller_ucr: int
    commission_ucr: int
    returned_ucr: int
    status: str
    expires_at: datetime | None
    created_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class BuyResult:
    """What :func:`~modelbank.marketplace.service.buy` did: the order, its allocations
    (quota and bundle; empty for a stake) and whether it replays an earlier buy with the
    same idempotency key (nothing moved this time)."""

    order: OrderView
    allocations: list[AllocationView]
    replayed: bool


@dataclass(frozen=True, slots=True)
class PriceSuggestion:
    """A quota listing's suggested ``unit_price_ucr`` (µcr per USD of provider spend,
    DESIGN §10 / issue 15 §4): the platform's own price for the resource's models per USD
    of their provider cost (the lowest over the models: the one a buyer compares with),
    less ``undercut_bps``, but never below ``floor_ucr``: what the seller must charge so
    that after the commission they get back their cost basis (1 USD of spend at the
    exchange rate). ``platform_ucr`` None when no served model has a price in force."""

    resource_id: int
    unit_price_ucr: int
    platform_ucr: int | None
    floor_ucr: int
    undercut_bps: int
    commission_bps: int


@dataclass(frozen=True, slots=True)
class DisputeView:
    """A dispute on an allocation; ``amount_ucr`` what its resolution moved."""

    id: int
    allocation_id: int
    buyer_id: int
    reason: str
    status: str
    resolution: str | None
    resolved_by: int | None
    amount_ucr: int
    created_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class MarketSummary:
    """The admin view: orders and their volume (µcr paid), commission earned, escrow still
    held, listings open, allocations active, disputes open."""

    orders: int
    volume_ucr: int
    commission_ucr: int
    open_escrow_ucr: int
    listings_open: int
    allocations_active: int
    disputes_open: int


@dataclass(frozen=True, slots=True)
class AllocationTarget:
    """For the gateway: the allocation that serves a buyer's call to a model first, its
    resource and how much µUSD is free to hold (quantity − consumed − held)."""

    allocation_id: int
    resource_id: int
    free_uusd: int


@dataclass(frozen=True, slots=True)
class UseResult:
    """A settled allocation call: cost booked (µUSD), escrow released (µcr, seller +
    commission) and whether the allocation is now exhausted."""

    allocation_id: int
    cost_uusd: int
    released_ucr: int
    exhausted: bool


def payload(**fields: Any) -> dict[str, Any]:
    """A webhook payload: datetimes as ISO 8601 strings, the rest as given."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in fields.items()}
