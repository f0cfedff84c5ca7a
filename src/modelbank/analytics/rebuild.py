"""Recomputing the daily rollups from the rows they summarise (``modelbank rollups rebuild``).

The rollups (tables and incremental writers in :mod:`modelbank.metering.rollups`) are
maintained in the charge's transaction. This module derives the same three tables from scratch,
from ``usage_events``, ``earnings`` and ``usage_refunds``, exactly as the incremental path
writes them:

* ``day`` is the UTC date of the usage row's ``created_at`` (the posting time of its batch)
  for a charge and its earnings, and of the refund row's ``created_at`` for a refund;
* a charge adds 1 use, ``input + output`` tokens, ``charge_ucr``, ``cost_uusd`` and the
  usage's ``earnings_ucr`` to its (day, model) row, the same counts and ``charge_ucr`` to its
  (day, user, model, usage type) row, and each earnings line (one per paid beneficiary) adds
  1 use, the tokens and its amount to the beneficiary's (day, user, model) row;
* a refund adds ``amount_ucr`` to ``refunded_ucr`` of the (day, model) and (day, user, model,
  type) rows, ``earnings_reversed_ucr`` to the model's ``reversed_ucr``, and to each
  beneficiary's (day, user, model) ``reversed_ucr`` what
  :func:`modelbank.metering.refunds.refund_usage` took back from them: ``basis_of(after) −
  basis_of(before)`` of their earning, on the usage's running refunded total, refunds in id
  order (owed or not).

Charges and earnings are summed by SQL ``GROUP BY`` over usage-id ranges of
:data:`CHUNK_USAGE_IDS` (``INSERT … SELECT … ON CONFLICT DO UPDATE`` adding the counters), so
memory stays bounded whatever the table size; the per-beneficiary reversals are recomputed
in Python, :data:`REFUND_CHUNK_USAGES` refunded usages at a time.

:func:`rebuild` replaces the stored rollups inside the caller's transaction (readers keep
seeing the old rows until it commits; on PostgreSQL the rollup tables are locked against
writers meanwhile, so charges posted during a rebuild wait and then add their increments;
on SQLite the writer lock does the same, and a charge waiting longer than the busy timeout
fails: measured at ~55 s per 10 M usage rows on SQLite, run it when traffic is low).
:func:`verify_rollups` computes the same tables into temporary tables and lists the
differences without touching the stored ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import count
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    Table,
    and_,
    bindparam,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from modelbank.earnings.models import earnings_table as earnings
from modelbank.metering.models import usage_events_table as usage
from modelbank.metering.rollups import creator_day_table, model_day_table, user_day_table
from modelbank.wallets.grants import basis_of
from modelbank.wallets.models import refunds_table as refunds

CHUNK_USAGE_IDS = 250_000
"""Usage ids summed per ``GROUP BY`` statement: bounds each statement's work and memory and
paces the progress callback (about a second per chunk on SQLite at 10 M rows)."""

REFUND_CHUNK_USAGES = 2_000
"""Refunded usage events whose refunds and earnings are read per step of the reversal
recomputation (a few thousand rows in memory at most)."""

MAX_DIFFERENCES = 1_000
"""At most this many differing rows are reported per table by :func:`verify_rollups`."""

Progress = Callable[[int, int], None]
"""``on_progress(done, total)``: usage ids plus refunds processed so far, of ``total``."""


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What a rebuild (or a verification) read and wrote: usage ids spanned, refunds read,
    and the rows of each rollup table it produced."""

    usage_ids: int
    refunds: int
    model_days: int
    user_days: int
    creator_days: int


@dataclass(frozen=True, slots=True)
class RollupDifference:
    """One rollup row that differs between the stored tables and a recomputation: the
    table, its key (column → value), the stored counters (None: the row is missing) and
    the recomputed ones (None: the row should not exist)."""

    table: str
    key: dict[str, Any]
    stored: dict[str, int] | None
    expected: dict[str, int] | None

    def __str__(self) -> str:
        key = ", ".join(f"{name}={value}" for name, value in self.key.items())
        return f"{self.table} ({key}): stored {self.stored}, recomputed {self.expected}"


