"""Monthly partitions on PostgreSQL (issue 16 part 8; README "Monthly partitioning").

Migration 0016 makes ``usage_events``, ``transfers`` and ``route_logs`` ``PARTITION BY
RANGE (created_at)``, one partition a month (``<table>_yYYYYmMM``) and a default partition
(``<table>_default``) for rows outside every month made so far. SQLite keeps one table each
and nothing here runs there.

A partitioned table can only have a unique index that contains the partition key, so the
global unique keys that carry the money guarantees live in small unpartitioned side tables
(:data:`SIDE_TABLES`), filled by ``BEFORE INSERT`` triggers in the same statement as the
row:

- ``usage_keys`` (``usage_events.idempotency_key``) and ``route_log_requests``
  (``route_logs.request_id``): a row whose key is already stored is skipped (the trigger
  returns NULL) — exactly what the code's ``ON CONFLICT (key) DO NOTHING`` did, so the
  statement's row count still says how many were inserted. Deleting a usage row (a batch
  that lost a key race removes what it inserted) deletes its key too.
- ``transfer_keys`` (``transfers.idempotency_key``) and ``transfer_resolutions``
  (``transfers.pending_id``: a hold is resolved once): a duplicate raises the unique
  violation the old constraint raised, under the old constraint's name.

A key stays claimed when its month is detached to an archive: "a key is charged once,
ever" survives retention.

The foreign keys into ``transfers(id)`` cannot name a partitioned table's ``id`` alone;
they are dropped (:data:`DROPPED_FOREIGN_KEYS`) and :func:`dangling_references` checks them
instead, in ``modelbank verify`` and after every test.

:func:`ensure_ahead` (a ``modelbank jobs run`` step) keeps the current month and
:data:`MONTHS_AHEAD` more ahead, moving any rows of a new month out of the default
partition first, then ``ATTACH PARTITION`` (SHARE UPDATE EXCLUSIVE on the parent: writes go
on). :func:`months_ahead` is exported on ``/metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, text

PARTITIONED_TABLES: tuple[str, ...] = ("usage_events", "transfers", "route_logs")
"""The tables partitioned by month of ``created_at`` on PostgreSQL."""

SIDE_TABLES: tuple[str, ...] = (
    "usage_keys",
    "transfer_keys",
    "transfer_resolutions",
    "route_log_requests",
)
"""PostgreSQL-only tables holding the partitioned tables' global unique keys (not in the
SQLAlchemy metadata: SQLite keeps the unique constraints on the tables themselves)."""

DROPPED_FOREIGN_KEYS: tuple[tuple[str, str], ...] = (
    ("transfers", "pending_id"),
    ("transfers", "reverses_id"),
    ("grants", "transfer_id"),
    ("wallet_holds", "transfer_id"),
    ("payouts", "hold_id"),
    ("stake_listings", "transfer_id"),
    ("marketplace_orders", "escrow_transfer_id"),
)
"""``(table, column)`` pairs that referenced ``transfers(id)`` by foreign key before
migration 0016; on PostgreSQL :func:`dangling_references` checks them."""

MONTHS_AHEAD = 2
"""Months of partitions kept beyond the current one."""

LOCK_KEY = 0x6D62_7061_0001  # "mbpa" 1
"""The transaction-scoped advisory lock :func:`ensure_ahead` takes: two job runners making
the same month wait for each other instead of the second failing on its CREATE TABLE."""

MOVING_SETTING = "modelbank.partition_move"
"""Set (transaction-local) while rows move from a default partition to a new month, so
that the usage rows' delete trigger leaves their keys claimed."""


@dataclass(frozen=True)
class Dangling:
    """A row whose ``column`` names a transfer that does not exist."""

    table: str
    column: str
    row_id: object
    transfer_id: int

    def __str__(self) -> str:
        return (
            f"{self.table}.{self.column} of row {self.row_id} names transfer"
            f" {self.transfer_id}, which does not exist"
        )


def month_start(moment: datetime, add: int = 0) -> datetime:
    """The first instant (naive UTC, as stored) of ``moment``'s month plus ``add`` months."""
    index = moment.year * 12 + moment.month - 1 + add
    return datetime(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: datetime) -> str:
    """``usage_events_y2026m12`` for December 2026."""
    return f"{table}_y{month.year:04d}m{month.month:02d}"


def is_partitioned(conn: Connection, table: str) -> bool:
    """Whether ``table`` (in the connection's schema) is a partitioned table."""
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(
        text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid"
            " WHERE c.relname = :t AND c.relnamespace = current_schema()::regnamespace"
        ),
        {"t": table},
    ).first()
    return found is not None


