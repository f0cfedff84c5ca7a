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


class DeploymentKey(Base):
    """The deployment's secret key, by id (issue 16 D9): one row (``id`` 1) naming the key
    that seals this database's secrets and the dashboard's cookies (its
    :func:`~modelbank.secrets.key_id_of`, never the key) and where the process that
    registered it found it, so that a process started with another key refuses to start
    and says where the right one lives."""

    __tablename__ = "deployment_key"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    key_id: Mapped[str] = mapped_column(String(16))
    location: Mapped[str] = mapped_column(String(500))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime())


deployment_key_table = cast(Table, DeploymentKey.__table__)
