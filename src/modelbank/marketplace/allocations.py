"""Allocations (DESIGN §10): bought quota consumed through the gateway, released from escrow
in proportion, and returned when it can no longer be consumed.

**Gateway calls.** :func:`find` picks the buyer's allocation that serves a model (the oldest
active, unexpired one on a live resource with free µUSD); :func:`reserve` holds the call's
bound (µUSD of provider cost) against it, keyed by the gateway's request id; :func:`settle`
books the call's real provider cost (capped at what is left), releases escrow and ends the
hold; :func:`void` ends a hold that served nothing. Abandoned holds expire
(:func:`expire_uses`, jobs).

**Release**: after a settlement the allocation's released gross is
``paid × consumed / quantity`` (half-even, cumulative, :func:`escrow.released_gross`), split
seller / commission by the order's frozen commission (:func:`escrow.split`); the difference
to what was released before is posted. At ``consumed = quantity`` it is ``exhausted``:
everything released, ``marketplace.allocation.exhausted`` emitted.

**Return**: when its resource fails or is withdrawn (:func:`return_for_resource`, hooked
into :mod:`modelbank.pool.lifecycle`), when it expires (:func:`expire_due`, jobs) or a
dispute refunds it, the unreleased escrow (``paid − seller − commission``) goes back to the
buyer and ``marketplace.escrow.returned`` is emitted. The order closes when its last
allocation does.

Locks: the allocation row (``FOR UPDATE``) → the seller's/buyer's wallet → platform accounts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.marketplace import escrow
from modelbank.marketplace.errors import AllocationNotFound
from modelbank.marketplace.listings import close_listings, open_listing_ids_of_resource
from modelbank.marketplace.models import allocations_table as allocations
from modelbank.marketplace.models import orders_table as orders
from modelbank.marketplace.models import uses_table as uses
from modelbank.marketplace.records import AllocationTarget, UseResult, payload
from modelbank.pool.models import resource_health_table as health
from modelbank.pool.models import resource_models_table as served
from modelbank.pool.models import resources_table as resources
from modelbank.webhooks import service as webhooks

SERVING = ("active", "depleted")
"""Resource statuses in which an allocation serves calls."""


_FREE = allocations.c.quantity_uusd - allocations.c.consumed_uusd - allocations.c.held_uusd
_FIND = (
    select(allocations.c.id, allocations.c.resource_id, _FREE.label("free"))
    .select_from(
        allocations.join(resources, resources.c.id == allocations.c.resource_id)
        .join(served, served.c.resource_id == allocations.c.resource_id)
        .outerjoin(health, health.c.resource_id == allocations.c.resource_id)
    )
    .where(
        allocations.c.buyer_id == bindparam("buyer_id"),
        allocations.c.status == "active",
        or_(allocations.c.expires_at.is_(None), allocations.c.expires_at > bindparam("now")),
        resources.c.status.in_(SERVING),
        served.c.model_id == bindparam("model_id"),
        or_(health.c.breaker.is_(None), health.c.breaker != "open"),
        _FREE > 0,
    )
    .order_by(allocations.c.id)
    .limit(1)
)
"""Built once: :func:`find` runs on every gateway request (DESIGN §16: a statement built
per call costs ~100 µs, a prebuilt one ~23 µs). Served by ``ix_marketplace_allocations_buyer``."""


def find(
    session: Session, buyer_id: int, model_id: int, *, now: datetime | None = None
) -> AllocationTarget | None:
    """The buyer's allocation that serves ``model_id`` first (oldest), or None: active, not
    expired, on a resource that is active (or pool-depleted), serves the model and whose
    breaker is not open (a key the router would skip: the call then goes the normal way
    rather than failing), with µUSD free (quantity − consumed − held > 0). No lock (the
    gateway reserves under one). One indexed query."""
    row = (
        session.connection()
        .execute(_FIND, {"buyer_id": buyer_id, "model_id": model_id, "now": now or utcnow()})
        .first()
    )
    if row is None:
        return None
    return AllocationTarget(int(row.id), int(row.resource_id), int(row.free))


def _lock(session: Session, allocation_id: int) -> Any:
    row = (
        session.connection()
        .execute(select(allocations).where(allocations.c.id == allocation_id).with_for_update())
        .first()
    )
    if row is None:
        raise AllocationNotFound(f"no allocation {allocation_id}", allocation_id=allocation_id)
    return row


def reserve(
    session: Session,
    allocation_id: int,
    request_id: str,
    model_id: int,
    held_uusd: int,
    *,
    timeout_s: int,
    now: datetime | None = None,
) -> bool:
    """Hold ``held_uusd`` (≥ 1) of the allocation for gateway request ``request_id``; False
    (nothing held) when the allocation is no longer active or has less free. The hold
    expires after ``timeout_s`` unless settled or voided."""
    now = now or utcnow()
    row = _lock(session, allocation_id)
    free = int(row.quantity_uusd) - int(row.consumed_uusd) - int(row.held_uusd)
    expired = row.expires_at is not None and row.expires_at <= now
    if row.status != "active" or expired or held_uusd > free or held_uusd <= 0:
        return False
    conn = session.connection()
    conn.execute(
        update(allocations)
        .where(allocations.c.id == allocation_id)
        .values(held_uusd=allocations.c.held_uusd + held_uusd, updated_at=now)
    )
    conn.execute(
        uses.insert().values(
            allocation_id=allocation_id,
            request_id=request_id,
            model_id=model_id,
            held_uusd=held_uusd,
            cost_uusd=0,
            input_tokens=0,
            output_tokens=0,
            released_ucr=0,
            status="pending",
            expires_at=now + timedelta(seconds=timeout_s),
            created_at=now,
        )
    )
    return True


def lock_use(session: Session, request_id: str) -> bool:
    """Lock what settling gateway request ``request_id``'s hold touches, in the module's lock
    order, before anything else of the settlement: its allocation row, then the buyer's and
    the seller's wallets (by account id). The gateway calls it first, so that the usage
    event it records for the call (which locks the buyer's wallet, then platform accounts)
    never takes the buyer's wallet after :func:`settle` took the escrow's and the fees'
    accounts. False (nothing locked) when there is no such hold."""
    conn = session.connection()
    use = conn.execute(select(uses.c.allocation_id).where(uses.c.request_id == request_id)).first()
    if use is None:
        return False
    row = _lock(session, int(use.allocation_id))
    ledger.lock_user_accounts(
        session, [int(row.buyer_id), int(row.seller_id)], AccountCode.USER_WALLET
    )
    return True


def settle(
    session: Session,
    request_id: str,
    cost_uusd: int,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    now: datetime | None = None,
) -> UseResult | None:
    """Settle gateway request ``request_id``'s hold: book ``cost_uusd`` (capped at what the
    allocation has left; 0 voids it) and release escrow in proportion. Idempotent: a use no
    longer pending returns None and changes nothing; so does one whose allocation closed
    meanwhile (its escrow was returned: the call is on the seller)."""
    now = now or utcnow()
    conn = session.connection()
    use = conn.execute(select(uses).where(uses.c.request_id == request_id)).first()
    if use is None or use.status != "pending":
        return None
    row = _lock(session, int(use.allocation_id))
    use = conn.execute(select(uses).where(uses.c.id == use.id).with_for_update()).one()
    if use.status != "pending":
        return None
    held = int(use.held_uusd)
    active = row.status == "active"
    booked = min(max(cost_uusd, 0), int(row.quantity_uusd) - int(row.consumed_uusd))
    if not active:
        booked = 0
    conn.execute(
        update(uses)
        .where(uses.c.id == use.id)
        .values(
            status="settled" if booked > 0 else "voided",
            cost_uusd=booked,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            settled_at=now,
        )
    )
    consumed = int(row.consumed_uusd) + booked
    conn.execute(
        update(allocations)
        .where(allocations.c.id == row.id)
        .values(
            held_uusd=func.max(allocations.c.held_uusd - held, 0)
            if conn.dialect.name == "sqlite"
            else func.greatest(allocations.c.held_uusd - held, 0),
            consumed_uusd=consumed,
            updated_at=now,
        )
    )
    if booked == 0:
        return UseResult(int(row.id), 0, 0, exhausted=False)
    released = release_to(session, row, consumed, now)
    conn.execute(update(uses).where(uses.c.id == use.id).values(released_ucr=released))
    exhausted = consumed >= int(row.quantity_uusd)
    if exhausted:
        close(session, row, "exhausted", now)
        webhooks.emit(
            session,
            "marketplace.allocation.exhausted",
            payload(
                allocation_id=int(row.id),
                order_id=int(row.order_id),
                buyer_id=int(row.buyer_id),
                seller_id=int(row.seller_id),
                resource_id=int(row.resource_id),
                quantity_uusd=int(row.quantity_uusd),
                paid_ucr=int(row.paid_ucr),
            ),
            now=now,
        )
    return UseResult(int(row.id), booked, released, exhausted)


def void(session: Session, request_id: str, *, now: datetime | None = None) -> None:
    """End request ``request_id``'s hold without cost (no upstream served it)."""
    settle(session, request_id, 0, now=now)


