"""Buying (DESIGN §10): one order per fill, paid into escrow, in one transaction.

Order of work (and of locks, the same in every marketplace path, so no two transactions
deadlock): the listing row (``FOR UPDATE``: concurrent buyers of one listing queue here, so
it is never overfilled) → the idempotency key (looked up *after* the listing lock, so a
concurrent retry with the same key finds the first order and replays it) → the buyer's
wallet (burn-down, escrow; for a stake both wallets, in id order, then the model's row as a
charge takes them) → platform accounts (their UPDATEs, last).

* **stake**: the stake moves seller → buyer and the whole payment is released at once,
  ``paid − commission`` to the seller and the commission (``marketplace.commission_bps``,
  default 1,500, frozen on the order) to ``platform_fees``; the order closes.
* **quota** / **bundle**: one allocation per resource, each carrying its share of the payment
  (``paid × item / total`` cumulatively rounded, so the shares sum to ``paid``); escrow is
  released as the allocations are consumed (:mod:`modelbank.marketplace.allocations`).

Price: quota and bundles ``quantity × unit_price / 1,000,000`` (price per USD of spend),
stakes ``quantity × unit_price`` (price per basis point), rounded half-even once.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.earnings import service as earnings
from modelbank.earnings import stakes as earnings_stakes
from modelbank.earnings.errors import StakeUnavailable
from modelbank.errors import IdempotencyConflict, InvalidInput
from modelbank.ledger import service as ledger
from modelbank.marketplace import escrow, views
from modelbank.marketplace.errors import (
    InvalidFill,
    MarketPriceChanged,
    OwnMarketListing,
    ResourceNotListable,
)
from modelbank.marketplace.listings import allocation_expiry, lock_listing, require_open
from modelbank.marketplace.models import allocations_table as allocations
from modelbank.marketplace.models import bundle_items_table as bundle_items
from modelbank.marketplace.models import listings_table as listings
from modelbank.marketplace.models import orders_table as orders
from modelbank.marketplace.records import QUOTA_PRICE_UNIT_UUSD, BuyResult
from modelbank.money import div_half_even
from modelbank.platform import service as platform_settings
from modelbank.pool.resources import get_resource
from modelbank.users import service as users
from modelbank.webhooks import service as webhooks

COMMISSION_BPS_KEY = "marketplace.commission_bps"
"""Platform setting: the marketplace's commission in basis points."""
DEFAULT_COMMISSION_BPS = 1_500
"""DESIGN §10: the platform keeps 15 %."""
MAX_KEY_LENGTH = 200
SERVING = ("active", "depleted")
"""Resource statuses in which bought quota can be served (depleted: its *pool* part is
used up; the market part is separate)."""


def commission_bps(session: Session) -> int:
    """The commission in force (platform setting, default 1,500 bps). Raises
    :class:`InvalidInput` when the operator set it outside 0…10,000."""
    bps = platform_settings.get(session, COMMISSION_BPS_KEY, DEFAULT_COMMISSION_BPS)
    if not 0 <= bps <= escrow.BPS:
        raise InvalidInput(f"{COMMISSION_BPS_KEY} must be 0…10000, is {bps}")
    return bps


def price_of(kind: str, quantity: int, unit_price_ucr: int) -> int:
    """µcr paid for ``quantity`` units of a listing of ``kind`` (module docstring)."""
    if kind == "stake":
        return quantity * unit_price_ucr
    return div_half_even(quantity * unit_price_ucr, QUOTA_PRICE_UNIT_UUSD)


def _hash(listing_id: int, quantity: int) -> str:
    return hashlib.sha256(f"{listing_id}:{quantity}".encode()).hexdigest()


