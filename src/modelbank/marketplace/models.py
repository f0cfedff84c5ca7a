"""Marketplace tables (DESIGN §10): listings (quota, stake, bundle), the items of a bundle,
orders with their escrow accounting, allocations of bought quota, the gateway calls served
from an allocation, and disputes.

Money columns: ``*_ucr`` micro-credits, ``*_uusd`` micro-dollars of provider spend, all
integers. Quantities: µUSD of provider spend for quota and bundles, basis points for stakes.

Escrow accounting, per order (and per allocation, which an order of quota is the sum of):
``paid_ucr = seller_ucr + commission_ucr + returned_ucr + in escrow``; a closed order has
nothing in escrow (``modelbank.marketplace.invariants``).
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
)
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, UTCDateTime

LISTING_KINDS = ("quota", "stake", "bundle")
"""quota: µUSD of one resource's market part; stake: basis points of a model's earnings;
bundle: quota on several resources of one seller, filled all or nothing."""
LISTING_STATUSES = ("open", "filled", "cancelled", "expired", "closed")
"""open (can be bought) → filled (nothing left) / cancelled (by the seller or an admin) /
expired (``expires_at`` passed) / closed (its resource ended)."""
ORDER_STATUSES = ("open", "closed")
"""open: escrow still holds part of the payment (quota being consumed); closed: none."""
ALLOCATION_STATUSES = ("active", "exhausted", "returned", "expired", "refunded")
"""active → exhausted (consumed to the µUSD: all escrow released) / returned (the resource
failed or was withdrawn) / expired / refunded (a dispute refunded it). Only ``active``
serves calls; the others hold nothing in escrow."""
USE_STATUSES = ("pending", "settled", "voided")
"""A gateway call on an allocation: pending (its bound held), settled, voided."""
DISPUTE_STATUSES = ("open", "refunded", "released")
"""open → refunded (the unconsumed escrow returned to the buyer) / released (to the seller)."""


class MarketListing(Base):
    """An offer by ``seller_id``: ``quantity`` units at ``unit_price_ucr``; ``filled`` sold so
    far. Quota and bundle: units are µUSD of provider spend and the price is µcr per USD
    (per 1,000,000 µUSD); stake: units are basis points and the price is µcr per basis point.
    ``min_fill``: the smallest quantity one order may buy (a bundle's is its quantity)."""

    __tablename__ = "marketplace_listings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seller_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[int | None] = mapped_column(ForeignKey("resources.id"), nullable=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), nullable=True)
    quantity: Mapped[int] = mapped_column(BigInteger)
    filled: Mapped[int] = mapped_column(BigInteger, default=0)
    min_fill: Mapped[int] = mapped_column(BigInteger)
    unit_price_ucr: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    allocation_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Quota: an allocation bought from it expires this many days after the fill (None:
    never; its unconsumed escrow then returns only when the resource ends)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint(
            "quantity > 0 AND filled >= 0 AND filled <= quantity AND min_fill > 0"
            " AND min_fill <= quantity AND unit_price_ucr >= 0",
            name="market_listing_amounts",
        ),
        Index("ix_marketplace_listings_status", "status", "kind", "id"),
        Index("ix_marketplace_listings_seller", "seller_id", "id"),
        Index("ix_marketplace_listings_resource", "resource_id", "status"),
    )


class MarketBundleItem(Base):
    """One resource's quota in a bundle listing (``quantity_uusd`` of its market part)."""

    __tablename__ = "marketplace_bundle_items"

    listing_id: Mapped[int] = mapped_column(ForeignKey("marketplace_listings.id"), primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id"), primary_key=True)
    quantity_uusd: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("quantity_uusd > 0", name="market_bundle_item_quantity"),
        Index("ix_marketplace_bundle_items_resource", "resource_id"),
    )


