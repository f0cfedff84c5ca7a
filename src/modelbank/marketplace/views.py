"""Reading orders, allocations and disputes, scoped to the caller: ``user_id`` None reads as an
admin (everything); a user sees the orders they bought or sold, the allocations they hold or
sold, and their own disputes. Another user's row is reported as not found (never revealed).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from modelbank.marketplace.errors import AllocationNotFound, MarketOrderNotFound
from modelbank.marketplace.models import allocations_table as allocations
from modelbank.marketplace.models import disputes_table as disputes
from modelbank.marketplace.models import listings_table as listings
from modelbank.marketplace.models import orders_table as orders
from modelbank.marketplace.records import AllocationView, DisputeView, MarketSummary, OrderView

PAGE_LIMIT = 200
"""Most rows one page returns."""
ROLES = ("buyer", "seller", "any")


def order_view(row: Any) -> OrderView:
    """An :class:`OrderView` of an ``orders`` row."""
    paid = int(row.paid_ucr)
    seller, commission, returned = (
        int(row.seller_ucr),
        int(row.commission_ucr),
        int(row.returned_ucr),
    )
    return OrderView(
        id=int(row.id),
        listing_id=int(row.listing_id),
        buyer_id=int(row.buyer_id),
        seller_id=int(row.seller_id),
        kind=row.kind,
        quantity=int(row.quantity),
        unit_price_ucr=int(row.unit_price_ucr),
        paid_ucr=paid,
        commission_bps=int(row.commission_bps),
        seller_ucr=seller,
        commission_ucr=commission,
        returned_ucr=returned,
        in_escrow_ucr=paid - seller - commission - returned,
        status=row.status,
        created_at=row.created_at,
        closed_at=row.closed_at,
    )


def allocation_view(row: Any) -> AllocationView:
    """An :class:`AllocationView` of an ``allocations`` row."""
    quantity, consumed = int(row.quantity_uusd), int(row.consumed_uusd)
    seller, commission = int(row.seller_ucr), int(row.commission_ucr)
    return AllocationView(
        id=int(row.id),
        order_id=int(row.order_id),
        buyer_id=int(row.buyer_id),
        seller_id=int(row.seller_id),
        resource_id=int(row.resource_id),
        quantity_uusd=quantity,
        consumed_uusd=consumed,
        held_uusd=int(row.held_uusd),
        remaining_uusd=quantity - consumed,
        paid_ucr=int(row.paid_ucr),
        released_ucr=seller + commission,
        seller_ucr=seller,
        commission_ucr=commission,
        returned_ucr=int(row.returned_ucr),
        status=row.status,
        expires_at=row.expires_at,
        created_at=row.created_at,
        closed_at=row.closed_at,
    )


def dispute_view(row: Any) -> DisputeView:
    """A :class:`DisputeView` of a ``disputes`` row."""
    return DisputeView(
        id=int(row.id),
        allocation_id=int(row.allocation_id),
        buyer_id=int(row.buyer_id),
        reason=row.reason,
        status=row.status,
        resolution=row.resolution,
        resolved_by=None if row.resolved_by is None else int(row.resolved_by),
        amount_ucr=int(row.amount_ucr),
        created_at=row.created_at,
        resolved_at=row.resolved_at,
    )


def get_order(session: Session, order_id: int, *, user_id: int | None = None) -> OrderView:
    """See :func:`modelbank.marketplace.service.get_order`."""
    query = select(orders).where(orders.c.id == order_id)
    if user_id is not None:
        query = query.where(or_(orders.c.buyer_id == user_id, orders.c.seller_id == user_id))
    row = session.connection().execute(query).first()
    if row is None:
        raise MarketOrderNotFound(f"no order {order_id}", order_id=order_id)
    return order_view(row)


def list_orders(
    session: Session, user_id: int, *, role: str = "any", after_id: int = 0, limit: int = 50
) -> list[OrderView]:
    """See :func:`modelbank.marketplace.service.list_orders`."""
    who = {
        "buyer": orders.c.buyer_id == user_id,
        "seller": orders.c.seller_id == user_id,
        "any": or_(orders.c.buyer_id == user_id, orders.c.seller_id == user_id),
    }.get(role)
    if who is None:
        raise ValueError(f"role must be one of {ROLES}")
    rows = session.connection().execute(
        select(orders)
        .where(who, orders.c.id > after_id)
        .order_by(orders.c.id)
        .limit(max(1, min(limit, PAGE_LIMIT)))
    )
    return [order_view(r) for r in rows]


def get_allocation(
    session: Session, allocation_id: int, *, user_id: int | None = None
) -> AllocationView:
    """See :func:`modelbank.marketplace.service.get_allocation`."""
    query = select(allocations).where(allocations.c.id == allocation_id)
    if user_id is not None:
        query = query.where(
            or_(allocations.c.buyer_id == user_id, allocations.c.seller_id == user_id)
        )
    row = session.connection().execute(query).first()
    if row is None:
        raise AllocationNotFound(f"no allocation {allocation_id}", allocation_id=allocation_id)
    return allocation_view(row)


def list_allocations(
    session: Session,
    user_id: int,
    *,
    role: str = "buyer",
    status: str | None = None,
    after_id: int = 0,
    limit: int = 50,
) -> list[AllocationView]:
    """See :func:`modelbank.marketplace.service.list_allocations`."""
    who = {
        "buyer": allocations.c.buyer_id == user_id,
        "seller": allocations.c.seller_id == user_id,
        "any": or_(allocations.c.buyer_id == user_id, allocations.c.seller_id == user_id),
    }.get(role)
    if who is None:
        raise ValueError(f"role must be one of {ROLES}")
    query = select(allocations).where(who, allocations.c.id > after_id)
    if status is not None:
        query = query.where(allocations.c.status == status)
    rows = session.connection().execute(
        query.order_by(allocations.c.id).limit(max(1, min(limit, PAGE_LIMIT)))
    )
    return [allocation_view(r) for r in rows]


def allocations_of_order(session: Session, order_id: int) -> list[AllocationView]:
    """The allocations an order created, by id."""
    rows = session.connection().execute(
        select(allocations).where(allocations.c.order_id == order_id).order_by(allocations.c.id)
    )
    return [allocation_view(r) for r in rows]


def summary(session: Session) -> MarketSummary:
    """See :func:`modelbank.marketplace.service.admin_summary`."""
    conn = session.connection()
    count, volume, commission, escrowed = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(orders.c.paid_ucr), 0),
            func.coalesce(func.sum(orders.c.commission_ucr), 0),
            func.coalesce(
                func.sum(
                    orders.c.paid_ucr
                    - orders.c.seller_ucr
                    - orders.c.commission_ucr
                    - orders.c.returned_ucr
                ),
                0,
            ),
        )
    ).one()
    listings_open = conn.execute(
        select(func.count()).select_from(listings).where(listings.c.status == "open")
    ).scalar_one()
    active = conn.execute(
        select(func.count()).select_from(allocations).where(allocations.c.status == "active")
    ).scalar_one()
    disputes_open = conn.execute(
        select(func.count()).select_from(disputes).where(disputes.c.status == "open")
    ).scalar_one()
    return MarketSummary(
        orders=int(count),
        volume_ucr=int(volume),
        commission_ucr=int(commission),
        open_escrow_ucr=int(escrowed),
        listings_open=int(listings_open),
        allocations_active=int(active),
        disputes_open=int(disputes_open),
    )
