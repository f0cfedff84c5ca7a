"""What a proxy adds to an OpenAI-compatible call: modelbank's gateway against the upstream
alone and against LiteLLM's proxy, in one run, on loopback.

Run by hand (see bench/README.md)::

    .venv/bin/python bench/gateway.py [--duration 10] [--rate 200] [--connections 64]
        [--litellm ../litellm-venv/bin/litellm] [--postgres URL] [--json]

One ``modelbank fake-upstream`` process (latency 0, 16 completion tokens per chat) serves
three targets, measured one after the other (only one proxy process runs at a time):

* ``direct``: the fake upstream itself, the baseline every "added" figure subtracts.
* ``modelbank``: ``modelbank serve`` (one worker) on a fresh SQLite database (or with
  ``--postgres URL`` a fresh schema, dropped at the end): a user with credits and a user API
  key, a priced chat model, and a platform resource (``POST /api/v1/admin/resources``)
  pointing at the fake upstream; every request is held, routed and captured. Skipped with a
  message when the gateway is not there (``/v1/chat/completions`` answers 404).
* ``litellm``: LiteLLM's proxy from its own virtual environment (``--litellm PATH``, skipped
  when absent) with a config that points one model at the fake upstream. It runs without a
  database: no budget accounting, no spend logs, so it is the generous baseline.

Per target, after a warm-up: ``throughput`` (closed loop: wrk with ``--connections``
connections for ``--burst-duration`` seconds, non-streamed chats; an async httpx loop when
wrk is missing), ``stream`` (open loop at ``--stream-rate`` streams/s: time to the first
content token), then ``latency`` (open loop at ``--rate`` requests/s for ``--duration``
seconds: p50 and p99 of non-streamed chats, timed from each request's send). The RSS of the
target's process tree is sampled every ``--rss-interval`` seconds over the whole target, and
judged over the ``latency`` phase (the steady part, last): a 5-minute run is
``--duration 300``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from rich.console import Console
from rich.table import Table

from http_api import _parse_wrk as parse_wrk
from http_api import free_port, postgres_schema, run_wrk

console = Console(stderr=True)
T = TypeVar("T")

UPSTREAM_KEY = "sk-bench-upstream-0001"
LITELLM_MASTER_KEY = "sk-bench-litellm-master"
UPSTREAM_MODEL = "fake-chat"
MODEL = "bench-chat"
PROMPT = "Write one short sentence about loopback benchmarks, please."
MAX_TOKENS = 16
WARMUP_REQUESTS = 300
"""Requests sent to a target before anything is measured (caches, connections, JIT-less
Python's first-call costs)."""
LATE_SEND_MS = 5.0
"""A send more than this behind its schedule counts as late: the load generator, not the
target, could not keep the rate (the run says how many)."""


@dataclass
class Target:
    """One thing measured: an OpenAI-compatible base URL, its key and model name, and the
    process whose RSS is watched."""

    name: str
    base: str
    key: str
    model: str
    pid: int
    figures: dict[str, Any] = field(default_factory=dict)
    check: Callable[[], dict[str, Any]] | None = None
    """Run once the target has stopped: what its database says about the run."""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}

    def body(self, *, stream: bool = False) -> bytes:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": MAX_TOKENS,
        }
        if stream:
            payload["stream"] = True
        return json.dumps(payload).encode()


# --- processes ------------------------------------------------------------------------------