@dataclass(frozen=True, slots=True)
class _Targets:
    model_day: Table
    user_day: Table
    creator_day: Table

    def all(self) -> tuple[Table, Table, Table]:
        return (self.model_day, self.user_day, self.creator_day)


_STORED = _Targets(model_day_table, user_day_table, creator_day_table)
_temp_names = count(1)


def rebuild(
    session: Session,
    *,
    chunk_usage_ids: int = CHUNK_USAGE_IDS,
    on_progress: Progress | None = None,
) -> RebuildReport:
    """Replace the three rollup tables by their recomputation from usage, earnings and
    refund rows (module doc), in the caller's transaction: all or nothing, and readers never
    see a half-built table. Returns what was read and written."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        # Writers (charges, refunds) wait at their rollup upsert until this commits, with
        # their usage rows still uncommitted: this rebuild never sees a charge whose
        # increments it would then also receive. Plain reads (ACCESS SHARE) go on.
        names = ", ".join(conn.dialect.identifier_preparer.format_table(t) for t in _STORED.all())
        conn.execute(text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
    for table in _STORED.all():
        conn.execute(table.delete())
    return _build(conn, _STORED, chunk_usage_ids=chunk_usage_ids, on_progress=on_progress)


def verify_rollups(
    session: Session,
    *,
    chunk_usage_ids: int = CHUNK_USAGE_IDS,
    on_progress: Progress | None = None,
    limit: int = MAX_DIFFERENCES,
) -> list[RollupDifference]:
    """The rows in which the stored rollups differ from a recomputation (empty: they agree
    row for row), at most ``limit`` per table, ordered by table then key. Writes only to
    temporary tables, dropped before returning. On a live PostgreSQL database pass a
    REPEATABLE READ session, so both sides are read from one snapshot."""
    conn = session.connection()
    temps = _Targets(*(_temp_copy(table) for table in _STORED.all()))
    for table in temps.all():
        table.create(conn)
    try:
        _build(conn, temps, chunk_usage_ids=chunk_usage_ids, on_progress=on_progress)
        found: list[RollupDifference] = []
        for stored, temp in zip(_STORED.all(), temps.all(), strict=True):
            found.extend(_differences(conn, stored, temp, limit))
        return found
    finally:
        for table in temps.all():
            table.drop(conn)


def _temp_copy(table: Table) -> Table:
    """A temporary table with ``table``'s columns and primary key."""
    return Table(
        f"tmp_{table.name}_{next(_temp_names)}",
        MetaData(),
        *(
            Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in table.columns
        ),
        prefixes=["TEMPORARY"],
    )


def _key_names(table: Table) -> list[str]:
    return [c.name for c in table.primary_key.columns]


def _counter_names(table: Table) -> list[str]:
    keys = set(_key_names(table))
    return [c.name for c in table.columns if c.name not in keys]


def _differences(
    conn: Connection, stored: Table, expected: Table, limit: int
) -> list[RollupDifference]:
    names = [c.name for c in stored.columns]
    keys, counters = _key_names(stored), _counter_names(stored)

    def only_in(a: Table, b: Table) -> dict[tuple[Any, ...], dict[str, int]]:
        rows = select(*(a.c[n] for n in names)).except_(select(*(b.c[n] for n in names)))
        sub = rows.subquery()
        found: dict[tuple[Any, ...], dict[str, int]] = {}
        for row in conn.execute(select(sub).order_by(*(sub.c[k] for k in keys)).limit(limit)):
            values = row._mapping
            key = tuple(_as_key(values[k]) for k in keys)
            found[key] = {n: int(values[n]) for n in counters}
        return found

    have, want = only_in(stored, expected), only_in(expected, stored)
    return [
        RollupDifference(
            table=stored.name,
            key=dict(zip(keys, key, strict=True)),
            stored=have.get(key),
            expected=want.get(key),
        )
        for key in sorted(have.keys() | want.keys(), key=lambda k: tuple(map(str, k)))
    ]


def _as_key(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, str) and len(value) >= 10 and value[4] == "-":
        return date.fromisoformat(value[:10])
    return value


# ---------------------------------------------------------------- building


