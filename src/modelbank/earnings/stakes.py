"""Ownership stakes in models and their sale between users (DESIGN §7, issue "Creator
economy").

A model's **stakes** are its beneficiaries: (user, basis points) summing to 10,000; without
stored stakes its creator holds 10,000 (a platform model without a creator has none). Each
usage event's earnings are split by the stakes in force when it is charged
(:mod:`modelbank.metering.service`).

A holder **lists** part of their stake (``share_bps``) for ``price_ucr``; a listing is
``open``, then ``sold`` or ``cancelled``. The open listings of a seller never offer more
than they hold. **Buying** is one transaction: the price moves from the buyer's wallet to the
seller's (transfer code ``trade``, ref ``('stake_listing', id)``), the buyer's grants burn
down for it (ref_type ``stake_listing``) and the seller receives a grant, the stake moves
from seller to buyer (merged with a stake the buyer already holds) and the listing is
marked sold. Any failure (insufficient funds, …) writes nothing.

Choices:

* Credits received by the seller form one grant that carries the cost basis (µUSD) of the
  buyer's grants they burned, so the cash basis follows the credits and revenue recognition
  (:func:`modelbank.wallets.grants.recognition`) stays exact in µUSD; its source is
  ``purchased`` when that basis is > 0, else ``bonus`` (free credits stay free). It never
  expires: the seller earned it.
* A listing may be priced 0: a gift of a stake. Buying it moves no credits (no transfer;
  ``transfer_id`` stays None).
* A seller can never buy their own listing (:class:`OwnListing`), at any price.
* Direct buyer → seller, without escrow or fee: both legs commit together, so nothing needs
  to be held (DESIGN §10's escrow and 15% fee are the marketplace's, not this sale's).
* When an admin replaces the stakes, open listings no longer covered by their seller's new
  stake are cancelled (oldest kept first).

Locks follow a charge's order (wallets, then the model's aggregate row, which
:func:`modelbank.earnings.service.lock_use_counts` locks): listing rows first, then the two
wallets, then the model. Stake changes of one model are thereby serialised with each other
and with its charges (a charge that read the stakes just before a sale committed splits by
those: the stakes of its moment, recorded on each earning).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.catalog import service as catalog
from modelbank.catalog.service import ModelInfo
from modelbank.db.base import utcnow
from modelbank.earnings import service as earnings
from modelbank.earnings.errors import (
    InvalidSplit,
    ListingNotFound,
    ListingState,
    OwnListing,
    StakeUnavailable,
)
from modelbank.earnings.models import beneficiaries_table as beneficiaries
from modelbank.earnings.models import listings_table as listings
from modelbank.earnings.rules import BPS
from modelbank.errors import InvalidInput
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import TransferCode
from modelbank.users import service as users
from modelbank.users.errors import UserNotFound
from modelbank.wallets import alerts, grants

OPEN, SOLD, CANCELLED = "open", "sold", "cancelled"
"""Listing statuses."""

REF_TYPE = "stake_listing"
"""``ref_type`` of a sale's transfer and of the buyer's grant burns (``ref_id``: listing)."""


class Stake(NamedTuple):
    """A user's stake in a model's earnings, in basis points (10,000 = all)."""

    user_id: int
    share_bps: int


@dataclass(frozen=True, slots=True)
class Listing:
    """A stake offered for sale: ``share_bps`` of ``seller_id``'s stake in ``model_id`` for
    ``price_ucr`` µcr. ``status`` open, sold (``buyer_id``; ``transfer_id`` the payment,
    None for a free listing) or cancelled."""

    id: int
    model_id: int
    seller_id: int
    share_bps: int
    price_ucr: int
    status: str
    buyer_id: int | None
    transfer_id: int | None
    created_at: datetime
    closed_at: datetime | None


# ---------------------------------------------------------------- stakes


def get_stakes(session: Session, model_id: int) -> list[Stake]:
    """The model's stakes, largest first: stored ones, else its creator at 10,000, else
    none. Raises :class:`~modelbank.catalog.errors.ModelNotFound`."""
    model = catalog.get_model(session, model_id)
    return _stakes(session, model)


def _stakes(session: Session, model: ModelInfo) -> list[Stake]:
    rows = session.connection().execute(
        select(beneficiaries.c.user_id, beneficiaries.c.share_bps).where(
            beneficiaries.c.model_id == model.id
        )
    )
    found = [Stake(int(r.user_id), int(r.share_bps)) for r in rows]
    if not found and model.creator_id is not None:
        found = [Stake(model.creator_id, BPS)]
    return sorted(found, key=lambda s: (-s.share_bps, s.user_id))


def listed_bps(session: Session, model_id: int) -> dict[int, int]:
    """Seller → basis points offered in the model's open listings."""
    rows = session.connection().execute(
        select(listings.c.seller_id, func.sum(listings.c.share_bps))
        .where(listings.c.model_id == model_id, listings.c.status == OPEN)
        .group_by(listings.c.seller_id)
    )
    return {int(seller): int(total) for seller, total in rows}


