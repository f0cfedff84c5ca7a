"""monthly partitioning on PostgreSQL (issue 16 part 8)

PostgreSQL only (a no-op on SQLite): ``usage_events``, ``transfers`` and ``route_logs``
become ``PARTITION BY RANGE (created_at)`` with primary keys ``(id, created_at)``, a
partition per month from the oldest stored month (at most :data:`MONTHS_BACK` back) through
two months ahead, and a default partition. Their global unique keys move to side tables
filled by ``BEFORE INSERT`` triggers (:mod:`modelbank.db.partitions` explains each); the
foreign keys into ``transfers(id)`` are dropped and checked by ``modelbank verify``
instead. Row-level security (0015) is re-created on the new ``transfers``.

The rows are copied inside this migration's transaction: simple and all-or-nothing, but it
holds the tables for the whole copy (~170 s per 10 M rows on the development machine). A
deployment with large tables follows the online procedure in the README instead.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 06:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import op
from sqlalchemy import text

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

MONTHS_BACK = 24
"""Older rows go to the default partition (split out later, a month at a time)."""
MONTHS_AHEAD = 2

# Copied, not imported: a migration never changes with the code.
TABLES: dict[str, dict[str, object]] = {
    "usage_events": {
        "indexes": {
            "ix_usage_events_user": "(user_id, id)",
            "ix_usage_events_model": "(model_id, id)",
            "ix_usage_events_key": "(idempotency_key)",
        },
        "uniques": {"uq_usage_events_idempotency_key": "idempotency_key"},
        "fks": {
            "fk_usage_events_model_id_models": "(model_id) REFERENCES models(id)",
            "fk_usage_events_price_version_id_price_versions": (
                "(price_version_id) REFERENCES price_versions(id)"
            ),
            "fk_usage_events_user_id_users": "(user_id) REFERENCES users(id)",
        },
    },
    "transfers": {
        "indexes": {
            "ix_transfers_credit": "(credit_account_id, id)",
            "ix_transfers_debit": "(debit_account_id, id)",
            "ix_transfers_ref": "(ref_type, ref_id)",
            "ix_transfers_unsealed": "(id) WHERE chain_seq IS NULL",
            "ix_transfers_key": "(idempotency_key)",
            "ix_transfers_pending": "(pending_id)",
        },
        "uniques": {
            "uq_transfers_idempotency_key": "idempotency_key",
            "uq_transfers_pending_id": "pending_id",
        },
        "fks": {
            "fk_transfers_credit_account_id_accounts": "(credit_account_id) REFERENCES accounts(id)",
            "fk_transfers_debit_account_id_accounts": "(debit_account_id) REFERENCES accounts(id)",
        },
    },
    "route_logs": {
        "indexes": {
            "ix_route_logs_resource": "(resource_id, id)",
            "ix_route_logs_user": "(user_id, id)",
            "ix_route_logs_request": "(request_id)",
        },
        "uniques": {"uq_route_logs_request_id": "request_id"},
        "fks": {
            "fk_route_logs_model_id_models": "(model_id) REFERENCES models(id)",
            "fk_route_logs_resource_id_resources": "(resource_id) REFERENCES resources(id)",
            "fk_route_logs_user_id_users": "(user_id) REFERENCES users(id)",
        },
    },
}

LOOKUPS = {
    "ix_usage_events_key",
    "ix_transfers_key",
    "ix_transfers_pending",
    "ix_route_logs_request",
}
"""Plain indexes on the moved unique keys (the side tables hold the uniqueness)."""

INTO_TRANSFERS = {
    ("transfers", "fk_transfers_pending_id_transfers"): "pending_id",
    ("transfers", "fk_transfers_reverses_id_transfers"): "reverses_id",
    ("grants", "fk_grants_transfer_id_transfers"): "transfer_id",
    ("wallet_holds", "fk_wallet_holds_transfer_id_transfers"): "transfer_id",
    ("payouts", "fk_payouts_hold_id_transfers"): "hold_id",
    ("stake_listings", "fk_stake_listings_transfer_id_transfers"): "transfer_id",
    ("marketplace_orders", "fk_marketplace_orders_escrow_transfer_id_transfers"): (
        "escrow_transfer_id"
    ),
}

OWN_ACCOUNTS = (
    "SELECT id FROM accounts WHERE owner_id ="
    " NULLIF(current_setting('modelbank.user_id', true), '')::bigint"
)
TRANSFERS_VISIBLE = f"debit_account_id IN ({OWN_ACCOUNTS}) OR credit_account_id IN ({OWN_ACCOUNTS})"

SIDE_TABLES = """
CREATE TABLE usage_keys (
    idempotency_key varchar(256) CONSTRAINT uq_usage_events_idempotency_key PRIMARY KEY,
    usage_id bigint NOT NULL,
    created_at timestamp NOT NULL
);
CREATE TABLE transfer_keys (
    idempotency_key varchar(256) CONSTRAINT uq_transfers_idempotency_key PRIMARY KEY,
    transfer_id bigint NOT NULL,
    created_at timestamp NOT NULL
);
CREATE TABLE transfer_resolutions (
    pending_id bigint CONSTRAINT uq_transfers_pending_id PRIMARY KEY,
    transfer_id bigint NOT NULL
);
CREATE TABLE route_log_requests (
    request_id varchar(64) CONSTRAINT uq_route_logs_request_id PRIMARY KEY,
    route_log_id bigint NOT NULL,
    created_at timestamp NOT NULL
);
"""

TRIGGERS = """
CREATE FUNCTION modelbank_usage_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_keys (idempotency_key, usage_id, created_at)
    VALUES (NEW.idempotency_key, NEW.id, NEW.created_at) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;  -- the key is taken: skip the row, as ON CONFLICT DO NOTHING did
    END IF;
    RETURN NEW;
