"""``MODELBANK_READ_DATABASE_URL`` against a real streaming replica (issue 16 part 8).

A hot standby is made on this machine with ``pg_basebackup -R``: of the test server when it
allows replication connections from 127.0.0.1, else (the usual case: Debian's pg_hba has no
``replication`` line) of a private primary made with ``initdb``. The app writes to the
primary and reads its dashboards, analytics and exports from the replica: with the replica's
replay paused, a charge is accepted (writes and read-then-write stay on the primary) but the
replica-backed routes do not show it yet; once replay resumes, they do. Skipped, with the
precise reason, where no such server can be started."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.config import load_settings
from modelbank.db.engine import make_engine, session_factory, transaction
from tests.api.conftest import TEST_SECRET_KEY, Api, bearer
from tests.conftest import POSTGRES_URL, Db
from tests.db import pgcluster
from tests.db.pgcluster import Server, Unavailable

pytestmark = pytest.mark.postgres

V1 = "/api/v1"
CR = 1_000_000


@dataclass
class Pair:
    primary_url: str
    replica_url: str
    replica: Server


def _replica_pair(where: Path) -> tuple[Pair, list[Server], str | None]:
    """A primary URL (a fresh database) and a replica of it; the servers we started (to stop)
    and, on the test server, the database to drop afterwards."""
    url = make_url(POSTGRES_URL)
    host, port = url.host or "127.0.0.1", url.port or 5432
    ours: list[Server] = []
    try:
        replica = pgcluster.replica_of(host, port, where)
        primary_url = f"postgresql://{url.username or 'postgres'}@{host}:{port}/postgres"
    except Unavailable as refused:
        if "replication connection" not in str(refused):
            raise
        # the test server refuses replication (pg_hba): stream from a primary of our own
        primary = pgcluster.private_primary(where)
        ours.append(primary)
        replica = pgcluster.replica_of("127.0.0.1", primary.port, where)
        primary_url = primary.url("postgres")
    ours.append(replica)
    name = f"mb_replica_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(primary_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = primary_url.rsplit("/", 1)[0]
    replica_url = replica.url(name)
    dropped = name if not ours[:-1] else None
    return Pair(f"{base}/{name}", replica_url, replica), ours, dropped


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    try:
        pgcluster.bin_dir()
        psycopg.connect(POSTGRES_URL, connect_timeout=2).close()
    except (Unavailable, psycopg.OperationalError) as exc:
        pytest.skip(f"no streaming replica here: {exc}")
    where = pgcluster.folder()
    servers: list[Server] = []
    dropped = None
    try:
        try:
            found, servers, dropped = _replica_pair(where)
        except Unavailable as exc:
            pytest.skip(f"no streaming replica here: {exc}")
        yield found
    finally:
        for server in reversed(servers):
            server.stop()
        if dropped is not None:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dropped}" WITH (FORCE)')
        import shutil

        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def api(pair: Pair) -> Iterator[Api]:
    engine = make_engine(pair.primary_url)
    settings = load_settings(
        database_url=pair.primary_url,
        read_database_url=pair.replica_url,
        secret_key=TEST_SECRET_KEY,
    )
    app = create_app(settings, engine=engine)  # migrates the primary; the replica follows
    with transaction(session_factory(engine)) as session:
        admin = auth.create_key(session, auth.Role.ADMIN, name="admin").secret
        service = auth.create_key(session, auth.Role.SERVICE, name="service").secret
    db = Db(engine, "postgres", pair.primary_url)
    with TestClient(app, raise_server_exceptions=True) as client:
        yield Api(client, db, bearer(admin), bearer(service))
    assert db.violations() == []
    engine.dispose()


def _replay(pair: Pair, action: str) -> None:
    with psycopg.connect(pair.replica_url, autocommit=True) as conn:
        conn.execute(f"SELECT pg_wal_replay_{action}()")


def _usage_ids(api: Api, user_id: int) -> list[str]:
    r = api.client.get(f"{V1}/exports/usage.csv", params={"user_id": user_id}, headers=api.admin)
    assert r.status_code == 200, r.text
    return [row["id"] for row in csv.DictReader(io.StringIO(r.text, newline=""))]


def _spent(api: Api, user_id: int) -> Any:
    r = api.client.get(f"{V1}/users/{user_id}/model-analytics", headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()["spent_ucr"]


def test_replica_backed_routes_read_the_replica_and_see_writes_once_replayed(
    api: Api, pair: Pair
) -> None:
    tag = uuid.uuid4().hex[:6]
    user, _ = api.user(f"ann-{tag}", credits_ucr=100 * CR)
    api.model(f"meter-{tag}", price={"per_unit_ucr": CR})
    first = api.charge(user, f"meter-{tag}", key=f"a-{tag}", units=3)
    assert first.status_code == 201, first.text
    pgcluster.wait_replayed(pair.primary_url, pair.replica_url)
    assert _usage_ids(api, user) == [str(first.json()["usage_id"])]
    assert _spent(api, user) == 3 * CR

    _replay(pair, "pause")
    try:
        # writes (and the balance check before them) go to the primary: accepted at once
        second = api.charge(user, f"meter-{tag}", key=f"b-{tag}", units=4)
        assert second.status_code == 201, second.text
        assert second.json()["balance_ucr"] == 93 * CR
        r = api.client.get(f"{V1}/users/{user}/wallet", headers=api.admin)
        assert r.status_code == 200 and r.json()["balance_ucr"] == 93 * CR  # primary read
        # the replica-backed routes have not seen it: they read the paused replica
        assert _usage_ids(api, user) == [str(first.json()["usage_id"])]
        assert _spent(api, user) == 3 * CR
    finally:
        _replay(pair, "resume")
    pgcluster.wait_replayed(pair.primary_url, pair.replica_url)
    assert _usage_ids(api, user) == [str(first.json()["usage_id"]), str(second.json()["usage_id"])]
    assert _spent(api, user) == 7 * CR
