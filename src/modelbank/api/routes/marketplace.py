"""The marketplace over HTTP (DESIGN §10, §12): listings of pool quota and model stakes,
buying into escrow, a user's orders and allocations, disputes, and the admin's view. Thin:
every rule is in :mod:`modelbank.marketplace.service`.

Who sees what: listings are public to any key (a market is for browsing); creating,
re-pricing and cancelling are the seller's (or an admin or service key acting for them);
orders and allocations are their buyer's and seller's; a dispute is its buyer's; the
summary and resolutions are the admin's. Another user's order, allocation, dispute or
listing to edit is a 404, like a missing one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from modelbank.api import marketplace_schemas as ms
from modelbank.api import marketplace_trade_schemas as ts
from modelbank.api import pool_schemas as ps
from modelbank.api.deps import (
    DB,
    IDEMPOTENCY_HIT,
    Caller,
    IdemKey,
    PathId,
    decode_cursor,
    encode_cursor,
    scoped,
)
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.auth.service import Principal
from modelbank.errors import InvalidInput
from modelbank.marketplace import service as market
from modelbank.marketplace.views import PAGE_LIMIT

router = APIRouter(
    prefix="/api/v1", tags=["marketplace"], responses=problem_responses(*COMMON_PROBLEMS)
)

Limit = Annotated[int, Query(ge=1, le=PAGE_LIMIT, description="page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor of the last page")]
Role = Annotated[
    Literal["buyer", "seller", "any"],
    Query(description="the orders or allocations the user bought, sold, or both"),
]
ADMIN_DISPUTES = 50
"""Open disputes the admin summary lists (the oldest first; page through the rest)."""


def _acting_user(caller: Principal, named: int | None, field: str) -> int:
    """The user a call acts for: a user key for itself (naming another user is a 404), an
    admin or service key for the user it names in ``field``."""
    if caller.user_id is not None:
        return scoped(caller, named) if named is not None else caller.user_id
    if named is None:
        raise InvalidInput(f"{field} is required with an admin or service key")
    return named


def _as_user(caller: Principal) -> int | None:
    """Whose rows a read is limited to: a user key's own; None (all) for admin and service
    keys (the service key acts for any user, DESIGN §11)."""
    return caller.user_id


def _next(ids: list[int], limit: int) -> str | None:
    return encode_cursor(ids[-1]) if len(ids) == limit else None


# ---------------------------------------------------------------- listings


@router.get("/marketplace/listings", response_model=ms.ListingPage)
def browse_listings(
    caller: Caller,
    db: DB,
    kind: Annotated[ms.Kind | None, Query()] = None,
    model_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="serving it")] = None,
    seller_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    status: Annotated[
        ms.ListingStatus | Literal["any"], Query(description="default open (unexpired)")
    ] = "open",
    max_price_ucr_per_mtok: Annotated[
        int | None, Query(ge=0, le=10**15, description="quota priced at most this per 1M tokens")
    ] = None,
    min_success_rate: Annotated[
        float | None, Query(ge=0, le=1, description="measured success rate at least")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ms.ListingPage:
    """Browse listings (any key), oldest first: filter by kind, a model the quota serves (or
    the stake's model), seller, status, price per 1M tokens equivalent and measured
    reputation. The price and reputation filters apply within a page, which may then hold
    fewer than ``limit`` items: follow ``next_cursor`` until it is null."""
    with db.read() as session:
        page = market.browse_listings(
            session,
            kind=kind,
            model_id=model_id,
            seller_id=seller_id,
            status=None if status == "any" else status,
            max_price_ucr_per_mtok=max_price_ucr_per_mtok,
            min_success_rate=min_success_rate,
            after_id=decode_cursor(cursor) or 0,
            limit=limit,
        )
    return ms.ListingPage(
        items=[ms.listing_out(v) for v in page.items],
        next_cursor=None if page.next_after_id is None else encode_cursor(page.next_after_id),
    )


@router.post("/marketplace/listings", status_code=201, response_model=ms.ListingOut)
def create_listing(body: ms.ListingIn, caller: Caller, db: DB) -> ms.ListingOut:
    """List quota or a stake for sale: a user key for itself, an admin or service key for
    ``seller_id``. Quota: µUSD of the **market part** of the seller's own active, probed,
    healthy resource, not already offered or sold (422 ``resource_not_listable``,
    ``market_quota_unavailable``), priced per USD of provider spend; stake: basis points
    the seller holds beyond their open listings (422 ``stake_unavailable``), priced per
    basis point; bundle: quota on 2–20 of the seller's resources, bought whole. 403 for a
    key with a spend limit."""
    caller.require_wallet_spender()
    seller = _acting_user(caller, body.seller_id, "seller_id")
    items = [(i.resource_id, i.quantity_uusd) for i in body.items or ()]
    with db.write() as session:
        return ms.listing_out(
            market.create_listing(
                session,
                seller,
                kind=body.kind,
                quantity=body.quantity or sum(q for _, q in items),
                unit_price_ucr=body.unit_price_ucr,
                resource_id=body.resource_id,
                model_id=body.model_id,
                min_fill=body.min_fill,
                expires_at=body.expires_at,
                allocation_days=body.allocation_days,
                items=items,
            )
        )


@router.get("/marketplace/listings/{listing_id}", response_model=ms.ListingOut)
def get_listing(listing_id: PathId, caller: Caller, db: DB) -> ms.ListingOut:
    """One listing (any key): what is left, its price, the models it serves, its price per
    1M tokens equivalent and its resources' measured reputation."""
    with db.read() as session:
        return ms.listing_out(market.get_listing(session, listing_id))


@router.patch("/marketplace/listings/{listing_id}", response_model=ms.ListingOut)
def update_price(
    listing_id: PathId, body: ms.ListingPriceIn, caller: Caller, db: DB
) -> ms.ListingOut:
    """Re-price the unfilled part of an open listing (its seller, or an admin or service
    key); orders already filled keep their price. 409 ``market_listing_state`` once it is
    filled, cancelled or expired; 403 for a key with a spend limit."""
    caller.require_wallet_spender()
    with db.write() as session:
        return ms.listing_out(
            market.update_price(
                session, listing_id, body.unit_price_ucr, seller_id=_as_user(caller)
            )
        )


@router.post("/marketplace/listings/{listing_id}/cancel", response_model=ms.ListingOut)
def cancel_listing(listing_id: PathId, caller: Caller, db: DB) -> ms.ListingOut:
    """Cancel the unfilled part of an open listing (its seller, or an admin or service
    key); its orders and allocations stay. 409 ``market_listing_state`` when not open."""
    with db.write() as session:
        return ms.listing_out(
            market.cancel_listing(session, listing_id, seller_id=_as_user(caller))
        )


@router.post(
    "/marketplace/listings/{listing_id}/buy",
    status_code=201,
    response_model=ts.BuyOut,
    responses=problem_responses(402),
)
def buy(listing_id: PathId, body: ms.BuyIn, key: IdemKey, caller: Caller, db: DB) -> JSONResponse:
    """Buy ``quantity`` of an open listing: a user key for itself, an admin or service key
    for ``buyer_id``. The price (quota: quantity × unit price ÷ 1,000,000, half-even;
    stake: quantity × unit price) moves from the buyer's wallet into escrow. A stake moves
    at once and escrow pays the seller 85 % and the platform 15 % (the commission in force,
    frozen on the order); quota becomes an allocation the gateway serves the buyer's calls
    from at provider cost, releasing escrow as it is consumed.

    A retry with the same ``Idempotency-Key`` (per buyer) and body answers the same order
    with ``Idempotency-Hit: true``; another body 409 ``idempotency_key_reused``. 402
    without the credits; 409 ``market_listing_state`` when it closed meanwhile,
    ``market_price_changed`` when re-priced above ``max_unit_price_ucr``; 422
    ``invalid_fill`` (below the minimum fill or above what is left), ``own_market_listing``
    for its seller; 403 for a key with a spend limit. Nothing is written on an error."""
    caller.require_wallet_spender()
    buyer = _acting_user(caller, body.buyer_id, "buyer_id")
    with db.write() as session:
        result = market.buy(
            session,
            listing_id,
            buyer,
            body.quantity,
            idempotency_key=key,
            max_unit_price_ucr=body.max_unit_price_ucr,
        )
        out = ts.buy_out(result).model_dump(mode="json")
    return JSONResponse(
        out,
        status_code=201,
        headers={IDEMPOTENCY_HIT: "true" if result.replayed else "false"},
    )


@router.get("/marketplace/pricing-suggestion", response_model=ms.PriceSuggestionOut)
def pricing_suggestion(
    caller: Caller,
    db: DB,
    resource_id: Annotated[int, Query(ge=1, le=2**63 - 1, description="the resource to list")],
) -> ms.PriceSuggestionOut:
    """The suggested ``unit_price_ucr`` (per USD of provider spend) for quota of one of the
    caller's resources: the platform's own price for its cheapest model undercut by the
    configured share, never below the seller's cost basis after the commission (the
    resource's owner, or an admin or service key; anyone else 404)."""
    with db.read() as session:
        return ms.suggestion_out(
            market.suggest_price(session, resource_id, owner_id=_as_user(caller))
        )


@router.post("/resources/{resource_id}/market-part", response_model=ps.ResourceOut)
def move_to_market(
    resource_id: PathId, body: ms.MarketPartIn, key: IdemKey, caller: Caller, db: DB
) -> JSONResponse:
    """Move ``amount_uusd`` of an active resource's unconsumed pool part to its market part,
    to list it (its owner, or an admin or service key; anyone else 404). The deposit credit
    of that quota is reversed from the owner's wallet — ``(deposit − moved) × amount / pool
    part``, the deposit grant burned first — only while the wallet holds it (409
    ``deposit_credit_spent``, nothing written): no quota is both credited and sold. The
    platform's fee is not returned. A retry with the same ``Idempotency-Key`` and body
    answers the same."""

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        info = market.move_to_market(
            session, resource_id, body.amount_uusd, owner_id=_as_user(caller)
        )
        return 200, ps.resource_out(info).model_dump(mode="json")

    return db.idempotent(
        caller, key, f"/resources/{resource_id}/market-part", body.model_dump(mode="json"), run
    )


# ---------------------------------------------------------------- orders and allocations


@router.get("/users/{user_id}/orders", response_model=ts.OrderPage)
def list_orders(
    user_id: PathId,
    caller: Caller,
    db: DB,
    role: Role = "any",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ts.OrderPage:
    """The user's marketplace orders, oldest first: what they paid, what escrow released to
    the seller and the platform, returned, and still holds."""
    scoped(caller, user_id)
    with db.read() as session:
        found = market.list_orders(
            session, user_id, role=role, after_id=decode_cursor(cursor) or 0, limit=limit
        )
    return ts.OrderPage(
        items=[ts.order_out(o) for o in found], next_cursor=_next([o.id for o in found], limit)
    )


@router.get("/marketplace/orders/{order_id}", response_model=ts.OrderOut)
def get_order(order_id: PathId, caller: Caller, db: DB) -> ts.OrderOut:
    """One order (its buyer or seller, or an admin or service key; anyone else 404)."""
    with db.read() as session:
        return ts.order_out(market.get_order(session, order_id, user_id=_as_user(caller)))


@router.get("/users/{user_id}/allocations", response_model=ts.AllocationPage)
def list_allocations(
    user_id: PathId,
    caller: Caller,
    db: DB,
    role: Role = "buyer",
    status: Annotated[ts.AllocationStatus | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ts.AllocationPage:
    """The quota the user bought (``role=buyer``, the default) or sold, oldest first: what
    remains, what was consumed, escrow released and returned."""
    scoped(caller, user_id)
    with db.read() as session:
        found = market.list_allocations(
            session,
            user_id,
            role=role,
            status=status,
            after_id=decode_cursor(cursor) or 0,
            limit=limit,
        )
    return ts.AllocationPage(
        items=[ts.allocation_out(a) for a in found],
        next_cursor=_next([a.id for a in found], limit),
    )


@router.get("/marketplace/allocations/{allocation_id}", response_model=ts.AllocationOut)
def get_allocation(allocation_id: PathId, caller: Caller, db: DB) -> ts.AllocationOut:
    """One allocation (its buyer or seller, or an admin or service key; anyone else 404)."""
    with db.read() as session:
        return ts.allocation_out(
            market.get_allocation(session, allocation_id, user_id=_as_user(caller))
        )


# ---------------------------------------------------------------- disputes


@router.post(
    "/marketplace/allocations/{allocation_id}/disputes",
    status_code=201,
    response_model=ts.DisputeOut,
)
def open_dispute(
    allocation_id: PathId, body: ts.DisputeIn, caller: Caller, db: DB
) -> ts.DisputeOut:
    """The buyer says an active allocation failed to serve (its buyer, or an admin or
    service key acting for the buyer; anyone else 404). One open dispute per allocation
    (409 ``dispute_state``); a closed allocation has nothing left to dispute (409
    ``allocation_state``). An admin resolves it."""
    with db.write() as session:
        buyer = caller.user_id
        if buyer is None:
            buyer = market.get_allocation(session, allocation_id).buyer_id
        return ts.dispute_out(market.open_dispute(session, allocation_id, buyer, body.reason))


@router.get("/users/{user_id}/disputes", response_model=ts.DisputePage)
def list_user_disputes(
    user_id: PathId, caller: Caller, db: DB, limit: Limit = 50, cursor: Cursor = None
) -> ts.DisputePage:
    """The disputes the user opened, oldest first, with their resolutions."""
    scoped(caller, user_id)
    with db.read() as session:
        found = market.list_disputes(
            session, user_id=user_id, after_id=decode_cursor(cursor) or 0, limit=limit
        )
    return ts.DisputePage(
        items=[ts.dispute_out(d) for d in found], next_cursor=_next([d.id for d in found], limit)
    )


@router.get("/admin/marketplace/disputes", response_model=ts.DisputePage)
def list_disputes(
    caller: Caller,
    db: DB,
    status: Annotated[ts.DisputeStatus | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ts.DisputePage:
    """Every dispute, oldest first, optionally by status (admin)."""
    caller.require_admin()
    with db.read() as session:
        found = market.list_disputes(
            session, status=status, after_id=decode_cursor(cursor) or 0, limit=limit
        )
    return ts.DisputePage(
        items=[ts.dispute_out(d) for d in found], next_cursor=_next([d.id for d in found], limit)
    )


@router.post("/admin/marketplace/disputes/{dispute_id}/resolve", response_model=ts.DisputeOut)
def resolve_dispute(
    dispute_id: PathId, body: ts.ResolutionIn, key: IdemKey, caller: Caller, db: DB
) -> JSONResponse:
    """Resolve an open dispute (admin), recorded with the reason and the admin key:
    ``refund`` returns the allocation's unreleased escrow to the buyer, ``release`` pays it
    to the seller less the commission. 409 ``dispute_state`` once resolved. A retry with
    the same ``Idempotency-Key`` and body answers the same."""
    caller.require_admin()

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        done = market.resolve_dispute(
            session, dispute_id, caller.key_id, action=body.action, reason=body.reason
        )
        return 200, ts.dispute_out(done).model_dump(mode="json")

    return db.idempotent(
        caller,
        key,
        f"/admin/marketplace/disputes/{dispute_id}/resolve",
        body.model_dump(mode="json"),
        run,
    )


# ---------------------------------------------------------------- admin


@router.get("/admin/marketplace", response_model=ts.MarketPanelOut)
def admin_marketplace(caller: Caller, db: DB) -> ts.MarketPanelOut:
    """The admin marketplace view: orders and volume, commission earned, escrow still
    held, open listings, active allocations, and the oldest open disputes."""
    caller.require_admin()
    with db.read() as session:
        summary = market.admin_summary(session)
        disputes = market.list_disputes(session, status="open", limit=ADMIN_DISPUTES)
    return ts.panel_out(summary, disputes)
