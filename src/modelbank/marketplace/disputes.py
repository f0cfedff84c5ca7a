"""Disputes (issue 15 §5): a buyer says an allocation failed to serve; an admin resolves it
by **refunding** the unreleased escrow to the buyer (the allocation closes as ``refunded``)
or **releasing** it to the seller (as if it had been consumed: seller and commission, the
allocation closes as ``exhausted``), recorded with a reason. Consumed quota stays paid.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.marketplace import allocations as allocs
from modelbank.marketplace.errors import AllocationState, DisputeNotFound, DisputeState
from modelbank.marketplace.models import allocations_table as allocations
from modelbank.marketplace.models import disputes_table as disputes
from modelbank.marketplace.records import DisputeView
from modelbank.marketplace.views import dispute_view, get_allocation

MAX_REASON = 1_000
PAGE_LIMIT = 200
ACTIONS = ("refund", "release")


def _reason(reason: str) -> str:
    text = reason.strip()
    if not 1 <= len(text) <= MAX_REASON:
        raise InvalidInput(f"reason must be 1–{MAX_REASON} characters")
    return text


def open_dispute(
    session: Session,
    allocation_id: int,
    buyer_id: int,
    reason: str,
    *,
    now: datetime | None = None,
) -> DisputeView:
    """See :func:`modelbank.marketplace.service.open_dispute`."""
    now = now or utcnow()
    text = _reason(reason)
    found = get_allocation(session, allocation_id, user_id=buyer_id)
    if found.buyer_id != buyer_id:  # the seller sees it too, but only the buyer disputes
        raise AllocationState(
            "only the buyer can dispute an allocation",
            allocation_id=allocation_id,
            status=found.status,
        )
    # The allocation's row lock serialises racing disputes (a double click): the second
    # finds the first open and is refused, never a second open dispute.
    locked = (
        session.connection()
        .execute(
            select(allocations.c.status).where(allocations.c.id == allocation_id).with_for_update()
        )
        .one()
    )
    if locked.status != "active":
        raise AllocationState(
            f"allocation {allocation_id} is {locked.status}: nothing left in escrow to dispute",
            allocation_id=allocation_id,
            status=locked.status,
        )
    open_one = (
        session.connection()
        .execute(
            select(disputes.c.id).where(
                disputes.c.allocation_id == allocation_id, disputes.c.status == "open"
            )
        )
        .first()
    )
    if open_one is not None:
        raise DisputeState(
            f"allocation {allocation_id} already has an open dispute",
            dispute_id=int(open_one.id),
            status="open",
        )
    dispute_id = int(
        session.connection()
        .execute(
            disputes.insert()
            .values(
                allocation_id=allocation_id,
                buyer_id=buyer_id,
                reason=text,
                status="open",
                amount_ucr=0,
                created_at=now,
            )
            .returning(disputes.c.id)
        )
        .scalar_one()
    )
    return get_dispute(session, dispute_id)


def get_dispute(session: Session, dispute_id: int, *, user_id: int | None = None) -> DisputeView:
    """See :func:`modelbank.marketplace.service.get_dispute`."""
    query = select(disputes).where(disputes.c.id == dispute_id)
    if user_id is not None:
        query = query.where(disputes.c.buyer_id == user_id)
    row = session.connection().execute(query).first()
    if row is None:
        raise DisputeNotFound(f"no dispute {dispute_id}", dispute_id=dispute_id)
    return dispute_view(row)


def list_disputes(
    session: Session,
    *,
    user_id: int | None = None,
    status: str | None = None,
    after_id: int = 0,
    limit: int = 50,
) -> list[DisputeView]:
    """See :func:`modelbank.marketplace.service.list_disputes`."""
    query = select(disputes).where(disputes.c.id > after_id)
    if user_id is not None:
        query = query.where(disputes.c.buyer_id == user_id)
    if status is not None:
        query = query.where(disputes.c.status == status)
    rows = session.connection().execute(
        query.order_by(disputes.c.id).limit(max(1, min(limit, PAGE_LIMIT)))
    )
    return [dispute_view(r) for r in rows]


def resolve_dispute(
    session: Session,
    dispute_id: int,
    admin_id: int,
    *,
    action: str,
    reason: str,
    now: datetime | None = None,
) -> DisputeView:
    """See :func:`modelbank.marketplace.service.resolve_dispute`."""
    now = now or utcnow()
    text = _reason(reason)
    if action not in ACTIONS:
        raise InvalidInput(f"action must be one of {ACTIONS}")
    row = (
        session.connection()
        .execute(select(disputes).where(disputes.c.id == dispute_id).with_for_update())
        .first()
    )
    if row is None:
        raise DisputeNotFound(f"no dispute {dispute_id}", dispute_id=dispute_id)
    if row.status != "open":
        raise DisputeState(
            f"dispute {dispute_id} is {row.status}", dispute_id=dispute_id, status=row.status
        )
    allocation_id = int(row.allocation_id)
    if action == "refund":
        amount = allocs.give_back(session, allocation_id, "refunded", now=now)
        status = "refunded"
    else:
        amount = _release_rest(session, allocation_id, now)
        status = "released"
    session.connection().execute(
        update(disputes)
        .where(disputes.c.id == dispute_id)
        .values(
            status=status,
            resolution=text,
            resolved_by=admin_id,
            amount_ucr=amount,
            resolved_at=now,
        )
    )
    resolved = get_dispute(session, dispute_id)
    audit.record(
        session,
        "marketplace.dispute.resolve",
        "marketplace_dispute",
        dispute_id,
        before=dispute_view(row),
        after=resolved,
        now=now,
    )
    return resolved


def _release_rest(session: Session, allocation_id: int, now: datetime) -> int:
    """Release all of an active allocation's escrow to the seller (as if consumed)."""
    row = (
        session.connection()
        .execute(select(allocations).where(allocations.c.id == allocation_id).with_for_update())
        .one()
    )
    if row.status != "active":
        return 0
    released = allocs.release_to(session, row, int(row.quantity_uusd), now)
    allocs.close(session, row, "exhausted", now)
    return released
