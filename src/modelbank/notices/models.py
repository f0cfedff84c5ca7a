"""Where a user's email notices go (see :mod:`modelbank.notices`)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import ForeignKey, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, UTCDateTime


class NoticeRecipient(Base):
    """A user's email address for notices and whether they want them (``enabled``)."""

    __tablename__ = "notice_recipients"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    enabled: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


recipients_table = cast(Table, NoticeRecipient.__table__)
"""Core table of :class:`NoticeRecipient`."""
