"""The sealer: links unsealed rows after a chain's head, one block per call.

Bounded: one call seals at most ``limit`` rows in the caller's transaction;
:func:`seal_all` repeats it, one short transaction each, until nothing is left.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from modelbank.chain.links import CHAINS, GENESIS_HASH, Chain, content, link, normaliser
from modelbank.chain.models import chain_blocks_table as blocks
from modelbank.db.base import utcnow
from modelbank.db.fast import FastSQL
from modelbank.db.fast import connection as fast_connection

SEAL_BATCH = 5_000
"""Rows per block on PostgreSQL: one block per transaction, large enough that blocks stay
few; writers never wait for it there."""
SEAL_BATCH_SQLITE = 1_000
"""Rows per block on SQLite, where the sealer holds the one writer lock while it works:
~50–100 ms on this machine, so a charge waits at most that long behind it."""
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
    it: they do not touch the chain columns or the head. The rows are read and updated on
    the raw driver (bench/charge.py: SQLAlchemy's row processing was half the sealer's
    time); one UPDATE for the block on PostgreSQL (``unnest``), an ``executemany`` on SQLite.
    """
    assert limit > 0
    conn = fast_connection(session)
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": chain.lock_key})
    name = chain.table.name
    read = FastSQL(
        f"SELECT {chain.select_list} FROM {name} WHERE chain_seq IS NULL ORDER BY id LIMIT ?"
    )
    rows = read.execute(conn, (limit,)).fetchall()
    if not rows:
        return 0
    last_seq, prev = _head(session, chain)
    first_seq, start = last_seq + 1, prev
    fix = normaliser(chain, json_as_text=dialect == "sqlite")
    ids, seqs, hashes = [], [], []
    for row in rows:
        last_seq += 1
        prev = link(prev, content(chain, row, fix))
        ids.append(row[0])
        seqs.append(last_seq)
        hashes.append(prev)
    if dialect == "postgresql":
        # Positions are consecutive (first + ordinality − 1) and hashes one comma-joined
        # text: psycopg's array dumper cost more than the hashing (it inspects each string).
        FastSQL(
            f"UPDATE {name} AS t SET chain_seq = ? + v.n - 1, chain_hash = h.hash"
            " FROM unnest(?::bigint[]) WITH ORDINALITY AS v(id, n)"
            " JOIN unnest(string_to_array(?, ',')) WITH ORDINALITY AS h(hash, n) USING (n)"
            " WHERE t.id = v.id"
        ).execute(conn, (first_seq, ids, ",".join(hashes))).close()
    else:
        FastSQL(f"UPDATE {name} SET chain_seq = ?, chain_hash = ? WHERE id = ?").executemany(
            conn, list(zip(seqs, hashes, ids, strict=True))
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
    factory: sessionmaker[Session], *, limit: int | None = None, now: datetime | None = None
) -> dict[str, int]:
    """Seal every chain until no unsealed row is left (bounded by
    :data:`MAX_BLOCKS_PER_RUN` blocks per chain), one transaction per block of ``limit``
    rows (default :data:`SEAL_BATCH`, :data:`SEAL_BATCH_SQLITE` on SQLite); return chain
    name → rows sealed."""
    if limit is None:
        bind = factory.kw.get("bind")
        sqlite = bind is not None and bind.dialect.name == "sqlite"
        limit = SEAL_BATCH_SQLITE if sqlite else SEAL_BATCH
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
