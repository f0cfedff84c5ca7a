"""User — the marketplace (DESIGN §10): browse and buy listings, list quota of one's own
deposited keys (with the pricing suggestion) or a model stake, re-price and cancel them,
and follow one's orders and allocations (remaining, consumed, escrow released, returned),
opening a dispute on an allocation that failed to serve.

Every form that moves credits or creates a record is submitted once (its form key); a buy
passes ``web:<form key>`` to the service as its idempotency key. Ids ride in form fields,
never in the path of a POST. Amounts are typed in dollars of provider spend (quota) and
credits (prices) and turned into µUSD / µcr exactly (:mod:`modelbank.web.forms`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from modelbank.api.deps import PathId, scoped
from modelbank.catalog import service as catalog
from modelbank.errors import InvalidInput
from modelbank.marketplace import listings as market_listings
from modelbank.marketplace import service as market
from modelbank.marketplace.records import ListingView
from modelbank.pool import service as pool
from modelbank.web import forms, views
from modelbank.web.forms import Done, Form, submit_once, text_field
from modelbank.web.pool import usd_amount
from modelbank.web.render import render
from modelbank.web.session import FORM_KEY_FIELD, Viewer, signed_in, signed_in_post, state_of

router = APIRouter(include_in_schema=False)

SignedIn = Annotated[Viewer, Depends(signed_in)]
Posted = Annotated[Viewer, Depends(signed_in_post)]
After = Annotated[int | None, Query(ge=1, le=2**63 - 1)]
Text = Annotated[str | None, Query(max_length=200)]

BROWSE_PAGE = 50
"""Listings per page of the browse page."""
MINE_PAGE = 200
"""A user's listings, orders and allocations shown (the API pages through more)."""
RESOURCES_SHOWN = 100
"""A user's resources offered in the "list quota" form."""


def _mine(user_id: int, page: str) -> str:
    return f"/app/users/{user_id}/marketplace/{page}"


def _slugs(session: Session, views_: list[Any]) -> dict[int, str]:
    """Catalog slug of every model the listings serve."""
    ids = {m for v in views_ for m in v.models}
    return {
        int(k): m.slug
        for k, m in catalog.resolve_models(session, ids, active_only=False).items()
        if isinstance(k, int)
    }


def _acting(viewer: Viewer) -> int:
    """The user a signed-in key buys or disputes for (admins use the API with a user id)."""
    if viewer.user_id is None:
        raise InvalidInput("sign in with a user's key to trade (an admin key trades for nobody)")
    return viewer.user_id


# ---------------------------------------------------------------- browse and buy


def browse_filters(
    session: Session, model: str | None, max_price: str | None, min_success: str | None
) -> dict[str, Any]:
    """The browse form's filters as :func:`~modelbank.marketplace.service.browse_listings`
    arguments: a model slug, a price in credits per 1M tokens, a success rate in percent.
    Raises :class:`InvalidInput` (an unknown model: ModelNotFound)."""
    found: dict[str, Any] = {}
    if model and model.strip():
        found["model_id"] = catalog.get_model(session, model.strip()).id
    price = forms.credits_amount(max_price, "price per 1M tokens")
    if price is not None:
        found["max_price_ucr_per_mtok"] = price
    rate = forms.decimal_field(min_success, "success rate")
    if rate is not None:
        if rate > 100:
            raise InvalidInput("success rate is a percentage (0–100)")
        found["min_success_rate"] = float(rate / 100)
    return found


@router.get("/marketplace")
def browse_page(
    request: Request,
    viewer: SignedIn,
    model: Text = None,
    max_price: Text = None,
    min_success: Text = None,
    after: After = None,
) -> Response:
    """Open listings, oldest first, with their price per USD of spend (or per basis point),
    price per 1M tokens equivalent and measured reputation; filters by model, price and
    success rate; a buy form on each."""
    db = state_of(request).db
    with db.read() as session:
        filters = browse_filters(session, model, max_price, min_success)
        page = market.browse_listings(session, after_id=after or 0, limit=BROWSE_PAGE, **filters)
        slugs = _slugs(session, page.items)
    given = {"model": model, "max_price": max_price, "min_success": min_success}
    return render(
        request,
        "marketplace.html",
        viewer,
        {
            "listings": page.items,
            "slugs": slugs,
            "filters": {k: v or "" for k, v in given.items()},
            "more": None
            if page.next_after_id is None
            else views.query_string(
                {k: v for k, v in given.items() if v}, after=page.next_after_id
            ),
        },
    )


def buy_quantity(listing: ListingView, form: FormData) -> int:
    """The quantity a buy form asks for: dollars of spend (quota), basis points (stake), or
    the whole of a bundle. Raises :class:`InvalidInput`."""
    if listing.kind == "bundle":
        return listing.available
    if listing.kind == "stake":
        return forms.int_field(form, "quantity", "basis points")
    typed = usd_amount(text_field(form, "quantity", required=True, label="amount"), "amount")
    if not typed:
        raise InvalidInput("amount must be more than $0")
    return typed


