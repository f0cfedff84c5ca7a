"""Crash safety, bounded (issue 16 tests): ``kill -9`` of a replay and of a server under batch
load, five times each, then everything sent again: every event is charged exactly once and
the ledger verifies. Small batches and a short trace keep each test to seconds; SQLite and
PostgreSQL.

Each test starts six processes (~2 s each on an idle machine, far more on a busy one), so
each runs on the backend it matters most for: the replay on SQLite (its embedded default),
the server on PostgreSQL (production).

A process is killed once the database shows it charging (usage rows growing), plus a short
random delay, so the kill lands mid-work rather than before the first transaction.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from modelbank.auth import service as auth
from modelbank.metering.models import usage_events_table as usage
from modelbank.pricing.formulas import Rates
from modelbank.wallets import service as wallets
from tests import factories
from tests.api.conftest import TEST_SECRET_KEY
from tests.conftest import Db, data_file

KILLS = 5
TRACE_EVENTS = 1_500
"""Rows of the Azure code trace replayed: long enough to be killed mid-way, short to finish."""
BATCH = 10
"""Events per HTTP batch under load (small: many transactions in flight when killed)."""
EVENTS_PER_CYCLE = 400
"""Events each server life is sent before (or while) it is killed."""
START_TIMEOUT_S = 60.0
MODELBANK = str(Path(sys.executable).parent / "modelbank")


def _env(db: Db) -> dict[str, str]:
    return {**os.environ, "MODELBANK_SECRET_KEY": TEST_SECRET_KEY, "MODELBANK_DATABASE_URL": db.url}


def _usage_rows(db: Db) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(usage)).scalar_one())


def _kill_when_charging(db: Db, proc: subprocess.Popen[bytes], rng: random.Random) -> None:
    """SIGKILL ``proc`` once usage rows grow past what they were (+ 0–150 ms), or when it
    has run for a minute; wait for it to die."""
    before = _usage_rows(db)
    deadline = time.monotonic() + START_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline and _usage_rows(db) <= before:
        time.sleep(0.02)
    time.sleep(rng.uniform(0, 0.15))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def _short_trace(tmp: Path) -> Path:
    with gzip.open(data_file("AzureLLMInferenceTrace_code.csv"), "rt") as source:
        lines = [next(source) for _ in range(TRACE_EVENTS + 1)]
    path = tmp / "short.csv"
    path.write_text("".join(lines))
    return path


def test_replay_killed_five_times_charges_every_event_once(db: Db, tmp_path: Path) -> None:
    if db.backend != "sqlite":
        pytest.skip("the replay's crash test runs on SQLite (the server's on PostgreSQL)")
    trace = _short_trace(tmp_path)
    args = [MODELBANK, "replay", str(trace), "--db", db.url, "--json", "--credits", "100000"]
    rng = random.Random(16)
    for _ in range(KILLS):
        proc = subprocess.Popen(
            args, env=_env(db), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _kill_when_charging(db, proc, rng)
    done = subprocess.run(args, env=_env(db), capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = json.loads(done.stdout)
    assert report["events"] == TRACE_EVENTS
    assert report["rejected"] == 0
    assert report["charged"] + report["replayed"] == TRACE_EVENTS
    assert report["replayed"] > 0  # the killed runs did charge part of the trace
    assert _usage_rows(db) == TRACE_EVENTS
    assert report["ledger_ok"] is True
    assert db.violations() == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(db: Db) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [MODELBANK, "serve", "--port", str(port), "--db", db.url, "--log-level", "error"],
        env=_env(db),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)


def _send(url: str, headers: dict[str, str], batches: list[list[dict[str, object]]]) -> None:
    """POST the batches in order until one fails to arrive (the server died)."""
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for events in batches:
            try:
                r = client.post("/api/v1/usage/batch", json={"events": events})
            except httpx.TransportError:
                return
            assert r.status_code == 200, r.text


def test_server_killed_under_batch_load_five_times_charges_every_event_once(db: Db) -> None:
    if db.backend != "postgres":
        pytest.skip("the server's crash test runs on PostgreSQL (the replay's on SQLite)")
    price = Rates(input_per_mtok=Decimal(1_000_000), output_per_mtok=Decimal(2_000_000))
    with db.tx() as session:
        user_id = factories.user(session, "loaded", credits_ucr=10**13)
        model_id = factories.model(session, "loaded-model", explicit=price)
        service = auth.create_key(session, auth.Role.SERVICE, name="load").secret
    headers = {"Authorization": f"Bearer {service}"}

    def batches(cycle: int) -> list[list[dict[str, object]]]:
        events = [
            {
                "idempotency_key": f"c{cycle}-e{i}",
                "user_id": user_id,
                "model": model_id,
                "input_tokens": 100 + i,
                "output_tokens": 10,
            }
            for i in range(EVENTS_PER_CYCLE)
        ]
        return [events[i : i + BATCH] for i in range(0, len(events), BATCH)]

    rng = random.Random(16)
    for cycle in range(KILLS):
        proc, url = _serve(db)
        halves = batches(cycle)
        senders = [
            threading.Thread(target=_send, args=(url, headers, halves[part::2]), daemon=True)
            for part in (0, 1)
        ]
        for sender in senders:
            sender.start()
        _kill_when_charging(db, proc, rng)
        for sender in senders:
            sender.join(60)
    proc, url = _serve(db)
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            for cycle in range(KILLS):
                for events in batches(cycle):
                    r = client.post("/api/v1/usage/batch", json={"events": events})
                    assert r.status_code == 200, r.text
                    assert r.json()["rejected"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    total = KILLS * EVENTS_PER_CYCLE
    assert _usage_rows(db) == total
    with db.engine.connect() as conn:
        charged = int(conn.execute(select(func.sum(usage.c.charge_ucr))).scalar_one())
    with db.tx() as session:
        balance = wallets.balance(session, user_id).balance_ucr
    assert balance == 10**13 - charged
    assert db.violations() == []