def release_to(session: Session, row: Any, consumed: int, now: datetime) -> int:
    """Release the allocation's escrow up to ``consumed``; return µcr released now."""
    order = session.connection().execute(select(orders).where(orders.c.id == row.order_id)).one()
    paid = int(row.paid_ucr)
    gross = escrow.released_gross(paid, consumed, int(row.quantity_uusd))
    before_seller, before_fee = int(row.seller_ucr), int(row.commission_ucr)
    seller, fee = escrow.split(gross, int(order.commission_bps))
    # Monotone in gross: half-even rounding of a growing product never steps back by more
    # than the rounding of the difference, so each part only grows (asserted).
    assert seller >= before_seller and fee >= before_fee, "escrow release went backwards"
    if gross == before_seller + before_fee:
        return 0
    escrow.release(
        session,
        order_id=int(row.order_id),
        key=f"a{row.id}:{gross}",
        seller_id=int(row.seller_id),
        seller_ucr=seller - before_seller,
        commission_ucr=fee - before_fee,
        basis_uusd=escrow.basis_share(
            int(order.basis_uusd), int(order.paid_ucr), before_seller, seller
        ),
        now=now,
    )
    conn = session.connection()
    conn.execute(
        update(allocations)
        .where(allocations.c.id == row.id)
        .values(seller_ucr=seller, commission_ucr=fee)
    )
    conn.execute(
        update(orders)
        .where(orders.c.id == row.order_id)
        .values(
            seller_ucr=orders.c.seller_ucr + (seller - before_seller),
            commission_ucr=orders.c.commission_ucr + (fee - before_fee),
        )
    )
    return gross - before_seller - before_fee


