"""The gateway under concurrency (DESIGN §9, issue 14 "Tests"): many streams racing for one
wallet, on one server and on two ``modelbank serve`` processes sharing a PostgreSQL database.

Each request's hold is computed exactly (:mod:`modelbank.gateway.estimate`): the body is sent
as fixed bytes, so the prompt bound is its byte length and the hold is
``len(body) × 1 µcr + max_tokens × 2 µcr`` at the test model's price. The wallet is funded with
exactly ``ADMITTED`` holds; the upstream's first token comes late enough that every request is
admitted or refused before any stream settles (a settled stream releases part of its hold,
which could admit a later one)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from modelbank.gateway.fake_upstream import FakeUpstream
from modelbank.ledger.models import accounts_table
from modelbank.metering.models import usage_events_table
from modelbank.pool.models import route_logs_table
from tests.api.conftest import TEST_SECRET_KEY
from tests.gateway.conftest import SECOND_KEY, UPSTREAM_KEY, Gw

STREAMS = 200
ADMITTED = 50
MAX_TOKENS = 10


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    # The upstream's first token comes after seconds here: wait for it.
    return {"gateway_first_byte_timeout_s": 60}


def chat_body(*, stream: bool, max_tokens: int = MAX_TOKENS) -> bytes:
    """The fixed request body (its bytes bound the prompt)."""
    body = {
        "model": "chat-a",
        "messages": [{"role": "user", "content": "race for the wallet"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def hold_of(body: bytes, max_tokens: int = MAX_TOKENS) -> int:
    """The hold of ``body`` (µcr) at 1 µcr per input token and 2 per output token."""
    return len(body) * 1 + max_tokens * 2


def pending_total(gw: Gw) -> int:
    """Pending debits of every account (µcr): 0 when no hold is left open."""
    with gw.db.tx() as session:
        return int(
            session.execute(select(func.sum(accounts_table.c.debits_pending))).scalar_one() or 0
        )


def usage_charges(gw: Gw) -> list[int]:
    with gw.db.tx() as session:
        return [int(c) for c in session.execute(select(usage_events_table.c.charge_ucr)).scalars()]


def count_rows(gw: Gw, table: Any) -> int:
    with gw.db.tx() as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


class WalletWatch:
    """Samples a wallet's (posted balance, pending debits) on a thread until stopped; the
    lowest available balance and the highest pending amount seen."""

    def __init__(self, gw: Gw, user_id: int) -> None:
        self.gw, self.user_id = gw, user_id
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.gw.wallet(self.user_id))
            time.sleep(0.02)

    def __enter__(self) -> WalletWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.samples.append(self.gw.wallet(self.user_id))


def check_openai_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code


async def one_stream(client: httpx.AsyncClient, base: str, secret: str, body: bytes) -> Any:
    """POST a streaming chat; (status, text of the stream or the error JSON)."""
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    async with client.stream(
        "POST", f"{base}/v1/chat/completions", content=body, headers=headers
    ) as response:
        raw = await response.aread()
        return response.status_code, raw.decode(), dict(response.headers)


async def many(bases: list[str], secret: str, bodies: list[bytes]) -> list[Any]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        calls = [
            one_stream(client, bases[i % len(bases)], secret, body) for i, body in enumerate(bodies)
        ]
        return await asyncio.gather(*calls)


def stream_text(raw: str) -> tuple[str, bool]:
    """(content streamed, whether [DONE] came) of an SSE body."""
    text, done = "", False
    for line in raw.splitlines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
    return text, done


def test_200_streams_on_a_wallet_of_50_holds_admit_at_most_50(
    gw: Gw, upstream: tuple[str, FakeUpstream]
) -> None:
    url, _ = upstream
    # First token 3 s after the request, then 20 tokens/s: every hold overlaps every other.
    httpx.post(
        f"{url}/_fake/config", json={"ttft_ms": 3_000, "tokens_per_s": 20}
    ).raise_for_status()
    gw.model("chat-a")
    gw.resource(url, {"chat-a": "up-chat-a"})
    body = chat_body(stream=True)
    credits = ADMITTED * hold_of(body)
    user_id, secret = gw.user("racer", credits)
    with WalletWatch(gw, user_id) as watch:
        results = asyncio.run(many([gw.url], secret, [body] * STREAMS))
    statuses = Counter(status for status, _, _ in results)
    assert set(statuses) <= {200, 402}, statuses
    assert statuses[200] == ADMITTED, statuses  # exactly the holds the wallet covers
    for status, raw, headers in results:
        if status == 402:
            check_openai_error(httpx.Response(402, content=raw.encode()), 402, "insufficient_funds")
        else:
            text, done = stream_text(raw)
            assert done and text, raw[:300]
            assert headers["x-modelbank-route"].startswith("resource=")
    # never overdrawn: the available balance never went below zero; at most 50 holds at once
    assert min(balance - pending for balance, pending in watch.samples) >= 0
    assert max(pending for _, pending in watch.samples) <= credits
    charges = usage_charges(gw)
    assert len(charges) == ADMITTED == count_rows(gw, route_logs_table)
    assert all(0 < c <= hold_of(body) for c in charges)
    balance, pending = gw.wallet(user_id)
    assert pending == 0 and pending_total(gw) == 0
    assert balance == credits - sum(charges) >= 0
    assert httpx.get(f"{url}/_fake/stats").json()["requests"]["chat.completions"] == ADMITTED


def test_mixed_streamed_and_whole_requests_race_without_overdraft(
    gw: Gw, upstream: tuple[str, FakeUpstream]
) -> None:
    """Half streamed, half not, and settlements releasing money while others are admitted:
    any number may be admitted, never more than the money covers, never a 500."""
    url, _ = upstream
    httpx.post(f"{url}/_fake/config", json={"latency_ms": 50, "ttft_ms": 100}).raise_for_status()
    gw.model("chat-a")
    gw.resource(url, {"chat-a": "up-chat-a"})
    streamed, whole = chat_body(stream=True), chat_body(stream=False)
    credits = 20 * max(hold_of(streamed), hold_of(whole))
    user_id, secret = gw.user("mixed", credits)
    bodies = [streamed if i % 2 else whole for i in range(120)]
    with WalletWatch(gw, user_id) as watch:
        results = asyncio.run(many([gw.url], secret, bodies))
    statuses = Counter(status for status, _, _ in results)
    assert set(statuses) <= {200, 402}, statuses
    assert statuses[200] >= 20
    assert min(balance - pending for balance, pending in watch.samples) >= 0
    charges = usage_charges(gw)
    assert len(charges) == statuses[200]
    balance, pending = gw.wallet(user_id)
    assert (balance, pending) == (credits - sum(charges), 0)
    assert balance >= 0 and pending_total(gw) == 0


def test_requests_without_max_tokens_race_for_what_the_balance_covers(
    gw: Gw, upstream: tuple[str, FakeUpstream]
) -> None:
    """No ``max_tokens``: each hold is what the balance still covers when it is placed (the
    wallet locked), so a later request gets what is left, never more: never overdrawn."""
    url, _ = upstream
    httpx.post(f"{url}/_fake/config", json={"ttft_ms": 1_000}).raise_for_status()
    gw.model("chat-a")
    gw.resource(url, {"chat-a": "up-chat-a"})
    body = json.dumps(
        {"model": "chat-a", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        separators=(",", ":"),
    ).encode()
    credits = 10 * len(body) + 600  # ten prompt bounds and 300 output tokens in all
    user_id, secret = gw.user("open-ended", credits)
    with WalletWatch(gw, user_id) as watch:
        results = asyncio.run(many([gw.url], secret, [body] * 60))
    statuses = Counter(status for status, _, _ in results)
    assert set(statuses) <= {200, 402}, statuses
    assert 1 <= statuses[200] <= 10
    assert min(balance - pending for balance, pending in watch.samples) >= 0
    asked = [r["max_tokens"] for r in httpx.get(f"{url}/_fake/stats").json()["recent"]]
    assert len(asked) == statuses[200] and all(isinstance(m, int) and m >= 1 for m in asked)
    balance, pending = gw.wallet(user_id)
    assert (balance, pending) == (credits - sum(usage_charges(gw)), 0) and balance >= 0


async def leave_early(
    client: httpx.AsyncClient, base: str, secret: str, body: bytes, n: int
) -> int:
    """Stream, and leave after ``n`` content events (0: right after the headers)."""
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    seen = 0
    async with client.stream(
        "POST", f"{base}/v1/chat/completions", content=body, headers=headers
    ) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code
        async for line in response.aiter_lines():
            if seen >= n:
                break
            seen += line.startswith("data: {")
    return 200


def test_many_clients_leaving_mid_stream_leave_no_hold_and_pay_what_they_saw(
    gw: Gw, upstream: tuple[str, FakeUpstream]
) -> None:
    url, _ = upstream
    httpx.post(f"{url}/_fake/config", json={"tokens_per_s": 40}).raise_for_status()
    gw.model("chat-a")
    gw.resource(url, {"chat-a": "up-chat-a"})
    body = chat_body(stream=True, max_tokens=200)
    credits = 100 * hold_of(body, 200)
    user_id, secret = gw.user("leaver", credits)

    async def run() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(leave_early(client, gw.url, secret, body, i % 7) for i in range(60))
            )

    statuses = Counter(asyncio.run(run()))
    assert statuses == {200: 60}
    deadline = time.monotonic() + 20
    while gw.wallet(user_id)[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    balance, pending = gw.wallet(user_id)
    assert pending == 0 and pending_total(gw) == 0  # every hold settled
    charges = usage_charges(gw)
    assert balance == credits - sum(charges)
    assert all(0 <= c < hold_of(body, 200) for c in charges)
    with gw.db.tx() as session:
        outcomes = Counter(session.execute(select(route_logs_table.c.outcome)).scalars())
    assert sum(outcomes.values()) == 60 and set(outcomes) <= {"disconnected", "served"}, outcomes


def test_a_key_revoked_under_load_ends_its_resource_once_and_every_request_is_served(
    gw: Gw, upstream: tuple[str, FakeUpstream], second: tuple[str, FakeUpstream]
) -> None:
    """Many requests meet the revoked key at once: each fails over, the resource is ended
    (its deposit clawed back) once, every hold settles; the db fixture checks the pool's
    invariant (deposit = consumed share + clawed back + outstanding)."""
    (url_a, _), (url_b, _) = upstream, second
    gw.model("chat-a", cost={"input_uusd_per_mtok": 500_000, "output_uusd_per_mtok": 1_000_000})
    depositor, _ = gw.user("depositor")
    deposit = {
        "provider": "fake",
        "base_url": f"{url_a}/v1",
        "api_key": UPSTREAM_KEY,
        "models": [{"model": "chat-a", "upstream_model": "up-a"}],
        "quota_uusd": 10_000_000,
    }
    a = gw.post(f"/api/v1/users/{depositor}/resources", deposit, key="deposit-a")
    gw.resource(url_b, {"chat-a": "up-b"}, api_key=SECOND_KEY)
    httpx.post(f"{url_a}/_fake/config", json={"latency_ms": 200}).raise_for_status()
    httpx.post(f"{url_a}/_fake/config", json={"revoked_keys": [UPSTREAM_KEY]}).raise_for_status()
    user_id, secret = gw.user("caller", 100_000_000)
    bodies = [chat_body(stream=bool(i % 2)) for i in range(40)]
    results = asyncio.run(many([gw.url], secret, bodies))
    assert Counter(status for status, _, _ in results) == {200: 40}
    ended = gw.http.get(f"{gw.url}/api/v1/resources/{a['id']}", headers=gw.admin).json()
    assert ended["status"] == "failed"
    assert ended["clawed_back_ucr"] == a["deposit_credit_ucr"]  # nothing was consumed
    assert gw.wallet(depositor) == (0, 0)
    balance, pending = gw.wallet(user_id)
    assert pending == 0 and balance == 100_000_000 - sum(usage_charges(gw))


# -- two server processes on one PostgreSQL database -----------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"modelbank serve exited: {log.read_text()[-2000:]}"
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"modelbank serve did not become ready: {log.read_text()[-2000:]}")


@pytest.fixture
def two_servers(gw: Gw, tmp_path: Path) -> Iterator[tuple[list[str], list[Path]]]:
    """Two ``modelbank serve`` processes on the test's PostgreSQL schema: (base URLs, logs)."""
    if gw.db.backend != "postgres":
        pytest.skip(
            "two server processes share one database only on PostgreSQL (SQLite has one writer)"
        )
    modelbank = Path(sys.executable).with_name("modelbank")
    env = {
        **os.environ,
        "MODELBANK_SECRET_KEY": TEST_SECRET_KEY,
        "MODELBANK_GATEWAY_FIRST_BYTE_TIMEOUT_S": "30",
    }
    ports = [free_port(), free_port()]
    logs = [tmp_path / f"serve-{port}.log" for port in ports]
    files = [log.open("wb") for log in logs]
    procs = [
        subprocess.Popen(
            [str(modelbank), "serve", "--port", str(port), "--db", gw.db.url],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for port, out in zip(ports, files, strict=True)
    ]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for base, proc, log in zip(bases, procs, logs, strict=True):
            wait_ready(base, proc, log)
        yield bases, logs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for out in files:
            out.close()


def test_two_processes_on_one_postgres_database_never_overdraw_one_wallet(
    gw: Gw, upstream: tuple[str, FakeUpstream], two_servers: tuple[list[str], list[Path]]
) -> None:
    bases, logs = two_servers
    url, _ = upstream
    httpx.post(
        f"{url}/_fake/config", json={"latency_ms": 100, "ttft_ms": 200, "tokens_per_s": 200}
    ).raise_for_status()
    gw.model("chat-a")
    gw.resource(url, {"chat-a": "up-chat-a"})
    streamed, whole = chat_body(stream=True), chat_body(stream=False)
    credits = 40 * max(hold_of(streamed), hold_of(whole))
    user_id, secret = gw.user("shared", credits)
    bodies = [streamed if i % 3 else whole for i in range(240)]
    with WalletWatch(gw, user_id) as watch:
        results = asyncio.run(many(bases, secret, bodies))
    statuses = Counter(status for status, _, _ in results)
    by_server = Counter(bases[i % 2] for i, (s, _, _) in enumerate(results) if s == 200)
    assert set(statuses) <= {200, 402}, (statuses, [r[1][:300] for r in results if r[0] >= 500])
    assert statuses[200] >= 40 and len(by_server) == 2, (statuses, by_server)
    assert min(balance - pending for balance, pending in watch.samples) >= 0
    charges = usage_charges(gw)
    assert len(charges) == statuses[200]
    balance, pending = gw.wallet(user_id)
    assert (balance, pending) == (credits - sum(charges), 0)  # charges exact
    assert balance >= 0 and pending_total(gw) == 0
    for log in logs:
        text = log.read_text()
        assert UPSTREAM_KEY not in text
        assert "Traceback" not in text, text[-3000:]
