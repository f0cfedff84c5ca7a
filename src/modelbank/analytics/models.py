"""The daily rollup tables, by their old path: they live in :mod:`modelbank.metering.rollups`,
next to the writers the charge's transaction calls. Kept for callers outside ``src`` (the
analytics benchmark); code in ``src`` imports them from there."""

from __future__ import annotations

from modelbank.metering.rollups import (
    CreatorDay,
    ModelDay,
    UserDay,
    creator_day_table,
    model_day_table,
    user_day_table,
)

__all__ = [
    "CreatorDay",
    "ModelDay",
    "UserDay",
    "creator_day_table",
    "model_day_table",
    "user_day_table",
]
