"""Settlement of a gateway call (DESIGN §9): **capture** the reported usage on the call's
hold through the normal charge pipeline (usage event ``hold:<hold id>``), or **void** the
hold when nothing was used; book the provider cost on the serving resource's quota, and
write the route log — one transaction. A call served from a marketplace allocation
(DESIGN §10) books its cost there instead and is recorded as a *prepaid* usage event
``gw:<request id>`` (0 µcr charged, its provider cost, no creator earnings), so analytics
and rollups count it."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from modelbank.db.base import utcnow
from modelbank.errors import DomainError
from modelbank.gateway import allocated
from modelbank.gateway.call import ENDPOINTS, Call, log_entry, nothing
from modelbank.gateway.usage import Usage
from modelbank.marketplace import allocations
from modelbank.metering import service as metering
from modelbank.metering.models import usage_events_table
from modelbank.pool import routelog
from modelbank.pool import service as pool
from modelbank.pool.router import Attempt, RouteResult
from modelbank.wallets import holds


def settle(
    writes: sessionmaker[Session],
    call: Call,
    route: RouteResult[Any] | None,
    used: Usage | None,
    outcome: str,
    failures: list[Attempt] | None = None,
) -> metering.ChargeResult | None:
    """Capture ``used`` on the call's hold (None: void it), book the provider cost on the
    serving resource's quota, link the usage row to it, mark resources whose key was
    refused as failed, and write the route log — one transaction. Returns the charge
    (None when voided). A capture refused by the pipeline (the hold expired during a very
    long call) is logged as ``unbilled``, never raised: the answer was already sent."""
    attempts = route.attempts if route is not None else (failures or [])
    _fail_refused_keys(writes, attempts)
    if call.allocation is not None:
        return _settle_allocated(writes, call, route, used, outcome, attempts)
    with writes() as session, session.begin():
        now = utcnow()
        result = None
        if used is None or nothing(used):
            _release(session, call, now)
        else:
            try:
                with session.begin_nested():
                    result = _capture(session, call, route, used, now)
            except DomainError:  # the hold expired (or was voided) during the call
                result = None
            if result is None or result.status == "rejected":
                outcome = "unbilled"
                result = None
                _release(session, call, now)
        routelog.write(session, log_entry(call, route, attempts, outcome, result))
        return result


def _settle_allocated(
    writes: sessionmaker[Session],
    call: Call,
    route: RouteResult[Any] | None,
    used: Usage | None,
    outcome: str,
    attempts: list[Attempt],
) -> metering.ChargeResult | None:
    """Settle a call served from an allocation (:mod:`modelbank.gateway.allocated`): cost
    booked there, escrow released, and the use recorded as a prepaid usage event
    (:func:`_record_prepaid`) — one transaction. Returns that event's result (charge 0;
    None when nothing was served)."""
    with writes() as session, session.begin():
        now = utcnow()
        served = route is not None and used is not None and not nothing(used)
        result = None
        if served and used is not None and allocations.lock_use(session, call.request_id):
            try:
                with session.begin_nested():
                    result = _record_prepaid(session, call, route, used, now)
            except DomainError:  # the model or its price gone since admission
                result = None
        cost = allocated.settle(
            session, call.request_id, call.card, used if served else None, now=now
        )
        entry = log_entry(call, route, attempts, outcome, result)
        routelog.write(session, replace(entry, hold_id=None, cost_uusd=cost))
        return result


def _record_prepaid(
    session: Session,
    call: Call,
    route: RouteResult[Any] | None,
    used: Usage,
    now: datetime,
) -> metering.ChargeResult | None:
    """The usage event of a call served from an allocation, through the charge pipeline so
    that analytics and rollups count it: key ``gw:<request id>`` (a retried settlement
    replays it), ``prepaid`` (0 µcr charged, the provider cost recorded, no creator
    earnings: the seller is paid through the escrow), linked to the serving resource. None
    when the pipeline refused it (the model or its price gone since admission): the call
    stays settled on the allocation, its route log row then names no usage."""
    result = metering.charge(
        session, _usage_event(call, used, f"gw:{call.request_id}", prepaid=True), now=now
    )
    if result.usage_id is None:
        return None
    if result.status == "charged":
        _link_usage(session, result.usage_id, route, used)
    return result


def _usage_event(call: Call, used: Usage, idempotency_key: str, **how: Any) -> metering.UsageEvent:
    """The usage event of ``call`` for what the upstream reported (``used``): model, usage
    type, token and unit counts, the request id in its metadata; ``how`` says how it is
    paid (a captured hold, or ``prepaid`` from an allocation)."""
    return metering.UsageEvent(
        idempotency_key=idempotency_key,
        user_id=call.user_id,
        model=call.model.id,
        usage_type=ENDPOINTS[call.endpoint][1],
        input_tokens=used.input_tokens,
        output_tokens=used.output_tokens,
        cached_input_tokens=used.cached_input_tokens,
        units=used.units,
        metadata={"request_id": call.request_id, "gateway": call.endpoint},
        **how,
    )


def _release(session: Session, call: Call, now: datetime) -> None:
    """Void the call's hold if it is still pending (an expired or already voided hold is
    left to what ended it: the jobs void expired ones)."""
    with contextlib.suppress(DomainError), session.begin_nested():
        holds.void(session, call.hold_id, now=now)


def _fail_refused_keys(writes: sessionmaker[Session], attempts: list[Attempt]) -> None:
    """Mark the resources whose key the provider refused as failed (clawback included),
    each in its own transaction: never inside a capture (its wallet locks would then be
    taken in two orders)."""
    for attempt in attempts:
        failure = attempt.failure
        # Only an unambiguous 401 (the key itself refused) ends a resource: a 403 can be
        # the provider's moderation answering one caller's prompt (one-api #1276), and
        # must not let a caller end someone's deposit; it counts in the breaker instead.
        if failure is not None and failure.permanent and failure.status == 401:
            with writes() as session, session.begin():
                pool.fail(session, attempt.resource_id, f"key refused ({failure.kind})")


def _capture(
    session: Session,
    call: Call,
    route: RouteResult[Any] | None,
    used: Usage,
    now: datetime,
) -> metering.ChargeResult:
    fresh = used.input_tokens - used.cached_input_tokens
    priced = call.card.charge_ucr(fresh, used.cached_input_tokens, used.output_tokens, used.units)
    result = metering.charge(
        session,
        _usage_event(
            call,
            used,
            f"hold:{call.hold_id}",
            # Above the hold only if the upstream broke the limits it was sent: the
            # user pays at most what was held.
            charge_ucr=None if priced <= call.bound.hold_ucr else call.bound.hold_ucr,
            hold_id=call.hold_id,
            limited_key_id=call.limited_key_id,
        ),
        now=now,
    )
    if result.status != "charged" or result.usage_id is None:
        return result
    resource_id = _link_usage(session, result.usage_id, route, used)
    if resource_id is not None and result.cost_uusd > 0:
        pool.book_consumption(session, resource_id, result.cost_uusd, now=now)
    return result


def _link_usage(
    session: Session, usage_id: int, route: RouteResult[Any] | None, used: Usage
) -> int | None:
    """Name the serving resource (returned) and whether the counts were estimated on the
    usage row."""
    resource_id = route.target.resource_id if route is not None else None
    session.execute(
        update(usage_events_table)
        .where(usage_events_table.c.id == usage_id)
        .values(resource_id=resource_id, usage_estimated=used.estimated)
    )
    return resource_id
