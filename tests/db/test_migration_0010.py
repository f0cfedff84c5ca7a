"""Migration 0010 (per-key spend limits): existing keys keep working without a limit, the
columns the migration adds are the ones the tables declare, and it downgrades cleanly.
SQLite and PostgreSQL (its own schema)."""

from __future__ import annotations

from datetime import datetime

from alembic import command
from sqlalchemy import Engine, column, insert, inspect, select, table

from modelbank.auth.models import api_keys_table as keys
from modelbank.db.migrate import alembic_config, upgrade
from tests.db.test_migration_0008 import engine  # noqa: F401  (the fixture)

TABLES = {"api_keys", "wallet_holds"}

_OLD_KEYS = table(
    "api_keys",
    column("key_hash"),
    column("prefix"),
    column("role"),
    column("name"),
    column("created_at"),
)
"""``api_keys`` as revision 0009 has it (the columns a key needed then)."""


def test_existing_keys_get_no_limit_and_zero_counters(engine: Engine) -> None:  # noqa: F811
    upgrade(engine, "0009")
    with engine.begin() as conn:
        conn.execute(
            insert(_OLD_KEYS).values(
                key_hash="0" * 64,
                prefix="mb_a_x",
                role="admin",
                name="old",
                created_at=datetime(2026, 1, 1),
            )
        )
    upgrade(engine, "0010")
    with engine.begin() as conn:
        row = conn.execute(
            select(keys.c.limit_ucr, keys.c.limit_period, keys.c.spent_ucr, keys.c.reserved_ucr)
        ).one()
    assert tuple(row) == (None, None, 0, 0)

    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0009")
        connection.commit()
    columns = {c["name"] for c in inspect(engine).get_columns("api_keys")}
    assert not columns & {"limit_ucr", "limit_period", "period_start", "spent_ucr"}
    assert "api_key_id" not in {c["name"] for c in inspect(engine).get_columns("wallet_holds")}
    upgrade(engine, "0010")


def test_migration_and_tables_declare_the_same_columns(engine: Engine) -> None:  # noqa: F811
    """Alembic's autogenerate comparison finds no difference in the two tables the
    migration changes between the migrated database and the declared metadata."""

    from tests.db.compare import schema_diffs

    upgrade(engine)
    with engine.connect() as conn:
        diffs = schema_diffs(conn)
    about = [d for d in diffs if any(name in str(d) for name in TABLES)]
    assert about == []
