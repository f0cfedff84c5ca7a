"""Migration 0011 (auto top-up, tasks, notice recipients): the migrated schema is the one the
tables declare (Alembic's autogenerate comparison finds nothing for them), existing purchases
become ``origin = 'checkout'``, and it goes down and up again. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import Engine, text

from modelbank.db.migrate import alembic_config, upgrade
from tests.db.compare import schema_diffs
from tests.db.test_migration_0008 import engine  # noqa: F401 - the fixture

OURS = {"auto_topups", "tasks", "notice_recipients", "purchases"}


def _table_of(diff: object) -> str | None:
    item = diff[0] if isinstance(diff, list) and diff else diff
    if not isinstance(item, tuple):
        return None
    for part in item[1:]:
        name = getattr(part, "name", None)
        table = getattr(part, "table", None)
        if table is not None:
            return str(table.name)
        if isinstance(part, str) and part in OURS:
            return part
        if name in OURS:
            return str(name)
    return None


def test_migration_matches_the_tables(engine: Engine) -> None:  # noqa: F811
    upgrade(engine)
    with engine.connect() as conn:
        diffs = schema_diffs(conn)
    assert [d for d in diffs if _table_of(d) in OURS] == []


def test_existing_purchases_become_checkouts_and_down_up_works(engine: Engine) -> None:  # noqa: F811
    upgrade(engine, "0010")
    now = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, external_id, display_name, created_at)"
                " VALUES (1, 'u1', 'U', :now)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO purchases (user_id, package_id, provider, status, credits_ucr,"
                " price_uusd, currency, refunded_ucr, refunded_uusd, created_at, updated_at)"
                " VALUES (1, (SELECT min(id) FROM credit_packages), 'manual', 'pending',"
                " 1000000, 10000, 'usd', 0, 0, :now, :now)"
            ),
            {"now": now},
        )
    upgrade(engine, "0011")
    with engine.begin() as conn:
        assert conn.execute(text("SELECT origin FROM purchases")).scalar_one() == "checkout"
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0010")
        connection.commit()
    upgrade(engine, "0011")
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM auto_topups")).scalar_one() == 0
