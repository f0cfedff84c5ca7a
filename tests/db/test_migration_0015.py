"""Migration 0015: its tables are the ones the code declares (Alembic's autogenerate finds
no difference), the plans are seeded, and it goes down and up again. SQLite and
PostgreSQL (its own schema)."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, inspect, select

from modelbank.db.migrate import alembic_config, upgrade
from modelbank.ratelimits.models import rate_limit_plans_table as plans
from modelbank.ratelimits.plans import DEFAULT_PLANS, Plan
from tests.db.compare import schema_diffs
from tests.db.test_migration_0008 import engine  # noqa: F401 (fixture)

TABLES = {"rate_limit_plans", "rate_limit_counters"}


def _table_of(diff: object) -> str | None:
    item = diff[1] if isinstance(diff, tuple) and len(diff) > 1 else None
    table = getattr(item, "table", item)
    name = getattr(table, "name", None)
    if isinstance(diff, tuple) and len(diff) > 2 and isinstance(diff[2], str):
        name = diff[2]  # modify_* diffs: (kind, schema, table, column, …)
    return name if isinstance(name, str) else None


def test_tables_match_the_models_and_the_plans_are_seeded(engine: Engine) -> None:  # noqa: F811
    upgrade(engine)
    with engine.connect() as conn:
        diffs = schema_diffs(conn)
        rows = conn.execute(
            select(
                plans.c.name,
                plans.c.min_balance_ucr,
                plans.c.requests_per_s,
                plans.c.tokens_per_min,
            ).order_by(plans.c.min_balance_ucr)
        ).all()
    flat = [d for group in diffs for d in (group if isinstance(group, list) else [group])]
    ours = [d for d in flat if _table_of(d) in TABLES]
    assert ours == []
    assert tuple(Plan(*row) for row in rows) == DEFAULT_PLANS


def test_down_and_up_again(engine: Engine) -> None:  # noqa: F811
    upgrade(engine)
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0014")
        connection.commit()
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