def set_stakes(
    session: Session,
    model_id: int,
    shares: Sequence[tuple[int, int]],
    *,
    now: datetime | None = None,
) -> list[Stake]:
    """Replace the model's stakes with ``shares`` ((user id, bps) > 0, summing to 10,000;
    an admin's act) and cancel the open listings no longer covered by their seller's new
    stake. Return the new stakes. Raises :class:`~modelbank.catalog.errors.ModelNotFound`,
    :class:`~modelbank.earnings.errors.InvalidSplit` (an unknown user, a wrong sum, a share
    ≤ 0, a duplicate)."""
    now = now or utcnow()
    model = catalog.get_model(session, model_id)
    for user_id, _ in shares:
        try:
            users.get_user(session, user_id)
        except UserNotFound:
            raise InvalidSplit(f"no user {user_id}", user_id=user_id) from None
    conn = session.connection()
    # The open listings first, then the model: a purchase's lock order (no deadlock).
    open_listings = conn.execute(
        select(listings.c.id, listings.c.seller_id, listings.c.share_bps)
        .where(listings.c.model_id == model_id, listings.c.status == OPEN)
        .order_by(listings.c.id)
        .with_for_update()
    ).all()
    before = _lock_model(session, model)
    earnings.set_beneficiaries(session, model_id, shares)
    held = dict(shares)
    covered: dict[int, int] = {}
    stale: list[int] = []
    for row in open_listings:
        seller, bps = int(row.seller_id), int(row.share_bps)
        if covered.get(seller, 0) + bps <= held.get(seller, 0):
            covered[seller] = covered.get(seller, 0) + bps
        else:
            stale.append(int(row.id))
    if stale:
        conn.execute(
            update(listings).where(listings.c.id.in_(stale)).values(status=CANCELLED, closed_at=now)
        )
    after = _stakes(session, model)
    audit.record(session, "stakes.set", "model", model_id, before=before, after=after, now=now)
    return after


def _lock_model(session: Session, model: ModelInfo) -> list[Stake]:
    """Lock the model's aggregate row (created when missing; the row every charge of the
    model locks too) and read its stakes after the lock is held: read before it, they may
    predate a sale that committed while we waited."""
    earnings.lock_use_counts(session, [model.id])
    return _stakes(session, model)


# ---------------------------------------------------------------- listings


