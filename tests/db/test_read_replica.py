"""``MODELBANK_READ_DATABASE_URL`` (issue 16 part 8): dashboards, analytics and exports read
on a streaming replica. The replica is made on this machine with ``pg_basebackup`` and
started on a free port; where PostgreSQL refuses replication connections (no
``replication`` line in pg_hba.conf) or the tools are missing, the test is skipped with the
reason."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.config import load_settings
from modelbank.db.engine import make_engine
from tests.api.conftest import TEST_SECRET_KEY
from tests.conftest import POSTGRES_URL, Db
from tests.gateway.test_gateway_concurrency import free_port

BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def _as_postgres(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` as the postgres user when we are root (pg_ctl refuses root)."""
    preexec = None
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")

        def preexec() -> None:
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)

    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        preexec_fn=preexec,
        timeout=300,
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.fixture
def replica(db: Db) -> Iterator[str]:
    """A hot standby of the test server: the test's URL on it."""
    if db.backend != "postgres":
        pytest.skip("read replicas are PostgreSQL's")
    if BIN is None or not (BIN / "pg_basebackup").exists():
        pytest.skip("pg_basebackup / pg_ctl not installed")
    folder = Path(tempfile.mkdtemp(prefix="mb-replica-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    port = free_port()
    made = _as_postgres(
        [
            str(BIN / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-D",
            str(data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        ]
    )
    if made.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"pg_basebackup refused: {made.stderr.strip().splitlines()[-1:]}")
    started = _as_postgres(
        [
            str(BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(folder / "log"),
            "-w",
            "start",
            "-o",
            f"-p {port} -c hot_standby=on -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={folder} -c config_file={data / 'postgresql.conf'}",
        ]
    )
    try:
        if started.returncode != 0:
            pytest.skip(f"the replica did not start: {started.stderr.strip()[-300:]}")
        base = POSTGRES_URL.replace(":5432/", f":{port}/")
        yield base + db.url[len(POSTGRES_URL) :]
    finally:
        _as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


def test_analytics_read_the_replica(db: Db, replica: str) -> None:
    with db.tx() as session:
        admin = auth.create_key(session, auth.Role.ADMIN).secret
    settings = load_settings(
        database_url=db.url, read_database_url=replica, secret_key=TEST_SECRET_KEY
    )
    app = create_app(settings, engine=db.engine)
    with app.state.db.read_analytics() as session:
        assert session.execute(text("SELECT pg_is_in_recovery()")).scalar() is True
    with app.state.db.read() as session:
        assert session.execute(text("SELECT pg_is_in_recovery()")).scalar() is False
    engine = make_engine(replica)
    deadline = time.monotonic() + 30
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {admin}"}
        uid = client.post("/api/v1/users", json={"external_id": "r"}, headers=headers).json()["id"]
        while True:  # the key and the user reach the replica
            with engine.connect() as conn:
                if conn.execute(
                    text("SELECT count(*) FROM users WHERE id = :u"), {"u": uid}
                ).scalar():
                    break
            assert time.monotonic() < deadline, "the replica never caught up"
            time.sleep(0.1)
        r = client.get(f"/api/v1/users/{uid}/model-analytics", headers=headers)
        assert r.status_code == 200, r.text
    engine.dispose()
