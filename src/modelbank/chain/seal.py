"""The sealer: links unsealed rows after a chain's head, one block per call.

Bounded: one call seals at most ``limit`` rows in the caller's transaction;
:func:`seal_all` repeats it, one short transaction each, until nothing is left.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from modelbank.chain.links import CHAINS, GENESIS_HASH, Chain, content, link
from modelbank.chain.models import chain_blocks_table as blocks
from modelbank.db.base import utcnow

SEAL_BATCH = 5_000
"""Rows per block: one block per transaction, short enough not to hold the sealer's lock
long (≈0.1–0.3 s on this machine), large enough that blocks stay few."""
MAX_BLOCKS_PER_RUN = 10_000
"""Upper bound on blocks per chain in one :func:`seal_all` (a run always ends)."""


def _head(session: Session, chain: Chain) -> tuple[int, str]:
    """(last sealed position, its hash) of ``chain``; (0, genesis) when nothing is sealed."""
    row = session.execute(
        select(blocks.c.last_seq, blocks.c.head_hash)
        .where(blocks.c.chain == chain.name)
        .order_by(blocks.c.last_seq.desc())
        .limit(1)
    ).first()
    return (0, GENESIS_HASH) if row is None else (int(row.last_seq), row.head_hash)


def seal(
    session: Session, chain: Chain, *, limit: int = SEAL_BATCH, now: datetime | None = None
) -> int:
    """Seal up to ``limit`` unsealed rows of ``chain`` (lowest ids first) as one block after
    the chain's head, in the caller's transaction; return how many were sealed (0: none
    waiting).

    Waits for another sealer of the same chain (PostgreSQL: a transaction-scoped advisory
    lock; SQLite: the writer lock). Writers of transfers and audit records never wait for
    it: they do not touch the chain columns or the head.
    """
    assert limit > 0
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": chain.lock_key})
    table = chain.table
    rows = (
        session.execute(
            select(*(table.c[column] for column in chain.columns))
            .where(table.c.chain_seq.is_(None))
            .order_by(table.c.id)
            .limit(limit)
        )
        .mappings()
        .all()
    )
    if not rows:
        return 0
    last_seq, prev = _head(session, chain)
    first_seq, start = last_seq + 1, prev
    links = []
    for row in rows:
        last_seq += 1
        prev = link(prev, content(chain, row))
        links.append({"b_id": row["id"], "b_seq": last_seq, "b_hash": prev})
    session.connection().execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(chain_seq=bindparam("b_seq"), chain_hash=bindparam("b_hash")),
        links,
    )
    session.execute(
        insert(blocks).values(
            chain=chain.name,
            first_seq=first_seq,
            last_seq=last_seq,
            prev_hash=start,
            head_hash=prev,
            sealed_at=now or utcnow(),
        )
    )
    return len(rows)


def seal_all(
    factory: sessionmaker[Session], *, limit: int = SEAL_BATCH, now: datetime | None = None
) -> dict[str, int]:
    """Seal every chain until no unsealed row is left (bounded by
    :data:`MAX_BLOCKS_PER_RUN` blocks per chain), one transaction per block; return chain
    name → rows sealed."""
    sealed: dict[str, int] = {}
    for chain in CHAINS:
        total = 0
        for _ in range(MAX_BLOCKS_PER_RUN):
            with factory() as session, session.begin():
                done = seal(session, chain, limit=limit, now=now)
            total += done
            if done < limit:
                break
        sealed[chain.name] = total
    return sealed
