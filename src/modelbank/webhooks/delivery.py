"""Delivering the outbox: sign, POST, log, retry with exponential backoff.

:func:`deliver_due` runs in three steps so that no database transaction stays open while a
receiver is slow:

1. **Claim** (one short transaction): select up to ``limit`` due pending deliveries, on
   PostgreSQL with ``FOR UPDATE … SKIP LOCKED`` (two job runners never claim the same row;
   on SQLite ``BEGIN IMMEDIATE`` serialises the claimers), count the attempt
   (``attempts + 1``) and push ``next_attempt_at`` past the end of this run (a *lease*), so
   no other runner picks them up meanwhile; commit.
2. **Send** each (no transaction): sign with the endpoint's secret (Standard Webhooks:
   ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of
   "id.timestamp.body">``), POST with a timeout.
3. **Record** each result at once (one short transaction per result): an attempt row in the
   log, and the delivery becomes ``delivered`` (2xx), ``failed`` (after
   :data:`MAX_ATTEMPTS`) or is rescheduled after :func:`backoff_s`. The update only applies
   while the delivery is still the one this run claimed (``attempts`` unchanged), so a late
   result never overwrites a newer claim.

Guarantee: at least once. A delivered message is never sent again; a message is sent twice
only when a runner dies (or overruns its lease) between sending and recording, and then
with the same ``webhook-id`` for receivers to de-duplicate on.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from modelbank import __version__
from modelbank.db.base import UTCDateTime, utcnow
from modelbank.db.engine import is_postgres
from modelbank.secrets import SecretBox
from modelbank.webhooks.models import DeliveryStatus
from modelbank.webhooks.models import outbox_events_table as events
from modelbank.webhooks.models import webhook_attempts_table as attempts
from modelbank.webhooks.models import webhook_deliveries_table as deliveries
from modelbank.webhooks.models import webhook_endpoints_table as endpoints

MAX_ATTEMPTS = 8
"""Attempts before a delivery is given up (``failed``): with :func:`backoff_s` the last one
comes ~64 minutes after the first (30 s + 1 + 2 + … + 16 min)."""
BACKOFF_BASE_S = 30
"""Wait before the 2nd attempt (seconds); it doubles after each failure."""
BACKOFF_MAX_S = 6 * 3600
"""Longest wait between two attempts (6 h), should :data:`MAX_ATTEMPTS` be raised."""
SEND_TIMEOUT_S = 10.0
"""httpx timeout (connect, write, each read) of one POST: receivers should answer fast and
do their work later; a slow one must not stall the batch."""
LEASE_MARGIN_S = 60
"""Claimed deliveries are leased for this long plus twice the timeout per claimed row: the
worst case of a run that sends them one after the other."""
MAX_BATCH = 500
"""Largest ``limit`` of one run: bounds the lease and the memory of one batch."""
MAX_ERROR_CHARS = 500
"""Stored length of an error message (the column size)."""
USER_AGENT = f"modelbank-webhooks/{__version__}"


def backoff_s(attempt: int) -> int:
    """Seconds to wait after failed attempt number ``attempt`` (1-based) before the next:
    ``BACKOFF_BASE_S × 2^(attempt − 1)``, at most ``BACKOFF_MAX_S`` (30, 60, 120 … s)."""
    wait_s: int = BACKOFF_BASE_S * 2 ** max(attempt - 1, 0)
    return min(wait_s, BACKOFF_MAX_S)


def message_body(event_type: str, created_at: datetime, payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed for an event, identical on every retry: compact JSON of
    ``{"type", "timestamp", "data"}``, ``timestamp`` the event's time, ISO 8601 UTC."""
    stamp = created_at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    body = {"type": event_type, "timestamp": stamp, "data": payload}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one :func:`deliver_due` run did: ``delivered`` (2xx received),
    ``failed_attempts`` (attempts without a 2xx, including those that gave up) and
    ``given_up`` (deliveries that became ``failed`` in this run)."""

    delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0


@dataclass(frozen=True, slots=True)
class _Claim:
    delivery_id: int
    attempt: int
    url: str
    secret: str
    message_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class _Result:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_DUE = (
    select(
        deliveries.c.id,
        deliveries.c.attempts,
        endpoints.c.id.label("endpoint_id"),
        endpoints.c.url,
        endpoints.c.secret_encrypted,
        endpoints.c.is_active,
        events.c.message_id,
        events.c.event_type,
        events.c.payload,
        events.c.created_at,
    )
    .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
    .join(events, events.c.id == deliveries.c.event_id)
    .where(
        deliveries.c.status == DeliveryStatus.PENDING.value,
        deliveries.c.next_attempt_at <= bindparam("now", type_=UTCDateTime()),
    )
    .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
)
_LEASE = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"))
    .values(
        attempts=bindparam("b_attempts"), next_attempt_at=bindparam("b_until", type_=UTCDateTime())
    )
)


def _claim(
    factory: sessionmaker[Session], box: SecretBox, now: datetime, limit: int
) -> list[_Claim]:
    """Step 1: lease up to ``limit`` due deliveries (see the module docstring)."""
    with factory() as session, session.begin():
        query = _DUE.limit(limit)
        if is_postgres(session):
            query = query.with_for_update(of=deliveries, skip_locked=True)
        rows = session.execute(query, {"now": now}).all()
        secrets: dict[int, str] = {}
        claims: list[_Claim] = []
        orphans: list[int] = []
        for row in rows:
            if not row.is_active:  # disabled after the delivery was queued
                orphans.append(row.id)
                continue
            if row.endpoint_id not in secrets:
                # raises SecretUndecryptable: the transaction rolls back, nothing is claimed
                secrets[row.endpoint_id] = box.decrypt(row.secret_encrypted)
            body = message_body(row.event_type, row.created_at, row.payload)
            claims.append(
                _Claim(
                    row.id,
                    row.attempts + 1,
                    row.url,
                    secrets[row.endpoint_id],
                    row.message_id,
                    body,
                )
            )
        lease_until = now + timedelta(seconds=LEASE_MARGIN_S + 2 * SEND_TIMEOUT_S * len(claims))
        if claims:
            session.execute(
                _LEASE,
                [
                    {"b_id": c.delivery_id, "b_attempts": c.attempt, "b_until": lease_until}
                    for c in claims
                ],
            )
        if orphans:
            session.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(orphans))
                .values(
                    status=DeliveryStatus.FAILED.value,
                    next_attempt_at=None,
                    last_error="endpoint disabled",
                )
            )
    return claims


def sign(secret: str, message_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of ``body`` sent as ``message_id`` at ``at``:
    ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
    (``v1,<base64 HMAC-SHA256>`` with ``secret``, a ``whsec_…`` string)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body.decode()),
    }


def _send(client: httpx.Client, claim: _Claim) -> _Result:
    """Step 2: one signed POST. The timestamp is the wall clock (receivers compare it with
    theirs, Standard Webhooks allows ±5 min), whatever ``now`` the job was given. The
    response body is not read; redirects are not followed (a 3xx is a failure)."""
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **sign(claim.secret, claim.message_id, claim.body, datetime.now(UTC)),
    }
    started = time.monotonic()
    status_code: int | None = None
    error: str | None = None
    try:
        with client.stream(
            "POST",
            claim.url,
            content=claim.body,
            headers=headers,
            timeout=SEND_TIMEOUT_S,
            follow_redirects=False,
        ) as response:
            status_code = response.status_code
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    elapsed_ms = math.ceil((time.monotonic() - started) * 1000)
    return _Result(status_code, error, elapsed_ms)


def _record(
    factory: sessionmaker[Session], claim: _Claim, result: _Result, at: datetime
) -> DeliveryStatus | None:
    """Step 3: log the attempt and move the delivery on. Returns its new status, or None
    when another run has claimed it since (its lease ran out): then only the log row is
    written."""
    if result.ok:
        status, values = DeliveryStatus.DELIVERED, {"delivered_at": at, "next_attempt_at": None}
    elif claim.attempt >= MAX_ATTEMPTS:
        status, values = DeliveryStatus.FAILED, {"next_attempt_at": None}
    else:
        status = DeliveryStatus.PENDING
        values = {"next_attempt_at": at + timedelta(seconds=backoff_s(claim.attempt))}
    with factory() as session, session.begin():
        session.execute(
            insert(attempts).values(
                delivery_id=claim.delivery_id,
                attempted_at=at,
                status_code=result.status_code,
                error=result.error,
                duration_ms=result.duration_ms,
            )
        )
        updated = session.connection().execute(
            update(deliveries)
            .where(
                deliveries.c.id == claim.delivery_id,
                deliveries.c.status == DeliveryStatus.PENDING.value,
                deliveries.c.attempts == claim.attempt,
            )
            .values(
                status=status.value,
                last_status_code=result.status_code,
                last_error=result.error,
                **values,
            )
        )
    return status if updated.rowcount else None


def deliver_due(
    factory: sessionmaker[Session],
    client: httpx.Client,
    box: SecretBox,
    *,
    now: datetime | None = None,
    limit: int = 100,
) -> DeliveryReport:
    """Send up to ``limit`` (1 … :data:`MAX_BATCH`) deliveries due at ``now`` (default: the
    clock) and record the outcomes; see the module docstring for the claim → send → record
    steps and the at-least-once guarantee. ``now`` also stamps the attempts and schedules
    the retries (tests move it forward); signatures always carry the wall clock.

    ``factory`` opens the run's own short transactions (the caller holds none); ``client``
    is the httpx client to send with (tests pass one on a ``MockTransport``); ``box``
    decrypts the endpoints' secrets. Raises
    :class:`~modelbank.secrets.SecretUndecryptable` before sending anything when a secret
    cannot be decrypted (the secret key changed), and ``ValueError`` for a bad ``limit``.
    Idempotent: a run with nothing due sends nothing; delivered messages are never resent."""
    if not 1 <= limit <= MAX_BATCH:
        raise ValueError(f"limit must be between 1 and {MAX_BATCH}")
    start = now or utcnow()
    claims = _claim(factory, box, start, limit)
    delivered = failed = given_up = 0
    for claim in claims:
        result = _send(client, claim)
        status = _record(factory, claim, result, now or utcnow())
        if result.ok:
            delivered += 1
        else:
            failed += 1
            given_up += status is DeliveryStatus.FAILED
    return DeliveryReport(delivered=delivered, failed_attempts=failed, given_up=given_up)


__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_MAX_S",
    "MAX_ATTEMPTS",
    "MAX_BATCH",
    "SEND_TIMEOUT_S",
    "DeliveryReport",
    "backoff_s",
    "deliver_due",
    "message_body",
    "sign",
]
