"""Migration 0014 (hash chains, audit log): the tables, columns and indexes it makes are the
ones the models declare, and it goes down and up again. SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, inspect

from modelbank.db.migrate import alembic_config, upgrade
from tests.db.compare import schema_diffs
from tests.db.test_migration_0008 import engine as engine


def _about_ours(diff: object) -> bool:
    """A difference in what 0014 made: its two tables, or the chain columns and indexes of
    ``transfers`` (other columns of ``transfers`` belong to other migrations)."""
    text = repr(diff)
    return any(
        name in text
        for name in (
            "audit_records",
            "chain_blocks",
            "chain_seq",
            "chain_hash",
            "ix_transfers_unsealed",
        )
    )


def test_migration_matches_the_models(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as conn:
        diffs = schema_diffs(conn)
    assert [d for d in diffs if _about_ours(d)] == []


def test_downgrade_and_upgrade_again(engine: Engine) -> None:
    upgrade(engine)
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0013")
        connection.commit()
    tables = set(inspect(engine).get_table_names())
    assert "audit_records" not in tables and "chain_blocks" not in tables
    columns = {c["name"] for c in inspect(engine).get_columns("transfers")}
    assert "chain_seq" not in columns
    upgrade(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("transfers")}
    assert {"chain_seq", "chain_hash"} <= columns
