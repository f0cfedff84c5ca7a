"""``verify --chain``: recompute every link of a chain and check its blocks.

A chain is sound when its sealed rows hold positions 1…n without a gap, each row's
``chain_hash`` equals :func:`~modelbank.chain.links.link` of the previous row's hash and its
own content, and the blocks tile 1…n, each starting from the previous block's head and
ending on the hash of its last row. The first failure is reported, naming the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.chain.links import CHAINS, GENESIS_HASH, Chain, content, link, normaliser
from modelbank.chain.models import chain_blocks_table as blocks
from modelbank.db.fast import FastSQL
from modelbank.db.fast import connection as fast_connection

PAGE = 10_000
"""Rows read per query while walking a chain (bounded memory on any ledger size)."""


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What ``verify --chain`` found on one chain: rows ``sealed`` and ``unsealed`` (written
    since the last sealer run; not yet protected), ``blocks``, the ``head_hash`` (record it
    elsewhere to anchor the chain) and the first ``problem`` (None: sound)."""

    chain: str
    sealed: int
    unsealed: int
    blocks: int
    head_hash: str
    problem: str | None

    @property
    def ok(self) -> bool:
        """True when no link is broken."""
        return self.problem is None


def verify(session: Session, chain: Chain) -> ChainReport:
    """Walk ``chain`` in position order and check every link and block (read-only).

    Returns a :class:`ChainReport` whose ``problem`` names the first bad link: its position,
    the row's id and what is wrong (content changed, a position missing, a block whose head
    or start does not match)."""
    table = chain.table
    block_rows = session.execute(
        select(
            blocks.c.id,
            blocks.c.first_seq,
            blocks.c.last_seq,
            blocks.c.prev_hash,
            blocks.c.head_hash,
        )
        .where(blocks.c.chain == chain.name)
        .order_by(blocks.c.first_seq)
    ).all()
    unsealed = int(
        session.execute(
            select(func.count()).select_from(table).where(table.c.chain_seq.is_(None))
        ).scalar_one()
    )
    ends = {int(b.last_seq): b for b in block_rows}
    starts = {int(b.first_seq): b for b in block_rows}
    expected_seq, prev, problem = 0, GENESIS_HASH, None
    conn = fast_connection(session)
    fix = normaliser(chain, json_as_text=conn.dialect.name == "sqlite")
    read = FastSQL(
        f"SELECT {chain.select_list}, chain_seq, chain_hash FROM {table.name}"
        " WHERE chain_seq > ? ORDER BY chain_seq LIMIT ?"
    )
    while problem is None:
        page = read.execute(conn, (expected_seq, PAGE)).fetchall()
        if not page:
            break
        for row in page:
            problem = _check_row(chain, row, fix, expected_seq + 1, prev, starts, ends)
            if problem is not None:
                break
            expected_seq, prev = int(row[-2]), row[-1]
    if problem is None:
        problem = _check_tail(chain, block_rows, expected_seq)
    return ChainReport(
        chain=chain.name,
        sealed=expected_seq,
        unsealed=unsealed,
        blocks=len(block_rows),
        head_hash=prev,
        problem=problem,
    )


def _check_row(
    chain: Chain,
    row: Sequence[Any],
    fix: list[tuple[int, str]],
    seq: int,
    prev: str,
    starts: dict[int, Any],
    ends: dict[int, Any],
) -> str | None:
    """The problem with ``row`` as the link at position ``seq`` after ``prev``, or None."""
    where = f"{chain.noun} {row[0]}"
    found_seq, found_hash = int(row[-2]), row[-1]
    if found_seq != seq:
        return (
            f"position {seq} is missing (next sealed is {where} at {found_seq}):"
            f" a sealed {chain.noun} was deleted or unsealed"
        )
    start = starts.get(seq)
    if start is not None and start.prev_hash != prev:
        return f"block {start.id} does not start from the chain's previous head"
    if link(prev, content(chain, row[:-2], fix)) != found_hash:
        return (
            f"{where} at position {seq}: its hash does not match its content and the"
            f" previous link — it (or the {chain.noun} before it) was changed after sealing"
        )
    end = ends.get(seq)
    if end is not None and end.head_hash != found_hash:
        return f"{where} at position {seq}: block {end.id} ends on another hash"
    return None


def _check_tail(chain: Chain, block_rows: Sequence[Any], sealed: int) -> str | None:
    """Blocks must tile positions 1…``sealed`` exactly."""
    expected = 1
    for block in block_rows:
        first, last = int(block.first_seq), int(block.last_seq)
        if first != expected or last < first:
            return f"block {block.id} covers {first}…{last}, expected to start at {expected}"
        expected = last + 1
    if expected - 1 != sealed:
        return (
            f"the blocks end at position {expected - 1} but sealed {chain.noun}s end at"
            f" {sealed}: sealed {chain.noun}s were deleted from the end of the chain"
        )
    return None


def verify_all(session: Session) -> list[ChainReport]:
    """:func:`verify` of every chain."""
    return [verify(session, chain) for chain in CHAINS]
