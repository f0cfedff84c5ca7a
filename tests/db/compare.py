"""Alembic's autogenerate comparison of the migrated schema with the models, minus what
migration 0016's monthly partitioning changes on PostgreSQL on purpose
(:mod:`modelbank.db.partitions`): the partitions and side tables, the unique keys moved to
the side tables, the lookup indexes that replace them, the foreign keys into ``transfers``
(checked by ``verify``) and the chain position's index (unique per month)."""

from __future__ import annotations

import re
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from modelbank.db.models import metadata
from modelbank.db.partitions import DROPPED_FOREIGN_KEYS, PARTITIONED_TABLES, SIDE_TABLES

_PARTITION = re.compile(rf"^({'|'.join(PARTITIONED_TABLES)})_(y\d{{4}}m\d{{2}}|default)$")
_LOOKUPS = {
    "ix_usage_events_key",
    "ix_transfers_key",
    "ix_transfers_pending",
    "ix_route_logs_request",
    "uq_transfers_chain_seq",  # unique per month: (chain_seq, created_at)
}
_MOVED_UNIQUES = {
    ("usage_events", "idempotency_key"),
    ("transfers", "idempotency_key"),
    ("transfers", "pending_id"),
    ("route_logs", "request_id"),
}


def _include(name: str | None, type_: str, parent: Any) -> bool:
    return not (type_ == "table" and (_PARTITION.match(name or "") or name in SIDE_TABLES))


def _explained(diff: Any) -> bool:
    kind = diff[0] if isinstance(diff, tuple) else None
    item = diff[1] if isinstance(diff, tuple) and len(diff) > 1 else None
    if kind in ("remove_index", "add_index") and item is not None and item.name in _LOOKUPS:
        return True
    if kind == "add_constraint" and item is not None:
        columns = [c.name for c in item.columns]
        return len(columns) == 1 and (item.table.name, columns[0]) in _MOVED_UNIQUES
    if kind == "add_fk" and item is not None:
        columns = [c.name for c in item.columns]
        return len(columns) == 1 and (item.table.name, columns[0]) in DROPPED_FOREIGN_KEYS
    return False


def schema_diffs(conn: Connection) -> list[Any]:
    """The differences between ``conn``'s schema and the models (Alembic's diff tuples),
    without those partitioning explains (PostgreSQL only; SQLite has none of them)."""
    context = MigrationContext.configure(conn, opts={"include_name": _include})
    diffs = compare_metadata(context, metadata)
    if conn.dialect.name != "postgresql":
        return list(diffs)
    return [d for d in diffs if not _explained(d)]
