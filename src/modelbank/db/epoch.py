"""The reference epoch: a counter that every change to the data a charge reads but rarely
changes (the catalog, price versions, earnings rules, stakes, platform settings) moves
forward, so that charging can cache that data per process and know when it is stale.

The counter is bumped by database triggers (migration 0006), not by application code: no
write path can forget it, including an admin's SQL. One row, ``id = 1``. A charge reads it
once per batch (one indexed primary-key read) and reuses its cached reference data while it
is unchanged (DESIGN §16: per-batch statements are the cost to cut).
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import BigInteger, Integer, Table
from sqlalchemy.orm import Mapped, Session, mapped_column

from modelbank.db.base import Base
from modelbank.db.fast import FastSQL
from modelbank.db.fast import connection as fast_connection

EPOCH_TABLES = (
    "models",
    "price_versions",
    "earnings_rules",
    "model_beneficiaries",
    "platform_settings",
)
"""Tables whose every INSERT, UPDATE or DELETE moves the epoch forward (triggers)."""


class ReferenceEpoch(Base):
    """The single row holding the reference epoch."""

    __tablename__ = "reference_epoch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)


epoch_table = cast(Table, ReferenceEpoch.__table__)
_READ_FAST = FastSQL("SELECT epoch FROM reference_epoch WHERE id = 1")
READ = _READ_FAST.read()
"""The read :func:`current` runs (for :func:`~modelbank.db.fast.read_ahead`)."""


def current(session: Session) -> int | None:
    """The reference epoch as this transaction sees it; None when its row is missing (the
    table was emptied by hand): then nothing may be cached."""
    row = _READ_FAST.execute(fast_connection(session)).fetchone()
    return None if row is None else int(row[0])
