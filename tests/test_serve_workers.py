"""``modelbank serve --workers N`` (issue 16 part 8): refused on SQLite with one line; on
PostgreSQL two server processes — one of them with two uvicorn workers — serve charges on
one wallet at once, each charged exactly once, never overdrawn, never a 5xx, and the
workers' /metrics add up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelbank.auth import service as auth
from tests.api.conftest import TEST_SECRET_KEY
from tests.conftest import Db
from tests.gateway.test_gateway_concurrency import free_port

MODELBANK = Path(sys.executable).with_name("modelbank")
CHARGE_UCR = 1_000  # 1,000 input tokens at 1 credit per million tokens
AFFORDABLE = 30
SENT = 40


def test_workers_are_refused_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "one.db"
    done = subprocess.run(
        [str(MODELBANK), "serve", "--workers", "2", "--db", f"sqlite:///{db}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: --workers needs PostgreSQL: SQLite has one writer, so run one process (--workers 1)"
    ]


@pytest.fixture
def servers(db: Db, tmp_path: Path) -> Iterator[tuple[list[str], subprocess.Popen[bytes]]]:
    """``serve --workers 2`` on one port and a plain ``serve`` on another, one database."""
    if db.backend != "postgres":
        pytest.skip("--workers runs on PostgreSQL only (the SQLite refusal is tested above)")
    env = {**os.environ, "MODELBANK_SECRET_KEY": TEST_SECRET_KEY}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    ports = [free_port(), free_port()]
    logs = [tmp_path / f"serve-{port}.log" for port in ports]
    files = [log.open("wb") for log in logs]
    commands = [
        [str(MODELBANK), "serve", "--workers", "2", "--port", str(ports[0]), "--db", db.url],
        [str(MODELBANK), "serve", "--port", str(ports[1]), "--db", db.url],
    ]
    procs = [
        subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        for cmd, out in zip(commands, files, strict=True)
    ]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for base, proc, log in zip(bases, procs, logs, strict=True):
            wait_ready(base, proc, log)
        yield bases, procs[0]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for out in files:
            out.close()


def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``base`` answers /readyz: a worker imports modelbank and builds its app first,
    which took over a minute on this busy 2-core machine with the suite running beside it."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"modelbank serve exited: {log.read_text()[-2000:]}"
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"modelbank serve did not become ready: {log.read_text()[-2000:]}")


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(p) for p in found]


def test_two_processes_and_two_workers_charge_one_wallet_exactly(
    db: Db, servers: tuple[list[str], subprocess.Popen[bytes]]
) -> None:
    bases, workers_proc = servers
    assert len(_children(workers_proc.pid)) >= 2  # uvicorn's two workers (spawned)
    with db.tx() as session:
        admin = {"Authorization": f"Bearer {auth.create_key(session, auth.Role.ADMIN).secret}"}
    http = httpx.Client(timeout=60)
    base = bases[1]
    r = http.post(
        f"{base}/api/v1/models",
        json={
            "slug": "w",
            "name": "w",
            "price": {"input_ucr_per_mtok": 1_000_000, "output_ucr_per_mtok": 1_000_000},
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    user_id = http.post(f"{base}/api/v1/users", json={"external_id": "w"}, headers=admin).json()[
        "id"
    ]
    r = http.post(
        f"{base}/api/v1/users/{user_id}/grants",
        json={"amount_ucr": AFFORDABLE * CHARGE_UCR, "source": "purchased"},
        headers={**admin, "Idempotency-Key": "seed"},
    )
    assert r.status_code == 201, r.text

    def charge(i: int) -> tuple[str, int, str]:
        target = bases[i % 2]
        r = http.post(
            f"{target}/api/v1/usage",
            json={"user_id": user_id, "model": "w", "input_tokens": 1_000},
            headers={**admin, "Idempotency-Key": f"w-{i}"},
        )
        return target, r.status_code, r.headers.get("idempotency-hit", "")

    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(charge, range(SENT)))
        again = list(pool.map(charge, range(SENT)))
    assert Counter(status for _, status, _ in first) == {201: AFFORDABLE, 402: SENT - AFFORDABLE}
    assert Counter((status, hit) for _, status, hit in again) == {
        (201, "true"): AFFORDABLE,
        (402, ""): SENT - AFFORDABLE,
    }
    wallet = http.get(f"{base}/api/v1/users/{user_id}/wallet", headers=admin).json()
    assert wallet["balance_ucr"] == 0
    # /metrics of the two-worker server sums its workers (whichever answers the scrape)
    served = sum(1 for target, status, _ in first if target == bases[0] and status == 201)
    text = http.get(f"{bases[0]}/metrics", headers=admin).text
    charged = sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "modelbank_charges_total" and s.labels == {"outcome": "charged"}
    )
    assert charged == served