END $$;
CREATE FUNCTION modelbank_usage_key_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('modelbank.partition_move', true), '') <> 'on' THEN
        DELETE FROM usage_keys WHERE idempotency_key = OLD.idempotency_key
            AND usage_id = OLD.id;
    END IF;
    RETURN OLD;
END $$;
CREATE FUNCTION modelbank_transfer_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.idempotency_key IS NOT NULL THEN
        INSERT INTO transfer_keys (idempotency_key, transfer_id, created_at)
        VALUES (NEW.idempotency_key, NEW.id, NEW.created_at);
    END IF;
    IF NEW.pending_id IS NOT NULL THEN
        INSERT INTO transfer_resolutions (pending_id, transfer_id) VALUES (NEW.pending_id, NEW.id);
    END IF;
    RETURN NEW;
END $$;
CREATE FUNCTION modelbank_route_log_request() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO route_log_requests (request_id, route_log_id, created_at)
    VALUES (NEW.request_id, NEW.id, NEW.created_at) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;
-- The keys and the partition key never change: an UPDATE that moved a row to another
-- month would run as DELETE + INSERT, and the INSERT's key check would drop the row.
CREATE FUNCTION modelbank_keys_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'modelbank: % of % cannot change', TG_ARGV[0],
        TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END $$;
"""

ATTACH_TRIGGERS = """
CREATE TRIGGER usage_key BEFORE INSERT ON usage_events
    FOR EACH ROW EXECUTE FUNCTION modelbank_usage_key();
CREATE TRIGGER usage_key_gone AFTER DELETE ON usage_events
    FOR EACH ROW EXECUTE FUNCTION modelbank_usage_key_gone();
CREATE TRIGGER usage_key_frozen BEFORE UPDATE OF idempotency_key, created_at ON usage_events
    FOR EACH ROW EXECUTE FUNCTION modelbank_keys_frozen('idempotency_key or created_at');
CREATE TRIGGER transfer_keys BEFORE INSERT ON transfers
    FOR EACH ROW EXECUTE FUNCTION modelbank_transfer_keys();
CREATE TRIGGER transfer_keys_frozen
    BEFORE UPDATE OF idempotency_key, pending_id, created_at ON transfers
    FOR EACH ROW EXECUTE FUNCTION modelbank_keys_frozen('idempotency_key, pending_id or created_at');
CREATE TRIGGER route_log_request BEFORE INSERT ON route_logs
    FOR EACH ROW EXECUTE FUNCTION modelbank_route_log_request();
CREATE TRIGGER route_log_request_frozen BEFORE UPDATE OF request_id, created_at ON route_logs
    FOR EACH ROW EXECUTE FUNCTION modelbank_keys_frozen('request_id or created_at');
