"""Enqueue after-commit tasks and run the due ones (see :mod:`modelbank.tasks`).

:func:`run_due` works like webhook delivery (:mod:`modelbank.webhooks.delivery`): claim due
rows in one short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and lease them,
run each handler outside any transaction (handlers open their own: they call payment
providers and mail servers), then record the outcome: ``done``, or rescheduled after
:func:`~modelbank.webhooks.delivery.backoff_s`, or ``failed`` after :data:`MAX_ATTEMPTS`.
Guarantee: at least once; handlers are idempotent (an auto top-up refuses a second purchase
in flight, an email is sent again only when a runner died between sending and recording).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from modelbank.db.base import utcnow
from modelbank.db.engine import is_postgres
from modelbank.tasks.models import tasks_table as tasks
from modelbank.webhooks.delivery import backoff_s

PENDING, DONE, FAILED = "pending", "done", "failed"
MAX_ATTEMPTS = 8
"""Attempts before a task is given up (the webhooks' schedule: the last ~64 min after the
first)."""
LEASE_S = 300
"""How long a claimed batch is leased: longer than a batch of provider or SMTP calls with
their timeouts; a runner that died leaves its tasks due again after it."""
MAX_ERROR_CHARS = 500

log = logging.getLogger(__name__)


class TaskRetry(Exception):
    """Raised by a handler for a temporary failure: the task is retried after a backoff."""


Handler = Callable[[int, int | None, Mapping[str, Any]], None]
"""A task handler: ``(task_id, user_id, payload)``; returns when the task is done, raises
:class:`TaskRetry` (or any exception) to be retried later."""


@dataclass(frozen=True, slots=True)
class TaskReport:
    """What one :func:`run_due` run did: tasks ``done``, attempts that failed and tasks that
    became ``failed`` in this run."""

    done: int = 0
    failed_attempts: int = 0
    given_up: int = 0


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    user_id: int | None = None,
    now: datetime | None = None,
) -> int:
    """Record a task in the caller's transaction, due at once. Returns its id. One insert."""
    now = now or utcnow()
    return int(
        session.connection()
        .execute(
            insert(tasks).returning(tasks.c.id),
            {
                "kind": kind,
                "user_id": user_id,
                "payload": payload,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            },
        )
        .scalar_one()
    )


def _claim(
    factory: sessionmaker[Session], kinds: list[str], now: datetime, limit: int
) -> list[Any]:
    with factory() as session, session.begin():
        query = (
            select(tasks.c.id, tasks.c.kind, tasks.c.user_id, tasks.c.payload, tasks.c.attempts)
            .where(
                tasks.c.status == PENDING,
                tasks.c.next_attempt_at <= now,
                tasks.c.kind.in_(kinds),
            )
            .order_by(tasks.c.next_attempt_at, tasks.c.id)
            .limit(limit)
        )
        if is_postgres(session):
            query = query.with_for_update(skip_locked=True)
        rows = session.execute(query).all()
        for row in rows:
            session.execute(
                update(tasks)
                .where(tasks.c.id == row.id)
                .values(
                    attempts=row.attempts + 1,
                    next_attempt_at=now + timedelta(seconds=LEASE_S),
                )
            )
    return list(rows)


def _record(
    factory: sessionmaker[Session], task_id: int, attempt: int, error: str | None, now: datetime
) -> str:
    if error is None:
        values: dict[str, Any] = {"status": DONE, "next_attempt_at": None, "done_at": now}
    elif attempt >= MAX_ATTEMPTS:
        values = {"status": FAILED, "next_attempt_at": None, "last_error": error}
    else:
        values = {
            "next_attempt_at": now + timedelta(seconds=backoff_s(attempt)),
            "last_error": error,
        }
    with factory() as session, session.begin():
        session.execute(
            update(tasks).where(tasks.c.id == task_id, tasks.c.attempts == attempt).values(**values)
        )
    return str(values.get("status", PENDING))


def run_due(
    factory: sessionmaker[Session],
    handlers: Mapping[str, Handler],
    *,
    now: datetime | None = None,
    limit: int = 100,
) -> TaskReport:
    """Run up to ``limit`` due tasks whose kind has a handler in ``handlers`` (others wait).
    Each handler runs outside any transaction; its outcome is recorded at once (``now``
    fixes the clock for tests; by default each outcome is stamped when it happens)."""
    fixed = now
    now = now or utcnow()
    done = failed = given_up = 0
    for row in _claim(factory, sorted(handlers), now, limit):
        attempt = row.attempts + 1
        try:
            handlers[row.kind](row.id, row.user_id, row.payload)
            error = None
        except Exception as exc:  # any failure is retried; the log says which
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            log.warning("task %s (%s) attempt %s failed: %s", row.id, row.kind, attempt, error)
        status = _record(factory, row.id, attempt, error, fixed or utcnow())
        if error is None:
            done += 1
        else:
            failed += 1
            given_up += status == FAILED
    return TaskReport(done=done, failed_attempts=failed, given_up=given_up)


def list_tasks(
    session: Session, *, kind: str | None = None, user_id: int | None = None, limit: int = 100
) -> list[Any]:
    """Task rows by id (tests and diagnostics)."""
    query = select(tasks).order_by(tasks.c.id).limit(limit)
    if kind is not None:
        query = query.where(tasks.c.kind == kind)
    if user_id is not None:
        query = query.where(tasks.c.user_id == user_id)
    return list(session.connection().execute(query).all())