def seen_price(form: FormData) -> int | None:
    """The unit price (µcr) the buy form was shown, or None when it sent none: the buy is
    refused (``market_price_changed``) if the seller re-priced the listing above it since.
    Raises :class:`InvalidInput`."""
    text = text_field(form, "max_unit_price_ucr")
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) < 19):
        raise InvalidInput("max_unit_price_ucr must be a whole number of µcr")
    return int(text)


@router.post("/marketplace/buy")
def buy(request: Request, viewer: Posted, form: Form) -> Response:
    """Buy from a listing: the price moves from the wallet into escrow (the same rules as
    ``POST /api/v1/marketplace/listings/{id}/buy``: a session of a key with a spend limit
    may not). Submitted once per form key."""
    viewer.principal.require_wallet_spender()
    buyer = _acting(viewer)
    listing_id = forms.int_field(form, "listing_id", "listing")
    key = forms.FORM_KEY_PREFIX + text_field(form, FORM_KEY_FIELD)

    def run(session: Session) -> Done:
        listing = market.get_listing(session, listing_id)
        quantity = buy_quantity(listing, form)
        result = market.buy(
            session,
            listing_id,
            buyer,
            quantity,
            idempotency_key=key,
            max_unit_price_ucr=seen_price(form),
        )
        order = result.order
        what = (
            f"{quantity:,} bps of model #{listing.model_id}'s earnings"
            if order.kind == "stake"
            else f"{views.usd(quantity)} of provider spend"
        )
        held = "" if order.kind == "stake" else " It is held in escrow and paid out as you use it."
        return Done(
            _mine(buyer, "orders"),
            f"Order #{order.id}: bought {what} for {views.credits(order.paid_ucr)} credits.{held}",
        )

    return submit_once(request, viewer, form, run)


# ---------------------------------------------------------------- my listings


MOVABLE = ("active", "depleted")
"""Resource statuses whose pool quota can move to the market part and be listed."""


def _resource_lines(session: Session, user_id: int) -> list[dict[str, Any]]:
    """The user's live resources: the market part still unlisted, the pool part not yet
    consumed (movable to the market part), and the suggested price per USD of spend."""
    lines = []
    found = pool.list_resources(session, user_id, limit=RESOURCES_SHOWN)
    for info in (r for r in found if r.status in MOVABLE):
        reserved = market_listings.reserved_uusd(session, info.id)
        lines.append(
            {
                "resource": info,
                "free_uusd": max(info.market_quota_uusd - reserved, 0),
                "pool_left_uusd": max(info.pool_quota_uusd - info.consumed_uusd, 0),
                "suggestion": market.suggest_price(session, info.id, owner_id=user_id),
            }
        )
    return lines


@router.get("/users/{user_id}/marketplace/listings")
def my_listings(request: Request, user_id: PathId, viewer: SignedIn) -> Response:
    """The user's listings in every status (re-price or cancel the open ones) and the forms
    to list quota of their deposited keys (the suggested price filled in) or a stake."""
    scoped(viewer.principal, user_id)
    db = state_of(request).db
    with db.read() as session:
        page = market.browse_listings(session, seller_id=user_id, status=None, limit=MINE_PAGE)
        slugs = _slugs(session, page.items)
        resources = _resource_lines(session, user_id)
    return render(
        request,
        "marketplace_listings.html",
        viewer,
        {"user_id": user_id, "listings": page.items, "slugs": slugs, "resources": resources},
    )


def _expiry(form: FormData) -> datetime | None:
    """The listing's last day (``YYYY-MM-DD``) as the moment it ends: the next midnight
    UTC. None when blank."""
    text = text_field(form, "expires_on")
    if not text:
        return None
    _, until = forms.date_range(None, text)
    return until


def listing_fields(session: Session, form: FormData) -> dict[str, Any]:
    """The "new listing" form as :func:`~modelbank.marketplace.service.create_listing`'s
    keyword arguments: quota (resource, dollars, credits per USD, minimum fill in dollars,
    allocation days) or stake (model slug, basis points, credits per basis point), and an
    optional last day. Raises :class:`InvalidInput`."""
    kind = text_field(form, "kind", required=True)
    price = forms.credits_amount(text_field(form, "price", required=True, label="price"), "price")
    fields: dict[str, Any] = {"kind": kind, "unit_price_ucr": price, "expires_at": _expiry(form)}
    if kind == "quota":
        quantity = usd_amount(text_field(form, "quantity", required=True, label="amount"), "amount")
        fields |= {
            "resource_id": forms.int_field(form, "resource_id", "resource"),
            "quantity": quantity,
            "min_fill": usd_amount(text_field(form, "min_fill"), "minimum fill") or None,
            "allocation_days": forms.optional_int(form, "allocation_days", "days"),
        }
    elif kind == "stake":
        slug = text_field(form, "model", required=True, label="model")
        fields |= {
            "model_id": catalog.get_model(session, slug).id,
            "quantity": forms.int_field(form, "quantity", "basis points"),
        }
    else:
        raise InvalidInput("choose quota or stake")
    if not fields["quantity"]:
        raise InvalidInput("the amount must be more than 0")
    return fields


