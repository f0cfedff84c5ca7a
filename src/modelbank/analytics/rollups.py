"""Maintaining the daily rollups (DESIGN §8, §16: update rollups once per batch, not per
event).

The charging pipeline calls :func:`record_charges` once per batch, in the batch's
transaction, with one :class:`ChargeFact` per charged event; refunds call
:func:`record_refund`. Each is at most three ``INSERT … ON CONFLICT DO UPDATE`` statements
(one per rollup table, run as one ``executemany``), whatever the batch size. The day is the
UTC date of the charge (``now`` of the transaction), so a batch touches one day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from modelbank.analytics.models import creator_day_table as creator_day
from modelbank.analytics.models import model_day_table as model_day
from modelbank.analytics.models import user_day_table as user_day


@dataclass(frozen=True, slots=True)
class ChargeFact:
    """One charged usage event as the rollups need it: µcr charged, µUSD cost, tokens
    (input + output) and the earnings paid ((beneficiary user id, µcr))."""

    user_id: int
    model_id: int
    usage_type: str
    tokens: int
    charge_ucr: int
    cost_uusd: int
    earnings: tuple[tuple[int, int], ...]


_KEYS: dict[str, tuple[str, ...]] = {
    model_day.name: ("day", "model_id"),
    user_day.name: ("day", "user_id", "model_id", "usage_type"),
    creator_day.name: ("day", "user_id", "model_id"),
}
_STATEMENTS: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def _upsert(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Add each row's counters to the stored ones (insert when absent)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    counters = tuple(name for name in rows[0] if name not in _KEYS[table.name])
    key = (dialect, table.name, counters)
    statement = _STATEMENTS.get(key)
    if statement is None:
        base = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
        statement = _STATEMENTS[key] = base.on_conflict_do_update(
            index_elements=list(_KEYS[table.name]),
            set_={name: table.c[name] + base.excluded[name] for name in counters},
        )
    session.connection().execute(statement, rows)


def record_charges(session: Session, facts: Sequence[ChargeFact], *, now: datetime) -> None:
    """Add a batch of charged events to the rollups of ``now``'s UTC day."""
    if not facts:
        return
    day = _utc_day(now)
    models: dict[int, list[int]] = {}
    users: dict[tuple[int, int, str], list[int]] = {}
    creators: dict[tuple[int, int], list[int]] = {}
    for fact in facts:
        earned = sum(amount for _, amount in fact.earnings)
        m = models.setdefault(fact.model_id, [0, 0, 0, 0, 0])
        m[0] += 1
        m[1] += fact.tokens
        m[2] += fact.charge_ucr
        m[3] += fact.cost_uusd
        m[4] += earned
        u = users.setdefault((fact.user_id, fact.model_id, fact.usage_type), [0, 0, 0])
        u[0] += 1
        u[1] += fact.tokens
        u[2] += fact.charge_ucr
        for beneficiary, amount in fact.earnings:
            c = creators.setdefault((beneficiary, fact.model_id), [0, 0, 0])
            c[0] += 1
            c[1] += fact.tokens
            c[2] += amount
    _upsert(
        session,
        model_day,
        [
            {
                "day": day,
                "model_id": model_id,
                "uses": v[0],
                "tokens": v[1],
                "revenue_ucr": v[2],
                "cost_uusd": v[3],
                "earnings_ucr": v[4],
                "refunded_ucr": 0,
                "reversed_ucr": 0,
            }
            for model_id, v in sorted(models.items())
        ],
    )
    _upsert(
        session,
        user_day,
        [
            {
                "day": day,
                "user_id": user_id,
                "model_id": model_id,
                "usage_type": usage_type,
                "uses": v[0],
                "tokens": v[1],
                "spend_ucr": v[2],
                "refunded_ucr": 0,
            }
            for (user_id, model_id, usage_type), v in sorted(users.items())
        ],
    )
    _upsert(
        session,
        creator_day,
        [
            {
                "day": day,
                "user_id": user_id,
                "model_id": model_id,
                "uses": v[0],
                "tokens": v[1],
                "earnings_ucr": v[2],
                "reversed_ucr": 0,
            }
            for (user_id, model_id), v in sorted(creators.items())
        ],
    )


def record_refund(
    session: Session,
    *,
    user_id: int,
    model_id: int,
    usage_type: str,
    refunded_ucr: int,
    reversed: Sequence[tuple[int, int]],
    now: datetime,
) -> None:
    """Add a usage refund to the rollups of ``now``'s UTC day: ``refunded_ucr`` µcr back to
    ``user_id`` and ``reversed`` ((beneficiary, µcr)) taken back from earnings (owed or not)."""
    day = _utc_day(now)
    total_reversed = sum(amount for _, amount in reversed)
    _upsert(
        session,
        model_day,
        [
            {
                "day": day,
                "model_id": model_id,
                "refunded_ucr": refunded_ucr,
                "reversed_ucr": total_reversed,
            }
        ],
    )
    _upsert(
        session,
        user_day,
        [
            {
                "day": day,
                "user_id": user_id,
                "model_id": model_id,
                "usage_type": usage_type,
                "refunded_ucr": refunded_ucr,
            }
        ],
    )
    _upsert(
        session,
        creator_day,
        [
            {"day": day, "user_id": beneficiary, "model_id": model_id, "reversed_ucr": amount}
            for beneficiary, amount in reversed
            if amount
        ],
    )


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()
