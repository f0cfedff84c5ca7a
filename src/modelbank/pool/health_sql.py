"""The database health store: ``resource_health`` rows on SQLite or PostgreSQL (see
:mod:`modelbank.pool.health` for the contract).

Every call runs in its own short transaction on its own session from
:func:`~modelbank.db.engine.session_factory` (so on SQLite it queues with this process's
other writers instead of polling the file lock), never inside a caller's transaction.
Statements are built once per store. :meth:`SqlHealthStore.record` applies a whole batch
(the router's write-behind flush) in one transaction of three statements.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from modelbank.db.base import utcnow
from modelbank.db.engine import read_session_factory, session_factory
from modelbank.pool.breaker import (
    Admission,
    Breaker,
    BreakerPolicy,
    Outcome,
    State,
    admission,
    claim_probe,
)
from modelbank.pool.health import Delta, Health, Result, Ticket, apply_all
from modelbank.pool.models import resource_health_table as t


def _health(row: Mapping[Any, Any]) -> Health:
    return Health(
        resource_id=row["resource_id"],
        breaker=Breaker(
            state=State(row["breaker"]),
            opened_at=row["opened_at"],
            consecutive_failures=row["consecutive_failures"],
            success_rate=row["success_rate"],
            requests=row["requests"],
            failures=row["failures"],
        ),
        in_flight=max(row["in_flight"], 0),
        latency_ms=row["ewma_latency_ms"],
        ttft_ms=row["ewma_ttft_ms"],
        updated_at=row["updated_at"],
    )


def _values(health: Health) -> dict[str, Any]:
    b = health.breaker
    return {
        "breaker": b.state.value,
        "opened_at": b.opened_at,
        "consecutive_failures": b.consecutive_failures,
        "success_rate": b.success_rate,
        "requests": b.requests,
        "failures": b.failures,
        "ewma_latency_ms": health.latency_ms,
        "ewma_ttft_ms": health.ttft_ms,
        "updated_at": health.updated_at,
    }


_FRESH = {
    "breaker": State.CLOSED.value,
    "opened_at": None,
    "consecutive_failures": 0,
    "success_rate": 1.0,
    "requests": 0,
    "failures": 0,
    "ewma_latency_ms": None,
    "ewma_ttft_ms": None,
}

_SELECT = select(t).where(t.c.resource_id == bindparam("rid"))
_LOCK_MANY = (
    select(t)
    .where(t.c.resource_id.in_(bindparam("ids", expanding=True)))
    .order_by(t.c.resource_id)
    .with_for_update()
)
_SNAPSHOT = select(t).where(t.c.resource_id.in_(bindparam("ids", expanding=True)))
_CLAIM = (
    update(t)
    .where(
        t.c.resource_id == bindparam("rid"),
        t.c.breaker == bindparam("seen_state"),
        t.c.opened_at == bindparam("seen_opened_at"),
    )
    .values(
        breaker=State.HALF_OPEN.value,
        opened_at=bindparam("now"),
        in_flight=t.c.in_flight + 1,
    )
)
"""Compare-and-set: the claim succeeds only if nobody moved the breaker since it was read."""
_RECORD = (
    update(t)
    .where(t.c.resource_id == bindparam("rid"))
    .values(**{name: bindparam(name) for name in [*_FRESH, "in_flight", "updated_at"]})
)


class SqlHealthStore:
    """Health in ``resource_health`` (one row per resource, created on first use)."""

    def __init__(self, engine: Engine, *, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        self._writes = session_factory(engine)
        self._reads = read_session_factory(engine)
        insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        self._ensure = (
            insert(t)
            .values(
                resource_id=bindparam("rid"), in_flight=0, updated_at=bindparam("now"), **_FRESH
            )
            .on_conflict_do_nothing(index_elements=[t.c.resource_id])
        )
        self._begin = (
            insert(t)
            .values(
                resource_id=bindparam("rid"),
                in_flight=1,
                updated_at=bindparam("now"),
                **_FRESH,
            )
            .on_conflict_do_update(
                index_elements=[t.c.resource_id], set_={"in_flight": t.c.in_flight + 1}
            )
        )

    def begin(
        self, resource_id: int, *, probe: bool = False, now: datetime | None = None
    ) -> Ticket | None:
        """See :meth:`modelbank.pool.health.HealthStore.begin`."""
        now = now or utcnow()
        with self._writes() as session, session.begin():
            if not probe:
                session.execute(self._begin, {"rid": resource_id, "now": now})
                return Ticket(resource_id)
            row = session.execute(_SELECT, {"rid": resource_id}).mappings().one_or_none()
            if row is None:
                return None  # never used, so never opened: nothing to probe
            breaker = _health(row).breaker
            if admission(breaker, now, self.policy) is not Admission.PROBE:
                return None
            claimed = session.execute(  # an UPDATE: a CursorResult
                _CLAIM,
                {
                    "rid": resource_id,
                    "seen_state": breaker.state.value,
                    "seen_opened_at": breaker.opened_at,
                    "now": claim_probe(breaker, now).opened_at,
                },
            )
            won = cast(CursorResult[Any], claimed).rowcount == 1
            return Ticket(resource_id, probe=True) if won else None

    def finish(
        self,
        ticket: Ticket,
        outcome: Outcome,
        *,
        latency_ms: float | None = None,
        ttft_ms: float | None = None,
        now: datetime | None = None,
    ) -> Health:
        """See :meth:`modelbank.pool.health.HealthStore.finish`."""
        result = Result(outcome, now or utcnow(), latency_ms, ttft_ms, ticket.probe)
        return self.record({ticket.resource_id: Delta(-1, [result])})[ticket.resource_id]

    def record(self, deltas: Mapping[int, Delta]) -> dict[int, Health]:
        """See :meth:`modelbank.pool.health.HealthStore.record`: one transaction of three
        statements whatever the batch (create missing rows, lock the rows in id order,
        update them)."""
        if not deltas:
            return {}
        ids = sorted(deltas)
        now = utcnow()
        out: dict[int, Health] = {}
        with self._writes() as session, session.begin():
            session.execute(self._ensure, [{"rid": rid, "now": now} for rid in ids])
            rows = session.execute(_LOCK_MANY, {"ids": ids}).mappings().all()
            updates = []
            for row in rows:
                delta = deltas[row["resource_id"]]
                new = apply_all(_health(row), delta.results, self.policy)
                new = replace(new, in_flight=max(row["in_flight"] + delta.in_flight, 0))
                out[new.resource_id] = new
                updates.append({"rid": new.resource_id, "in_flight": new.in_flight, **_values(new)})
            session.execute(_RECORD, updates)
        return out

    def snapshot(self, resource_ids: list[int]) -> dict[int, Health]:
        """See :meth:`modelbank.pool.health.HealthStore.snapshot`."""
        if not resource_ids:
            return {}
        with self._reads() as session, session.begin():
            rows = session.execute(_SNAPSHOT, {"ids": resource_ids}).mappings().all()
        found = {row["resource_id"]: _health(row) for row in rows}
        return {rid: found.get(rid) or Health(rid) for rid in resource_ids}


__all__ = ["SqlHealthStore"]
