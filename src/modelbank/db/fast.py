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
        """Run once with positional ``params``; return the DBAPI cursor (fetch from it)."""
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(self.render(conn.dialect.name, size), tuple(params))
        return cursor

    def executemany(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Run once per row (one driver ``executemany``; psycopg pipelines it)."""
        if rows:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.executemany(self.render(conn.dialect.name), [tuple(r) for r in rows])
            cursor.close()


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
