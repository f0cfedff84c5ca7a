"""The daily rollups (DESIGN §8, §16): the tables dashboards read instead of scanning usage
rows, and their incremental writers (update rollups once per batch, not per event).

The charging pipeline calls :func:`record_charges` once per batch, in the batch's
transaction, with one :class:`ChargeFact` per charged event; usage refunds call
:func:`record_refund`. Each is at most three ``INSERT … ON CONFLICT DO UPDATE`` statements
(one per rollup table, run as one ``executemany``), whatever the batch size. ``day`` is the
UTC date on which the charge was posted (``now`` of the transaction, the ledger's day; each
usage row keeps its own ``occurred_at``), so a batch touches one day. Amounts in µcr, cost
in µUSD.

The tables live here, under the writers the charge's transaction calls; reading them, and
recomputing them from the usage, earnings and refund rows (``modelbank rollups rebuild``),
is :mod:`modelbank.analytics`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Date, String, Table
from sqlalchemy.orm import Mapped, Session, mapped_column

from modelbank.db.base import Base
from modelbank.db.fast import FastSQL
from modelbank.db.fast import connection as fast_connection

# ---------------------------------------------------------------- tables


class ModelDay(Base):
    """One model's day: uses, tokens, revenue charged, provider cost, creator earnings paid,
    and what refunds took back (``refunded_ucr`` of revenue, ``reversed_ucr`` of earnings)."""

    __tablename__ = "rollup_model_day"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uses: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    revenue_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_uusd: Mapped[int] = mapped_column(BigInteger, default=0)
    earnings_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    reversed_ucr: Mapped[int] = mapped_column(BigInteger, default=0)


class UserDay(Base):
    """One user's day of spending on one model for one usage type."""

    __tablename__ = "rollup_user_day"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    usage_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    uses: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    spend_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_ucr: Mapped[int] = mapped_column(BigInteger, default=0)


class CreatorDay(Base):
    """One beneficiary's day of earnings from one model (others' uses only)."""

    __tablename__ = "rollup_creator_day"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uses: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    earnings_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    reversed_ucr: Mapped[int] = mapped_column(BigInteger, default=0)


model_day_table = cast(Table, ModelDay.__table__)
user_day_table = cast(Table, UserDay.__table__)
creator_day_table = cast(Table, CreatorDay.__table__)


# ---------------------------------------------------------------- writers


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
    model_day_table.name: ("day", "model_id"),
    user_day_table.name: ("day", "user_id", "model_id", "usage_type"),
    creator_day_table.name: ("day", "user_id", "model_id"),
}
_STATEMENTS: dict[tuple[str, tuple[str, ...]], FastSQL] = {}


def _upsert(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Add each row's counters to the stored ones (insert when absent): one driver
    ``executemany`` of ``INSERT … ON CONFLICT (key) DO UPDATE`` (SQLite and PostgreSQL)."""
    if not rows:
        return
    conn = fast_connection(session)
    given = tuple(rows[0])
    # Every column is inserted (counters not given as 0: the columns have no server
    # default); only the given counters are added to a stored row.
    names = tuple(column.name for column in table.columns)
    key = (table.name, given)
    statement = _STATEMENTS.get(key)
    if statement is None:
        keys = _KEYS[table.name]
        counters = [name for name in given if name not in keys]
        statement = _STATEMENTS[key] = FastSQL(
            f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
            + ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" for c in counters)
        )
    sqlite = conn.dialect.name == "sqlite"
    statement.executemany(
        conn,
        [
            tuple(
                v.isoformat() if sqlite and isinstance(v, date) else v
                for v in (row.get(name, 0) for name in names)
            )
            for row in rows
        ],
    )


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
        model_day_table,
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
        user_day_table,
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
        creator_day_table,
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
        model_day_table,
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
        user_day_table,
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
        creator_day_table,
        [
            {"day": day, "user_id": beneficiary, "model_id": model_id, "reversed_ucr": amount}
            for beneficiary, amount in reversed
            if amount
        ],
    )


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()
