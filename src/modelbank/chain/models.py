"""``chain_blocks``: the sealed blocks of each hash chain (issue 16 part 2).

A block records one sealer run over one chain: the positions it sealed (``first_seq`` …
``last_seq``), the hash it started from (``prev_hash``: the previous block's
``head_hash``, or the genesis hash) and the hash of its last link (``head_hash``). The
rows' own ``chain_hash`` columns carry each link; blocks let ``verify --chain`` notice a
tail cut off (rows deleted after the last block was sealed) and tell where to start.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import BigInteger, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, UTCDateTime


class ChainBlock(Base):
    """One sealed run of links of ``chain`` (``transfers`` or ``audit``)."""

    __tablename__ = "chain_blocks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(16))
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))
    head_hash: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("uq_chain_blocks_chain_first", "chain", "first_seq", unique=True),)


chain_blocks_table = cast(Table, ChainBlock.__table__)
"""Core table of :class:`ChainBlock`."""