def create_listing(
    session: Session,
    model_id: int,
    seller_id: int,
    share_bps: int,
    price_ucr: int,
    *,
    now: datetime | None = None,
) -> Listing:
    """Offer ``share_bps`` of ``seller_id``'s stake in the model for ``price_ucr`` µcr (0: a
    gift). The seller must hold at least ``share_bps`` beyond what their open listings of
    the model already offer. Raises :class:`~modelbank.catalog.errors.ModelNotFound`,
    :class:`~modelbank.users.errors.UserNotFound`, :class:`InvalidInput` (share outside
    1…10,000, negative price), :class:`StakeUnavailable`."""
    now = now or utcnow()
    if not 0 < share_bps <= BPS:
        raise InvalidInput(f"share_bps must be between 1 and {BPS}, got {share_bps}")
    if price_ucr < 0:
        raise InvalidInput(f"price_ucr must be ≥ 0, got {price_ucr}")
    model = catalog.get_model(session, model_id)
    users.get_user(session, seller_id)
    held = dict(_lock_model(session, model)).get(seller_id, 0)
    offered = listed_bps(session, model_id).get(seller_id, 0)
    if held - offered < share_bps:
        raise StakeUnavailable(
            f"user {seller_id} holds {held} bps of model {model_id}, {offered} bps already"
            f" listed: cannot list {share_bps} bps",
            held_bps=held,
            listed_bps=offered,
            share_bps=share_bps,
        )
    listing_id = (
        session.connection()
        .execute(
            insert(listings)
            .values(
                model_id=model_id,
                seller_id=seller_id,
                share_bps=share_bps,
                price_ucr=price_ucr,
                status=OPEN,
                created_at=now,
            )
            .returning(listings.c.id)
        )
        .scalar_one()
    )
    return Listing(
        int(listing_id), model_id, seller_id, share_bps, price_ucr, OPEN, None, None, now, None
    )


def get_listing(session: Session, listing_id: int, *, model_id: int | None = None) -> Listing:
    """The listing ``listing_id`` (of ``model_id`` when given). Raises
    :class:`ListingNotFound`."""
    row = session.connection().execute(select(listings).where(listings.c.id == listing_id)).first()
    return _found(row, listing_id, model_id)


def list_listings(
    session: Session,
    model_id: int,
    *,
    status: str | None = OPEN,
    after_id: int = 0,
    limit: int = 100,
) -> list[Listing]:
    """The model's listings by id after ``after_id`` (all statuses when ``status`` is None),
    at most ``limit``. Raises :class:`~modelbank.catalog.errors.ModelNotFound`."""
    catalog.get_model(session, model_id)
    query = select(listings).where(listings.c.model_id == model_id, listings.c.id > after_id)
    if status is not None:
        query = query.where(listings.c.status == status)
    rows = session.connection().execute(query.order_by(listings.c.id).limit(limit))
    return [_listing(row) for row in rows]


def cancel_listing(
    session: Session,
    listing_id: int,
    *,
    model_id: int | None = None,
    seller_id: int | None = None,
    now: datetime | None = None,
) -> Listing:
    """Withdraw an open listing. ``seller_id``: the caller acts as that user and must be the
    seller (None: an admin, any listing). Raises :class:`ListingNotFound` (unknown, another
    model's, another seller's), :class:`ListingState` (not open)."""
    now = now or utcnow()
    listing = _lock_listing(session, listing_id, model_id)
    if seller_id is not None and listing.seller_id != seller_id:
        raise ListingNotFound(f"no stake listing {listing_id}", listing_id=listing_id)
    _require_open(listing)
    session.connection().execute(
        update(listings).where(listings.c.id == listing_id).values(status=CANCELLED, closed_at=now)
    )
    return replace(listing, status=CANCELLED, closed_at=now)


def buy_listing(
    session: Session,
    listing_id: int,
    buyer_id: int,
    *,
    model_id: int | None = None,
    now: datetime | None = None,
) -> Listing:
    """Buy an open listing for ``buyer_id`` (see the module doc for what moves); return it
    sold. Raises :class:`ListingNotFound`, :class:`ListingState` (sold or cancelled),
    :class:`OwnListing`, :class:`~modelbank.users.errors.UserNotFound`,
    :class:`StakeUnavailable` (the seller no longer holds the share),
    :class:`~modelbank.ledger.errors.InsufficientFunds`; nothing is written then."""
    now = now or utcnow()
    listing = _lock_listing(session, listing_id, model_id)
    _require_open(listing)
    if buyer_id == listing.seller_id:
        raise OwnListing("a seller cannot buy their own listing", listing_id=listing_id)
    buyer = users.get_user(session, buyer_id)
    seller = users.get_user(session, listing.seller_id)
    price = listing.price_ucr
    wallets = (
        ledger.lock_accounts(session, [buyer.wallet_account_id, seller.wallet_account_id])
        if price > 0
        else {}
    )
    model = catalog.get_model(session, listing.model_id)
    stakes = dict(_lock_model(session, model))
    if stakes.get(listing.seller_id, 0) < listing.share_bps:
        raise StakeUnavailable(
            f"user {listing.seller_id} no longer holds the {listing.share_bps} bps listed",
            held_bps=stakes.get(listing.seller_id, 0),
            share_bps=listing.share_bps,
        )
    transfer_id: int | None = None
    if price > 0:
        transfer_id = _pay(session, listing, buyer, seller, wallets, now)
    stakes[listing.seller_id] -= listing.share_bps
    stakes[buyer_id] = stakes.get(buyer_id, 0) + listing.share_bps
    earnings.set_beneficiaries(
        session, listing.model_id, sorted((u, bps) for u, bps in stakes.items() if bps > 0)
    )
    session.connection().execute(
        update(listings)
        .where(listings.c.id == listing_id)
        .values(status=SOLD, buyer_id=buyer_id, transfer_id=transfer_id, closed_at=now)
    )
    return replace(listing, status=SOLD, buyer_id=buyer_id, transfer_id=transfer_id, closed_at=now)


