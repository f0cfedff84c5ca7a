"""Suspending a resource and putting it back (DESIGN §9: ``suspended`` by an admin): the
router skips it (it routes to ``active`` resources only), no credit moves, and the key stays
in the pool (its fingerprint stays taken). Spend of requests already in flight is still
booked (:data:`~modelbank.pool.lifecycle.BOOKABLE`).

Only an activated resource is suspended (``active`` or ``depleted``): a ``pending`` one has
not been credited yet, and activation treats ``suspended`` as done. Resuming recomputes the
status from the quota: ``depleted`` when consumption reached the pool part, else ``active``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.pool.deposits import MAX_REASON_LENGTH
from modelbank.pool.errors import ResourceState
from modelbank.pool.models import resources_table as resources
from modelbank.pool.resources import ResourceInfo, get_resource

SUSPENDABLE = ("active", "depleted")
"""Statuses a resource can be suspended from."""


def _set(
    session: Session, resource_id: int, status: str, reason: str | None, now: datetime
) -> None:
    session.connection().execute(
        update(resources)
        .where(resources.c.id == resource_id)
        .values(status=status, status_reason=reason, updated_at=now)
    )


def suspend(
    session: Session, resource_id: int, reason: str, *, now: datetime | None = None
) -> ResourceInfo:
    """Take an ``active`` or ``depleted`` resource out of routing: status ``suspended``
    with ``reason`` (1–200 characters, shown to its depositor). Idempotent: a suspended
    resource is returned as it is. Raises :class:`~modelbank.errors.InvalidInput` (blank
    reason), :class:`~modelbank.pool.errors.ResourceNotFound`, :class:`ResourceState`
    (pending, withdrawn or failed)."""
    text = reason.strip()
    if not text:
        raise InvalidInput("a reason is required to suspend a resource")
    info = get_resource(session, resource_id, lock=True)
    if info.status == "suspended":
        return info
    if info.status not in SUSPENDABLE:
        raise ResourceState(
            f"resource {resource_id} is {info.status}: only an active or depleted resource"
            " is suspended",
            resource_id=resource_id,
            status=info.status,
        )
    _set(session, resource_id, "suspended", text[:MAX_REASON_LENGTH], now or utcnow())
    return get_resource(session, resource_id)


def resume(session: Session, resource_id: int, *, now: datetime | None = None) -> ResourceInfo:
    """Put a ``suspended`` resource back: ``depleted`` when its consumption reached the
    pool part (quota − market part), else ``active``. Idempotent on an active or depleted
    resource. Raises :class:`~modelbank.pool.errors.ResourceNotFound`,
    :class:`ResourceState` (pending, withdrawn or failed)."""
    info = get_resource(session, resource_id, lock=True)
    if info.status in SUSPENDABLE:
        return info
    if info.status != "suspended":
        raise ResourceState(
            f"resource {resource_id} is {info.status}: only a suspended resource is resumed",
            resource_id=resource_id,
            status=info.status,
        )
    status = "depleted" if info.consumed_uusd >= info.pool_quota_uusd else "active"
    _set(session, resource_id, status, None, now or utcnow())
    return get_resource(session, resource_id)


__all__ = ["SUSPENDABLE", "resume", "suspend"]