def _exists(conn: Connection, name: str) -> bool:
    return bool(conn.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar_one())


def create_month(conn: Connection, table: str, month: datetime) -> bool:
    """Make ``table``'s partition for ``month`` (a month start) unless it exists; returns
    whether it was made. Rows of that month already in the default partition move into it
    first (in the caller's transaction, the default partition locked from the move to the
    ATTACH: a row being written there meanwhile is waited for and moved too). Raises
    ``ValueError`` if ``table`` is not one of :data:`PARTITIONED_TABLES`."""
    if table not in PARTITIONED_TABLES:
        raise ValueError(f"{table} is not partitioned by month")
    name = partition_name(table, month)
    if _exists(conn, name):
        return False
    start, end = month_start(month), month_start(month, 1)
    bounds = {"a": start, "b": end}
    conn.execute(
        text(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    )
    default = f"{table}_default"
    if _exists(conn, default):
        # ATTACH takes this lock on the default partition anyway; taking it before the move
        # waits for writers of the default partition to commit, so that no row of the new
        # month can enter it between the move and the ATTACH's check.
        conn.execute(text(f"LOCK TABLE {default} IN ACCESS EXCLUSIVE MODE"))
        conn.execute(text("SELECT set_config(:k, 'on', true)"), {"k": MOVING_SETTING})
        conn.execute(
            text(
                f"WITH moved AS (DELETE FROM {default} WHERE created_at >= :a AND created_at < :b"
                f" RETURNING *) INSERT INTO {name} SELECT * FROM moved"
            ),
            bounds,
        )
        conn.execute(text("SELECT set_config(:k, 'off', true)"), {"k": MOVING_SETTING})
    # The CHECK proves the range, so ATTACH does not scan the new table.
    conn.execute(
        text(
            f"ALTER TABLE {name} ADD CONSTRAINT {name}_range"
            f" CHECK (created_at >= '{start.isoformat()}' AND created_at < '{end.isoformat()}')"
        )
    )
    conn.execute(
        text(
            f"ALTER TABLE {table} ATTACH PARTITION {name}"
            f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
    )
    conn.execute(text(f"ALTER TABLE {name} DROP CONSTRAINT {name}_range"))
    # Read only through the parent: a bound reader (db.rls) sees nothing here directly.
    conn.execute(text(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY"))
    return True


def ensure_ahead(conn: Connection, now: datetime | None = None) -> list[str]:
    """Make the missing monthly partitions of every partitioned table from ``now``'s month
    through :data:`MONTHS_AHEAD` months ahead, in the caller's transaction; returns the
    names made. A no-op on SQLite or before migration 0016. Concurrent callers are
    serialised (:data:`LOCK_KEY`): the second finds the months the first made."""
    if conn.dialect.name != "postgresql":
        return []
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    now = now or datetime.now(UTC)
    made: list[str] = []
    for table in PARTITIONED_TABLES:
        if not is_partitioned(conn, table):
            continue
        for add in range(MONTHS_AHEAD + 1):
            month = month_start(now, add)
            if create_month(conn, table, month):
                made.append(partition_name(table, month))
    return made


def months_ahead(conn: Connection, now: datetime | None = None) -> int | None:
    """How many months past the current one every partitioned table can take before rows
    fall into the default partition (the least over the tables); None on SQLite or before
    migration 0016."""
    if conn.dialect.name != "postgresql":
        return None
    now = now or datetime.now(UTC)
    least: int | None = None
    for table in PARTITIONED_TABLES:
        if not is_partitioned(conn, table):
            return None
        ahead = -1
        while _exists(conn, partition_name(table, month_start(now, ahead + 1))):
            ahead += 1
        least = ahead if least is None else min(least, ahead)
    return least


def dangling_references(conn: Connection, *, limit: int = 20) -> list[Dangling]:
    """Rows naming a transfer that does not exist, over :data:`DROPPED_FOREIGN_KEYS` (the
    foreign keys that partitioning dropped on PostgreSQL; on SQLite the database enforces
    them and this finds nothing)."""
    found: list[Dangling] = []
    for table, column in DROPPED_FOREIGN_KEYS:
        key = "transfer_id" if table == "wallet_holds" else "id"
        rows = conn.execute(
            text(
                f"SELECT r.{key} AS row_id, r.{column} AS ref FROM {table} r"
                f" WHERE r.{column} IS NOT NULL AND NOT EXISTS"
                f" (SELECT 1 FROM transfers t WHERE t.id = r.{column}) LIMIT :n"
            ),
            {"n": limit},
        ).all()
        found.extend(Dangling(table, column, row.row_id, int(row.ref)) for row in rows)
    return found[:limit]
