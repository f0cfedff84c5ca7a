"""Transaction-scoped locks on things that have no row of their own to lock.

A model's price versions and earnings-rule versions are numbered ``max(version) + 1``: two
writers reading the same maximum would both insert the same number and one would fail on
the unique constraint (a 500 under concurrent admin edits, issue 16 D3). Taking
:func:`lock_sequence` first makes the second writer wait for the first to commit and then
read the new maximum. On PostgreSQL it is an advisory lock released at commit or rollback;
SQLite needs none (``BEGIN IMMEDIATE`` already serialises writers).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session


def lock_sequence(session: Session, name: str, owner_id: int) -> None:
    """Hold the lock on sequence ``name`` of ``owner_id`` (e.g. ``("price_versions",
    model_id)``) until this transaction ends (PostgreSQL; a no-op on SQLite)."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(name, owner_id))))


__all__ = ["lock_sequence"]