def close(session: Session, row: Any, status: str, now: datetime) -> None:
    """Mark the allocation ``status`` and close its order when none of its allocations is
    active any more."""
    conn = session.connection()
    conn.execute(
        update(allocations)
        .where(allocations.c.id == row.id)
        .values(status=status, closed_at=now, updated_at=now)
    )
    still = conn.execute(
        select(func.count())
        .select_from(allocations)
        .where(allocations.c.order_id == row.order_id, allocations.c.status == "active")
    ).scalar_one()
    if not still:
        conn.execute(
            update(orders)
            .where(orders.c.id == row.order_id, orders.c.status == "open")
            .values(status="closed", closed_at=now)
        )


def give_back(session: Session, allocation_id: int, status: str, *, now: datetime) -> int:
    """Return an active allocation's unreleased escrow to its buyer and close it as
    ``status`` (returned, expired, refunded); return µcr returned (0 when it was not active).
    Emits ``marketplace.escrow.returned``."""
    row = _lock(session, allocation_id)
    if row.status != "active":
        return 0
    amount = int(row.paid_ucr) - int(row.seller_ucr) - int(row.commission_ucr)
    escrow.give_back(
        session,
        order_id=int(row.order_id),
        key=f"a{row.id}",
        buyer_id=int(row.buyer_id),
        amount_ucr=amount,
        now=now,
    )
    conn = session.connection()
    conn.execute(update(allocations).where(allocations.c.id == row.id).values(returned_ucr=amount))
    conn.execute(
        update(orders)
        .where(orders.c.id == row.order_id)
        .values(returned_ucr=orders.c.returned_ucr + amount)
    )
    close(session, row, status, now)
    webhooks.emit(
        session,
        "marketplace.escrow.returned",
        payload(
            allocation_id=int(row.id),
            order_id=int(row.order_id),
            buyer_id=int(row.buyer_id),
            resource_id=int(row.resource_id),
            reason=status,
            returned_ucr=amount,
            consumed_uusd=int(row.consumed_uusd),
            quantity_uusd=int(row.quantity_uusd),
        ),
        now=now,
    )
    return amount


def return_for_resource(
    session: Session, resource_id: int, status: str, now: datetime | None = None
) -> int:
    """The resource is ending (``status`` withdrawn or failed): close its open listings and
    return every active allocation's unreleased escrow. Return µcr returned. Idempotent.
    Called by :mod:`modelbank.pool.lifecycle` before it locks the depositor's wallet."""
    now = now or utcnow()
    close_listings(session, open_listing_ids_of_resource(session, resource_id), "closed", now)
    ids = [
        int(i)
        for i in session.connection()
        .execute(
            select(allocations.c.id)
            .where(allocations.c.resource_id == resource_id, allocations.c.status == "active")
            .order_by(allocations.c.id)
        )
        .scalars()
    ]
    return sum(give_back(session, i, "returned", now=now) for i in ids)


def expire_due(session: Session, *, now: datetime | None = None, limit: int = 500) -> int:
    """Return the escrow of active allocations whose ``expires_at`` passed (status
    ``expired``); return how many. For the jobs (bounded batch)."""
    now = now or utcnow()
    ids = [
        int(i)
        for i in session.connection()
        .execute(
            select(allocations.c.id)
            .where(allocations.c.status == "active", allocations.c.expires_at <= now)
            .order_by(allocations.c.id)
            .limit(limit)
        )
        .scalars()
    ]
    for allocation_id in ids:
        give_back(session, allocation_id, "expired", now=now)
    return len(ids)


def expire_uses(session: Session, *, now: datetime | None = None, limit: int = 500) -> int:
    """Void allocation holds of gateway calls never settled past their expiry (a process
    died mid-call); return how many."""
    now = now or utcnow()
    ids = [
        r
        for r in session.connection()
        .execute(
            select(uses.c.request_id)
            .where(uses.c.status == "pending", uses.c.expires_at <= now)
            .order_by(uses.c.id)
            .limit(limit)
        )
        .scalars()
    ]
    for request_id in ids:
        void(session, request_id, now=now)
    return len(ids)
