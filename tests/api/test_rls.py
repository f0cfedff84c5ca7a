"""Row-level security on PostgreSQL (issue 16 part 9): a route that forgets its scoping still
reads nothing of another user's, because a user key's reads run bound to its user; the
owner's work (writes, admin and service reads) is not bound. SQLite has no RLS (skipped)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from modelbank.api.routes import users as user_routes
from modelbank.api.routes import wallets as wallet_routes
from modelbank.db import partitions, rls
from modelbank.db.models import metadata
from tests.api.conftest import Api, problem

V1 = "/api/v1"


@pytest.fixture
def pg(api: Api) -> Api:
    if api.db.backend != "postgres":
        pytest.skip("row-level security is PostgreSQL's (SQLite: the routes' scoping only)")
    assert api.client.app.state.db.rls  # type: ignore[attr-defined]
    return api


def _people(api: Api) -> tuple[int, dict[str, str], int, dict[str, str]]:
    a, a_key = api.user("alice", credits_ucr=5_000_000)
    b, b_key = api.user("bob", credits_ucr=7_000_000)
    for uid, key in ((a, a_key), (b, b_key)):
        r = api.client.post(
            f"{V1}/users/{uid}/holds",
            json={"amount_ucr": 1_000, "timeout_s": 600},
            headers={**key, "Idempotency-Key": f"h{uid}"},
        )
        assert r.status_code == 201, r.text
    return a, a_key, b, b_key


def test_a_route_that_forgets_its_scoping_still_reads_nothing(
    pg: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = pg
    a, a_key, b, b_key = _people(api)
    own = api.client.get(f"{V1}/users/{a}/transfers", headers=a_key)
    assert own.status_code == 200 and len(own.json()["items"]) == 2  # grant and hold
    # the app-level check of the transfers route, disabled: Alice asks for Bob's history
    monkeypatch.setattr(user_routes, "scoped", lambda caller, user_id: user_id)
    monkeypatch.setattr(wallet_routes, "scoped", lambda caller, user_id: user_id)
    # Bob's accounts are not there to read (opening them anew is refused): "not found"
    problem(api.client.get(f"{V1}/users/{b}/transfers", headers=a_key), 404, "not_found")
    # a list that reads rows directly gets none of Bob's
    holds = api.client.get(f"{V1}/users/{b}/holds", headers=a_key)
    assert holds.status_code == 200 and holds.json()["items"] == [], holds.text
    assert len(api.client.get(f"{V1}/users/{b}/holds", headers=b_key).json()["items"]) == 1
    # Bob's own key, the service and the admin still see Bob's history (owner, unbound)
    for headers in (b_key, api.service, api.admin):
        r = api.client.get(f"{V1}/users/{b}/transfers", headers=headers)
        assert len(r.json()["items"]) == 2, r.text


def test_a_bound_transaction_sees_only_its_users_rows_in_every_protected_table(pg: Api) -> None:
    api = pg
    a, _, b, _ = _people(api)
    with api.db.tx() as session:
        everything = {
            t: session.execute(select(func.count()).select_from(metadata.tables[t])).scalar()
            for t in rls.TABLES
        }
    with api.db.tx() as session, rls.as_user(session, a):
        assert session.execute(text("SELECT current_user")).scalar() == rls.ROLE
        seen = {
            t: session.execute(select(func.count()).select_from(metadata.tables[t])).scalar()
            for t in rls.TABLES
        }
        accounts = session.execute(text("SELECT DISTINCT owner_id FROM accounts")).scalars()
        assert set(accounts) <= {a, None}
        holders = session.execute(text("SELECT DISTINCT user_id FROM wallet_holds")).scalars()
        assert set(holders) == {a}
    assert everything["wallet_holds"] == 2 and seen["wallet_holds"] == 1
    assert everything["grants"] == 2 and seen["grants"] == 1
    assert seen["transfers"] == 2 < everything["transfers"]
    # unbound under the role: nothing at all (the setting is per transaction)
    with api.db.tx() as session:
        session.execute(text("SELECT set_config('role', :r, true)"), {"r": rls.ROLE})
        for table in rls.TABLES:
            if table != "accounts":
                count = session.execute(select(func.count()).select_from(metadata.tables[table]))
                assert count.scalar() == 0, table
    assert b


def test_the_migration_protects_the_tables_the_code_lists(pg: Api) -> None:
    from importlib import import_module

    migration = import_module("modelbank.db.migrations.versions.0015_ops_scale")
    assert migration.RLS_TABLES == rls.TABLES
    with pg.db.tx() as session:
        protected = set(
            session.execute(
                text(
                    "SELECT relname FROM pg_class WHERE relrowsecurity"
                    " AND relnamespace = current_schema()::regnamespace"
                )
            ).scalars()
        )
    # Month partitions and the partitioned tables' key tables (migration 0016) have RLS on
    # and no policy: readable through their parents only.
    children = {
        name
        for name in protected
        if name in partitions.SIDE_TABLES
        or any(
            name.startswith(f"{t}_y") or name == f"{t}_default"
            for t in partitions.PARTITIONED_TABLES
        )
    }
    assert protected - children == set(rls.TABLES)
    assert set(partitions.SIDE_TABLES) <= children
    assert {f"{t}_default" for t in partitions.PARTITIONED_TABLES} <= children