def _pay(
    session: Session,
    listing: Listing,
    buyer: users.UserInfo,
    seller: users.UserInfo,
    wallets: dict[int, ledger.AccountBalance],
    now: datetime,
) -> int:
    """Move the price buyer → seller: burn the buyer's grants (expired ones swept first),
    post the transfer, record the seller's grant with the burned basis."""
    price = listing.price_ucr
    book = grants.GrantBook.load(session, {buyer.id: wallets[buyer.wallet_account_id]}, now=now)
    transfer_id = ledger.transfer(
        session,
        ledger.NewTransfer(
            debit_account_id=buyer.wallet_account_id,
            credit_account_id=seller.wallet_account_id,
            amount=price,
            code=TransferCode.TRADE,
            ref_type=REF_TYPE,
            ref_id=listing.id,
            idempotency_key=f"{REF_TYPE}:{listing.id}",
            metadata={
                "model_id": listing.model_id,
                "share_bps": listing.share_bps,
                "seller_id": seller.id,
                "buyer_id": buyer.id,
            },
        ),
        now=now,
    )
    book.burn(buyer.id, price, REF_TYPE, listing.id, now=now)
    # The basis the burns of this sale carry (the book also holds any expiry sweep's rows).
    basis = sum(row[4] for row in book.burn_rows if row[5] == REF_TYPE and row[6] == listing.id)
    book.flush(session, now=now)
    grants.receive(
        session,
        seller.id,
        price,
        transfer_id=transfer_id,
        cost_basis_uusd=basis,
        now=now,
        source=grants.GrantSource.PURCHASED if basis > 0 else grants.GrantSource.BONUS,
    )
    alerts.check(session, [buyer.id, seller.id], now=now)
    return transfer_id


# ---------------------------------------------------------------- helpers


def _lock_listing(session: Session, listing_id: int, model_id: int | None) -> Listing:
    row = (
        session.connection()
        .execute(select(listings).where(listings.c.id == listing_id).with_for_update())
        .first()
    )
    return _found(row, listing_id, model_id)


def _found(row: Any, listing_id: int, model_id: int | None) -> Listing:
    if row is None or (model_id is not None and int(row.model_id) != model_id):
        raise ListingNotFound(f"no stake listing {listing_id}", listing_id=listing_id)
    return _listing(row)


def _require_open(listing: Listing) -> None:
    if listing.status != OPEN:
        raise ListingState(
            f"stake listing {listing.id} is {listing.status}",
            listing_id=listing.id,
            status=listing.status,
        )


def _listing(row: Any) -> Listing:
    return Listing(
        id=int(row.id),
        model_id=int(row.model_id),
        seller_id=int(row.seller_id),
        share_bps=int(row.share_bps),
        price_ucr=int(row.price_ucr),
        status=row.status,
        buyer_id=None if row.buyer_id is None else int(row.buyer_id),
        transfer_id=None if row.transfer_id is None else int(row.transfer_id),
        created_at=row.created_at,
        closed_at=row.closed_at,
    )