def start(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """``cmd`` with its output in ``log``; the environment plus ``env``, less ``unset``."""
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**environ, **(env or {})}
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 90) -> None:
    """Until ``url`` answers below 500, or fail with the end of the process's log."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (LiteLLM or uvicorn may fork workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and its descendants, in KiB (0 once they are gone)."""
    total = 0
    for current in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants. On a shared
    machine this is the steadier figure: wall-clock rates move with the neighbours' load,
    the CPU a request costs does not."""
    ticks = 0
    for current in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def sample_rss(pid: int, every_s: float, into: list[tuple[float, int]]) -> None:
    """Append (monotonic time, RSS KiB) every ``every_s`` seconds until cancelled."""
    while True:
        into.append((time.monotonic(), rss_kb(pid)))
        await asyncio.sleep(every_s)


# --- load ----------------------------------------------------------------------------------


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed: the load generator's own overhead and timer slack are
    smaller there (the same for every target, so they cancel out of the "added" figures)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def percentiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    if not ordered:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99), "max_ms": ordered[-1]}


async def _chat(client: httpx.AsyncClient, target: Target, body: bytes) -> tuple[str, float]:
    """One non-streamed chat: (outcome, ms from send to the whole answer)."""
    started = time.perf_counter()
    try:
        answer = await client.post("/v1/chat/completions", content=body, headers=target.headers())
    except httpx.HTTPError as exc:
        return type(exc).__name__, (time.perf_counter() - started) * 1000
    elapsed = (time.perf_counter() - started) * 1000
    return ("ok" if answer.status_code == 200 else str(answer.status_code)), elapsed


def _first_content(line: str) -> bool:
    if not line.startswith("data:") or line.endswith("[DONE]"):
        return False
    try:
        choices = json.loads(line[5:]).get("choices") or []
    except ValueError:
        return False
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


async def _stream(client: httpx.AsyncClient, target: Target, body: bytes) -> tuple[str, float]:
    """One streamed chat: (outcome, ms from send to the first content token)."""
    started = time.perf_counter()
    ttft: float | None = None
    done = False
    try:
        async with client.stream(
            "POST", "/v1/chat/completions", content=body, headers=target.headers()
        ) as answer:
            if answer.status_code != 200:
                await answer.aread()
                return str(answer.status_code), 0.0
            async for line in answer.aiter_lines():
                if ttft is None and _first_content(line):
                    ttft = (time.perf_counter() - started) * 1000
                done = done or line.strip() == "data: [DONE]"
    except httpx.HTTPError as exc:
        return type(exc).__name__, 0.0
    if ttft is None or not done:
        return "no content" if ttft is None else "no [DONE]", 0.0
    return "ok", ttft


def _client(target: Target, connections: int) -> httpx.AsyncClient:
    """A client for plain-HTTP loopback (``verify=False``: no CA bundle to load, which costs
    ~50 ms of CPU per client)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=target.base, limits=limits, timeout=30, verify=False)


async def open_loop(
    target: Target, *, rate: float, duration: float, stream: bool, connections: int = 32
) -> dict[str, Any]:
    """Send at ``rate`` per second for ``duration`` seconds whatever the answers (open
    loop), over ``connections`` keep-alive connections (one client each: httpx's shared pool
    slows down as it grows). Latency runs from each request's send; a send more than
    :data:`LATE_SEND_MS` behind its schedule (every connection busy, or the generator
    starved of CPU) is counted late. Also the target's CPU ms per request."""
    body = target.body(stream=stream)
    one = _stream if stream else _chat
    n = max(1, int(rate * duration))
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    results: list[tuple[str, float, float]] = []

    async def worker(client: httpx.AsyncClient) -> None:
        async with client:
            while (scheduled := await queue.get()) is not None:
                lag_ms = (time.perf_counter() - scheduled) * 1000
                outcome, ms = await one(client, target, body)
                results.append((outcome, ms, lag_ms))

    workers = [asyncio.create_task(worker(_client(target, 1))) for _ in range(connections)]
    cpu_before = cpu_s(target.pid)
    t0 = time.perf_counter() + 0.05
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(t0 + i / rate)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    wall = time.perf_counter() - t0
    cpu_ms = (cpu_s(target.pid) - cpu_before) * 1000
    outcomes: dict[str, int] = {}
    for outcome, _, _ in results:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    good = [ms for outcome, ms, _ in results if outcome == "ok"]
    late = sum(1 for *_, lag in results if lag > LATE_SEND_MS)
    return {
        "requests": n,
        "ok": len(good),
        "outcomes": outcomes,
        "late_sends": late,
        "rate": n / wall,
        "tool": "httpx",
        "cpu_ms_per_request": cpu_ms / n,
        **percentiles(good),
    }


