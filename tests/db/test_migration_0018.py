"""Migration 0018 (``api_keys.counted_since``): the column is the one the model
declares, and it goes down and up again. SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, inspect

from modelbank.db.migrate import alembic_config, upgrade
from tests.db.compare import schema_diffs
from tests.db.test_migration_0008 import engine as engine


def test_the_column_matches_the_model_and_goes_down_and_up(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as conn:
        assert [d for d in schema_diffs(conn) if "counted_since" in repr(d)] == []
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0017")
        connection.commit()
    assert "counted_since" not in {c["name"] for c in inspect(engine).get_columns("api_keys")}
    upgrade(engine)
    assert "counted_since" in {c["name"] for c in inspect(engine).get_columns("api_keys")}
