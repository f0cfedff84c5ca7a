"""Soak: a bounded mixed load on ``modelbank serve`` at half its measured capacity for N
minutes (issue 16 part 10), on SQLite or PostgreSQL.

Run by hand (see bench/README.md)::

    .venv/bin/python bench/soak.py [--minutes 10] [--postgres URL] [--rate R] [--json]

One server process on a fresh database (a SQLite file in a temp dir, or a fresh PostgreSQL
schema dropped at the end), 100 users with credits, user keys for 20 of them. Then:

1. **capacity**: ``--concurrency`` (32) closed-loop clients send the mix below for
   ``--capacity-seconds`` (20); capacity = answers per second. ``--rate`` skips this.
2. **soak**: an open-loop schedule at half that rate (requests start on the clock whatever
   the answers do) with at most ``--max-in-flight`` (128) requests outstanding: a request
   whose start finds them all busy is counted as *shed* (bounded load, never a pile-up).

The mix (weights): single ``POST /api/v1/usage`` 50 (service key); ``GET /users/{id}/wallet``
10 and ``GET …/transfers`` 10 (user keys); ``GET /api/v1/models`` 8; hold then capture 6;
``POST /usage/batch`` of 50 events 4; ``GET …/model-analytics`` 6 (user key);
``GET …/statement.csv`` for the last day 4 (the heavy reads of the probe's D12);
``GET /metrics`` 2 (admin).

Per minute: requests, errors (5xx, transport errors and any status the mix does not expect;
402 is expected of nobody here: wallets hold 10 M credits), shed, p50/p99 latency (ms) and
the server's RSS (MB, the last of the samples taken every 5 s). At the end the ledger
invariants are checked and the RSS growth after the first minute (warm-up) is printed. The
server runs with ``MODELBANK_LOG_REQUESTS=false`` (a soak writes ~10⁵ lines a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from http_api import free_port, postgres_schema, set_up
from modelbank.auth import service as auth
from modelbank.db.engine import make_engine, session_factory, transaction
from modelbank.ledger import invariants

console = Console(stderr=True)

USERS = 100
KEYED_USERS = 20
BATCH_EVENTS = 50
RSS_SAMPLE_S = 5.0


@dataclass
class Minute:
    """What one minute of the soak saw."""

    latencies_ms: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    shed: int = 0
    rss_mb: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` (MB) from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Mix:
    """The traffic mix: :meth:`one` sends one operation (a hold + capture is two requests,
    timed as one) and returns (ok, status label)."""

    def __init__(self, http: httpx.AsyncClient, admin: str, users: dict[int, str]) -> None:
        self.http = http
        self.admin = {"Authorization": f"Bearer {admin}"}
        self.users = users
        self.ids = list(users)
        self.rng = random.Random(1)
        self.counter = 0
        ops: list[tuple[int, Callable[[], Awaitable[tuple[bool, str]]]]] = [
            (50, self.usage),
            (10, self.wallet),
            (10, self.transfers),
            (8, self.models),
            (6, self.hold_capture),
            (4, self.batch),
            (6, self.analytics),
            (4, self.statement),
            (2, self.metrics),
        ]
        self.ops = [op for weight, op in ops for _ in range(weight)]

    def _user(self) -> tuple[int, dict[str, str]]:
        uid = self.rng.choice(self.ids)
        return uid, {"Authorization": f"Bearer {self.users[uid]}"}

    def _key(self) -> str:
        self.counter += 1
        return f"soak-{uuid.uuid4().hex[:8]}-{self.counter}"

    async def one(self) -> tuple[bool, str]:
        return await self.rng.choice(self.ops)()

    async def _send(self, method: str, url: str, expect: int, **kw: Any) -> tuple[bool, str]:
        r = await self.http.request(method, url, **kw)
        return r.status_code == expect, str(r.status_code)

    async def usage(self) -> tuple[bool, str]:
        body = {
            "user_id": self.rng.randint(1, USERS),
            "model": "bench-chat",
            "input_tokens": self.rng.randint(100, 2_000),
            "output_tokens": self.rng.randint(10, 500),
        }
        headers = {**self.admin, "Idempotency-Key": self._key()}
        return await self._send("POST", "/api/v1/usage", 201, json=body, headers=headers)

    async def wallet(self) -> tuple[bool, str]:
        uid, headers = self._user()
        return await self._send("GET", f"/api/v1/users/{uid}/wallet", 200, headers=headers)

    async def transfers(self) -> tuple[bool, str]:
        uid, headers = self._user()
        url = f"/api/v1/users/{uid}/transfers?limit=50"
        return await self._send("GET", url, 200, headers=headers)

    async def models(self) -> tuple[bool, str]:
        _, headers = self._user()
        return await self._send("GET", "/api/v1/models", 200, headers=headers)

    async def analytics(self) -> tuple[bool, str]:
        uid, headers = self._user()
        url = f"/api/v1/users/{uid}/model-analytics"
        return await self._send("GET", url, 200, headers=headers)

    async def statement(self) -> tuple[bool, str]:
        uid, headers = self._user()
        day = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86_400))
        url = f"/api/v1/users/{uid}/statement.csv?from={day}"
        return await self._send("GET", url, 200, headers=headers)

    async def metrics(self) -> tuple[bool, str]:
        return await self._send("GET", "/metrics", 200, headers=self.admin)

    async def hold_capture(self) -> tuple[bool, str]:
        uid, headers = self._user()
        r = await self.http.post(
            f"/api/v1/users/{uid}/holds",
            json={"amount_ucr": 5_000_000, "timeout_s": 600, "model": "bench-chat"},
            headers={**headers, "Idempotency-Key": self._key()},
        )
        if r.status_code != 201:
            return False, f"hold {r.status_code}"
        hold = r.json()["id"]
        r = await self.http.post(
            f"/api/v1/holds/{hold}/capture",
            json={"amount_ucr": 1_000_000, "model": "bench-chat", "input_tokens": 100},
            headers={**headers, "Idempotency-Key": self._key()},
        )
        return r.status_code == 200, f"capture {r.status_code}"

    async def batch(self) -> tuple[bool, str]:
        events = [
            {
                "idempotency_key": self._key(),
                "user_id": self.rng.randint(1, USERS),
                "model": "bench-chat",
                "input_tokens": self.rng.randint(100, 2_000),
                "output_tokens": self.rng.randint(10, 500),
            }
            for _ in range(BATCH_EVENTS)
        ]
        r = await self.http.post("/api/v1/usage/batch", json={"events": events}, headers=self.admin)
        ok = r.status_code == 200 and r.json()["rejected"] == 0
        return ok, f"batch {r.status_code}"


async def timed(mix: Mix) -> tuple[bool, str, float]:
    started = time.perf_counter()
    try:
        ok, label = await mix.one()
    except httpx.HTTPError as exc:
        ok, label = False, type(exc).__name__
    return ok, label, (time.perf_counter() - started) * 1000


async def capacity(mix: Mix, seconds: float, concurrency: int) -> float:
    """Answers per second of ``concurrency`` closed-loop clients over ``seconds``."""
    done = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await timed(mix)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done / (time.monotonic() - started)


async def soak(mix: Mix, rate: float, minutes: int, max_in_flight: int, pid: int) -> list[Minute]:
    """The open-loop schedule at ``rate`` per second for ``minutes``."""
    results = [Minute() for _ in range(minutes)]
    started = time.monotonic()
    end = started + minutes * 60
    in_flight: set[asyncio.Task[None]] = set()

    def minute_of(at: float) -> Minute:
        return results[min(int((at - started) // 60), minutes - 1)]

    async def run_one(at: float) -> None:
        ok, label, ms = await timed(mix)
        m = minute_of(at)
        m.requests += 1
        m.latencies_ms.append(ms)
        m.statuses[label] = m.statuses.get(label, 0) + 1
        if not ok:
            m.errors += 1

    async def sample_rss() -> None:
        while time.monotonic() < end:
            minute_of(time.monotonic()).rss_mb = rss_mb(pid)
            await asyncio.sleep(RSS_SAMPLE_S)

    sampler = asyncio.create_task(sample_rss())
    interval = 1.0 / rate
    n = 0
    while True:
        at = started + n * interval
        if at >= end:
            break
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        n += 1
        if len(in_flight) >= max_in_flight:
            minute_of(at).shed += 1
            continue
        task = asyncio.create_task(run_one(at))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight)
    await sampler
    return results


def user_keys(url: str) -> dict[int, str]:
    """User keys for the first users."""
    engine = make_engine(url)
    with transaction(session_factory(engine)) as session:
        keys = {
            uid: auth.create_key(session, auth.Role.USER, user_id=uid, name="soak").secret
            for uid in range(1, KEYED_USERS + 1)
        }
    engine.dispose()
    return keys


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"modelbank serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("modelbank serve did not become ready")


def ledger_ok(url: str) -> list[str]:
    engine = make_engine(url)
    with transaction(session_factory(engine)) as session:
        broken = [str(v) for v in invariants.check(session)]
    engine.dispose()
    return broken


def report(figures: dict[str, Any]) -> None:
    table = Table(title=f"soak on {figures['database']} at {figures['rate']:.0f} req/s")
    for column in ("minute", "requests", "errors", "error %", "shed", "p50 ms", "p99 ms", "RSS MB"):
        table.add_column(column, justify="right")
    for row in figures["minutes"]:
        table.add_row(
            str(row["minute"]),
            str(row["requests"]),
            str(row["errors"]),
            f"{row['error_rate'] * 100:.2f}",
            str(row["shed"]),
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{row['rss_mb']:.0f}",
        )
    console.print(table)
    console.print(
        f"capacity {figures['capacity_rps']:.0f} req/s; RSS growth after minute 1:"
        f" {figures['rss_growth_after_warmup_mb']:+.0f} MB; ledger:"
        f" {'ok' if not figures['ledger_broken'] else figures['ledger_broken']}"
    )


async def run(args: argparse.Namespace, base: str, admin: str, keys: dict[int, str], pid: int):  # type: ignore[no-untyped-def]
    # idle connections dropped before uvicorn's 5 s keep-alive timeout closes them: reusing
    # one the server is closing at that moment is a client-side ReadError, not the server's
    limits = httpx.Limits(
        max_connections=args.max_in_flight, max_keepalive_connections=64, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
        mix = Mix(http, admin, keys)
        rate = args.rate
        measured = None
        if rate is None:
            console.print(f"capacity: {args.concurrency} clients, {args.capacity_seconds} s")
            measured = await capacity(mix, args.capacity_seconds, args.concurrency)
            rate = measured / 2
        console.print(f"soak: {rate:.0f} req/s for {args.minutes} min")
        minutes = await soak(mix, rate, args.minutes, args.max_in_flight, pid)
    return measured, rate, minutes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--postgres", help="PostgreSQL URL (a fresh schema is made)")
    parser.add_argument("--rate", type=float, help="requests/s (default: half the capacity)")
    parser.add_argument("--capacity-seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-in-flight", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="mb-soak-"))
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if args.postgres:
        url, drop = postgres_schema(args.postgres)
        backend = "PostgreSQL"
    else:
        url, backend = f"sqlite:///{tmp / 'soak.db'}", "SQLite"
    try:
        console.print(f"setting up {USERS} users on {backend}")
        admin = set_up(url, USERS)
        keys = user_keys(url)
        port = free_port()
        log = tmp / "serve.log"
        env = {**os.environ, "MODELBANK_LOG_REQUESTS": "false"}
        modelbank = Path(sys.executable).with_name("modelbank")
        proc = subprocess.Popen(
            [str(modelbank), "serve", "--port", str(port), "--db", url],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, proc)
            measured, rate, minutes = asyncio.run(run(args, base, admin, keys, proc.pid))
        finally:
            proc.terminate()
            proc.wait(30)
        rows = []
        for i, m in enumerate(minutes, 1):
            rows.append(
                {
                    "minute": i,
                    "requests": m.requests,
                    "errors": m.errors,
                    "error_rate": m.errors / m.requests if m.requests else 0.0,
                    "shed": m.shed,
                    "p50_ms": percentile(m.latencies_ms, 0.50),
                    "p99_ms": percentile(m.latencies_ms, 0.99),
                    "rss_mb": m.rss_mb,
                    "statuses": m.statuses,
                }
            )
        figures = {
            "database": backend,
            "capacity_rps": measured or 0.0,
            "rate": rate,
            "minutes": rows,
            "rss_growth_after_warmup_mb": (rows[-1]["rss_mb"] - rows[0]["rss_mb"])
            if len(rows) > 1
            else 0.0,
            "ledger_broken": ledger_ok(url),
        }
    finally:
        drop()
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        report(figures)
    return 0 if not figures["ledger_broken"] else 1


if __name__ == "__main__":
    sys.exit(main())