async def closed_loop(target: Target, *, connections: int, duration: float) -> dict[str, Any]:
    """``connections`` workers, each sending the next chat when its answer arrives."""
    body = target.body()
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        async with client:
            while time.perf_counter() < stop_at:
                outcome, ms = await _chat(client, target, body)
                if outcome == "ok":
                    latencies.append(ms)
                else:
                    errors += 1

    clients = [_client(target, 1) for _ in range(connections)]
    started = time.perf_counter()
    await asyncio.gather(*(worker(client) for client in clients))
    wall = time.perf_counter() - started
    return {
        "requests_per_s": len(latencies) / wall,
        "non_2xx": errors,
        "requests": len(latencies),
        "connections": connections,
        "tool": "httpx",
        **percentiles(latencies),
    }


async def warm_up(target: Target) -> None:
    body = target.body()
    async with _client(target, 8) as client:
        for _ in range(WARMUP_REQUESTS // 8):
            results = await asyncio.gather(*(_chat(client, target, body) for _ in range(8)))
            bad = [outcome for outcome, _ in results if outcome != "ok"]
            if bad:
                raise SystemExit(f"{target.name}: warm-up chat failed: {bad[0]}")


# Open loop in wrk: each request takes the next slot of a fixed schedule (``interval`` ms
# apart) and waits for it in delay(); a connection that answers late sends at once. wrk times
# each request from its send, so the percentiles are service times, as in the httpx loop.
WRK_RATE_LUA = r"""
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
local interval = tonumber(os.getenv("BENCH_INTERVAL_MS"))
local next_slot = nil
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
function delay()
  local now = now_ms()
  if next_slot == nil then next_slot = now end
  local slot = next_slot
  next_slot = next_slot + interval
  if slot > now then return slot - now end
  return 0
end
"""

WRK_LUA = """
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
"""


def throughput(target: Target, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Closed-loop non-streamed chats: wrk when installed (it costs the machine far less
    than a Python client), else the httpx loop."""
    cpu_before = cpu_s(target.pid)
    if shutil.which("wrk") is None:
        found = run_async(
            closed_loop(target, connections=args.connections, duration=args.burst_duration)
        )
    else:
        found = _wrk(target, args, tmp)
    cpu_ms = (cpu_s(target.pid) - cpu_before) * 1000
    return {**found, "cpu_ms_per_request": cpu_ms / max(1, found["requests"])}


def _wrk(target: Target, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    script = tmp / "chat.lua"
    script.write_text(WRK_LUA)
    env = {"BENCH_BODY": target.body().decode(), "BENCH_KEY": target.key}
    found = run_wrk(
        [target.base],
        "/v1/chat/completions",
        connections=args.connections,
        duration=int(args.burst_duration),
        script=str(script),
        env=env,
    )
    return {**found, "tool": "wrk"}


def latency(target: Target, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The fixed-rate phase: wrk on a schedule (one thread, 16 connections) when
    installed, else the httpx open loop."""
    if shutil.which("wrk") is None:
        return run_async(open_loop(target, rate=args.rate, duration=args.duration, stream=False))
    script = tmp / "rate.lua"
    script.write_text(WRK_RATE_LUA)
    env = {
        "BENCH_BODY": target.body().decode(),
        "BENCH_KEY": target.key,
        "BENCH_INTERVAL_MS": str(1000 / args.rate),
    }
    cpu_before = cpu_s(target.pid)
    cmd = [
        "wrk",
        "-t1",
        "-c16",
        f"-d{max(1, round(args.duration))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        target.base + "/v1/chat/completions",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    found = parse_wrk(done.stdout)
    cpu_ms = (cpu_s(target.pid) - cpu_before) * 1000
    requests = found["requests"]
    outcomes = {"ok": requests - found["non_2xx"]}
    if found["non_2xx"]:
        outcomes["non-2xx"] = found["non_2xx"]
    if found["socket_errors"]:
        outcomes[f"socket errors: {found['socket_errors']}"] = 1
    return {
        "requests": requests,
        "ok": outcomes["ok"],
        "outcomes": outcomes,
        "late_sends": 0,
        "rate": found["requests_per_s"],
        "tool": "wrk",
        "cpu_ms_per_request": cpu_ms / max(1, requests),
        "p50_ms": found["p50_ms"],
        "p90_ms": found["p90_ms"],
        "p99_ms": found["p99_ms"],
        "max_ms": None,
    }


def measure(target: Target, args: argparse.Namespace, tmp: Path) -> None:
    """Warm up, then throughput, stream and latency phases; RSS sampled throughout."""
    console.print(f"[bold]{target.name}[/]: warm-up ({WARMUP_REQUESTS} chats)")
    run_async(warm_up(target))
    samples: list[tuple[float, int]] = []

    async def phases() -> float:
        sampler = asyncio.create_task(sample_rss(target.pid, args.rss_interval, samples))
        try:
            console.print(f"  throughput: closed loop, {args.connections} connections")
            target.figures["throughput"] = await asyncio.to_thread(throughput, target, args, tmp)
            console.print(f"  stream: {args.stream_rate:g} streams/s, time to first token")
            target.figures["stream"] = await open_loop(
                target, rate=args.stream_rate, duration=args.burst_duration, stream=True
            )
            steady_from = time.monotonic()
            console.print(f"  latency: {args.rate:g} req/s for {args.duration:g} s")
            target.figures["latency"] = await asyncio.to_thread(latency, target, args, tmp)
            samples.append((time.monotonic(), rss_kb(target.pid)))
            return steady_from
        finally:
            sampler.cancel()

    steady_from = run_async(phases())
    target.figures["rss"] = rss_summary(samples, steady_from)


# --- the three targets ----------------------------------------------------------------------


def start_upstream(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    modelbank = Path(sys.executable).with_name("modelbank")
    log = tmp / "fake-upstream.log"
    proc = start(
        [
            str(modelbank),
            "fake-upstream",
            "--port",
            str(port),
            "--latency-ms",
            "0",
            "--key",
            UPSTREAM_KEY,
            "--model",
            UPSTREAM_MODEL,
        ],
        log,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/_fake/stats", proc, log)
    return proc, base


def set_up_modelbank(url: str) -> tuple[str, str]:
    """Migrate; an admin key, a user with 10 M credits and their key, a priced chat model.
    Returns (admin key, user key)."""
    from decimal import Decimal

    from modelbank import onboarding
    from modelbank.auth import service as auth
    from modelbank.catalog import service as catalog
    from modelbank.db.engine import make_engine, session_factory, transaction
    from modelbank.db.migrate import upgrade
    from modelbank.pricing.formulas import Rates
    from modelbank.users import service as users
    from modelbank.wallets import service as wallets

    engine = make_engine(url)
    upgrade(engine)
    with transaction(session_factory(engine)) as session:
        admin = auth.create_key(session, auth.Role.ADMIN, name="bench").secret
        user = users.create_user(session, "bench-gateway-user")
        wallets.grant(session, user.id, 10**13, idempotency_key="bench-gateway-seed")
        key = auth.create_key(session, auth.Role.USER, user_id=user.id, name="bench").secret
        creator = users.create_user(session, "bench-creator")
        onboarding.add_model(
            session,
            onboarding.ModelSetup(
                model=catalog.NewModel(
                    slug=MODEL,
                    name="bench chat",
                    provider="openai",
                    mode=catalog.Mode.CHAT,
                    creator_id=creator.id,
                ),
                cost_uusd=Rates(input_per_mtok=Decimal(150_000), output_per_mtok=Decimal(600_000)),
            ),
        )
    engine.dispose()
    return admin, key


def start_modelbank(
    args: argparse.Namespace, upstream: str, tmp: Path, cleanups: list[Callable[[], None]]
) -> tuple[subprocess.Popen[bytes], Target] | str:
    """``modelbank serve`` with the platform resource, or the reason the phase is skipped."""
    from cryptography.fernet import Fernet

    if args.postgres:
        url, drop = postgres_schema(args.postgres)
        cleanups.append(drop)
    else:
        url = f"sqlite:///{tmp / 'gateway.db'}"
    admin, user_key = set_up_modelbank(url)
    port = free_port()
    log = tmp / "serve.log"
    proc = start(
        [
            str(Path(sys.executable).with_name("modelbank")),
            "serve",
            "--port",
            str(port),
            "--db",
            url,
            "--log-level",
            "warning",
        ],
        log,
        env={"MODELBANK_SECRET_KEY": Fernet.generate_key().decode()},
    )
    try:
        return _with_resource(proc, f"http://127.0.0.1:{port}", log, admin, user_key, upstream, url)
    except BaseException:
        stop(proc)
        raise


def _with_resource(
    proc: subprocess.Popen[bytes],
    base: str,
    log: Path,
    admin: str,
    user_key: str,
    upstream: str,
    url: str,
) -> tuple[subprocess.Popen[bytes], Target] | str:
    """Register the platform resource, then one chat through the gateway: the target, or
    why the modelbank phase is skipped."""
    wait_http(f"{base}/readyz", proc, log)
    resource = httpx.post(
        f"{base}/api/v1/admin/resources",
        headers={"Authorization": f"Bearer {admin}"},
        json={
            "provider": "openai",
            "base_url": f"{upstream}/v1",
            "api_key": UPSTREAM_KEY,
            "models": [{"model": MODEL, "upstream_model": UPSTREAM_MODEL}],
            "quota_uusd": 10**15,
        },
        timeout=30,
    )
    target = Target("modelbank", base, user_key, MODEL, proc.pid, check=lambda: ledger_check(url))
    probe = httpx.post(
        f"{base}/v1/chat/completions", content=target.body(), headers=target.headers(), timeout=30
    )
    reason = None
    if resource.status_code == 404 or probe.status_code == 404:
        reason = (
            "the gateway is not there yet (/v1/chat/completions or /api/v1/admin/resources: 404)"
        )
    elif resource.status_code != 201 or resource.json().get("status") != "active":
        reason = (
            f"the platform resource did not become active: {resource.status_code}"
            f" {resource.text[:300]}"
        )
    elif probe.status_code != 200:
        reason = f"a first chat through the gateway failed: {probe.status_code} {probe.text[:300]}"
    if reason is not None:
        stop(proc)
        return reason
    return proc, target


def ledger_check(url: str) -> dict[str, Any]:
    """After the modelbank phases: usage rows and holds by status, and the ledger invariants
    (a run that charged wrongly is no figure to compare)."""
    from sqlalchemy import text

    from modelbank.db.engine import make_engine, session_factory, transaction
    from modelbank.ledger import invariants
    from modelbank.ledger.codes import TransferFlags

    engine = make_engine(url)
    try:
        with transaction(session_factory(engine)) as session:
            rows = session.execute(text("SELECT count(*) FROM usage_events")).scalar_one()
            holds = session.execute(
                text(
                    "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM"
                    " transfers r WHERE r.pending_id = t.id)) FROM transfers t"
                    " WHERE t.flags & :pending <> 0"
                ),
                {"pending": int(TransferFlags.PENDING)},
            ).one()
            broken = invariants.check(session)
    finally:
        engine.dispose()
    return {"usage_rows": rows, "holds": holds[0], "holds_open": holds[1], "ledger_ok": not broken}


LITELLM_CONFIG = """model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{upstream_model}
      api_base: {upstream}/v1
      api_key: {key}
litellm_settings:
  telemetry: false
  drop_params: true
general_settings:
  master_key: {master}
"""


def start_litellm(
    args: argparse.Namespace, upstream: str, tmp: Path
) -> tuple[subprocess.Popen[bytes], Target] | str:
    binary = Path(args.litellm)
    if not binary.exists():
        return f"no LiteLLM at {binary} (see bench/README.md to install it)"
    config = tmp / "litellm.yaml"
    config.write_text(
        LITELLM_CONFIG.format(
            model=MODEL,
            upstream_model=UPSTREAM_MODEL,
            upstream=upstream,
            key=UPSTREAM_KEY,
            master=LITELLM_MASTER_KEY,
        )
    )
    port = free_port()
    log = tmp / "litellm.log"
    env = {
        "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
    }
    proc = start(
        [
            str(binary),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        log,
        env=env,
        unset=("DATABASE_URL",),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health/liveliness", proc, log, seconds=180)
    except BaseException:
        stop(proc)
        raise
    return proc, Target("litellm", base, LITELLM_MASTER_KEY, MODEL, proc.pid)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    cleanups: list[Callable[[], None]] = []
    upstream_proc, upstream = start_upstream(tmp)
    figures: dict[str, Any] = {
        "targets": {},
        "skipped": {},
        "settings": vars(args),
        "load_average_before": os.getloadavg(),
    }
    try:
        direct = Target("direct", upstream, UPSTREAM_KEY, UPSTREAM_MODEL, upstream_proc.pid)
        measure(direct, args, tmp)
        figures["targets"]["direct"] = direct.figures
        for name, starter in (
            ("modelbank", lambda: start_modelbank(args, upstream, tmp, cleanups)),
            ("litellm", lambda: start_litellm(args, upstream, tmp)),
        ):
            if name in args.skip:
                figures["skipped"][name] = "--skip"
                continue
            started = starter()
            if isinstance(started, str):
                console.print(f"[yellow]{name} skipped:[/] {started}")
                figures["skipped"][name] = started
                continue
            proc, target = started
            try:
                measure(target, args, tmp)
            finally:
                stop(proc)
            if target.check is not None:
                target.figures["check"] = target.check()
            figures["targets"][name] = target.figures
        figures["upstream_stats"] = httpx.get(f"{upstream}/_fake/stats").json()["requests"]
        figures["load_average_after"] = os.getloadavg()
    finally:
        stop(upstream_proc)
        for cleanup in cleanups:
            cleanup()
    return figures


# --- report ---------------------------------------------------------------------------------

TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_RPS = 1_500
TARGET_TTFT_ADDED_MS = 2.0
RSS_FLAT_MB = 10.0
RSS_FLAT_SHARE = 0.05
"""RSS is "flat" when it grew by at most max(10 MB, 5 %) over the latency phase: allocator
noise and caches filling stay under it, a leak of a few hundred bytes a request over a
5-minute run at 200 req/s (60,000 requests) does not."""


def rss_summary(samples: list[tuple[float, int]], steady_from: float) -> dict[str, Any]:
    """RSS in MB: at the start and end of the latency phase, the peak over the target, the
    growth over the latency phase and whether it is flat."""
    steady = [kb for t, kb in samples if t >= steady_from] or [samples[-1][1]]
    start_mb, end_mb = steady[0] / 1024, steady[-1] / 1024
    growth = end_mb - start_mb
    return {
        "start_mb": start_mb,
        "end_mb": end_mb,
        "peak_mb": max(kb for _, kb in samples) / 1024,
        "growth_mb": growth,
        "samples": len(samples),
        "flat": growth <= max(RSS_FLAT_MB, RSS_FLAT_SHARE * start_mb),
    }


def added(figures: dict[str, Any], name: str, phase: str, stat: str) -> float | None:
    """``name``'s ``stat`` in ``phase`` minus the direct upstream's (ms)."""
    try:
        value = figures["targets"][name][phase][stat]
        base = figures["targets"]["direct"][phase][stat]
    except KeyError:
        return None
    return None if value is None or base is None else value - base


def verdicts(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, for modelbank's gateway (when it ran)."""
    mb = figures["targets"].get("modelbank")
    if mb is None:
        return []
    checks = [
        (
            f"added p50 ≤ {TARGET_ADDED_P50_MS:g} ms at {figures['settings']['rate']:g} req/s",
            added(figures, "modelbank", "latency", "p50_ms"),
            TARGET_ADDED_P50_MS,
            "ms",
        ),
        (
            f"added p99 ≤ {TARGET_ADDED_P99_MS:g} ms at {figures['settings']['rate']:g} req/s",
            added(figures, "modelbank", "latency", "p99_ms"),
            TARGET_ADDED_P99_MS,
            "ms",
        ),
        (
            "streaming time to first token added ≤ 2 ms (p50)",
            added(figures, "modelbank", "stream", "p50_ms"),
            TARGET_TTFT_ADDED_MS,
            "ms",
        ),
    ]
    found = [
        {
            "target": label,
            "measured": "n/a" if value is None else f"{value:.2f} {unit}",
            "pass": value is not None and value <= bound,
        }
        for label, value, bound, unit in checks
    ]
    rps = mb["throughput"]["requests_per_s"]
    found.append(
        {
            "target": f"≥ {TARGET_RPS:,} non-streamed req/s, hold + capture, one worker",
            "measured": f"{rps:,.0f}/s",
            "pass": rps >= TARGET_RPS,
        }
    )
    rss = mb["rss"]
    found.append(
        {
            "target": f"RSS flat over the latency phase (≤ max({RSS_FLAT_MB:g} MB, 5 %))",
            "measured": f"{rss['growth_mb']:+.1f} MB",
            "pass": rss["flat"],
        }
    )
    return found


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _rows(figures: dict[str, Any], names: list[str]) -> list[tuple[str, list[str], str]]:
    t = figures["targets"]
    rate = figures["settings"]["rate"]

    def each(render: Callable[[str], str]) -> list[str]:
        return [render(n) for n in names]

    def errors(n: str, phase: str) -> str:
        f = t[n][phase]
        bad = {k: v for k, v in f["outcomes"].items() if k != "ok"}
        text = ", ".join(f"{k} ×{v}" for k, v in bad.items()) or "0"
        return text + (f" ({f['late_sends']} late)" if f["late_sends"] else "")

    return [
        (f"latency @ {rate:g} req/s p50 ms", each(lambda n: _ms(t[n]["latency"]["p50_ms"])), ""),
        ("  p99 ms", each(lambda n: _ms(t[n]["latency"]["p99_ms"])), ""),
        (
            "  added p50 ms",
            each(lambda n: _ms(added(figures, n, "latency", "p50_ms"), True)),
            f"≤ {TARGET_ADDED_P50_MS:g}",
        ),
        (
            "  added p99 ms",
            each(lambda n: _ms(added(figures, n, "latency", "p99_ms"), True)),
            f"≤ {TARGET_ADDED_P99_MS:g}",
        ),
        ("  errors", each(lambda n: errors(n, "latency")), "0"),
        ("  achieved req/s", each(lambda n: f"{t[n]['latency']['rate']:,.0f}"), f"{rate:g}"),
        ("  CPU ms per request", each(lambda n: _ms(t[n]["latency"]["cpu_ms_per_request"])), ""),
        (
            f"throughput ({figures['settings']['connections']} conn) req/s",
            each(lambda n: f"{t[n]['throughput']['requests_per_s']:,.0f}"),
            f"≥ {TARGET_RPS:,}",
        ),
        (
            "  CPU ms per request",
            each(lambda n: _ms(t[n]["throughput"]["cpu_ms_per_request"])),
            "",
        ),
        (
            "  p99 ms / non-2xx",
            each(
                lambda n: f"{_ms(t[n]['throughput']['p99_ms'])} / {t[n]['throughput']['non_2xx']}"
            ),
            "",
        ),
        ("stream TTFT p50 ms", each(lambda n: _ms(t[n]["stream"]["p50_ms"])), ""),
        ("  p99 ms", each(lambda n: _ms(t[n]["stream"]["p99_ms"])), ""),
        (
            "  added p50 ms",
            each(lambda n: _ms(added(figures, n, "stream", "p50_ms"), True)),
            f"≤ {TARGET_TTFT_ADDED_MS:g}",
        ),
        ("  errors", each(lambda n: errors(n, "stream")), "0"),
        (
            "RSS MB start → end (peak)",
            each(
                lambda n: (
                    f"{t[n]['rss']['start_mb']:.0f} → "
                    f"{t[n]['rss']['end_mb']:.0f} "
                    f"({t[n]['rss']['peak_mb']:.0f})"
                )
            ),
            "",
        ),
        ("  growth MB", each(lambda n: f"{t[n]['rss']['growth_mb']:+.1f}"), "flat"),
    ]


def print_report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    out = Console()
    if not out.is_terminal:
        out = Console(width=140)  # piped: do not squeeze the table into 80 columns
    names = list(figures["targets"])
    heads = {
        "direct": "direct (fake upstream)",
        "modelbank": "modelbank gateway",
        "litellm": "LiteLLM proxy*",
    }
    table = Table(
        title=f"OpenAI-compatible proxies on loopback, one run: latency phase "
        f"{args.duration:g} s, throughput and stream phases {args.burst_duration:g} s"
    )
    table.add_column("figure")
    for name in names:
        table.add_column(heads[name], justify="right")
    table.add_column("target (modelbank)", justify="right")
    for label, cells, goal in _rows(figures, names):
        table.add_row(label, *cells, goal)
    if "litellm" in names:
        table.caption = (
            "* LiteLLM runs without a database: no budget accounting, no spend "
            "logs, no hold (the generous baseline); modelbank holds, routes and "
            "captures every request in its ledger."
        )
    out.print(table)
    check = figures["targets"].get("modelbank", {}).get("check")
    if check:
        out.print(
            f"modelbank's database after the run: {check['usage_rows']:,} usage rows,"
            f" {check['holds']:,} holds ({check['holds_open']:,} still open),"
            f" ledger invariants {'hold' if check['ledger_ok'] else '[red]BROKEN[/]'}"
        )
    for name, reason in figures["skipped"].items():
        out.print(f"[yellow]{name} skipped:[/] {reason}")
    if figures["verdicts"]:
        verdict_table = Table(title="Targets (issue 14, modelbank's gateway)")
        verdict_table.add_column("target")
        verdict_table.add_column("measured", justify="right")
        verdict_table.add_column("result")
        for v in figures["verdicts"]:
            verdict_table.add_row(
                v["target"], v["measured"], "[green]PASS" if v["pass"] else "[red]FAIL"
            )
        out.print(verdict_table)
    tools = {
        phase: sorted({figures["targets"][n][phase].get("tool", "httpx") for n in names})
        for phase in ("throughput", "stream", "latency")
    }
    before, after = figures["load_average_before"], figures.get("load_average_after", (0, 0, 0))
    out.print(
        f"machine: {os.cpu_count()} CPUs, load average {before[0]:.1f} before and"
        f" {after[0]:.1f} after (1 min): the neighbours' load moves wall-clock figures;"
        " CPU ms per request moves less"
    )
    out.print(
        "load generators: "
        + ", ".join(f"{phase} {'/'.join(names_)}" for phase, names_ in tools.items())
        + f"; upstream requests: {figures.get('upstream_stats')}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=10,
        help="seconds of the open-loop latency phase, where RSS is judged",
    )
    parser.add_argument("--rate", type=float, default=200, help="requests/s of that phase")
    parser.add_argument(
        "--burst-duration",
        type=float,
        default=10,
        help="seconds of the throughput and stream phases",
    )
    parser.add_argument("--connections", type=int, default=64, help="closed-loop connections")
    parser.add_argument("--stream-rate", type=float, default=50, help="streams/s")
    parser.add_argument("--rss-interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument(
        "--litellm",
        default=str(Path(__file__).resolve().parents[2] / "litellm-venv" / "bin" / "litellm"),
        help="LiteLLM's `litellm` binary in its own venv (skipped when absent)",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="modelbank on PostgreSQL (a fresh schema, dropped at the end)",
    )
    parser.add_argument("--skip", action="append", default=[], choices=["modelbank", "litellm"])
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if min(args.duration, args.rate, args.burst_duration, args.stream_rate) <= 0:
        parser.error("durations and rates must be > 0")
    tmp = Path(tempfile.mkdtemp(prefix="mb-gateway-"))
    try:
        figures = run(args, tmp)
    finally:
        if args.keep:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    figures["verdicts"] = verdicts(figures)
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    else:
        print_report(figures, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