@router.post("/users/{user_id}/marketplace/listings")
def create_listing(request: Request, user_id: PathId, viewer: Posted, form: Form) -> Response:
    """List quota or a stake (the rules of ``POST /api/v1/marketplace/listings``)."""
    scoped(viewer.principal, user_id)
    viewer.principal.require_wallet_spender()

    def run(session: Session) -> Done:
        listing = market.create_listing(session, user_id, **listing_fields(session, form))
        return Done(_mine(user_id, "listings"), f"Listing #{listing.id} is open.")

    return submit_once(request, viewer, form, run)


@router.post("/users/{user_id}/marketplace/market-part")
def move_to_market(request: Request, user_id: PathId, viewer: Posted, form: Form) -> Response:
    """Move dollars of a resource's unconsumed pool part to its market part (the rules of
    ``POST /api/v1/resources/{id}/market-part``): its deposit credit is taken back first."""
    scoped(viewer.principal, user_id)
    resource_id = forms.int_field(form, "resource_id", "resource")
    amount = usd_amount(text_field(form, "amount", required=True, label="amount"), "amount")
    if not amount:
        raise InvalidInput("amount must be more than $0")

    def run(session: Session) -> Done:
        before = pool.get_resource(session, resource_id, owner_id=user_id, admin=False)
        info = market.move_to_market(session, resource_id, amount, owner_id=user_id)
        taken = info.moved_credit_ucr - before.moved_credit_ucr
        return Done(
            _mine(user_id, "listings"),
            f"Moved {views.usd(amount)} of resource #{info.id}'s pool part to its market part:"
            f" {views.credits(taken)} credits of deposit credit were taken back.",
        )

    return submit_once(request, viewer, form, run)


@router.post("/users/{user_id}/marketplace/listings/price")
def reprice(request: Request, user_id: PathId, viewer: Posted, form: Form) -> Response:
    """Change the price of an open listing's unfilled part (not with a limited key)."""
    scoped(viewer.principal, user_id)
    viewer.principal.require_wallet_spender()
    listing_id = forms.int_field(form, "listing_id", "listing")
    price = forms.credits_amount(text_field(form, "price", required=True, label="price"), "price")

    def run(session: Session) -> Done:
        listing = market.update_price(session, listing_id, price or 0, seller_id=user_id)
        return Done(
            _mine(user_id, "listings"),
            f"Listing #{listing.id} now costs {views.credits(listing.unit_price_ucr)} credits"
            f" per {'basis point' if listing.kind == 'stake' else 'USD of spend'}.",
        )

    return submit_once(request, viewer, form, run)


@router.post("/users/{user_id}/marketplace/listings/cancel")
def cancel(request: Request, user_id: PathId, viewer: Posted, form: Form) -> Response:
    """Cancel an open listing's unfilled part (what was sold stays sold)."""
    scoped(viewer.principal, user_id)
    listing_id = forms.int_field(form, "listing_id", "listing")

    def run(session: Session) -> Done:
        listing = market.cancel_listing(session, listing_id, seller_id=user_id)
        return Done(_mine(user_id, "listings"), f"Listing #{listing.id} is cancelled.")

    return submit_once(request, viewer, form, run)


# ---------------------------------------------------------------- orders and allocations


@router.get("/users/{user_id}/marketplace/orders")
def my_orders(request: Request, user_id: PathId, viewer: SignedIn) -> Response:
    """The user's orders (bought and sold), the quota they bought (remaining, consumed,
    escrow released and returned) with a dispute form on the active ones, and their
    disputes."""
    scoped(viewer.principal, user_id)
    db = state_of(request).db
    with db.read() as session:
        orders = market.list_orders(session, user_id, limit=MINE_PAGE)
        bought = market.list_allocations(session, user_id, role="buyer", limit=MINE_PAGE)
        sold = market.list_allocations(session, user_id, role="seller", limit=MINE_PAGE)
        disputes = market.list_disputes(session, user_id=user_id, limit=MINE_PAGE)
    disputed = {d.allocation_id for d in disputes if d.status == "open"}
    return render(
        request,
        "marketplace_orders.html",
        viewer,
        {
            "user_id": user_id,
            "orders": orders,
            "bought": bought,
            "sold": sold,
            "disputes": disputes,
            "disputed": disputed,
            "in_escrow_ucr": sum(o.in_escrow_ucr for o in orders if o.buyer_id == user_id),
        },
    )


@router.post("/users/{user_id}/marketplace/disputes")
def dispute(request: Request, user_id: PathId, viewer: Posted, form: Form) -> Response:
    """Dispute an active allocation that failed to serve; an admin resolves it."""
    scoped(viewer.principal, user_id)
    allocation_id = forms.int_field(form, "allocation_id", "allocation")
    reason = text_field(form, "reason", required=True, label="reason")

    def run(session: Session) -> Done:
        opened = market.open_dispute(session, allocation_id, user_id, reason)
        return Done(
            _mine(user_id, "orders"),
            f"Dispute #{opened.id} on allocation #{allocation_id} is open: an admin will"
            " refund its unused escrow or release it to the seller.",
        )

    return submit_once(request, viewer, form, run)
