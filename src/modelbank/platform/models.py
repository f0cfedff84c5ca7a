"""The ``platform_settings`` table: integer settings an admin changes at run time."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import BigInteger, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, UTCDateTime


class PlatformSetting(Base):
    """An operator setting changed at run time through the API (integer values), shared by
    every replica: e.g. ``low_balance_default_ucr``."""

    __tablename__ = "platform_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


settings_table = cast(Table, PlatformSetting.__table__)
