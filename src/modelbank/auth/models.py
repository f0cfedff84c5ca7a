"""The ``api_keys`` table: keys are stored as SHA-256 digests, never in clear."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import BigInteger, ForeignKey, Index, String, Table, text
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, UTCDateTime


class ApiKey(Base):
    """An API key. ``key_hash`` is the hex SHA-256 of the whole secret (keys are 256-bit
    random, so a fast digest is the right tool: there is nothing to brute-force);
    ``prefix`` is the non-secret start shown in listings. ``user_id`` is set for ``user``
    keys and NULL for ``admin`` and ``service`` keys.

    Spend limit (DESIGN §11, issue 13): ``limit_ucr`` NULL means none. Otherwise charges made
    with the key count in ``spent_ucr`` for the period that began at ``period_start``
    (``limit_period``: day, week, month or never, UTC calendar periods), and pending holds
    placed with it in ``reserved_ucr``; every change is one conditional UPDATE that keeps
    ``spent_ucr + reserved_ucr ≤ limit_ucr`` (:mod:`modelbank.auth.limits`)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    limit_ucr: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    limit_period: Mapped[str | None] = mapped_column(String(8), nullable=True)
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    spent_ucr: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    reserved_ucr: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    counted_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    """When the counter began counting under the current limit and period (set when a limit
    is put on a key without one or its period changes; NULL: since the limit was created).
    A refund gives back only charges counted from then on (migration 0018)."""


api_keys_table = cast(Table, ApiKey.__table__)


class WebSession(Base):
    """A dashboard session (issue 16 part 4): the sealed cookie names this row by ``id`` (a
    random 256-bit token, url-safe), and a request is signed in only while the row exists,
    has not ``ended_at`` and has not expired. Signing out sets ``ended_at``, so a copied
    cookie stops working at once everywhere."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_web_sessions_api_key_id", "api_key_id"),)


web_sessions_table = cast(Table, WebSession.__table__)
