"""Migration 0012 (plans, subscriptions, rollovers, referrals, promo codes): the tables it
makes are the ones the wallets domain declares (Alembic's autogenerate comparison finds no
difference), and it goes down and up again. SQLite and PostgreSQL (its own schema)."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, inspect

from modelbank.db.migrate import alembic_config, upgrade
from tests.db.compare import schema_diffs
from tests.db.test_migration_0008 import engine  # noqa: F401 (the fixture)

TABLES = {
    "plans",
    "subscriptions",
    "subscription_periods",
    "grant_rollovers",
    "referral_codes",
    "referrals",
    "promo_codes",
    "promo_redemptions",
}


def _about_mine(diff: object) -> bool:
    """Whether an autogenerate difference concerns one of 0012's tables."""
    items = diff if isinstance(diff, list) else [diff]
    for item in items:
        for part in item if isinstance(item, tuple) else (item,):
            table = getattr(part, "table", None)
            name = getattr(table, "name", None) or getattr(part, "name", None)
            if (isinstance(part, str) and part in TABLES) or name in TABLES:
                return True
    return False


def test_migration_matches_the_declared_tables(engine: Engine) -> None:  # noqa: F811
    upgrade(engine)
    with engine.connect() as conn:
        diffs = schema_diffs(conn)
    assert [d for d in diffs if _about_mine(d)] == []
    assert set(inspect(engine).get_table_names()) >= TABLES


def test_downgrade_drops_the_tables_and_upgrade_restores_them(engine: Engine) -> None:  # noqa: F811
    upgrade(engine, "0012")
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0011")
        connection.commit()
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine, "0012")
    assert set(inspect(engine).get_table_names()) >= TABLES