def _check_quantity(row: Any, quantity: int) -> None:
    left = int(row.quantity) - int(row.filled)
    minimum = min(int(row.min_fill), left)  # the last remainder may be smaller
    if (
        not isinstance(quantity, int)
        or isinstance(quantity, bool)
        or not minimum <= quantity <= left
        or (row.kind == "bundle" and quantity != left)
    ):
        raise InvalidFill(
            f"quantity must be {minimum}…{left} for listing {row.id}"
            + (" (a bundle is bought whole)" if row.kind == "bundle" else ""),
            quantity=quantity,
            min_fill=int(row.min_fill),
            available=left,
        )


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
    """See :func:`modelbank.marketplace.service.buy`."""
    now = now or utcnow()
    if not idempotency_key or len(idempotency_key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"an idempotency key of 1–{MAX_KEY_LENGTH} characters is required")
    row = lock_listing(session, listing_id)
    replay = _replay(session, buyer_id, idempotency_key, listing_id, quantity)
    if replay is not None:
        return replay
    require_open(row, now)
    if max_unit_price_ucr is not None and int(row.unit_price_ucr) > max_unit_price_ucr:
        raise MarketPriceChanged(
            f"listing {listing_id} costs {int(row.unit_price_ucr)} µcr per unit now,"
            f" above the {max_unit_price_ucr} the buyer accepts",
            listing_id=listing_id,
            unit_price_ucr=int(row.unit_price_ucr),
            max_unit_price_ucr=max_unit_price_ucr,
        )
    if int(row.seller_id) == buyer_id:
        raise OwnMarketListing("a seller cannot buy their own listing", listing_id=listing_id)
    users.get_user(session, buyer_id)
    _check_quantity(row, quantity)
    items = _items(session, row, quantity)
    for resource_id, _ in items:
        status = get_resource(session, resource_id).status
        if status not in SERVING:
            raise ResourceNotListable(
                f"resource {resource_id} is {status}: its quota cannot be bought",
                resource_id=resource_id,
                status=status,
            )
    paid = price_of(row.kind, quantity, int(row.unit_price_ucr))
    bps = commission_bps(session)
    # A savepoint: a refusal past this point (insufficient funds, a stake gone) leaves
    # nothing written even when the caller goes on and commits.
    with session.begin_nested():
        order_id = _fill(session, row, buyer_id, quantity, items, paid, bps, idempotency_key, now)
    order = views.get_order(session, order_id)
    allocated = views.allocations_of_order(session, order_id)
    webhooks.emit(
        session,
        "marketplace.order.filled",
        {
            "order_id": order.id,
            "listing_id": order.listing_id,
            "kind": order.kind,
            "buyer_id": order.buyer_id,
            "seller_id": order.seller_id,
            "quantity": order.quantity,
            "paid_ucr": order.paid_ucr,
            "commission_bps": order.commission_bps,
            "allocation_ids": [a.id for a in allocated],
        },
        now=now,
    )
    return BuyResult(order, allocated, replayed=False)


def _fill(
    session: Session,
    row: Any,
    buyer_id: int,
    quantity: int,
    items: list[tuple[int, int]],
    paid: int,
    bps: int,
    key: str,
    now: datetime,
) -> int:
    """Insert the order, pay into escrow, fill (stake or allocations), update the listing;
    return the order's id."""
    listing_id = int(row.id)
    if row.kind == "stake":
        # Both wallets before the model's row, in id order, as a charge and a direct stake
        # sale take them (no deadlock with the seller's own charges).
        ledger.lock_accounts(
            session,
            [users.get_user(session, u).wallet_account_id for u in (buyer_id, int(row.seller_id))],
        )
    order_id = _insert_order(session, row, buyer_id, quantity, paid, bps, key, now)
    transfer_id, basis = escrow.pay_in(
        session,
        order_id,
        buyer_id,
        paid,
        now=now,
        metadata={"listing_id": listing_id, "quantity": quantity},
    )
    session.connection().execute(
        update(orders)
        .where(orders.c.id == order_id)
        .values(escrow_transfer_id=transfer_id, basis_uusd=basis)
    )
    if row.kind == "stake":
        _fill_stake(session, row, order_id, buyer_id, quantity, paid, bps, basis, now)
    else:
        _allocate(session, row, order_id, buyer_id, items, paid, now)
    filled = int(row.filled) + quantity
    session.connection().execute(
        update(listings)
        .where(listings.c.id == listing_id)
        .values(
            filled=filled,
            status="filled" if filled == int(row.quantity) else "open",
            updated_at=now,
            closed_at=now if filled == int(row.quantity) else None,
        )
    )
    return order_id


def _replay(
    session: Session, buyer_id: int, key: str, listing_id: int, quantity: int
) -> BuyResult | None:
    found = (
        session.connection()
        .execute(
            select(orders.c.id, orders.c.request_hash).where(
                orders.c.buyer_id == buyer_id, orders.c.idempotency_key == key
            )
        )
        .first()
    )
    if found is None:
        return None
    if found.request_hash != _hash(listing_id, quantity):
        raise IdempotencyConflict(
            "this Idempotency-Key was used for another buy", idempotency_key=key
        )
    order_id = int(found.id)
    return BuyResult(
        views.get_order(session, order_id),
        views.allocations_of_order(session, order_id),
        replayed=True,
    )


