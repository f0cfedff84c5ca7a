"""Migration 0009 (marketplace): the tables it creates are exactly the ones the marketplace's
models declare (Alembic's autogenerate comparison finds nothing about them), and it goes down
and up again. SQLite and PostgreSQL (its own schema)."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, inspect

from modelbank.db.migrate import alembic_config, upgrade
from tests.db.compare import schema_diffs
from tests.db.test_migration_0008 import engine as engine

TABLES = {
    "marketplace_listings",
    "marketplace_bundle_items",
    "marketplace_orders",
    "marketplace_allocations",
    "marketplace_allocation_uses",
    "marketplace_disputes",
}


def _about_marketplace(diff: object) -> bool:
    text = repr(diff)
    return any(name in text for name in TABLES)


def test_migration_matches_the_models_and_downgrades(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as conn:
        diffs = schema_diffs(conn)
    assert [d for d in diffs if _about_marketplace(d)] == []
    assert set(inspect(engine).get_table_names()) >= TABLES
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0008")
        connection.commit()
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine, "0009")
    assert set(inspect(engine).get_table_names()) >= TABLES