def _build(
    conn: Connection,
    targets: _Targets,
    *,
    chunk_usage_ids: int,
    on_progress: Progress | None,
) -> RebuildReport:
    if chunk_usage_ids < 1:
        raise ValueError("chunk_usage_ids must be ≥ 1")
    low, high = conn.execute(select(func.min(usage.c.id), func.max(usage.c.id))).one()
    refund_count = int(conn.execute(select(func.count()).select_from(refunds)).scalar_one())
    span = 0 if low is None else int(high) - int(low) + 1
    total = span + refund_count
    done = 0
    if on_progress is not None:
        on_progress(0, total)
    if low is not None:
        statements = _charge_statements(conn, targets)
        start = int(low)
        while start <= int(high):
            stop = min(start + chunk_usage_ids, int(high) + 1)
            for statement in statements:
                conn.execute(statement, {"lo": start, "hi": stop})
            done += stop - start
            if on_progress is not None:
                on_progress(done, total)
            start = stop
    if refund_count:
        for statement in _refund_statements(conn, targets):
            conn.execute(statement)
        for processed in _reversals(conn, targets.creator_day):
            done += processed
            if on_progress is not None:
                on_progress(done, total)
    return RebuildReport(
        usage_ids=span,
        refunds=refund_count,
        model_days=_count(conn, targets.model_day),
        user_days=_count(conn, targets.user_day),
        creator_days=_count(conn, targets.creator_day),
    )


