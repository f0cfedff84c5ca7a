"""Replay of credit-moving requests by idempotency key (DESIGN §12).

The first response to ``(scope, key)`` is stored in the same transaction as the operation it
describes, so either both are committed or neither. A later request with the same key and
the same fingerprint gets that response again; with another fingerprint it is refused with
:class:`~modelbank.errors.IdempotencyConflict`. On PostgreSQL concurrent requests with one key
are serialised by a transaction-scoped advisory lock; SQLite serialises writers anyway.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.errors import IdempotencyConflict, InvalidInput
from modelbank.idempotency.models import idempotent_requests_table as requests

MAX_KEY_LENGTH = 200
"""Idempotency keys are 1–200 printable characters."""

_FIND = select(requests.c.request_hash, requests.c.status_code, requests.c.response)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response recorded for an idempotency key: HTTP status and JSON body."""

    status_code: int
    body: dict[str, Any]


def fingerprint(method: str, route: str, body: Any) -> str:
    """Hex SHA-256 of the request: method, route (with its path parameters) and the JSON
    body in canonical form (sorted keys), so formatting differences do not matter."""
    canonical = json.dumps(
        {"method": method.upper(), "route": route, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> str:
    """Return ``key`` if it is 1–200 printable ASCII characters; raise :class:`InvalidInput`."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise InvalidInput("Idempotency-Key must be 1–200 printable ASCII characters")
    return key


def lookup(session: Session, scope: str, key: str, request_hash: str) -> StoredResponse | None:
    """The stored response for ``(scope, key)``, or None when the key is new.

    Takes the key's lock first (PostgreSQL), so call it at the start of the transaction that
    will :func:`store` the response. Raises :class:`IdempotencyConflict` when the key was used
    with a different request.
    """
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"{scope}|{key}", 0))))
    row = conn.execute(
        _FIND.where(requests.c.scope == scope, requests.c.idempotency_key == key)
    ).first()
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different request", key=key
        )
    return StoredResponse(int(row.status_code), dict(row.response))


def store(
    session: Session,
    scope: str,
    key: str,
    request_hash: str,
    status_code: int,
    body: dict[str, Any],
) -> None:
    """Record the response to ``(scope, key)`` in the caller's transaction."""
    session.connection().execute(
        insert(requests).values(
            scope=scope,
            idempotency_key=key,
            request_hash=request_hash,
            status_code=status_code,
            response=body,
            created_at=utcnow(),
        )
    )
