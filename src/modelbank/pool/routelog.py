"""Route log: one row per gateway request, so every routing decision can be explained
(DESIGN §9): the candidates and their scores, each attempt's outcome, status and timings, the
resource that served it, the outcome, the hold and usage it charged. No prompt, answer or key
is ever stored (attempts keep the failure's kind and status, not its body).

Writes are idempotent per ``request_id``: writing the same request again changes nothing
(the gateway's settle step may be retried).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.db.engine import is_postgres
from modelbank.pool.models import route_logs_table as t
from modelbank.pool.router import Attempt
from modelbank.pool.scoring import Scored

MAX_PAGE = 500
"""Most rows one list call returns (a page of the API)."""

OUTCOMES = ("served", "failed", "no_route", "rejected", "disconnected", "broken", "unbilled")
"""served; failed (every attempt); no_route; rejected (the upstream refused the caller's own
request); disconnected (the client left mid-stream); broken (the upstream failed
mid-stream); unbilled (served, but the capture was refused: the hold had expired). A request
refused before routing (no hold: 402, 403, 404) writes no row."""


@dataclass(frozen=True, slots=True)
class RouteLogEntry:
    """What :func:`write` records for one request. ``candidates`` and ``attempts`` are the
    router's objects (:class:`~modelbank.pool.scoring.Scored`,
    :class:`~modelbank.pool.router.Attempt`) or their JSON already. ``latency_ms``: the whole
    request as the gateway saw it."""

    request_id: str
    user_id: int
    model_id: int | None
    endpoint: str
    outcome: str
    stream: bool = False
    candidates: Sequence[Scored | dict[str, Any]] = ()
    attempts: Sequence[Attempt | dict[str, Any]] = ()
    resource_id: int | None = None
    hold_id: int | None = None
    usage_id: int | None = None
    charge_ucr: int = 0
    cost_uusd: int = 0
    latency_ms: float | None = None
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class RouteLogRow:
    """A stored route log row (what the API lists)."""

    id: int
    request_id: str
    user_id: int
    model_id: int | None
    endpoint: str
    stream: bool
    candidates: list[dict[str, Any]]
    attempts: list[dict[str, Any]]
    resource_id: int | None
    outcome: str
    hold_id: int | None
    usage_id: int | None
    charge_ucr: int
    cost_uusd: int
    latency_ms: float | None
    created_at: datetime


def candidate_json(item: Scored | dict[str, Any]) -> dict[str, Any]:
    """A candidate as stored: id, score and the measurements it was scored on."""
    if isinstance(item, dict):
        return item
    c = item.candidate
    return {
        "resource_id": c.resource_id,
        "score": round(item.score, 6),
        "latency_ms": None if c.latency_ms is None else round(c.latency_ms, 3),
        "ttft_ms": None if c.ttft_ms is None else round(c.ttft_ms, 3),
        "success_rate": round(c.success_rate, 6),
        "in_flight": c.in_flight,
        "quota_left": round(c.quota_left, 6),
        "cost_uusd_per_mtok": c.cost_uusd_per_mtok,
    }


def attempt_json(item: Attempt | dict[str, Any]) -> dict[str, Any]:
    """An attempt as stored (:meth:`Attempt.as_json`)."""
    return item if isinstance(item, dict) else item.as_json()


def _values(entry: RouteLogEntry) -> dict[str, Any]:
    if entry.outcome not in OUTCOMES:
        raise ValueError(f"route log outcome {entry.outcome!r} not in {OUTCOMES}")
    return {
        "request_id": entry.request_id,
        "user_id": entry.user_id,
        "model_id": entry.model_id,
        "endpoint": entry.endpoint,
        "stream": entry.stream,
        "candidates": [candidate_json(c) for c in entry.candidates],
        "attempts": [attempt_json(a) for a in entry.attempts],
        "resource_id": entry.resource_id,
        "outcome": entry.outcome,
        "hold_id": entry.hold_id,
        "usage_id": entry.usage_id,
        "charge_ucr": entry.charge_ucr,
        "cost_uusd": entry.cost_uusd,
        "latency_ms": entry.latency_ms,
        "created_at": entry.created_at,
    }


_INSERT_PG = pg_insert(t)
"""PostgreSQL: ``route_logs`` is partitioned by month; its insert trigger skips a request id
already stored (:mod:`modelbank.db.partitions`), as SQLite's ``ON CONFLICT`` does."""
_INSERT_SQLITE = sqlite_insert(t).on_conflict_do_nothing(index_elements=[t.c.request_id])
_BY_REQUEST = select(t.c.id).where(t.c.request_id == bindparam("request_id"))


def write(session: Session, entry: RouteLogEntry) -> int:
    """Record ``entry`` in the caller's transaction; returns the row id. A second write of
    the same ``request_id`` changes nothing and returns the first row's id. Raises
    ``ValueError`` for an outcome not in :data:`OUTCOMES` (a programming error)."""
    insert = _INSERT_PG if is_postgres(session) else _INSERT_SQLITE
    session.execute(insert, [_values(entry)])
    return int(session.execute(_BY_REQUEST, {"request_id": entry.request_id}).scalar_one())


def _row(row: Any) -> RouteLogRow:
    return RouteLogRow(**dict(row._mapping))


def _page(session: Session, where: Any, after_id: int, limit: int) -> list[RouteLogRow]:
    limit = max(1, min(limit, MAX_PAGE))
    query = select(t).where(where, t.c.id > after_id).order_by(t.c.id).limit(limit)
    return [_row(row) for row in session.execute(query)]


def list_for_resource(
    session: Session, resource_id: int, *, after_id: int = 0, limit: int = 50
) -> list[RouteLogRow]:
    """The requests ``resource_id`` served (the row's final resource; failed attempts on it
    for requests another resource served are in those rows' ``attempts``), oldest first,
    ids above ``after_id``, at most ``limit`` (≤ :data:`MAX_PAGE`). The caller checks that
    the viewer may see the resource (its owner or an admin); whether a depositor sees who
    made each request (``user_id``) is the API's choice."""
    return _page(session, t.c.resource_id == resource_id, after_id, limit)


def list_for_user(
    session: Session, user_id: int, *, after_id: int = 0, limit: int = 50
) -> list[RouteLogRow]:
    """The requests ``user_id`` made, oldest first, ids above ``after_id``, at most
    ``limit`` (≤ :data:`MAX_PAGE`)."""
    return _page(session, t.c.user_id == user_id, after_id, limit)


def list_all(session: Session, *, after_id: int = 0, limit: int = 50) -> list[RouteLogRow]:
    """Every request (admin), oldest first, ids above ``after_id``, at most ``limit``."""
    return _page(session, t.c.id > 0, after_id, limit)


__all__ = [
    "MAX_PAGE",
    "OUTCOMES",
    "RouteLogEntry",
    "RouteLogRow",
    "attempt_json",
    "candidate_json",
    "list_all",
    "list_for_resource",
    "list_for_user",
    "write",
]
