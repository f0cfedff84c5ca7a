"""The task outbox table (see :mod:`modelbank.tasks`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, UTCDateTime


class Task(Base):
    """One after-commit task. ``kind`` names its handler (``auto_topup``, ``email``);
    ``status``: ``pending`` (due at ``next_attempt_at``), ``done`` or ``failed`` (final,
    ``next_attempt_at`` NULL). ``attempts`` counts the times a runner claimed it; a claim
    pushes ``next_attempt_at`` a lease ahead, so a runner that died leaves it due again."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_tasks_due", "status", "next_attempt_at"),
        Index("ix_tasks_user", "user_id", "id"),
    )


tasks_table = cast(Table, Task.__table__)
"""Core table of :class:`Task`."""