def _items(session: Session, row: Any, quantity: int) -> list[tuple[int, int]]:
    """(resource id, µUSD) the fill allocates: one for quota, each item for a bundle."""
    if row.kind == "quota":
        return [(int(row.resource_id), quantity)]
    if row.kind == "bundle":
        return [
            (int(r), int(q))
            for r, q in session.connection().execute(
                select(bundle_items.c.resource_id, bundle_items.c.quantity_uusd)
                .where(bundle_items.c.listing_id == row.id)
                .order_by(bundle_items.c.resource_id)
            )
        ]
    return []


def _insert_order(
    session: Session,
    row: Any,
    buyer_id: int,
    quantity: int,
    paid: int,
    bps: int,
    key: str,
    now: datetime,
) -> int:
    return int(
        session.connection()
        .execute(
            orders.insert()
            .values(
                listing_id=int(row.id),
                buyer_id=buyer_id,
                seller_id=int(row.seller_id),
                kind=row.kind,
                quantity=quantity,
                unit_price_ucr=int(row.unit_price_ucr),
                paid_ucr=paid,
                basis_uusd=0,
                commission_bps=bps,
                seller_ucr=0,
                commission_ucr=0,
                returned_ucr=0,
                status="open",
                idempotency_key=key,
                request_hash=_hash(int(row.id), quantity),
                created_at=now,
            )
            .returning(orders.c.id)
        )
        .scalar_one()
    )


def _fill_stake(
    session: Session,
    row: Any,
    order_id: int,
    buyer_id: int,
    bps_bought: int,
    paid: int,
    bps: int,
    basis: int,
    now: datetime,
) -> None:
    """Move the stake and release the whole payment (seller and commission)."""
    model_id, seller_id = int(row.model_id), int(row.seller_id)
    earnings.lock_use_counts(session, [model_id])
    stakes = dict(earnings_stakes.get_stakes(session, model_id))
    if stakes.get(seller_id, 0) < bps_bought:
        raise StakeUnavailable(
            f"user {seller_id} no longer holds the {bps_bought} bps listed",
            held_bps=stakes.get(seller_id, 0),
            share_bps=bps_bought,
        )
    stakes[seller_id] -= bps_bought
    stakes[buyer_id] = stakes.get(buyer_id, 0) + bps_bought
    earnings.set_beneficiaries(
        session, model_id, sorted((u, s) for u, s in stakes.items() if s > 0)
    )
    seller_ucr, commission = escrow.split(paid, bps)
    escrow.release(
        session,
        order_id=order_id,
        key=f"o{order_id}:{paid}",
        seller_id=seller_id,
        seller_ucr=seller_ucr,
        commission_ucr=commission,
        basis_uusd=escrow.basis_share(basis, paid, 0, seller_ucr),
        now=now,
    )
    session.connection().execute(
        update(orders)
        .where(orders.c.id == order_id)
        .values(seller_ucr=seller_ucr, commission_ucr=commission, status="closed", closed_at=now)
    )


def _allocate(
    session: Session,
    row: Any,
    order_id: int,
    buyer_id: int,
    items: list[tuple[int, int]],
    paid: int,
    now: datetime,
) -> None:
    """One allocation per item, the payment shared by quantity (cumulative rounding)."""
    total = sum(q for _, q in items)
    expires = allocation_expiry(row, now)
    before = 0
    cumulative = 0
    values = []
    for resource_id, quantity in items:
        cumulative += quantity
        share = div_half_even(paid * cumulative, total) - before
        before += share
        values.append(
            {
                "order_id": order_id,
                "buyer_id": buyer_id,
                "seller_id": int(row.seller_id),
                "resource_id": resource_id,
                "quantity_uusd": quantity,
                "consumed_uusd": 0,
                "held_uusd": 0,
                "paid_ucr": share,
                "seller_ucr": 0,
                "commission_ucr": 0,
                "returned_ucr": 0,
                "status": "active",
                "expires_at": expires,
                "created_at": now,
                "updated_at": now,
            }
        )
    session.connection().execute(allocations.insert(), values)