"""


def _month(moment: datetime, add: int = 0) -> datetime:
    index = moment.year * 12 + moment.month - 1 + add
    return datetime(index // 12, index % 12 + 1, 1)


def _partition(table: str, month: datetime) -> str:
    return f"{table}_y{month.year:04d}m{month.month:02d}"


def _set_aside(table: str, spec: dict[str, object]) -> None:
    """Rename the plain table out of the way and free its index and constraint names."""
    op.execute(f"ALTER TABLE {table} RENAME TO {table}_unpartitioned")
    for name in spec["uniques"]:  # type: ignore[attr-defined]
        op.execute(f"ALTER TABLE {table}_unpartitioned DROP CONSTRAINT {name}")
    for name in spec["indexes"]:  # type: ignore[attr-defined]
        op.execute(f"DROP INDEX IF EXISTS {name}")
    if table == "transfers":
        op.execute("DROP INDEX IF EXISTS uq_transfers_chain_seq")
    op.execute(f"ALTER TABLE {table}_unpartitioned RENAME CONSTRAINT pk_{table} TO pk_{table}_old")


def _create_partitioned(table: str, spec: dict[str, object], months: list[datetime]) -> None:
    op.execute(
        f"CREATE TABLE {table} (LIKE {table}_unpartitioned INCLUDING DEFAULTS"
        f" INCLUDING CONSTRAINTS) PARTITION BY RANGE (created_at)"
    )
    op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id, created_at)")
    for name, columns in spec["indexes"].items():  # type: ignore[attr-defined]
        op.execute(f"CREATE INDEX {name} ON {table} {columns}")
    if table == "transfers":
        op.execute(
            "CREATE UNIQUE INDEX uq_transfers_chain_seq ON transfers (chain_seq, created_at)"
            " WHERE chain_seq IS NOT NULL"
        )
    for name, definition in spec["fks"].items():  # type: ignore[attr-defined]
        op.execute(f"ALTER TABLE {table}_unpartitioned DROP CONSTRAINT {name}")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY {definition}")
    op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    for month in months:
        start, end = month.isoformat(), _month(month, 1).isoformat()
        op.execute(
            f"CREATE TABLE {_partition(table, month)} PARTITION OF {table}"
            f" FOR VALUES FROM ('{start}') TO ('{end}')"
        )


def _months() -> list[datetime]:
    now = datetime.now(UTC)
    oldest = now.replace(tzinfo=None)
    for table in TABLES:
        found = op.get_bind().execute(text(f"SELECT min(created_at) FROM {table}")).scalar()
        if found is not None and found < oldest:
            oldest = found
    first = max(_month(oldest), _month(now, -MONTHS_BACK))
    months = [first]
    while months[-1] < _month(now, MONTHS_AHEAD):
        months.append(_month(months[-1], 1))
    return months


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    months = _months()
    for (table, name), _column in INTO_TRANSFERS.items():
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    op.execute("DROP POLICY IF EXISTS user_rows ON transfers")
    for table, spec in TABLES.items():
        _set_aside(table, spec)
        _create_partitioned(table, spec, months)
    op.execute(SIDE_TABLES)
    op.execute(TRIGGERS)
    op.execute(ATTACH_TRIGGERS)
    for table in TABLES:
        # Through the triggers: the side tables fill as the rows copy.
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_unpartitioned")
        op.execute(f"DROP TABLE {table}_unpartitioned")
    _row_level_security(months)


def _row_level_security(months: list[datetime]) -> None:
    """0015's policy on the new ``transfers``; every partition (and side table) readable
    only through the parent: RLS on, no policy, so a bound reader sees nothing there."""
    op.execute("ALTER TABLE transfers ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY user_rows ON transfers FOR SELECT TO PUBLIC USING ({TRANSFERS_VISIBLE})"
    )
    for table in TABLES:
        for name in [f"{table}_default", *(_partition(table, m) for m in months)]:
            op.execute(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY")
    for side in ("usage_keys", "transfer_keys", "transfer_resolutions", "route_log_requests"):
        op.execute(f"ALTER TABLE {side} ENABLE ROW LEVEL SECURITY")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("DROP POLICY IF EXISTS user_rows ON transfers")
    op.execute("DROP TABLE usage_keys, transfer_keys, transfer_resolutions, route_log_requests")
    for table, spec in TABLES.items():
        op.execute(f"ALTER TABLE {table} RENAME TO {table}_partitioned")
        for name in spec["indexes"]:  # type: ignore[attr-defined]
            op.execute(f"DROP INDEX IF EXISTS {name}")
        if table == "transfers":
            op.execute("DROP INDEX IF EXISTS uq_transfers_chain_seq")
        op.execute(
            f"ALTER TABLE {table}_partitioned RENAME CONSTRAINT pk_{table} TO pk_{table}_old"
        )
        op.execute(
            f"CREATE TABLE {table} (LIKE {table}_partitioned INCLUDING DEFAULTS"
            " INCLUDING CONSTRAINTS)"
        )
        op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_partitioned")
        op.execute(f"DROP TABLE {table}_partitioned CASCADE")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id)")
        for name, column in spec["uniques"].items():  # type: ignore[attr-defined]
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE ({column})")
        for name, columns in spec["indexes"].items():  # type: ignore[attr-defined]
            if name not in LOOKUPS:
                op.execute(f"CREATE INDEX {name} ON {table} {columns}")
        if table == "transfers":
            op.execute(
                "CREATE UNIQUE INDEX uq_transfers_chain_seq ON transfers (chain_seq)"
                " WHERE chain_seq IS NOT NULL"
            )
        for name, definition in spec["fks"].items():  # type: ignore[attr-defined]
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY {definition}")
    op.execute(
        "DROP FUNCTION modelbank_usage_key, modelbank_usage_key_gone, modelbank_transfer_keys,"
        " modelbank_route_log_request, modelbank_keys_frozen"
    )
    for (table, name), column in INTO_TRANSFERS.items():
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({column})"
            " REFERENCES transfers(id)"
        )
    op.execute("ALTER TABLE transfers ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY user_rows ON transfers FOR SELECT TO PUBLIC USING ({TRANSFERS_VISIBLE})"
    )