def _count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _day(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The UTC date of a stored (naive UTC) timestamp: ``date()`` on both backends (text
    ``YYYY-MM-DD`` on SQLite, as the Date column stores it; a date on PostgreSQL)."""
    return func.date(column)


def _add_into(conn: Connection, table: Table, query: Any) -> Any:
    """``INSERT INTO table SELECT …`` that adds each counter to an existing row's."""
    keys = _key_names(table)
    counters = _counter_names(table)
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    base = insert(table).from_select([*keys, *counters], query)
    return base.on_conflict_do_update(
        index_elements=keys,
        set_={name: table.c[name] + base.excluded[name] for name in counters},
    )


def _zero() -> ColumnElement[Any]:
    return literal(0)


def _charge_statements(conn: Connection, targets: _Targets) -> list[Any]:
    """The three per-chunk statements (usage ids in [:lo, :hi))."""
    lo = bindparam("lo", type_=BigInteger)
    hi = bindparam("hi", type_=BigInteger)
    in_chunk = and_(usage.c.id >= lo, usage.c.id < hi)
    day = _day(usage.c.created_at)
    tokens = func.sum(usage.c.input_tokens + usage.c.output_tokens)
    by_model = (
        select(
            day,
            usage.c.model_id,
            func.count(),
            tokens,
            func.sum(usage.c.charge_ucr),
            func.sum(usage.c.cost_uusd),
            func.sum(usage.c.earnings_ucr),
            _zero(),
            _zero(),
        )
        .where(in_chunk)
        .group_by(day, usage.c.model_id)
    )
    by_user = (
        select(
            day,
            usage.c.user_id,
            usage.c.model_id,
            usage.c.usage_type,
            func.count(),
            tokens,
            func.sum(usage.c.charge_ucr),
            _zero(),
        )
        .where(in_chunk)
        .group_by(day, usage.c.user_id, usage.c.model_id, usage.c.usage_type)
    )
    by_creator = (
        select(
            day,
            earnings.c.user_id,
            earnings.c.model_id,
            func.count(),
            func.sum(earnings.c.tokens),
            func.sum(earnings.c.amount_ucr),
            _zero(),
        )
        .select_from(usage.join(earnings, earnings.c.usage_id == usage.c.id))
        .where(in_chunk, earnings.c.usage_id >= lo, earnings.c.usage_id < hi)
        .group_by(day, earnings.c.user_id, earnings.c.model_id)
    )
    return [
        _add_into(conn, targets.model_day, by_model),
        _add_into(conn, targets.user_day, by_user),
        _add_into(conn, targets.creator_day, by_creator),
    ]


def _refund_statements(conn: Connection, targets: _Targets) -> list[Any]:
    """Refunded and reversed totals into the model and user rows (one statement each)."""
    day = _day(refunds.c.created_at)
    by_model = (
        select(
            day,
            refunds.c.model_id,
            _zero(),
            _zero(),
            _zero(),
            _zero(),
            _zero(),
            func.sum(refunds.c.amount_ucr),
            func.sum(refunds.c.earnings_reversed_ucr),
        )
        .where(refunds.c.id > 0)  # a WHERE keeps SQLite's upsert-after-SELECT unambiguous
        .group_by(day, refunds.c.model_id)
    )
    by_user = (
        select(
            day,
            usage.c.user_id,
            usage.c.model_id,
            usage.c.usage_type,
            _zero(),
            _zero(),
            _zero(),
            func.sum(refunds.c.amount_ucr),
        )
        .select_from(refunds.join(usage, usage.c.id == refunds.c.usage_id))
        .where(refunds.c.id > 0)
        .group_by(day, usage.c.user_id, usage.c.model_id, usage.c.usage_type)
    )
    return [
        _add_into(conn, targets.model_day, by_model),
        _add_into(conn, targets.user_day, by_user),
    ]


_REFUNDED_USAGES = (
    select(refunds.c.usage_id)
    .where(refunds.c.usage_id > bindparam("after"))
    .group_by(refunds.c.usage_id)
    .order_by(refunds.c.usage_id)
    .limit(bindparam("n"))
)


def _reversals(conn: Connection, creator_day: Table) -> Iterator[int]:
    """Recompute each refund's per-beneficiary reversal and add it into ``creator_day``;
    yield the number of refunds processed per step."""
    after = 0
    while True:
        ids = [
            int(v)
            for v in conn.execute(
                _REFUNDED_USAGES, {"after": after, "n": REFUND_CHUNK_USAGES}
            ).scalars()
        ]
        if not ids:
            return
        after = ids[-1]
        charges = {
            int(r.id): (int(r.charge_ucr), int(r.model_id))
            for r in conn.execute(
                select(usage.c.id, usage.c.charge_ucr, usage.c.model_id).where(usage.c.id.in_(ids))
            )
        }
        paid: dict[int, list[tuple[int, int]]] = {}
        for r in conn.execute(
            select(earnings.c.usage_id, earnings.c.user_id, earnings.c.amount_ucr).where(
                earnings.c.usage_id.in_(ids)
            )
        ):
            paid.setdefault(int(r.usage_id), []).append((int(r.user_id), int(r.amount_ucr)))
        rows = conn.execute(
            select(refunds.c.usage_id, refunds.c.amount_ucr, refunds.c.created_at)
            .where(refunds.c.usage_id.in_(ids))
            .order_by(refunds.c.usage_id, refunds.c.id)
        ).all()
        added: dict[tuple[date, int, int], int] = {}
        refunded: dict[int, int] = {}
        for row in rows:
            usage_id = int(row.usage_id)
            charge, model_id = charges[usage_id]
            before = refunded.get(usage_id, 0)
            after_total = refunded[usage_id] = before + int(row.amount_ucr)
            day = _utc_date(row.created_at)
            for user_id, earned in paid.get(usage_id, ()):
                back = basis_of(after_total, charge, earned) - basis_of(before, charge, earned)
                if back > 0:
                    key = (day, user_id, model_id)
                    added[key] = added.get(key, 0) + back
        _add_rows(
            conn,
            creator_day,
            [
                {
                    "day": day,
                    "user_id": user_id,
                    "model_id": model_id,
                    "uses": 0,
                    "tokens": 0,
                    "earnings_ucr": 0,
                    "reversed_ucr": amount,
                }
                for (day, user_id, model_id), amount in sorted(added.items())
            ],
        )
        yield len(rows)


def _add_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    keys, counters = _key_names(table), _counter_names(table)
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    base = insert(table)
    statement = base.on_conflict_do_update(
        index_elements=keys,
        set_={name: table.c[name] + base.excluded[name] for name in counters},
    )
    conn.execute(statement, list(rows))


def _utc_date(value: Any) -> date:
    if isinstance(value, datetime):
        return (value if value.tzinfo is None else value.astimezone(UTC)).date()
    return date.fromisoformat(str(value)[:10])


__all__ = [
    "CHUNK_USAGE_IDS",
    "RebuildReport",
    "RollupDifference",
    "rebuild",
    "verify_rollups",
]