class MarketOrder(Base):
    """A fill of a listing by ``buyer_id``: ``quantity`` units for ``paid_ucr`` µcr, moved from
    the buyer's wallet into ``marketplace_escrow`` (transfer ``escrow_transfer_id``; its
    grants burned with ref ``('marketplace_order', id)``). ``commission_bps`` is frozen at
    fill time. Released so far: ``seller_ucr`` to the seller, ``commission_ucr`` to
    ``platform_fees``; ``returned_ucr`` back to the buyer. ``idempotency_key`` is unique per
    buyer; ``request_hash`` the hash of (listing, quantity) it was first used with."""

    __tablename__ = "marketplace_orders"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    listing_id: Mapped[int] = mapped_column(ForeignKey("marketplace_listings.id"))
    buyer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    seller_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[int] = mapped_column(BigInteger)
    unit_price_ucr: Mapped[int] = mapped_column(BigInteger)
    paid_ucr: Mapped[int] = mapped_column(BigInteger)
    basis_uusd: Mapped[int] = mapped_column(BigInteger, default=0)
    """Cost basis (µUSD) of the buyer's grants the payment burned."""
    commission_bps: Mapped[int] = mapped_column(Integer)
    seller_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    commission_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    returned_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    escrow_transfer_id: Mapped[int | None] = mapped_column(
        ForeignKey("transfers.id"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint(
            "quantity > 0 AND paid_ucr >= 0 AND seller_ucr >= 0 AND commission_ucr >= 0"
            " AND returned_ucr >= 0 AND seller_ucr + commission_ucr + returned_ucr <= paid_ucr"
            " AND commission_bps >= 0 AND commission_bps <= 10000",
            name="market_order_amounts",
        ),
        Index("uq_marketplace_orders_key", "buyer_id", "idempotency_key", unique=True),
        Index("ix_marketplace_orders_listing", "listing_id", "id"),
        Index("ix_marketplace_orders_seller", "seller_id", "id"),
        Index("ix_marketplace_orders_status", "status", "id"),
    )


class MarketAllocation(Base):
    """Quota bought by ``buyer_id`` on ``resource_id``: ``quantity_uusd`` of provider spend,
    paid ``paid_ucr`` (its share of the order's payment). The gateway serves the buyer's
    calls to the resource's models from it first, at provider cost: ``held_uusd`` is the
    bound of calls in flight, ``consumed_uusd`` what they cost. Escrow released to the seller
    so far: ``seller_ucr`` + ``commission_ucr`` = ``paid × consumed / quantity`` (rounded
    half-even once, cumulatively); ``returned_ucr`` went back to the buyer when it ended."""

    __tablename__ = "marketplace_allocations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("marketplace_orders.id"))
    buyer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    seller_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id"))
    quantity_uusd: Mapped[int] = mapped_column(BigInteger)
    consumed_uusd: Mapped[int] = mapped_column(BigInteger, default=0)
    held_uusd: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_ucr: Mapped[int] = mapped_column(BigInteger)
    seller_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    commission_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    returned_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint(
            "quantity_uusd > 0 AND consumed_uusd >= 0 AND consumed_uusd <= quantity_uusd"
            " AND held_uusd >= 0 AND paid_ucr >= 0 AND seller_ucr >= 0 AND commission_ucr >= 0"
            " AND returned_ucr >= 0 AND seller_ucr + commission_ucr + returned_ucr <= paid_ucr",
            name="market_allocation_amounts",
        ),
        Index("ix_marketplace_allocations_buyer", "buyer_id", "status", "id"),
        Index("ix_marketplace_allocations_resource", "resource_id", "status"),
        Index("ix_marketplace_allocations_order", "order_id"),
    )


class MarketAllocationUse(Base):
    """One gateway call served from an allocation: ``held_uusd`` reserved at admission,
    ``cost_uusd`` the provider cost booked at settlement. Keyed by the gateway's request id,
    so no call settles twice."""

    __tablename__ = "marketplace_allocation_uses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    allocation_id: Mapped[int] = mapped_column(ForeignKey("marketplace_allocations.id"))
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    held_uusd: Mapped[int] = mapped_column(BigInteger)
    cost_uusd: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    released_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    """Escrow released to seller and commission by this call's settlement."""
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint("held_uusd >= 0 AND cost_uusd >= 0", name="market_use_amounts"),
        Index("ix_marketplace_allocation_uses_allocation", "allocation_id", "id"),
        Index("ix_marketplace_allocation_uses_status", "status", "expires_at"),
    )


class MarketDispute(Base):
    """A buyer's claim that an allocation failed to serve; an admin resolves it by refunding
    the unconsumed escrow to the buyer or releasing it to the seller, with a reason."""

    __tablename__ = "marketplace_disputes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    allocation_id: Mapped[int] = mapped_column(ForeignKey("marketplace_allocations.id"))
    buyer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(16))
    resolution: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    amount_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    """µcr the resolution moved (refunded or released)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_marketplace_disputes_status", "status", "id"),
        Index("ix_marketplace_disputes_allocation", "allocation_id"),
    )


listings_table = cast(Table, MarketListing.__table__)
bundle_items_table = cast(Table, MarketBundleItem.__table__)
orders_table = cast(Table, MarketOrder.__table__)
allocations_table = cast(Table, MarketAllocation.__table__)
uses_table = cast(Table, MarketAllocationUse.__table__)
disputes_table = cast(Table, MarketDispute.__table__)
