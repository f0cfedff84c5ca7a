"""Hand-written SQL on the raw DBAPI cursor, for the statements every charge runs.

DESIGN §16: SQLAlchemy Core costs ~3× the raw driver on the hot path. Profiled on the charge
path (bench/charge.py --profile), each Core ``execute`` spent ~85 µs in SQLAlchemy around
~20 µs in sqlite3 itself. :class:`FastSQL` keeps one SQL text per statement, renders it once
per dialect (``?`` placeholders become ``%s`` for psycopg; ``{in}`` becomes a list of
placeholders of the size asked) and runs it on the cursor of the connection the caller's
transaction already holds, so it sees and joins that transaction.

Callers convert values themselves, as the columns' SQLAlchemy types would: bound timestamps
with :func:`~modelbank.db.bulk.db_timestamp`, read ones with :func:`read_timestamp`;
integers and strings need nothing. JSON and ``Decimal`` columns stay on SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session


class FastSQL:
    """One statement's SQL, written with ``?`` placeholders and an optional ``{in}`` (an
    ``IN`` list rendered per size). Thread-safe: rendering is cached per (dialect, size)."""

    __slots__ = ("_rendered", "text")

    def __init__(self, text: str) -> None:
        self.text = " ".join(text.split())
        self._rendered: dict[tuple[str, int], str] = {}

    def render(self, dialect: str, size: int = 0) -> str:
        """The SQL for ``dialect`` with an ``IN`` list of ``size`` placeholders."""
        key = (dialect, size)
        found = self._rendered.get(key)
        if found is None:
            sql = self.text.replace("{in}", ", ".join("?" * size)) if size else self.text
            if dialect != "sqlite":
                sql = sql.replace("?", "%s")
            found = self._rendered[key] = sql
        return found

    def execute(self, conn: Connection, params: Sequence[Any] = (), *, size: int = 0) -> Any:
        """Run once with positional ``params``; return the DBAPI cursor (fetch from it).
        When :func:`read_ahead` already ran this very read in this transaction, its rows
        are returned instead (once)."""
        sql = self.render(conn.dialect.name, size)
        ahead = conn.info.get(_AHEAD)
        if ahead:
            rows = ahead.pop((sql, tuple(params)), None)
            if rows is not None:
                return _Rows(rows)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(sql, tuple(params))
        return cursor

    def read(self, params: Sequence[Any] = (), *, size: int = 0) -> Read:
        """This statement with ``params`` as a :class:`Read` for :func:`read_ahead`."""
        return Read(self, tuple(params), size)

    def executemany(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Run once per row (one driver ``executemany``; psycopg pipelines it)."""
        if rows:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.executemany(self.render(conn.dialect.name), [tuple(r) for r in rows])
            cursor.close()


@dataclass(frozen=True, slots=True)
class Read:
    """A read a later step will run: :meth:`FastSQL.execute` of ``sql`` with ``params``."""

    sql: FastSQL
    params: tuple[Any, ...]
    size: int = 0


class _Rows:
    """Rows fetched ahead, served as the DBAPI cursor would serve them."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def fetchall(self) -> list[Any]:
        return self._rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def close(self) -> None:
        return None


_AHEAD = "modelbank.fast.read_ahead"


def read_ahead(conn: Connection, reads: Sequence[Read]) -> None:
    """PostgreSQL: send ``reads`` in one pipeline (one round trip instead of one each) and
    keep their rows for the steps that will run them, in this transaction; the server runs
    them in the order given, so locks they take are taken in that order, as if each step
    had run its own. Another database: nothing (SQLite has no round trips).

    Only reads whose answer the caller's later steps need, in the order those steps would
    run them, and before any write that could change their answer: a step that runs the
    same read again after ``read_ahead`` gets the rows as they were then."""
    if conn.dialect.name != "postgresql" or not reads:
        return
    raw = conn.connection.driver_connection
    dialect = conn.dialect.name
    cursors = []
    with raw.pipeline():  # type: ignore[union-attr]
        for read in reads:
            cursor = raw.cursor()  # type: ignore[union-attr]
            sql = read.sql.render(dialect, read.size)
            cursor.execute(sql, read.params)
            cursors.append((sql, read.params, cursor))
    ahead = conn.info[_AHEAD] = {}
    for sql, params, cursor in cursors:
        ahead[(sql, params)] = cursor.fetchall()


def is_read_ahead(conn: Connection, read: Read) -> bool:
    """Whether ``read``'s rows are waiting (read ahead, not used yet)."""
    key = (read.sql.render(conn.dialect.name, read.size), read.params)
    return key in conn.info.get(_AHEAD, {})


def drop_read_ahead(conn: Connection, read: Read) -> None:
    """Forget ``read``'s rows read ahead: the next execution reads again."""
    key = (read.sql.render(conn.dialect.name, read.size), read.params)
    conn.info.get(_AHEAD, {}).pop(key, None)


def forget_reads_ahead(conn: Connection) -> None:
    """Drop rows read ahead and not used (the transaction is ending)."""
    conn.info.pop(_AHEAD, None)


@contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """On PostgreSQL, send the statements run inside on ``conn``'s driver connection in one
    psycopg pipeline: queued without waiting for each answer, answered together when a
    result is read or the block ends (DESIGN §16: round trips decide PostgreSQL). Order and
    transaction are kept; an error surfaces at the latest when the block ends. Elsewhere a
    no-op (SQLite has no round trips)."""
    if conn.dialect.name != "postgresql":
        yield
        return
    with conn.connection.driver_connection.pipeline():  # type: ignore[union-attr]
        yield


def read_timestamp(value: Any) -> datetime | None:
    """A timestamp column as read from the driver, as :class:`~modelbank.db.base.UTCDateTime`
    returns it: timezone-aware UTC (SQLite gives the stored text, psycopg a naive
    datetime). None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC)


_CONNECTION = "modelbank.fast.connection"


def connection(session: Session) -> Connection:
    """``session.connection()``, remembered for the session's current transaction.

    SQLAlchemy's ``Session.connection()`` walks its transaction state machine on every
    call (~10 µs); the charge path asks ~18 times per transaction. The Connection is kept
    in ``session.info`` beside the root transaction it belongs to, so a new transaction
    gets a new one."""
    transaction = session.get_transaction()
    found = session.info.get(_CONNECTION)
    if found is not None and transaction is not None and found[0] is transaction:
        conn: Connection = found[1]
        return conn
    conn = session.connection()
    session.info[_CONNECTION] = (session.get_transaction(), conn)
    return conn
