"""Engine and session factory for SQLite (embedded default) and PostgreSQL (production).

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across application crashes, the
last commits may be lost on power loss; the usual WAL trade-off) and opens every transaction
with ``BEGIN IMMEDIATE`` so that a charge's balance check and update happen under the single
writer lock (DESIGN §3 concurrency). PostgreSQL uses psycopg 3 and ``SELECT … FOR UPDATE``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

READ_ONLY = "modelbank_read_only"
"""Execution option of engines used for reads only (see :func:`read_session_factory`)."""

SQLITE_WAL_AUTOCHECKPOINT_PAGES = 10_000
"""Checkpoint the WAL every 10,000 pages (~40 MB) instead of SQLite's 1,000: each charge
dirties ~30 pages, mostly the same hot ones (accounts, aggregates, rollups), so a rarer
checkpoint writes (and syncs) each hot page once for ten times as many commits."""

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for the lock before failing (long replays hold it)."""


def normalise_url(url: str) -> str:
    """Map ``postgresql://`` and ``postgres://`` URLs to the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


PREPARE_THRESHOLD_PARAM = "prepare_threshold"
"""modelbank's own URL parameter for PostgreSQL: ``?prepare_threshold=none`` turns psycopg's
server-side prepared statements off (PgBouncer in transaction mode before 1.21 hands the
next transaction another server connection, where a statement prepared on the first does
not exist); a number sets after how many runs a statement is prepared (psycopg's default 5)."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` (``sqlite:///path`` or ``postgresql://…``; on PostgreSQL
    ``?prepare_threshold=none`` for PgBouncer's transaction pooling, see
    :data:`PREPARE_THRESHOLD_PARAM`)."""
    url = normalise_url(url)
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        _configure_sqlite(engine)
        return engine
    if PREPARE_THRESHOLD_PARAM in parsed.query:
        raw = str(parsed.query[PREPARE_THRESHOLD_PARAM]).strip().lower()
        threshold = None if raw in ("", "none", "off") else int(raw)
        connect_args = {**kwargs.pop("connect_args", {}), "prepare_threshold": threshold}
        parsed = parsed.difference_update_query([PREPARE_THRESHOLD_PARAM])
        return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args, **kwargs)
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so BEGIN IMMEDIATE is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers (READ_ONLY option) take a deferred transaction: many may run beside the
        # one writer, each on a consistent WAL snapshot.
        # On the driver connection: SQLAlchemy's execution machinery cost more than the
        # BEGIN itself, once per transaction.
        raw = connection.connection.driver_connection
        if connection.get_execution_options().get(READ_ONLY):
            raw.execute("BEGIN")
        else:
            raw.execute("BEGIN IMMEDIATE")


def is_postgres(session_or_engine: Session | Engine) -> bool:
    """True when the bound database is PostgreSQL (row locks with FOR UPDATE)."""
    bind = (
        session_or_engine.get_bind()
        if isinstance(session_or_engine, Session)
        else session_or_engine
    )
    return bind.dialect.name == "postgresql"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory; sessions never autoflush surprises into the hot path.

    On SQLite, the write transactions of this process's sessions queue on one lock taken
    when a transaction starts (before ``BEGIN IMMEDIATE``) and released when it ends:
    SQLite's own busy handler makes waiting writers poll the file lock with sleeps of up to
    100 ms, which gave hold + capture requests beside the group committer a p99 of 1.5 s
    (bench/http_api.py). The lock only orders writers: one that waits longer than
    :data:`WRITER_QUEUE_TIMEOUT_S` goes on to SQLite's busy handler as before, so a
    transaction left open never blocks the others for good."""
    factory = sessionmaker(engine, expire_on_commit=False, autoflush=False)
    if engine.dialect.name == "sqlite":
        _queue_writers(factory, engine)
    return factory


WRITER_QUEUE_TIMEOUT_S = 5.0
"""How long a SQLite writer waits in this process's queue before trying the file lock."""

_WRITER_HOLDS = "modelbank.writer_queue"
_writer_locks: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_writer_locks_guard = threading.Lock()


def _queue_writers(factory: sessionmaker[Session], engine: Engine) -> None:
    with _writer_locks_guard:
        lock = _writer_locks.setdefault(engine, threading.Lock())

    @event.listens_for(factory, "after_transaction_create")
    def _queue(session: Session, transaction: Any) -> None:
        if transaction.parent is None and not session.info.get(_WRITER_HOLDS):
            session.info[_WRITER_HOLDS] = lock.acquire(timeout=WRITER_QUEUE_TIMEOUT_S)

    @event.listens_for(factory, "after_transaction_end")
    def _leave(session: Session, transaction: Any) -> None:
        if transaction.parent is None and session.info.pop(_WRITER_HOLDS, False):
            lock.release()


def read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory for read-only work: on SQLite its transactions are deferred
    (``BEGIN``) so they do not take the writer lock; elsewhere it is the same as
    :func:`session_factory`. Do not write through it."""
    return sessionmaker(
        engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False, autoflush=False
    )


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Open a session and a transaction; commit on success, roll back on any error.

    The caller (CLI command, request, job) owns the transaction (STYLE §4).
    """
    with factory() as session, session.begin():
        yield session
