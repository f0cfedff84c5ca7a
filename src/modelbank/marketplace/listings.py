"""Listings (DESIGN §10): create, read, browse, re-price, cancel.

A **quota** listing offers µUSD of the **market part** of one of the seller's resources;
the resource must have passed its probe, be ``active`` and have its breaker closed
(the "API key verification before listing" wish). The market part is never offered twice:
per resource, open listings' unfilled quantity + bundle items of open bundles + active
allocations' quantity + closed allocations' consumption ≤ ``market_quota_uusd``
(:func:`reserved_uusd`). The pool part is never listed: it was credited at deposit.

A **stake** listing offers basis points of a model stake the seller holds, beyond what their
open listings (here and in :mod:`modelbank.earnings.stakes`) already offer; at fill time the
seller must still hold it.

A **bundle** holds quota on several resources of the same seller; it is bought whole.

Locks: a listing row is locked (``FOR UPDATE``) before anything it moves: every buyer of one
listing queues on that row, so concurrent fills never overfill it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from modelbank.catalog import service as catalog
from modelbank.db.base import utcnow
from modelbank.earnings import stakes as earnings_stakes
from modelbank.earnings.errors import StakeUnavailable
from modelbank.marketplace.errors import (
    InvalidListing,
    MarketListingNotFound,
    MarketListingState,
    QuotaUnavailable,
    ResourceNotListable,
)
from modelbank.marketplace.models import allocations_table as allocations
from modelbank.marketplace.models import bundle_items_table as bundle_items
from modelbank.marketplace.models import listings_table as listings
from modelbank.marketplace.records import (
    QUOTA_PRICE_UNIT_UUSD,
    BundleItem,
    ListingPage,
    ListingView,
)
from modelbank.marketplace.reputation import reputations
from modelbank.pool.models import resource_health_table as health
from modelbank.pool.models import resource_models_table as served
from modelbank.pool.resources import get_resource
from modelbank.pricing import service as pricing
from modelbank.users import service as users

OPEN = "open"
MAX_QUANTITY = 10**15
"""Largest quantity (µUSD: $1e9, as a resource's quota; bps never exceed 10,000)."""
MAX_UNIT_PRICE_UCR = 10**12
"""Largest unit price: 1,000,000 credits per USD or per basis point keeps totals < 2⁶³."""
MAX_BUNDLE_ITEMS = 20
"""Resources per bundle (bounded work per fill)."""
MAX_ALLOCATION_DAYS = 3_650
PAGE_LIMIT = 200
"""Most listings one page returns."""
STAKE_BPS = 10_000


def _check_amounts(quantity: int, unit_price_ucr: int, min_fill: int) -> None:
    for name, value, low, high in (
        ("quantity", quantity, 1, MAX_QUANTITY),
        ("unit_price_ucr", unit_price_ucr, 0, MAX_UNIT_PRICE_UCR),
        ("min_fill", min_fill, 1, quantity),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidListing(f"{name} must be an integer in {low}…{high}", **{name: value})


def check_listable(session: Session, resource_id: int, seller_id: int) -> None:
    """Raise :class:`ResourceNotListable` unless the resource is the seller's, passed its
    probe (activated), is ``active`` (or ``depleted``: its pool part used up, the market part
    is separate) and its breaker is not open.
    :class:`~modelbank.pool.errors.ResourceNotFound` for another user's resource."""
    info = get_resource(session, resource_id, owner_id=seller_id, admin=False)
    breaker = (
        session.connection()
        .execute(select(health.c.breaker).where(health.c.resource_id == resource_id))
        .scalar()
    )
    serving = info.status in ("active", "depleted")  # depleted: its *pool* part is used up
    if not serving or info.activated_at is None or breaker == "open":
        raise ResourceNotListable(
            f"resource {resource_id} is {info.status}"
            + (", its breaker open" if breaker == "open" else "")
            + ": only an active, probed, healthy resource can be listed",
            resource_id=resource_id,
            status=info.status,
        )


def reserved_uusd(session: Session, resource_id: int) -> int:
    """µUSD of the resource's market part already offered or sold: open quota listings'
    unfilled quantity, open bundles' items, active allocations' quantity and closed
    allocations' consumption."""
    conn = session.connection()
    listed = conn.execute(
        select(func.coalesce(func.sum(listings.c.quantity - listings.c.filled), 0)).where(
            listings.c.resource_id == resource_id,
            listings.c.kind == "quota",
            listings.c.status == OPEN,
        )
    ).scalar_one()
    bundled = conn.execute(
        select(func.coalesce(func.sum(bundle_items.c.quantity_uusd), 0))
        .select_from(bundle_items.join(listings, listings.c.id == bundle_items.c.listing_id))
        .where(bundle_items.c.resource_id == resource_id, listings.c.status == OPEN)
    ).scalar_one()
    allocated = conn.execute(
        select(
            func.coalesce(
                func.sum(
                    case(
                        (allocations.c.status == "active", allocations.c.quantity_uusd),
                        else_=allocations.c.consumed_uusd,
                    )
                ),
                0,
            )
        ).where(allocations.c.resource_id == resource_id)
    ).scalar_one()
    return int(listed) + int(bundled) + int(allocated)


def _check_quota(session: Session, resource_id: int, quantity: int) -> None:
    info = get_resource(session, resource_id, lock=True)
    reserved = reserved_uusd(session, resource_id)
    if reserved + quantity > info.market_quota_uusd:
        raise QuotaUnavailable(
            f"resource {resource_id}'s market part is {info.market_quota_uusd} µUSD,"
            f" {reserved} µUSD of it already offered or sold: cannot list {quantity} µUSD",
            resource_id=resource_id,
            market_quota_uusd=info.market_quota_uusd,
            reserved_uusd=reserved,
            quantity=quantity,
        )


def _check_stake(session: Session, model_id: int, seller_id: int, bps: int) -> None:
    if bps > STAKE_BPS:
        raise InvalidListing(f"a stake listing offers at most {STAKE_BPS} bps", quantity=bps)
    held = dict(earnings_stakes.get_stakes(session, model_id)).get(seller_id, 0)
    offered = earnings_stakes.listed_bps(session, model_id).get(seller_id, 0)
    offered += int(
        session.connection()
        .execute(
            select(func.coalesce(func.sum(listings.c.quantity - listings.c.filled), 0)).where(
                listings.c.model_id == model_id,
                listings.c.seller_id == seller_id,
                listings.c.kind == "stake",
                listings.c.status == OPEN,
            )
        )
        .scalar_one()
    )
    if held - offered < bps:
        raise StakeUnavailable(
            f"user {seller_id} holds {held} bps of model {model_id}, {offered} bps already"
            f" listed: cannot list {bps} bps",
            held_bps=held,
            listed_bps=offered,
            share_bps=bps,
        )


def create_listing(
    session: Session,
    seller_id: int,
    *,
    kind: str,
    quantity: int,
    unit_price_ucr: int,
    resource_id: int | None = None,
    model_id: int | None = None,
    min_fill: int | None = None,
    expires_at: datetime | None = None,
    allocation_days: int | None = None,
    items: Sequence[tuple[int, int]] = (),
    now: datetime | None = None,
) -> ListingView:
    """See :func:`modelbank.marketplace.service.create_listing`."""
    now = now or utcnow()
    users.get_user(session, seller_id)
    if kind == "bundle":
        if not 2 <= len(items) <= MAX_BUNDLE_ITEMS:
            raise InvalidListing(f"a bundle holds 2…{MAX_BUNDLE_ITEMS} resources")
        if len({r for r, _ in items}) != len(items):
            raise InvalidListing("a bundle names each resource once")
        quantity = sum(q for _, q in items)
        min_fill = quantity
    elif min_fill is None:
        min_fill = quantity if kind == "stake" else min(quantity, 1)
    _check_amounts(quantity, unit_price_ucr, min_fill)
    if expires_at is not None and expires_at <= now:
        raise InvalidListing("expires_at must be in the future")
    if allocation_days is not None and not 1 <= allocation_days <= MAX_ALLOCATION_DAYS:
        raise InvalidListing(f"allocation_days must be 1…{MAX_ALLOCATION_DAYS}")
    if kind == "quota":
        if resource_id is None or model_id is not None:
            raise InvalidListing("a quota listing names a resource_id (and no model_id)")
        check_listable(session, resource_id, seller_id)
        _check_quota(session, resource_id, quantity)
    elif kind == "stake":
        if model_id is None or resource_id is not None:
            raise InvalidListing("a stake listing names a model_id (and no resource_id)")
        catalog.get_model(session, model_id)
        _check_stake(session, model_id, seller_id, quantity)
    elif kind == "bundle":
        if resource_id is not None or model_id is not None:
            raise InvalidListing("a bundle lists its resources in items")
        for item_resource, item_quantity in sorted(items):
            _check_amounts(item_quantity, unit_price_ucr, 1)
            check_listable(session, item_resource, seller_id)
            _check_quota(session, item_resource, item_quantity)
    else:
        raise InvalidListing(f"kind must be quota, stake or bundle, got {kind!r}")
    conn = session.connection()
    listing_id = int(
        conn.execute(
            listings.insert()
            .values(
                seller_id=seller_id,
                kind=kind,
                resource_id=resource_id,
                model_id=model_id,
                quantity=quantity,
                filled=0,
                min_fill=min_fill,
                unit_price_ucr=unit_price_ucr,
                status=OPEN,
                expires_at=expires_at,
                allocation_days=None if kind == "stake" else allocation_days,
                created_at=now,
                updated_at=now,
            )
            .returning(listings.c.id)
        ).scalar_one()
    )
    if kind == "bundle":
        conn.execute(
            bundle_items.insert(),
            [
                {"listing_id": listing_id, "resource_id": r, "quantity_uusd": q}
                for r, q in sorted(items)
            ],
        )
    return get_listing(session, listing_id)


def lock_listing(session: Session, listing_id: int) -> Any:
    """The listing's row under a row lock. Raises :class:`MarketListingNotFound`."""
    row = (
        session.connection()
        .execute(select(listings).where(listings.c.id == listing_id).with_for_update())
        .first()
    )
    if row is None:
        raise MarketListingNotFound(f"no listing {listing_id}", listing_id=listing_id)
    return row


def require_open(row: Any, now: datetime) -> None:
    """Raise :class:`MarketListingState` unless the listing is open and not expired."""
    expired = row.expires_at is not None and row.expires_at <= now
    if row.status != OPEN or expired:
        status = "expired" if row.status == OPEN else row.status
        raise MarketListingState(
            f"listing {row.id} is {status}", listing_id=int(row.id), status=status
        )


def update_price(
    session: Session,
    listing_id: int,
    unit_price_ucr: int,
    *,
    seller_id: int | None,
    now: datetime | None = None,
) -> ListingView:
    """See :func:`modelbank.marketplace.service.update_price`."""
    now = now or utcnow()
    row = lock_listing(session, listing_id)
    if seller_id is not None and int(row.seller_id) != seller_id:
        raise MarketListingNotFound(f"no listing {listing_id}", listing_id=listing_id)
    require_open(row, now)
    _check_amounts(int(row.quantity), unit_price_ucr, 1)
    session.connection().execute(
        update(listings)
        .where(listings.c.id == listing_id)
        .values(unit_price_ucr=unit_price_ucr, updated_at=now)
    )
    return get_listing(session, listing_id)


def cancel_listing(
    session: Session, listing_id: int, *, seller_id: int | None, now: datetime | None = None
) -> ListingView:
    """See :func:`modelbank.marketplace.service.cancel_listing`."""
    now = now or utcnow()
    row = lock_listing(session, listing_id)
    if seller_id is not None and int(row.seller_id) != seller_id:
        raise MarketListingNotFound(f"no listing {listing_id}", listing_id=listing_id)
    if row.status != OPEN:
        raise MarketListingState(
            f"listing {listing_id} is {row.status}", listing_id=listing_id, status=row.status
        )
    close_listings(session, [listing_id], "cancelled", now)
    return get_listing(session, listing_id)


def close_listings(session: Session, ids: Sequence[int], status: str, now: datetime) -> None:
    """Set open listings ``ids`` to ``status`` (cancelled, expired, closed)."""
    if ids:
        session.connection().execute(
            update(listings)
            .where(listings.c.id.in_(list(ids)), listings.c.status == OPEN)
            .values(status=status, updated_at=now, closed_at=now)
        )


def expire_due(session: Session, *, now: datetime, limit: int = 500) -> int:
    """Mark open listings whose ``expires_at`` passed as expired; return how many."""
    ids = [
        int(i)
        for i in session.connection()
        .execute(
            select(listings.c.id)
            .where(listings.c.status == OPEN, listings.c.expires_at <= now)
            .order_by(listings.c.id)
            .limit(limit)
            .with_for_update()
        )
        .scalars()
    ]
    close_listings(session, ids, "expired", now)
    return len(ids)


def get_listing(session: Session, listing_id: int) -> ListingView:
    """See :func:`modelbank.marketplace.service.get_listing`."""
    row = session.connection().execute(select(listings).where(listings.c.id == listing_id)).first()
    if row is None:
        raise MarketListingNotFound(f"no listing {listing_id}", listing_id=listing_id)
    return _views(session, [row])[0]


def browse(
    session: Session,
    *,
    kind: str | None = None,
    model_id: int | None = None,
    seller_id: int | None = None,
    status: str | None = OPEN,
    max_price_ucr_per_mtok: int | None = None,
    min_success_rate: float | None = None,
    after_id: int = 0,
    limit: int = 50,
    now: datetime | None = None,
) -> ListingPage:
    """See :func:`modelbank.marketplace.service.browse_listings`."""
    now = now or utcnow()
    limit = max(1, min(limit, PAGE_LIMIT))
    query = select(listings).where(listings.c.id > after_id)
    if status is not None:
        query = query.where(listings.c.status == status)
        if status == OPEN:
            query = query.where(or_(listings.c.expires_at.is_(None), listings.c.expires_at > now))
    if kind is not None:
        query = query.where(listings.c.kind == kind)
    if seller_id is not None:
        query = query.where(listings.c.seller_id == seller_id)
    if model_id is not None:
        serving = select(served.c.resource_id).where(served.c.model_id == model_id)
        in_bundle = select(bundle_items.c.listing_id).where(bundle_items.c.resource_id.in_(serving))
        query = query.where(
            or_(
                listings.c.model_id == model_id,
                listings.c.resource_id.in_(serving),
                listings.c.id.in_(in_bundle),
            )
        )
    rows = session.connection().execute(query.order_by(listings.c.id).limit(limit)).all()
    views = _views(session, rows)
    last = int(rows[-1].id) if len(rows) == limit else None
    if max_price_ucr_per_mtok is not None:
        views = [
            v
            for v in views
            if v.price_ucr_per_mtok is not None and v.price_ucr_per_mtok <= max_price_ucr_per_mtok
        ]
    if min_success_rate is not None:
        views = [
            v
            for v in views
            if v.reputation and min(r.success_rate for r in v.reputation) >= min_success_rate
        ]
    return ListingPage(views, last)


def allocation_expiry(row: Any, now: datetime) -> datetime | None:
    """When an allocation filled now from listing ``row`` expires (None: never)."""
    return None if row.allocation_days is None else now + timedelta(days=row.allocation_days)


def _views(session: Session, rows: Sequence[Any]) -> list[ListingView]:
    conn = session.connection()
    ids = [int(r.id) for r in rows]
    items: dict[int, list[BundleItem]] = {}
    if ids:
        for item in conn.execute(
            select(bundle_items)
            .where(bundle_items.c.listing_id.in_(ids))
            .order_by(bundle_items.c.resource_id)
        ):
            items.setdefault(int(item.listing_id), []).append(
                BundleItem(int(item.resource_id), int(item.quantity_uusd))
            )
    resource_ids = {int(r.resource_id) for r in rows if r.resource_id is not None}
    resource_ids |= {i.resource_id for found in items.values() for i in found}
    models_of: dict[int, list[int]] = {}
    if resource_ids:
        for link in conn.execute(
            select(served.c.resource_id, served.c.model_id)
            .where(served.c.resource_id.in_(sorted(resource_ids)))
            .order_by(served.c.model_id)
        ):
            models_of.setdefault(int(link.resource_id), []).append(int(link.model_id))
    all_models = {m for found in models_of.values() for m in found}
    prices = pricing.current_prices(session, all_models)
    cost_per_mtok = {
        m: int(p.cost_uusd.input_per_mtok + p.cost_uusd.output_per_mtok)
        for m, p in prices.items()
        if p.cost_uusd.input_per_mtok + p.cost_uusd.output_per_mtok > 0
    }
    reps = reputations(session, sorted(resource_ids))
    out = []
    for row in rows:
        found = tuple(items.get(int(row.id), ()))
        resources_here = (
            [int(row.resource_id)]
            if row.resource_id is not None
            else [i.resource_id for i in found]
        )
        models = sorted({m for r in resources_here for m in models_of.get(r, [])})
        if row.model_id is not None:
            models = [int(row.model_id)]
        per_mtok = None
        costs = [cost_per_mtok[m] for m in models if m in cost_per_mtok]
        if row.kind != "stake" and costs:
            per_mtok = min(costs) * int(row.unit_price_ucr) // QUOTA_PRICE_UNIT_UUSD
        quantity, filled = int(row.quantity), int(row.filled)
        out.append(
            ListingView(
                id=int(row.id),
                seller_id=int(row.seller_id),
                kind=row.kind,
                resource_id=None if row.resource_id is None else int(row.resource_id),
                model_id=None if row.model_id is None else int(row.model_id),
                quantity=quantity,
                filled=filled,
                available=quantity - filled if row.status == OPEN else 0,
                min_fill=int(row.min_fill),
                unit_price_ucr=int(row.unit_price_ucr),
                status=row.status,
                expires_at=row.expires_at,
                allocation_days=row.allocation_days,
                created_at=row.created_at,
                updated_at=row.updated_at,
                closed_at=row.closed_at,
                items=found,
                models=tuple(models),
                price_ucr_per_mtok=per_mtok,
                reputation=tuple(reps[r] for r in resources_here if r in reps),
            )
        )
    return out


def open_listing_ids_of_resource(session: Session, resource_id: int) -> list[int]:
    """Open quota listings on the resource and open bundles that hold it, locked."""
    in_bundle = select(bundle_items.c.listing_id).where(bundle_items.c.resource_id == resource_id)
    return [
        int(i)
        for i in session.connection()
        .execute(
            select(listings.c.id)
            .where(
                listings.c.status == OPEN,
                or_(
                    and_(listings.c.kind == "quota", listings.c.resource_id == resource_id),
                    listings.c.id.in_(in_bundle),
                ),
            )
            .order_by(listings.c.id)
            .with_for_update()
        )
        .scalars()
    ]
