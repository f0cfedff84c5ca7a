"""Bulk inserts for the hot path: one DBAPI ``executemany`` of driver-ready tuples.

SQLAlchemy Core runs each column's bind processors on every row of an ``executemany``
(timestamps formatted, JSON dumped, types checked); on the charge path that was most of the
time spent per event (DESIGN §16). :class:`BulkInsert` renders its INSERT once per dialect
and hands the rows to the driver as they are, so the caller converts values itself: each
timestamp once per batch with :func:`db_timestamp`, JSON with :func:`db_json`. Integers and
strings need no conversion.

Works on SQLite (``sqlite3``, ``?`` placeholders) and PostgreSQL (psycopg 3, ``%s``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Connection, Table

from modelbank.db.partitions import PARTITIONED_TABLES

_SQLITE_FORMAT = "%04d-%02d-%02d %02d:%02d:%02d.%06d"


def db_timestamp(dialect_name: str, value: datetime | None) -> Any:
    """``value`` (timezone-aware) as :class:`~modelbank.db.base.UTCDateTime` would bind it:
    naive UTC; on SQLite the text SQLAlchemy stores. None stays None. Raises ``ValueError``
    for a naive datetime."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass a timezone-aware UTC datetime")
    naive = value.astimezone(UTC).replace(tzinfo=None)
    if dialect_name != "sqlite":
        return naive
    return _SQLITE_FORMAT % (
        naive.year,
        naive.month,
        naive.day,
        naive.hour,
        naive.minute,
        naive.second,
        naive.microsecond,
    )


def db_json(value: Mapping[str, Any] | None) -> str | None:
    """A JSON column value as :class:`sqlalchemy.JSON` (``none_as_null``) would bind it."""
    return None if value is None else json.dumps(value)


class BulkInsert:
    """``INSERT INTO table (columns…) VALUES (…)`` run with the driver's ``executemany``.

    Rows are tuples in ``columns`` order, already converted (see the module doc). The SQL is
    rendered once per dialect. No RETURNING: callers that need ids assign them.
    """

    def __init__(
        self, table: Table, columns: Sequence[str], *, skip_conflicts_on: str | None = None
    ) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.skip_conflicts_on = skip_conflicts_on
        """A unique column: rows that would duplicate a stored value are skipped
        (``ON CONFLICT (column) DO NOTHING``, SQLite and PostgreSQL) and :meth:`execute`
        returns how many were inserted."""
        missing = [name for name in self.columns if name not in table.c]
        if missing:
            raise ValueError(f"{table.name} has no column {missing[0]!r}")
        self._sql: dict[str, str] = {}

    def _conflict_clause(self, postgres: bool) -> bool:
        """Whether the INSERT names its conflict target. Not on PostgreSQL's month-partitioned
        tables (:mod:`modelbank.db.partitions`): they cannot hold a unique index on the key
        alone, and their insert trigger skips a taken key instead, with the same row count."""
        if self.skip_conflicts_on is None:
            return False
        return not (postgres and self.table.name in PARTITIONED_TABLES)

    def sql(self, conn: Connection) -> str:
        """The INSERT for ``conn``'s dialect."""
        dialect = conn.dialect
        found = self._sql.get(dialect.name)
        if found is None:
            quote = dialect.identifier_preparer.quote
            postgres = dialect.name == "postgresql"
            marks = []
            for name in self.columns:
                column = self.table.c[name]
                mark = "?" if dialect.paramstyle == "qmark" else "%s"
                if postgres and isinstance(column.type, JSON):
                    mark += "::json"
                marks.append(mark)
            found = self._sql[dialect.name] = (
                f"INSERT INTO {dialect.identifier_preparer.format_table(self.table)}"
                f" ({', '.join(quote(column) for column in self.columns)})"
                f" VALUES ({', '.join(marks)})"
            )
            if self._conflict_clause(postgres):
                found = self._sql[dialect.name] = (
                    f"{found} ON CONFLICT ({quote(self.skip_conflicts_on or '')}) DO NOTHING"
                )
        return found

    def unnest_sql(self, conn: Connection) -> str:
        """PostgreSQL: the INSERT of all rows as one statement, ``INSERT … SELECT * FROM
        unnest(%s::type[], …)``, one array parameter per column."""
        found = self._sql.get("unnest")
        if found is None:
            dialect = conn.dialect
            quote = dialect.identifier_preparer.quote
            arrays = ", ".join(
                f"%s::{self.table.c[name].type.compile(dialect=dialect)}[]" for name in self.columns
            )
            found = (
                f"INSERT INTO {dialect.identifier_preparer.format_table(self.table)}"
                f" ({', '.join(quote(column) for column in self.columns)})"
                f" SELECT * FROM unnest({arrays})"
            )
            if self._conflict_clause(postgres=True):
                found += f" ON CONFLICT ({quote(self.skip_conflicts_on or '')}) DO NOTHING"
            self._sql["unnest"] = found
        return found

    def execute(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert ``rows`` (none: nothing happens) in the caller's transaction; return how
        many rows were inserted (fewer than given only with ``skip_conflicts_on``).

        SQLite: one driver ``executemany``. PostgreSQL: one statement whatever the number of
        rows (the columns as arrays, :meth:`unnest_sql`): psycopg's ``executemany`` sends a
        bind and an execute per row, which made PostgreSQL batches ~5× slower."""
        if not rows:
            return 0
        # The DBAPI cursor of the caller's connection, not exec_driver_sql: SQLAlchemy's
        # execution context cost ~40 µs per call around a few µs of driver work.
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        if conn.dialect.name == "postgresql" and len(rows) > 1:
            cursor.execute(
                self.unnest_sql(conn), [list(column) for column in zip(*rows, strict=True)]
            )
        else:
            cursor.executemany(self.sql(conn), list(rows))
        count = int(cursor.rowcount)
        cursor.close()
        return count
