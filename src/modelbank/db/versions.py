"""The one query shape of versioned per-model tables (price versions, earnings rules)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, Table, bindparam, func, select


def in_force(table: Table) -> Select[Any]:
    """Rows of ``table`` in force per model: for each ``model_id`` in the expanding
    parameter ``ids``, the highest ``version`` whose ``effective_from`` ≤ the parameter
    ``at``. Build it once per table (module level): building costs more than running it."""
    latest = (
        select(table.c.model_id, func.max(table.c.version).label("version"))
        .where(
            table.c.model_id.in_(bindparam("ids", expanding=True)),
            table.c.effective_from <= bindparam("at"),
        )
        .group_by(table.c.model_id)
        .subquery()
    )
    return select(table).join(
        latest,
        (latest.c.model_id == table.c.model_id) & (latest.c.version == table.c.version),
    )
