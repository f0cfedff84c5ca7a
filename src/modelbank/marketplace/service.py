"""The marketplace's entry points (DESIGN §10, issue 15), for the API, the pages, the CLI, the
jobs and the gateway. Every function takes the caller's ``Session`` first and never commits.

Role modules: :mod:`~modelbank.marketplace.listings` (create, browse, re-price, cancel),
:mod:`~modelbank.marketplace.orders` (buy: escrow, stake fills, allocations),
:mod:`~modelbank.marketplace.escrow` (the ledger movements and the 85/15 arithmetic),
:mod:`~modelbank.marketplace.allocations` (gateway consumption, returns, expiry),
:mod:`~modelbank.marketplace.disputes`, :mod:`~modelbank.marketplace.suggest` (pricing
suggestion), :mod:`~modelbank.marketplace.reputation`, :mod:`~modelbank.marketplace.views`
(scoped reads, admin summary), :mod:`~modelbank.marketplace.invariants`.

Units: quota quantities are µUSD of provider spend and a quota (or bundle) listing's
``unit_price_ucr`` is µcr per USD of spend (per 1,000,000 µUSD); stake quantities are basis
points and their ``unit_price_ucr`` is µcr per basis point. Paid = quantity × unit price
(÷ 1,000,000 for quota), rounded half-even once.

Settings (platform settings, integers): ``marketplace.commission_bps`` (default 1,500: the
15 % commission, frozen on each order at fill time) and ``marketplace.undercut_bps``
(default 2,000: how far a price suggestion undercuts the platform).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.ledger.invariants import Violation
from modelbank.marketplace import allocations, disputes, invariants, listings, orders, views
from modelbank.marketplace.records import (
    AllocationTarget,
    AllocationView,
    BuyResult,
    DisputeView,
    ListingPage,
    ListingView,
    MarketSummary,
    OrderView,
    PriceSuggestion,
    Reputation,
    UseResult,
)
from modelbank.marketplace.reputation import reputations
from modelbank.marketplace.suggest import suggest_price as _suggest
from modelbank.pool import service as pool
from modelbank.pool.resources import ResourceInfo

__all__ = [
    "AllocationTarget",
    "AllocationView",
    "BuyResult",
    "DisputeView",
    "ListingPage",
    "ListingView",
    "MarketSummary",
    "OrderView",
    "PriceSuggestion",
    "Reputation",
    "UseResult",
    "admin_summary",
    "browse_listings",
    "buy",
    "cancel_listing",
    "check",
    "create_listing",
    "expire_due",
    "get_allocation",
    "get_dispute",
    "get_listing",
    "get_order",
    "list_allocations",
    "list_disputes",
    "list_orders",
    "move_to_market",
    "open_dispute",
    "reputation",
    "resolve_dispute",
    "return_for_resource",
    "suggest_price",
    "update_price",
]


# ---------------------------------------------------------------- listings


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
    """List ``quantity`` units at ``unit_price_ucr`` for ``seller_id``.

    ``kind`` ``quota`` (``resource_id``: the seller's own active, probed, healthy resource;
    quantity µUSD of its unlisted, unsold market part), ``stake`` (``model_id``; quantity
    bps the seller holds beyond their open listings) or ``bundle`` (``items``: 2–20
    ``(resource_id, quantity_uusd)`` of the seller's resources, bought whole; ``quantity``
    is ignored and becomes the items' sum). ``min_fill`` defaults to 1 µUSD for quota and to
    the whole quantity for stakes; ``expires_at`` (future) ends the listing;
    ``allocation_days`` makes allocations bought from it expire that many days after the
    fill (None: they last until consumed or the resource ends).

    Raises :class:`~modelbank.marketplace.errors.InvalidListing`,
    :class:`~modelbank.marketplace.errors.ResourceNotListable`,
    :class:`~modelbank.marketplace.errors.QuotaUnavailable`,
    :class:`~modelbank.earnings.errors.StakeUnavailable`,
    :class:`~modelbank.pool.errors.ResourceNotFound` (not the seller's),
    :class:`~modelbank.catalog.errors.ModelNotFound`,
    :class:`~modelbank.users.errors.UserNotFound`."""
    return listings.create_listing(
        session,
        seller_id,
        kind=kind,
        quantity=quantity,
        unit_price_ucr=unit_price_ucr,
        resource_id=resource_id,
        model_id=model_id,
        min_fill=min_fill,
        expires_at=expires_at,
        allocation_days=allocation_days,
        items=items,
        now=now,
    )


def get_listing(session: Session, listing_id: int) -> ListingView:
    """A listing with its served models, price per 1M tokens equivalent and reputation
    (listings are public). Raises
    :class:`~modelbank.marketplace.errors.MarketListingNotFound`."""
    return listings.get_listing(session, listing_id)


def browse_listings(
    session: Session,
    *,
    kind: str | None = None,
    model_id: int | None = None,
    seller_id: int | None = None,
    status: str | None = "open",
    max_price_ucr_per_mtok: int | None = None,
    min_success_rate: float | None = None,
    after_id: int = 0,
    limit: int = 50,
    now: datetime | None = None,
) -> ListingPage:
    """Listings by id after ``after_id`` (at most ``limit`` ≤ 200), filtered: ``kind``,
    ``model_id`` (quota serving it, bundles holding such quota, stakes in it),
    ``seller_id`` (a seller's own: pass ``status=None`` for every status), ``status`` (open
    excludes expired ones), ``max_price_ucr_per_mtok`` and ``min_success_rate`` (0…1)
    (these two filter within the page: a page may hold fewer than ``limit``; follow
    ``next_after_id`` until None)."""
    return listings.browse(
        session,
        kind=kind,
        model_id=model_id,
        seller_id=seller_id,
        status=status,
        max_price_ucr_per_mtok=max_price_ucr_per_mtok,
        min_success_rate=min_success_rate,
        after_id=after_id,
        limit=limit,
        now=now,
    )


def update_price(
    session: Session,
    listing_id: int,
    unit_price_ucr: int,
    *,
    seller_id: int | None,
    now: datetime | None = None,
) -> ListingView:
    """Re-price the unfilled part of an open listing (filled orders keep their price).
    ``seller_id``: the caller acting as that user must be the seller (None: an admin).
    Raises :class:`~modelbank.marketplace.errors.MarketListingNotFound` (also another
    seller's), :class:`~modelbank.marketplace.errors.MarketListingState`,
    :class:`~modelbank.marketplace.errors.InvalidListing`."""
    return listings.update_price(session, listing_id, unit_price_ucr, seller_id=seller_id, now=now)


def cancel_listing(
    session: Session, listing_id: int, *, seller_id: int | None, now: datetime | None = None
) -> ListingView:
    """Cancel the unfilled part of an open listing (its orders and allocations stay).
    ``seller_id`` as :func:`update_price`. Raises
    :class:`~modelbank.marketplace.errors.MarketListingNotFound`,
    :class:`~modelbank.marketplace.errors.MarketListingState` (not open)."""
    return listings.cancel_listing(session, listing_id, seller_id=seller_id, now=now)


def suggest_price(
    session: Session,
    resource_id: int,
    *,
    owner_id: int | None = None,
    now: datetime | None = None,
) -> PriceSuggestion:
    """The suggested ``unit_price_ucr`` (µcr per USD of spend) for quota of the resource
    (:mod:`~modelbank.marketplace.suggest` for the formula). ``owner_id``: the caller acting
    as that user must own it (None: an admin). Raises
    :class:`~modelbank.pool.errors.ResourceNotFound`."""
    return _suggest(session, resource_id, owner_id=owner_id, now=now)


def move_to_market(
    session: Session,
    resource_id: int,
    amount_uusd: int,
    *,
    owner_id: int | None,
    now: datetime | None = None,
) -> ResourceInfo:
    """Move ``amount_uusd`` µUSD of the resource's unconsumed pool part to its market part,
    so it can be listed: the deposit credit of that quota is reversed from the owner's
    wallet (deposit grant first), and only while the wallet still holds it
    (:mod:`modelbank.pool.market_part`). ``owner_id``: the caller acting as that user must
    own it (None: an admin). Raises :class:`~modelbank.pool.errors.ResourceNotFound`,
    :class:`~modelbank.pool.errors.InvalidResource`,
    :class:`~modelbank.pool.errors.ResourceState`,
    :class:`~modelbank.pool.errors.DepositCreditSpent` (code ``deposit_credit_spent``)."""
    return pool.move_to_market(session, resource_id, amount_uusd, owner_id=owner_id, now=now)


def reputation(session: Session, resource_ids: Sequence[int]) -> dict[int, Reputation]:
    """Measured reputation of resources (resource id → :class:`Reputation`)."""
    return reputations(session, resource_ids)


# ---------------------------------------------------------------- orders


def buy(
    session: Session,
    listing_id: int,
    buyer_id: int,
    quantity: int,
    *,
    idempotency_key: str,
    max_unit_price_ucr: int | None = None,
    now: datetime | None = None,
) -> BuyResult:
    """Buy ``quantity`` units of an open listing for ``buyer_id``: the price moves from the
    buyer's wallet (grants burned in the usual order) into ``marketplace_escrow``; a stake
    moves at once and escrow releases 85 % to the seller and 15 % to ``platform_fees``; quota
    becomes one allocation per resource. Emits ``marketplace.order.filled``.

    Idempotent per buyer on ``idempotency_key`` (1–200 characters): the same key with the
    same listing and quantity returns the first order (``replayed`` True, nothing moves);
    with another, :class:`~modelbank.errors.IdempotencyConflict`. The listing row is locked
    first: concurrent buyers never overfill it. ``max_unit_price_ucr``: the most the buyer
    pays per unit; a listing re-priced above it raises
    :class:`~modelbank.marketplace.errors.MarketPriceChanged` (None: the price in force).

    Raises :class:`~modelbank.marketplace.errors.MarketListingNotFound`,
    :class:`~modelbank.marketplace.errors.MarketListingState` (not open, expired),
    :class:`~modelbank.marketplace.errors.OwnMarketListing`,
    :class:`~modelbank.marketplace.errors.InvalidFill` (below min fill, above what is left,
    a part of a bundle), :class:`~modelbank.marketplace.errors.ResourceNotListable` (its
    resource no longer serves), :class:`~modelbank.earnings.errors.StakeUnavailable`,
    :class:`~modelbank.ledger.errors.InsufficientFunds`,
    :class:`~modelbank.errors.IdempotencyConflict`,
    :class:`~modelbank.errors.InvalidInput` (no key); nothing is written then (the caller
    rolls back)."""
    return orders.buy(
        session,
        listing_id,
        buyer_id,
        quantity,
        idempotency_key=idempotency_key,
        max_unit_price_ucr=max_unit_price_ucr,
        now=now,
    )


def get_order(session: Session, order_id: int, *, user_id: int | None = None) -> OrderView:
    """An order; ``user_id``: only if they bought or sold it (None: an admin). Raises
    :class:`~modelbank.marketplace.errors.MarketOrderNotFound`."""
    return views.get_order(session, order_id, user_id=user_id)


def list_orders(
    session: Session, user_id: int, *, role: str = "any", after_id: int = 0, limit: int = 50
) -> list[OrderView]:
    """The user's orders by id after ``after_id`` (≤ 200): ``role`` buyer, seller or any."""
    return views.list_orders(session, user_id, role=role, after_id=after_id, limit=limit)


def get_allocation(
    session: Session, allocation_id: int, *, user_id: int | None = None
) -> AllocationView:
    """An allocation; ``user_id``: only its buyer or seller (None: an admin). Raises
    :class:`~modelbank.marketplace.errors.AllocationNotFound`."""
    return views.get_allocation(session, allocation_id, user_id=user_id)


def list_allocations(
    session: Session,
    user_id: int,
    *,
    role: str = "buyer",
    status: str | None = None,
    after_id: int = 0,
    limit: int = 50,
) -> list[AllocationView]:
    """The user's allocations (``role`` buyer, seller or any; ``status`` filter) by id
    after ``after_id`` (≤ 200): remaining, consumed, escrow released and returned."""
    return views.list_allocations(
        session, user_id, role=role, status=status, after_id=after_id, limit=limit
    )


def admin_summary(session: Session) -> MarketSummary:
    """The admin view: volume, commission earned, open escrow, listings, allocations,
    disputes open."""
    return views.summary(session)


# ---------------------------------------------------------------- disputes


def open_dispute(
    session: Session,
    allocation_id: int,
    buyer_id: int,
    reason: str,
    *,
    now: datetime | None = None,
) -> DisputeView:
    """The buyer disputes an active allocation that failed to serve (``reason`` 1–1,000
    characters; one open dispute per allocation). Raises
    :class:`~modelbank.marketplace.errors.AllocationNotFound` (not theirs),
    :class:`~modelbank.marketplace.errors.AllocationState` (closed, or the seller asking),
    :class:`~modelbank.marketplace.errors.DisputeState` (one is open already),
    :class:`~modelbank.errors.InvalidInput`."""
    return disputes.open_dispute(session, allocation_id, buyer_id, reason, now=now)


def get_dispute(session: Session, dispute_id: int, *, user_id: int | None = None) -> DisputeView:
    """A dispute; ``user_id``: only the buyer who opened it (None: an admin). Raises
    :class:`~modelbank.marketplace.errors.DisputeNotFound`."""
    return disputes.get_dispute(session, dispute_id, user_id=user_id)


def list_disputes(
    session: Session,
    *,
    user_id: int | None = None,
    status: str | None = None,
    after_id: int = 0,
    limit: int = 50,
) -> list[DisputeView]:
    """Disputes by id (``user_id``: that buyer's; None: all, for admins)."""
    return disputes.list_disputes(
        session, user_id=user_id, status=status, after_id=after_id, limit=limit
    )


def resolve_dispute(
    session: Session,
    dispute_id: int,
    admin_id: int,
    *,
    action: str,
    reason: str,
    now: datetime | None = None,
) -> DisputeView:
    """An admin resolves an open dispute: ``action`` ``refund`` (the allocation's
    unreleased escrow returns to the buyer; ``marketplace.escrow.returned``) or ``release``
    (it goes to the seller, less commission), recorded with ``reason``. Raises
    :class:`~modelbank.marketplace.errors.DisputeNotFound`,
    :class:`~modelbank.marketplace.errors.DisputeState`,
    :class:`~modelbank.errors.InvalidInput`."""
    return disputes.resolve_dispute(
        session, dispute_id, admin_id, action=action, reason=reason, now=now
    )


# ---------------------------------------------------------------- lifecycle


def return_for_resource(
    session: Session, resource_id: int, status: str, now: datetime | None = None
) -> int:
    """The resource is ending (withdrawn or failed): close its open listings and return the
    unreleased escrow of its active allocations to their buyers. Returns µcr returned.
    Registered with :mod:`modelbank.pool.lifecycle` (``END_HOOKS``) on import."""
    return allocations.return_for_resource(session, resource_id, status, now)


def expire_due(session: Session, *, now: datetime | None = None, limit: int = 500) -> int:
    """One bounded job batch: expire listings past ``expires_at``, return the escrow of
    allocations past theirs, void allocation holds of calls never settled. Returns rows
    changed (0: nothing left)."""
    now = now or utcnow()
    done = listings.expire_due(session, now=now, limit=limit)
    done += allocations.expire_due(session, now=now, limit=limit)
    done += allocations.expire_uses(session, now=now, limit=limit)
    return done


def check(session: Session) -> list[Violation]:
    """The marketplace's invariants (:mod:`~modelbank.marketplace.invariants`)."""
    return invariants.check(session)
