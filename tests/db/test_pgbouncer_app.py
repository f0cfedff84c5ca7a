"""modelbank behind PgBouncer in transaction mode (issue 16 part 8).

PgBouncer (Debian's ``pgbouncer``; ``.ci/run`` installs it) is started on a free port in
``pool_mode = transaction`` with few server connections, in front of a fresh schema of the
test database: consecutive transactions of one client land on different server connections and
clients share them. With ``?prepare_threshold=none`` in the URL (psycopg prepares nothing on
the server) the whole app migrates, charges, replays and refuses through it, and concurrent
charges (a thread each, one transaction per charge) on one wallet charge exactly what it can
pay. (tests/db/test_pgbouncer.py shows the prepared-statement clash without the parameter.)"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.config import load_settings
from modelbank.db.engine import make_engine, session_factory, transaction
from modelbank.ledger.errors import InsufficientFunds
from modelbank.metering import service as metering
from modelbank.metering.service import UsageEvent
from modelbank.pricing.formulas import Rates
from modelbank.wallets import service as wallets
from tests import factories
from tests.api.conftest import TEST_SECRET_KEY, Api, bearer
from tests.conftest import POSTGRES_URL, Db
from tests.db import pgcluster

pytestmark = pytest.mark.postgres

CR = 1_000_000
SERVER_CONNECTIONS = 3
"""PgBouncer's pool per database/user: fewer than the clients, so they share."""


@dataclass
class Bouncer:
    url: str
    """The app's URL: through PgBouncer."""


def _pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )


def _start(binary: str, where: Path, schema: str) -> tuple[subprocess.Popen[bytes], int]:
    target = make_url(POSTGRES_URL)
    dbname = target.database or "test"
    port = pgcluster.free_port()
    (where / "users.txt").write_text(f'"{target.username or "postgres"}" ""\n')
    server = f"host={target.host or '127.0.0.1'} port={target.port or 5432} dbname={dbname}"
    (where / "pgbouncer.ini").write_text(
        f"""[databases]
{dbname} = {server} connect_query='SET search_path TO {schema}'
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {where}/users.txt
pool_mode = transaction
default_pool_size = {SERVER_CONNECTIONS}
max_client_conn = 200
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {where}/pgbouncer.log
"""
    )
    for name in ("users.txt", "pgbouncer.ini"):
        if pgcluster.os.geteuid() == 0:
            shutil.chown(where / name, "postgres")
    argv = [binary, str(where / "pgbouncer.ini")]
    if pgcluster.os.geteuid() == 0:
        argv += ["-u", "postgres"]  # it refuses to run as root
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    url = f"postgresql://{target.username or 'postgres'}@127.0.0.1:{port}/{dbname}"
    while True:
        try:
            psycopg.connect(url, connect_timeout=1).close()
            return process, port
        except psycopg.OperationalError as exc:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                err = process.stderr.read().decode() if process.stderr else ""
                raise pgcluster.Unavailable(f"pgbouncer did not start: {err or exc}") from None
            time.sleep(0.1)


@pytest.fixture(scope="module")
def bouncer() -> Iterator[Bouncer]:
    binary = _pgbouncer_binary()
    if binary is None:
        pytest.skip("pgbouncer is not installed (apt-get install -y pgbouncer; .ci/run does)")
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=2).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    # a schema of the test database: PgBouncer's own server connections set the search
    # path (connect_query), the app sets nothing (a new database would cost a checkpoint
    # to drop)
    schema = f"mb_bouncer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    where = pgcluster.folder()
    process = None
    try:
        try:
            process, port = _start(binary, where, schema)
        except pgcluster.Unavailable as exc:
            pytest.skip(str(exc))
        target = make_url(POSTGRES_URL)
        user, dbname = target.username or "postgres", target.database or "test"
        yield Bouncer(f"postgresql://{user}@127.0.0.1:{port}/{dbname}?prepare_threshold=none")
    finally:
        if process is not None:
            process.kill()  # a throw-away pooler: no graceful shutdown to wait for
            process.wait(timeout=10)
            if process.stderr is not None:
                process.stderr.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def api(bouncer: Bouncer) -> Iterator[Api]:
    settings = load_settings(database_url=bouncer.url, secret_key=TEST_SECRET_KEY)
    app = create_app(settings)  # migrates through PgBouncer too
    engine = make_engine(bouncer.url, pool_size=12)
    with transaction(session_factory(engine)) as session:
        admin = auth.create_key(session, auth.Role.ADMIN, name="admin").secret
        service = auth.create_key(session, auth.Role.SERVICE, name="service").secret
    db = Db(engine, "postgres", bouncer.url)
    with TestClient(app, raise_server_exceptions=True) as client:
        yield Api(client, db, bearer(admin), bearer(service))
    assert db.violations() == []
    app.state.db.engine.dispose()
    engine.dispose()


def test_a_charge_flow_through_pgbouncer(api: Api) -> None:
    tag = uuid.uuid4().hex[:6]
    user, user_h = api.user(f"ann-{tag}", credits_ucr=10 * CR)
    api.model(f"meter-{tag}", price={"per_unit_ucr": CR})
    # more than psycopg's default prepare threshold (5) of the same statements
    for i in range(8):
        r = api.charge(user, f"meter-{tag}", key=f"c{i}-{tag}", units=1)
        assert r.status_code == 201, r.text
        assert r.json()["balance_ucr"] == (9 - i) * CR
    again = api.charge(user, f"meter-{tag}", key=f"c0-{tag}", units=1)
    assert again.status_code == 201 and again.headers["Idempotency-Hit"] == "true"
    refused = api.charge(user, f"meter-{tag}", key=f"big-{tag}", units=3)
    assert refused.status_code == 402, refused.text
    assert refused.json()["code"] == "insufficient_funds"
    r = api.client.get(f"/api/v1/users/{user}/wallet", headers=user_h)
    assert r.status_code == 200 and r.json()["balance_ucr"] == 2 * CR


def test_concurrent_charges_through_pgbouncer(api: Api) -> None:
    """8 threads × 10 charges through PgBouncer's 3 server connections, one wallet that
    can pay for 30: exactly 30 charged, 50 refused, no other error, the wallet at 0."""
    tag = uuid.uuid4().hex[:6]
    price, affordable, threads, each = 1_000, 30, 8, 10
    with api.db.tx() as s:
        payer = factories.user(s, f"payer-{tag}", credits_ucr=affordable * price)
        factories.model(s, f"flat-{tag}", explicit=Rates(per_request=Decimal(price)))
    charged: list[int] = []
    refused: list[InsufficientFunds] = []
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def worker(t: int) -> None:
        start.wait()
        for i in range(each):
            try:
                with api.db.tx() as s:
                    result = metering.charge(s, UsageEvent(f"{tag}-{t}-{i}", payer, f"flat-{tag}"))
                charged.append(result.charge_ucr)
            except InsufficientFunds as exc:
                refused.append(exc)
            except Exception as exc:  # a prepared-statement clash, a lost lock…: a bug
                errors.append(exc)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(worker, t) for t in range(threads)]:
            future.result()
    assert errors == [], errors[:3]
    assert (len(charged), len(refused)) == (affordable, threads * each - affordable)
    assert set(charged) == {price}
    with api.db.tx() as s:
        wallet = wallets.balance(s, payer)
    assert (wallet.balance_ucr, wallet.available_ucr) == (0, 0)
