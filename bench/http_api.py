"""HTTP throughput of ``modelbank serve`` on SQLite, with wrk as the load generator.

Run by hand (see bench/README.md)::

    .venv/bin/python bench/http_api.py [--duration 10] [--connections 64] [--batch-clients 2]
        [--users 100] [--json]

One run, three phases against one ``modelbank serve`` process (uvicorn, one worker, uvloop
and httptools when installed) on a fresh SQLite file, loopback only:

* ``ceiling``: ``GET /healthz`` (a bare ``async def`` FastAPI endpoint): the most this server
  stack answers on this machine.
* ``single``: ``POST /api/v1/usage`` with ``--connections`` connections, a unique
  ``Idempotency-Key`` per request, users spread over ``--users`` wallets.
* ``batch``: ``POST /api/v1/usage/batch`` with 1,000 events per request from
  ``--batch-clients`` concurrent httpx clients (the bodies are built before the clock starts).

wrk (Debian package ``wrk``) drives the first two phases; it reports requests/s and latency
percentiles (with ``--latency``). Afterwards the usage rows are counted, compared with the
201 responses, and the ledger invariants are checked.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from modelbank import onboarding
from modelbank.auth import service as auth
from modelbank.catalog import service as catalog
from modelbank.db.engine import make_engine, session_factory, transaction
from modelbank.db.migrate import upgrade
from modelbank.ledger import invariants
from modelbank.metering.models import usage_events_table
from modelbank.pricing.formulas import Rates
from modelbank.users import service as users
from modelbank.wallets import service as wallets

console = Console(stderr=True)

USAGE_LUA = r"""
local counter = 0
local users = tonumber(os.getenv("BENCH_USERS") or "100")
local prefix = os.getenv("BENCH_PREFIX") or "k"
local thread_id = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  thread_id = tid
end
request = function()
  counter = counter + 1
  local user = ((counter * 7 + thread_id) % users) + 1
  local body = string.format(
    '{"user_id":%d,"model":"bench-chat","input_tokens":%d,"output_tokens":%d}',
    user, 500 + (counter % 700), 100 + (counter % 200))
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
  headers["Idempotency-Key"] = string.format("%s-%d-%d", prefix, thread_id, counter)
  return wrk.format("POST", "/api/v1/usage", headers, body)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def set_up(url: str, n_users: int) -> str:
    """Migrate, create the admin key, users with 10 M credits each and one priced model."""
    engine = make_engine(url)
    upgrade(engine)
    with transaction(session_factory(engine)) as session:
        key = auth.create_key(session, auth.Role.ADMIN, name="bench").secret
        for i in range(n_users):
            user = users.create_user(session, f"bench-user-{i}")
            wallets.grant(session, user.id, 10**13, idempotency_key=f"bench-seed-{i}")
        creator = users.create_user(session, "bench-creator")
        onboarding.add_model(
            session,
            onboarding.ModelSetup(
                model=catalog.NewModel(
                    slug="bench-chat",
                    name="bench chat",
                    provider="openai",
                    mode=catalog.Mode.CHAT,
                    creator_id=creator.id,
                ),
                cost_uusd=Rates(input_per_mtok=Decimal(150_000), output_per_mtok=Decimal(600_000)),
            ),
        )
    engine.dispose()
    return key


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise SystemExit(f"modelbank serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("modelbank serve did not become ready")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(
    url: str, *, connections: int, duration: int, script: str | None, env: dict[str, str]
) -> dict[str, Any]:
    """Run wrk; parse requests/s, latency percentiles and non-2xx count."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(
        [*cmd, url], capture_output=True, text=True, env={**os.environ, **env}, check=True
    ).stdout
    result: dict[str, Any] = {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
    }
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        result[f"p{pct}_ms"] = _ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = m.group(1) if m else ""
    return result


def run_batches(
    base: str, key: str, *, clients: int, duration: float, n_users: int
) -> dict[str, Any]:
    """``clients`` threads, each posting 1,000-event batches for ``duration`` seconds."""
    prebuilt: list[list[bytes]] = []
    per_client = max(1, int(duration * 20))
    for c in range(clients):
        bodies = []
        for b in range(per_client):
            events = [
                {
                    "idempotency_key": f"batch-{c}-{b}-{i}-{uuid.uuid4().hex[:8]}",
                    "user_id": (i * 13 + b) % n_users + 1,
                    "model": "bench-chat",
                    "input_tokens": 500 + i % 700,
                    "output_tokens": 100 + i % 200,
                }
                for i in range(1000)
            ]
            bodies.append(json.dumps({"events": events}).encode())
        prebuilt.append(bodies)
    counts = [0] * clients
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def worker(c: int) -> None:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=base, timeout=60) as client:
            for body in prebuilt[c]:
                if time.perf_counter() >= stop_at:
                    break
                started = time.perf_counter()
                r = client.post("/api/v1/usage/batch", content=body, headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    if r.status_code != 200:
                        failures[0] += 1
                    else:
                        counts[c] += int(r.json()["charged"])

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "events_per_s": sum(counts) / wall,
        "events": sum(counts),
        "requests": len(latencies),
        "failures": failures[0],
        "p50_ms": latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per phase")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch-clients", type=int, default=2)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")

    tmp = Path(tempfile.mkdtemp(prefix="mb-http-"))
    url = f"sqlite:///{tmp / 'bench.db'}"
    console.print(f"setting up {args.users} users on {url}")
    key = set_up(url, args.users)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    modelbank = Path(sys.executable).with_name("modelbank")
    proc = subprocess.Popen(
        [str(modelbank), "serve", "--port", str(port), "--db", url, "--log-level", "warning"],
    )
    figures: dict[str, Any] = {"connections": args.connections, "duration_s": args.duration}
    try:
        wait_ready(base, proc)
        console.print("phase ceiling: GET /healthz")
        figures["ceiling"] = run_wrk(
            f"{base}/healthz",
            connections=args.connections,
            duration=args.duration,
            script=None,
            env={},
        )
        script = tmp / "usage.lua"
        script.write_text(USAGE_LUA)
        console.print("phase single: POST /api/v1/usage")
        figures["single"] = run_wrk(
            base,
            connections=args.connections,
            duration=args.duration,
            script=str(script),
            env={
                "BENCH_KEY": key,
                "BENCH_USERS": str(args.users),
                "BENCH_PREFIX": uuid.uuid4().hex[:6],
            },
        )
        console.print("phase batch: POST /api/v1/usage/batch (1,000 events)")
        figures["batch"] = run_batches(
            base, key, clients=args.batch_clients, duration=args.duration, n_users=args.users
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    engine = make_engine(url)
    with transaction(session_factory(engine)) as session:
        rows = int(
            session.execute(select(func.count()).select_from(usage_events_table)).scalar_one()
        )
        broken = invariants.check(session)
    engine.dispose()
    figures["usage_rows"] = rows
    figures["ledger_ok"] = not broken
    expected = (
        figures["single"]["requests"] - figures["single"]["non_2xx"] + figures["batch"]["events"]
    )
    figures["expected_rows"] = expected
    figures["rows_match_responses"] = rows == expected
    shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(figures, indent=2))
        return 0 if figures["ledger_ok"] else 1
    table = Table(
        title=f"modelbank serve on SQLite, {args.connections} connections,"
        f" {args.duration} s per phase"
    )
    for col in ("phase", "per second", "p50 ms", "p90 ms", "p99 ms", "errors"):
        table.add_column(col, justify="right")
    c, s_, b = figures["ceiling"], figures["single"], figures["batch"]
    table.add_row(
        "ceiling GET /healthz",
        f"{c['requests_per_s']:,.0f} req",
        f"{c['p50_ms']:.1f}",
        f"{c['p90_ms']:.1f}",
        f"{c['p99_ms']:.1f}",
        str(c["non_2xx"]),
    )
    table.add_row(
        "single POST /usage",
        f"{s_['requests_per_s']:,.0f} ev",
        f"{s_['p50_ms']:.1f}",
        f"{s_['p90_ms']:.1f}",
        f"{s_['p99_ms']:.1f}",
        str(s_["non_2xx"]),
    )
    table.add_row(
        "batch POST /usage/batch",
        f"{b['events_per_s']:,.0f} ev",
        f"{b['p50_ms']:.0f}",
        "",
        f"{b['p99_ms']:.0f}",
        str(b["failures"]),
    )
    Console().print(table)
    Console().print(
        f"usage rows {rows:,} (2xx responses account for {expected:,}; requests cut off"
        " by wrk's deadline may still commit), "
        f"ledger_ok {figures['ledger_ok']}; targets: single ≥ 2,000/s with p99 ≤ 50 ms, "
        "batch ≥ 30,000 events/s"
    )
    return 0 if figures["ledger_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
