"""Migration 0013 (bounded totals, key columns, sessions, deployment key): the tables it makes
are the ones the models declare, existing accounts survive the SQLite rebuild, and the CHECK
refuses a total past 2⁶² on both databases. SQLite and PostgreSQL (its own schema)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from modelbank.db.migrate import upgrade
from modelbank.ledger.models import MAX_ACCOUNT_TOTAL
from modelbank.ledger.models import accounts_table as accounts
from tests.db.test_migration_0008 import engine  # noqa: F401  (the fixture)

OURS = {"web_sessions", "deployment_key"}
WIDENED = {("transfers", "idempotency_key"), ("usage_events", "idempotency_key")}


def _about(diff: object) -> tuple[str, str | None] | None:
    """(table, column) a diff is about, when it is one of ours."""
    if isinstance(diff, list):  # modify_* diffs come as a list of tuples
        diff = diff[0]
    if not isinstance(diff, tuple):
        return None
    kind = str(diff[0])
    if kind.startswith("modify_"):
        return str(diff[2]), str(diff[3])
    table = getattr(diff[1], "table", None) or diff[1]
    return str(getattr(table, "name", "")), None


def test_migration_and_models_declare_the_same_tables(engine: Engine) -> None:  # noqa: F811

    from tests.db.compare import schema_diffs

    upgrade(engine)
    with engine.connect() as conn:
        diffs = schema_diffs(conn)
    found = []
    for diff in diffs:
        about = _about(diff)
        if about is None:
            continue
        table, column = about
        if engine.dialect.name == "sqlite" and (table, column) in WIDENED:
            continue  # SQLite keeps VARCHAR(200) there on purpose: lengths are not enforced
        if table in OURS or (table, column) in WIDENED:
            found.append(diff)
    assert found == []


def test_accounts_survive_and_totals_are_bounded(engine: Engine) -> None:  # noqa: F811
    upgrade(engine, "0012")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    row = {
        "code": "user_wallet",
        "owner_id": 7,
        "flags": 1,
        "debits_posted": 0,
        "credits_posted": 5,
        "debits_pending": 0,
        "credits_pending": 0,
        "created_at": now,
    }
    with engine.begin() as conn:
        conn.execute(insert(accounts), [row])
    upgrade(engine, "0013")
    with engine.begin() as conn:
        ours = accounts.c.owner_id == 7
        assert conn.execute(select(accounts.c.credits_posted).where(ours)).scalar_one() == 5
        conn.execute(update(accounts).where(ours).values(credits_posted=MAX_ACCOUNT_TOTAL))
    with pytest.raises(IntegrityError, match="ck_accounts_totals_bounded"), engine.begin() as conn:
        conn.execute(
            update(accounts).where(ours).values(credits_posted=accounts.c.credits_posted + 1)
        )
