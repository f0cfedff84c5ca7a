"""HTTP throughput of ``modelbank serve`` on SQLite or PostgreSQL, with wrk as the load
generator.

Run by hand (see bench/README.md)::

    .venv/bin/python bench/http_api.py [--duration 10] [--connections 64] [--batch-clients 2]
        [--users 100] [--postgres URL] [--servers N] [--json]

One run, four phases against ``modelbank serve`` (uvicorn, uvloop and httptools when
installed) on a fresh database, loopback only: a SQLite file in a temp dir and one server
process, or with ``--postgres URL`` a fresh schema (dropped at the end) and two server
processes. ``modelbank serve`` has no ``--workers`` option, so "N workers" here is N
``modelbank serve`` processes on N ports against the same database, with the load split
evenly between them (one wrk per server, ``connections / N`` connections each).

* ``ceiling``: ``GET /healthz`` (a bare ``async def`` FastAPI endpoint): the most this server
  stack answers on this machine.
* ``single``: ``POST /api/v1/usage`` with ``--connections`` connections, a unique
  ``Idempotency-Key`` per request, users spread over ``--users`` wallets.
* ``batch``: ``POST /api/v1/usage/batch`` with 1,000 events per request from
  ``--batch-clients`` concurrent httpx clients (the bodies are built before the clock starts).
* ``hold + capture``: per pair, ``POST /api/v1/users/{id}/holds`` then, once it is answered,
  ``POST /api/v1/holds/{hold}/capture`` for part of the held amount (a wrk Lua script; the
  pair's latency runs from building the hold request to the capture's answer).

wrk (Debian package ``wrk``) drives the first, second and fourth phases; it reports
requests/s and latency percentiles (with ``--latency``). Afterwards the usage rows are
counted, compared with the 2xx responses, and the ledger invariants are checked.
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
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select, text

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

# Targets of the performance issue ("charge engine").
TARGET_SINGLE_RPS = 4_000  # SQLite, one server, 64 connections
TARGET_SINGLE_P99_MS = 50.0
TARGET_BATCH_EPS = 40_000  # SQLite
TARGET_PG_SINGLE_RPS = 3_000  # PostgreSQL, two servers

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

# Hold + capture pairs. Each wrk thread keeps a queue of answered holds: a connection that
# is free sends the oldest one's capture, or else places a new hold. The hold's amount is
# HOLD_BASE + its sequence number, so the answer (which echoes amount_ucr) finds the time
# its request was built; the capture's answer echoes the hold's id. Pair latency: from
# building the hold request to the capture's answer (LuaJIT ffi, CLOCK_MONOTONIC).
HOLDS_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local HOLD_BASE = 1000000
local CAPTURE = 500000
local users = tonumber(os.getenv("BENCH_USERS") or "100")
local prefix = os.getenv("BENCH_PREFIX") or "h"
local auth = "Bearer " .. (os.getenv("BENCH_KEY") or "")
local counter = 0
local thread_id = 0
local started = {}   -- hold sequence -> ms its request was built
local ready = {}     -- answered holds waiting for their capture: {id, t0}, a FIFO
local head, tail = 1, 0
local capturing = {} -- hold id -> t0
latencies = {}
failures = 0
pairs_done = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  thread_id = tid
end
local function headers(kind, n)
  return {
    ["Content-Type"] = "application/json",
    ["Authorization"] = auth,
    ["Idempotency-Key"] = string.format("%s-%d-%s-%d", prefix, thread_id, kind, n),
  }
end
request = function()
  if head <= tail then
    local hold = ready[head]
    ready[head] = nil
    head = head + 1
    capturing[hold[1]] = hold[2]
    local body = string.format(
      '{"amount_ucr":%d,"model":"bench-chat","usage_type":"chat",' ..
      '"input_tokens":%d,"output_tokens":%d}',
      CAPTURE, 500 + (hold[1] % 700), 100 + (hold[1] % 200))
    return wrk.format("POST", "/api/v1/holds/" .. hold[1] .. "/capture",
      headers("c", hold[1]), body)
  end
  counter = counter + 1
  started[counter] = now_ms()
  local user = ((counter * 7 + thread_id) % users) + 1
  local body = string.format('{"amount_ucr":%d,"timeout_s":600,"model":"bench-chat"}',
    HOLD_BASE + counter)
  return wrk.format("POST", "/api/v1/users/" .. user .. "/holds", headers("p", counter), body)
end
response = function(status, hdrs, body)
  if status == 201 then
    local id = tonumber(string.match(body, '"id":%s*(%d+)'))
    local amount = tonumber(string.match(body, '"amount_ucr":%s*(%d+)'))
    local seq = amount - HOLD_BASE
    tail = tail + 1
    ready[tail] = {id, started[seq]}
    started[seq] = nil
  elseif status == 200 then
    local id = tonumber(string.match(body, '"id":%s*(%d+)'))
    local t0 = capturing[id]
    if t0 then
      capturing[id] = nil
      pairs_done = pairs_done + 1
      latencies[pairs_done] = now_ms() - t0
    end
  else
    failures = failures + 1
  end
end
function done(summary, latency, requests)
  local all = {}
  local total_failures = 0
  for _, thread in ipairs(threads) do
    local lat = thread:get("latencies")
    for _, v in ipairs(lat) do table.insert(all, v) end
    total_failures = total_failures + thread:get("failures")
  end
  table.sort(all)
  local function pct(p)
    if #all == 0 then return -1 end
    local i = math.max(1, math.min(#all, math.floor(p * #all + 0.5)))
    return all[i]
  end
  io.write(string.format("BENCH_PAIRS %d %d %.3f %.3f %.3f\n",
    #all, total_failures, pct(0.50), pct(0.99), #all > 0 and all[#all] or -1))
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


def postgres_schema(url: str) -> tuple[str, Callable[[], None]]:
    """A fresh schema: the URL that puts it first on the search path, and its dropper."""
    schema = f"mb_http_{uuid.uuid4().hex[:8]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}", drop


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


def _parse_wrk(out: str) -> dict[str, Any]:
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
    m = re.search(r"^BENCH_PAIRS (\d+) (\d+) (\S+) (\S+) (\S+)$", out, re.M)
    if m:
        result["pairs"] = int(m.group(1))
        result["pair_failures"] = int(m.group(2))
        result["pair_p50_ms"] = float(m.group(3))
        result["pair_p99_ms"] = float(m.group(4))
        result["pair_max_ms"] = float(m.group(5))
    return result


def run_wrk(
    bases: Sequence[str],
    path: str,
    *,
    connections: int,
    duration: int,
    script: str | None,
    env: dict[str, str],
) -> dict[str, Any]:
    """Run wrk against every base URL at once (``connections`` split evenly between them)
    and merge: counts and rates add up; each percentile is the highest of the runs (a
    bound: wrk does not export its histograms)."""
    share = max(1, connections // len(bases))
    threads = 2 if len(bases) == 1 else 1
    procs = []
    for n, base in enumerate(bases):
        cmd = ["wrk", f"-t{threads}", f"-c{share}", f"-d{duration}s", "--latency"]
        cmd += ["--timeout", "10s"]
        if script:
            cmd += ["-s", script]
        procs.append(
            subprocess.Popen(
                [*cmd, base + path],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, **env, "BENCH_PREFIX": f"{env.get('BENCH_PREFIX', 'k')}{n}"},
            )
        )
    runs = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"wrk failed ({proc.returncode}): {err.strip()}")
        runs.append(_parse_wrk(out))
    merged: dict[str, Any] = {"servers": len(bases), "connections": share * len(bases)}
    for field in runs[0]:
        values = [run[field] for run in runs]
        if field in ("socket_errors",):
            merged[field] = "; ".join(v for v in values if v)
        elif field.endswith("_ms"):
            known = [v for v in values if v is not None]
            merged[field] = max(known) if known else None
        else:
            merged[field] = sum(values)
    if "pairs" in merged:
        merged["pairs_per_s"] = merged["pairs"] / duration
    return merged


def run_batches(
    bases: Sequence[str], key: str, *, clients: int, duration: float, n_users: int
) -> dict[str, Any]:
    """``clients`` threads (client c talks to server c mod N), each posting 1,000-event
    batches for ``duration`` seconds."""
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
        with httpx.Client(base_url=bases[c % len(bases)], timeout=60) as client:
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


def server_errors(logs: Sequence[Path]) -> dict[str, int]:
    """The exceptions the servers logged (the last line of each traceback), counted."""
    found: dict[str, int] = {}
    for log in logs:
        lines = log.read_text(errors="replace").splitlines()
        for n, line in enumerate(lines):
            if not line.startswith("Traceback"):
                continue
            for after in lines[n + 1 :]:
                if after and not after.startswith((" ", "Traceback")):
                    name = after.split(":", 1)[0]
                    found[name] = found.get(name, 0) + 1
                    break
    return found


def _fmt(ms: float | None) -> str:
    """Milliseconds, or n/a (the Lua script reports -1 when no pair completed)."""
    return "n/a" if ms is None or ms < 0 else f"{ms:.1f}"


def targets(figures: dict[str, Any], postgres: bool) -> list[dict[str, Any]]:
    """The issue's targets that apply to this run's database."""
    single, batch = figures["single"], figures["batch"]
    found = []
    if postgres:
        found.append(
            {
                "target": f"PostgreSQL {figures['servers']} servers: single POST /usage"
                f" ≥ {TARGET_PG_SINGLE_RPS:,}/s",
                "measured": f"{single['requests_per_s']:,.0f}/s",
                "pass": single["requests_per_s"] >= TARGET_PG_SINGLE_RPS,
            }
        )
        return found
    p99 = single["p99_ms"] or 0.0
    found += [
        {
            "target": f"SQLite one server: single POST /usage ≥ {TARGET_SINGLE_RPS:,}/s"
            f" at {single['connections']} connections",
            "measured": f"{single['requests_per_s']:,.0f}/s",
            "pass": single["requests_per_s"] >= TARGET_SINGLE_RPS,
        },
        {
            "target": f"SQLite one server: single p99 ≤ {TARGET_SINGLE_P99_MS:g} ms",
            "measured": f"{p99:.1f} ms",
            "pass": p99 <= TARGET_SINGLE_P99_MS,
        },
        {
            "target": f"SQLite batch endpoint ≥ {TARGET_BATCH_EPS:,} events/s",
            "measured": f"{batch['events_per_s']:,.0f}/s",
            "pass": batch["events_per_s"] >= TARGET_BATCH_EPS,
        },
    ]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per phase")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch-clients", type=int, default=2)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="run against PostgreSQL (a fresh schema, dropped at the end) instead of SQLite",
    )
    parser.add_argument(
        "--servers",
        type=int,
        help="`modelbank serve` processes on as many ports, load split between them"
        " (default: 1 on SQLite, 2 on PostgreSQL)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    servers = args.servers or (2 if args.postgres else 1)
    if servers < 1:
        parser.error("--servers must be ≥ 1")

    tmp = Path(tempfile.mkdtemp(prefix="mb-http-"))
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if args.postgres:
        url, drop = postgres_schema(args.postgres)
        backend = "PostgreSQL"
    else:
        url = f"sqlite:///{tmp / 'bench.db'}"
        backend = "SQLite"
    figures: dict[str, Any] = {
        "database": backend,
        "servers": servers,
        "connections": args.connections,
        "duration_s": args.duration,
    }
    try:
        console.print(f"setting up {args.users} users on {backend} ({url})")
        key = set_up(url, args.users)
        modelbank = Path(sys.executable).with_name("modelbank")
        ports = [free_port() for _ in range(servers)]
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        if servers > 1:
            console.print(
                f"`modelbank serve` has no --workers option: {servers} processes on ports"
                f" {', '.join(map(str, ports))}, same database, load split evenly"
            )
        logs = [tmp / f"serve-{port}.log" for port in ports]
        procs = [
            subprocess.Popen(
                [
                    str(modelbank),
                    "serve",
                    "--port",
                    str(port),
                    "--db",
                    url,
                    "--log-level",
                    "warning",
                ],
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            for port, log in zip(ports, logs, strict=True)
        ]
        try:
            for base, proc in zip(bases, procs, strict=True):
                wait_ready(base, proc)
            wrk_env = {"BENCH_KEY": key, "BENCH_USERS": str(args.users)}
            console.print("phase ceiling: GET /healthz")
            figures["ceiling"] = run_wrk(
                bases,
                "/healthz",
                connections=args.connections,
                duration=args.duration,
                script=None,
                env={},
            )
            script = tmp / "usage.lua"
            script.write_text(USAGE_LUA)
            console.print("phase single: POST /api/v1/usage")
            figures["single"] = run_wrk(
                bases,
                "/",
                connections=args.connections,
                duration=args.duration,
                script=str(script),
                env={**wrk_env, "BENCH_PREFIX": uuid.uuid4().hex[:6]},
            )
            console.print("phase batch: POST /api/v1/usage/batch (1,000 events)")
            figures["batch"] = run_batches(
                bases, key, clients=args.batch_clients, duration=args.duration, n_users=args.users
            )
            holds_script = tmp / "holds.lua"
            holds_script.write_text(HOLDS_LUA)
            console.print("phase hold + capture: POST …/holds then POST /holds/{id}/capture")
            figures["holds"] = run_wrk(
                bases,
                "/",
                connections=args.connections,
                duration=args.duration,
                script=str(holds_script),
                env={**wrk_env, "BENCH_PREFIX": uuid.uuid4().hex[:6]},
            )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)

        figures["server_errors"] = server_errors(logs)
        engine = make_engine(url)
        with transaction(session_factory(engine)) as session:
            rows = int(
                session.execute(select(func.count()).select_from(usage_events_table)).scalar_one()
            )
            broken = invariants.check(session)
        engine.dispose()
    finally:
        drop()
        shutil.rmtree(tmp, ignore_errors=True)
    figures["usage_rows"] = rows
    figures["ledger_ok"] = not broken
    expected = (
        figures["single"]["requests"]
        - figures["single"]["non_2xx"]
        + figures["batch"]["events"]
        + figures["holds"]["pairs"]
    )
    figures["expected_rows"] = expected
    figures["rows_match_responses"] = rows == expected
    figures["targets"] = targets(figures, bool(args.postgres))

    if args.json:
        print(json.dumps(figures, indent=2))
        return 0 if figures["ledger_ok"] else 1
    table = Table(
        title=f"modelbank serve on {backend}, {servers} server process"
        + ("es" if servers > 1 else "")
        + f", {args.connections} connections, {args.duration} s per phase"
    )
    for col in ("phase", "per second", "p50 ms", "p90 ms", "p99 ms", "errors"):
        table.add_column(col, justify="right")
    c, s_, b, h = figures["ceiling"], figures["single"], figures["batch"], figures["holds"]
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
    table.add_row(
        "hold + capture (a pair)",
        f"{h['pairs_per_s']:,.0f} pairs",
        _fmt(h["pair_p50_ms"]),
        "",
        _fmt(h["pair_p99_ms"]),
        str(h["pair_failures"]),
    )
    table.caption = (
        "latency percentiles with several servers: the highest of the per-server wrk runs"
        if servers > 1
        else None
    )
    out = Console()
    if not out.is_terminal:
        out = Console(width=120)  # piped: do not squeeze the tables into 80 columns
    out.print(table)
    verdicts = Table(title="Targets (issue: charge engine)")
    verdicts.add_column("target")
    verdicts.add_column("measured", justify="right")
    verdicts.add_column("result")
    for t in figures["targets"]:
        verdicts.add_row(t["target"], t["measured"], "[green]PASS" if t["pass"] else "[red]FAIL")
    out.print(verdicts)
    errors = figures["server_errors"]
    out.print(
        "server log: "
        + (
            ", ".join(f"{name} x{count}" for name, count in sorted(errors.items()))
            if errors
            else "no exceptions"
        )
    )
    out.print(
        f"usage rows {rows:,} (2xx responses and captured pairs account for {expected:,};"
        " requests cut off by wrk's deadline may still commit), "
        f"ledger_ok {figures['ledger_ok']}"
    )
    return 0 if figures["ledger_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
