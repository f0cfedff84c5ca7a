"""PgBouncer in transaction mode (issue 16 part 8): with ``?prepare_threshold=none`` in the
database URL modelbank keeps no session state between transactions (prepared statements
off; its other settings, the RLS binding and the advisory locks, are transaction-local), so
charges through a pool of one server connection shared by several clients succeed. Without
it, psycopg's automatic prepared statements collide on the shared server connection (the
reason for the parameter). Skipped without a ``pgbouncer`` binary or PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.config import load_settings
from modelbank.db.engine import make_engine, session_factory, transaction
from modelbank.db.migrate import upgrade
from tests.api.conftest import TEST_SECRET_KEY
from tests.conftest import POSTGRES_URL, _postgres_reason
from tests.gateway.test_gateway_concurrency import free_port

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)


@pytest.fixture(scope="module")
def bouncer() -> Iterator[str]:
    """A database of its own behind PgBouncer (transaction pooling, one server connection):
    the base URL through PgBouncer (no query)."""
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    reason = _postgres_reason()
    if reason:
        pytest.skip(reason)
    name = f"mb_pgb_{uuid.uuid4().hex[:8]}"
    admin = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    direct = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(direct)
    upgrade(engine)
    engine.dispose()
    folder = Path(tempfile.mkdtemp(prefix="mb-pgb-"))
    folder.chmod(0o755)
    port = free_port()
    (folder / "users.txt").write_text('"postgres" ""\n')
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
{name} = host=127.0.0.1 port=5432 dbname={name} user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "users.txt"}
pool_mode = transaction
default_pool_size = 1
max_client_conn = 100
ignore_startup_parameters = extra_float_digits,options
logfile = {folder / "pgbouncer.log"}
"""
    )
    for path in folder.iterdir():
        path.chmod(0o644)
    cmd = [PGBOUNCER, str(ini)]
    if os.geteuid() == 0:
        cmd[1:1] = ["-u", "postgres"]  # PgBouncer refuses to run as root
        shutil.chown(folder, "postgres")  # its log file
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"postgresql://postgres@127.0.0.1:{port}/{name}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                psycopg.connect(url.replace("postgresql", "postgres", 1), connect_timeout=2).close()
                break
            except psycopg.Error:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = folder / "pgbouncer.log"
                    said = log.read_text() if log.exists() else ""
                    pytest.fail(f"pgbouncer did not start: {said}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(folder, ignore_errors=True)


def _alternate(url: str, **options: object) -> None:
    """Two clients take turns running one statement, each in its own transaction: under
    transaction pooling they share the one server connection."""
    clients = [psycopg.connect(url, **options) for _ in range(2)]  # type: ignore[arg-type]
    try:
        for _ in range(8):
            for client in clients:
                with client.transaction():
                    client.execute("SELECT count(*) FROM accounts WHERE id > %s", (0,))
    finally:
        for client in clients:
            client.close()


def test_automatic_prepared_statements_break_under_transaction_pooling(bouncer: str) -> None:
    with pytest.raises(psycopg.Error, match="prepared statement"):
        _alternate(bouncer.replace("postgresql", "postgres", 1))
    _alternate(bouncer.replace("postgresql", "postgres", 1), prepare_threshold=None)


def test_charges_through_pgbouncer(bouncer: str) -> None:
    url = f"{bouncer}?prepare_threshold=none"
    engine = make_engine(url, pool_size=4)
    with transaction(session_factory(engine)) as session:
        admin = auth.create_key(session, auth.Role.ADMIN).secret
    app = create_app(load_settings(database_url=url, secret_key=TEST_SECRET_KEY), engine=engine)
    headers = {"Authorization": f"Bearer {admin}"}
    with TestClient(app) as client:
        price = {"input_ucr_per_mtok": 1_000_000, "output_ucr_per_mtok": 1_000_000}
        r = client.post(
            "/api/v1/models", json={"slug": "b", "name": "b", "price": price}, headers=headers
        )
        assert r.status_code == 201, r.text
        uid = client.post("/api/v1/users", json={"external_id": "b"}, headers=headers).json()["id"]
        r = client.post(
            f"/api/v1/users/{uid}/grants",
            json={"amount_ucr": 20_000, "source": "purchased"},
            headers={**headers, "Idempotency-Key": "g"},
        )
        assert r.status_code == 201, r.text
        user_key = client.post(f"/api/v1/users/{uid}/keys", json={}, headers=headers).json()["key"]

        def charge(i: int) -> int:
            r = client.post(
                "/api/v1/usage",
                json={"user_id": uid, "model": "b", "input_tokens": 1_000},
                headers={**headers, "Idempotency-Key": f"c{i}"},
            )
            return r.status_code

        with ThreadPoolExecutor(4) as pool:
            statuses = sorted(pool.map(charge, range(25)))
        assert statuses == [201] * 20 + [402] * 5
        mine = {"Authorization": f"Bearer {user_key}"}
        for _ in range(8):  # user reads: bound by RLS, transaction by transaction
            wallet = client.get(f"/api/v1/users/{uid}/wallet", headers=mine)
            assert wallet.status_code == 200 and wallet.json()["balance_ucr"] == 0
            assert (
                len(client.get(f"/api/v1/users/{uid}/transfers", headers=mine).json()["items"])
                == 21
            )
    engine.dispose()
