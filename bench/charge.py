"""Charge throughput: the raw ``sqlite3`` limit vs modelbank's ``charge`` and ``charge_batch``.

Run by hand (see bench/README.md)::

    .venv/bin/python bench/charge.py [--events N] [--single-events N] [--batch 1000]
        [--keys uuid4|ordered] [--postgres URL] [--json] [--sql-stats] [--profile DIR]
        [--group-threads 64] [--group-wait 0.002]

Phases, each on a fresh database (SQLite: a file in a temp dir, WAL, synchronous=NORMAL,
foreign_keys=ON, BEGIN IMMEDIATE, as :mod:`modelbank.db.engine` sets them):

* ``raw single`` / ``raw batch``: the plain ``sqlite3`` module doing, per event, an
  idempotency SELECT, a price SELECT, a guarded wallet UPDATE (the balance check), the usage
  INSERT, three transfer INSERTs (charge, earning, fee) and three more account UPDATEs
  (revenue, earnings, fees; three transfers touch four accounts): one event per transaction,
  then ``--batch`` events per transaction.
* ``raw batch, set-based`` (reference, no target): the same work done the way
  ``charge_batch`` does it: one key lookup per batch, executemany inserts, one UPDATE per
  account touched. The floor under charge_batch's design.
* ``modelbank charge``: ``with factory() as s, s.begin(): metering.charge(s, event)``.
* ``modelbank charge_batch``: ``metering.charge_batch`` with ``--batch`` events per
  transaction.
* ``modelbank group commit``: the ``charge`` events again, one per call, submitted from
  ``--group-threads`` threads through :class:`modelbank.metering.group.GroupCommitter`
  (``--group-wait`` s of collecting); latency is one whole ``submit``. ``events/txn`` is
  the mean batch the committer formed.

Latency: ``time.perf_counter_ns`` around each whole transaction (session, BEGIN, charge,
COMMIT, close). A warm-up (300 events, or two batches; not measured) fills SQLAlchemy's
statement cache. A phase stops early after ``--max-seconds`` and reports what it did.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from modelbank.catalog import service as catalog
from modelbank.catalog.costs import Mode
from modelbank.catalog.tiers import Tier
from modelbank.db.engine import make_engine, session_factory
from modelbank.db.migrate import upgrade
from modelbank.ledger import invariants
from modelbank.metering import service as metering
from modelbank.metering.group import GroupCommitter
from modelbank.metering.models import usage_events_table
from modelbank.metering.service import UsageEvent
from modelbank.pricing import service as pricing
from modelbank.pricing.formulas import Rates
from modelbank.pricing.markups import TIER_MARKUPS
from modelbank.users import service as users
from modelbank.wallets import service as wallets

# Targets of the performance issue (SQLite only).
TARGET_BATCH_EPS = 50_000
TARGET_BATCH_VS_RAW = 0.60
TARGET_SINGLE_EPS = 8_000
TARGET_SINGLE_P99_MS = 1.0

USERS = 100
GRANT_UCR = 10**13  # 10 M credits per user: no wallet runs dry whatever N
CREDITS_PER_USD = 100

# (slug, tier, µUSD per 1M input / output / cached input tokens), real list prices.
MODELS: tuple[tuple[str, Tier, int, int, int], ...] = (
    ("bench-gpt-4o", Tier.MEDIUM, 2_500_000, 10_000_000, 1_250_000),
    ("bench-gpt-4o-mini", Tier.SMALL, 150_000, 600_000, 75_000),
    ("bench-llama-3-70b", Tier.MEDIUM, 590_000, 790_000, 590_000),
    ("bench-llama-3-8b", Tier.SMALL, 50_000, 80_000, 50_000),
    ("bench-claude-sonnet", Tier.MEDIUM, 3_000_000, 15_000_000, 300_000),
    ("bench-gemini-flash", Tier.SMALL, 75_000, 300_000, 18_750),
    ("bench-mistral-large", Tier.LARGE, 2_000_000, 6_000_000, 2_000_000),
    ("bench-qwen-2-7b", Tier.SMALL, 20_000, 20_000, 20_000),
)
ZIPF_WEIGHTS = [1 / (rank + 1) for rank in range(len(MODELS))]


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Spec:
    """One synthetic event, independent of any database's ids."""

    key: str
    user: int  # 0 … USERS-1
    model: int  # index into MODELS
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


def make_keys(rng: random.Random, kind: str, count: int) -> list[str]:
    """``uuid4``: version-4 UUIDs as 32 hex digits (what clients usually send; drawn from
    ``rng`` so runs repeat). ``ordered``: 32 hex digits, nanosecond clock then a counter, so
    each key sorts after every key made before it (a time-ordered id such as UUIDv7)."""
    if kind == "uuid4":
        return [uuid.UUID(int=rng.getrandbits(128), version=4).hex for _ in range(count)]
    base = time.time_ns()
    return [f"{base:016x}{i:016x}" for i in range(count)]


def make_specs(rng: random.Random, keys: Sequence[str]) -> list[Spec]:
    """Chat events: users uniform, models Zipf-like, token counts log-normal (median ≈ 700
    input / 150 output tokens), a quarter of them with part of the prompt cached."""
    specs: list[Spec] = []
    models = rng.choices(range(len(MODELS)), weights=ZIPF_WEIGHTS, k=len(keys))
    for key, model in zip(keys, models, strict=True):
        input_tokens = min(32_000, max(1, int(rng.lognormvariate(6.5, 1.0))))
        output_tokens = min(4_000, max(1, int(rng.lognormvariate(5.0, 0.9))))
        cached = rng.randrange(input_tokens // 2 + 1) if rng.random() < 0.25 else 0
        specs.append(Spec(key, rng.randrange(USERS), model, input_tokens, cached, output_tokens))
    return specs


# ---------------------------------------------------------------- results


@dataclass
class Result:
    phase: str
    backend: str
    events: int
    per_txn: int
    seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    capped: bool = False  # stopped by --max-seconds

    @property
    def eps(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "backend": self.backend,
            "events": self.events,
            "events_per_txn": self.per_txn,
            "seconds": round(self.seconds, 4),
            "events_per_s": round(self.eps, 1),
            "p50_ms": _round(self.p50_ms),
            "p99_ms": _round(self.p99_ms),
            "max_ms": _round(self.max_ms),
            "stopped_early": self.capped,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def percentiles(latencies_ns: list[int]) -> tuple[float, float, float]:
    """p50, p99 and max in milliseconds (nearest-rank)."""
    ordered = sorted(latencies_ns)
    n = len(ordered)

    def rank(p: float) -> float:
        return ordered[min(n - 1, max(0, int(p * n + 0.5) - 1))] / 1e6

    return rank(0.50), rank(0.99), ordered[-1] / 1e6


@dataclass
class Timing:
    done: int  # events run (fewer than asked when the phase hit --max-seconds)
    seconds: float
    latencies: list[int]  # per transaction, ns
    capped: bool

    def result(self, phase: str, backend: str, per_txn: int) -> Result:
        p50, p99, top = percentiles(self.latencies)
        return Result(phase, backend, self.done, per_txn, self.seconds, p50, p99, top, self.capped)


# ---------------------------------------------------------------- runner


class Runner:
    """Times a phase under a Rich progress bar (on stderr, so ``--json`` stays clean);
    with ``profile_dir`` it also runs the phase under cProfile and saves ``<label>.prof``."""

    def __init__(
        self, console: Console, max_seconds: float, profile_dir: Path | None = None
    ) -> None:
        self.max_seconds = max_seconds
        self.profile_dir = profile_dir
        self.progress = Progress(
            TextColumn("[bold]{task.description:<40}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )

    def threaded(
        self,
        label: str,
        items: Sequence[Any],
        threads: int,
        call: Callable[[Any], None],
    ) -> Timing:
        """Run ``call`` once per item from ``threads`` threads (thread t takes items t,
        t + threads, …) until done or out of time; latency per call."""
        task = self.progress.add_task(label, total=len(items))
        deadline_ns = time.perf_counter_ns() + int(self.max_seconds * 1e9)
        latencies: list[list[int]] = [[] for _ in range(threads)]
        counted = [0]
        lock = threading.Lock()
        start = threading.Barrier(threads + 1)

        def worker(t: int) -> None:
            mine = latencies[t]
            clock = time.perf_counter_ns
            start.wait()
            since_report = 0
            for item in items[t::threads]:
                t0 = clock()
                call(item)
                t1 = clock()
                mine.append(t1 - t0)
                since_report += 1
                if since_report == 50:
                    with lock:
                        counted[0] += since_report
                        self.progress.update(task, completed=counted[0])
                    since_report = 0
                if t1 > deadline_ns:
                    break

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for thread in pool:
            thread.start()
        t0 = time.perf_counter()
        start.wait()
        for thread in pool:
            thread.join()
        seconds = time.perf_counter() - t0
        flat = [ns for per_thread in latencies for ns in per_thread]
        self.progress.update(task, completed=len(flat))
        if len(flat) < len(items):
            self.progress.update(task, description=f"{label} (stopped at time limit)")
        return Timing(len(flat), seconds, flat, len(flat) < len(items))

    def timed(
        self,
        label: str,
        items: Sequence[Any],
        per_txn: int,
        txn: Callable[[Sequence[Any]], None],
        *,
        profile_as: str | None = None,
    ) -> Timing:
        """Run ``txn`` over ``items`` in chunks of ``per_txn`` until done or out of time."""
        task = self.progress.add_task(label, total=len(items))
        shown = 0

        def advance(upto: int) -> None:
            nonlocal shown
            self.progress.advance(task, upto - shown)
            shown = upto

        profiler = cProfile.Profile() if self.profile_dir and profile_as else None
        t0 = time.perf_counter()
        if profiler:
            profiler.enable()
        done, latencies = _chunked(items, per_txn, txn, advance, t0 + self.max_seconds)
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - t0
        if profiler and self.profile_dir:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(self.profile_dir / f"{profile_as}.prof")
        if done < len(items):
            self.progress.update(task, description=f"{label} (stopped at time limit)")
        return Timing(done, seconds, latencies, done < len(items))


# ---------------------------------------------------------------- raw sqlite3

RAW_SCHEMA = """
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    code VARCHAR(32) NOT NULL,
    owner_id BIGINT,
    flags INTEGER NOT NULL,
    debits_posted BIGINT NOT NULL DEFAULT 0,
    credits_posted BIGINT NOT NULL DEFAULT 0,
    debits_pending BIGINT NOT NULL DEFAULT 0,
    credits_pending BIGINT NOT NULL DEFAULT 0,
    created_at DATETIME NOT NULL,
    CHECK (debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0
           AND credits_pending >= 0)
);
CREATE UNIQUE INDEX uq_accounts_code_owner ON accounts (code, owner_id);
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    external_id VARCHAR(200) NOT NULL UNIQUE,
    created_at DATETIME NOT NULL
);
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    slug VARCHAR(200) NOT NULL UNIQUE,
    creator_id INTEGER REFERENCES users (id)
);
CREATE TABLE prices (
    id INTEGER PRIMARY KEY,
    model_id INTEGER NOT NULL REFERENCES models (id),
    version INTEGER NOT NULL,
    effective_from DATETIME NOT NULL,
    input_ucr_per_mtok BIGINT NOT NULL,
    output_ucr_per_mtok BIGINT NOT NULL,
    cache_read_ucr_per_mtok BIGINT NOT NULL,
    input_uusd_per_mtok BIGINT NOT NULL,
    output_uusd_per_mtok BIGINT NOT NULL,
    cache_read_uusd_per_mtok BIGINT NOT NULL
);
CREATE INDEX ix_prices_model_effective ON prices (model_id, effective_from);
CREATE TABLE transfers (
    id INTEGER PRIMARY KEY,
    idempotency_key VARCHAR(200) UNIQUE,
    debit_account_id INTEGER NOT NULL REFERENCES accounts (id),
    credit_account_id INTEGER NOT NULL REFERENCES accounts (id),
    amount BIGINT NOT NULL,
    code VARCHAR(32) NOT NULL,
    flags INTEGER NOT NULL,
    pending_id INTEGER UNIQUE REFERENCES transfers (id),
    reverses_id INTEGER REFERENCES transfers (id),
    expires_at DATETIME,
    ref_type VARCHAR(32),
    ref_id BIGINT,
    created_at DATETIME NOT NULL,
    metadata JSON,
    CHECK (amount > 0),
    CHECK (debit_account_id <> credit_account_id)
);
CREATE INDEX ix_transfers_debit ON transfers (debit_account_id, id);
CREATE INDEX ix_transfers_credit ON transfers (credit_account_id, id);
CREATE INDEX ix_transfers_ref ON transfers (ref_type, ref_id);
CREATE TABLE usage_events (
    id INTEGER PRIMARY KEY,
    idempotency_key VARCHAR(200) NOT NULL UNIQUE,
    request_hash VARCHAR(64) NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id),
    model_id INTEGER NOT NULL REFERENCES models (id),
    price_version_id INTEGER NOT NULL REFERENCES prices (id),
    usage_type VARCHAR(32) NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    units BIGINT NOT NULL,
    charge_ucr BIGINT NOT NULL,
    cost_uusd BIGINT NOT NULL,
    earnings_ucr BIGINT NOT NULL,
    margin_ucr BIGINT NOT NULL,
    balance_after_ucr BIGINT NOT NULL,
    earnings_note VARCHAR(32),
    occurred_at DATETIME NOT NULL,
    created_at DATETIME NOT NULL,
    metadata JSON
);
CREATE INDEX ix_usage_events_user ON usage_events (user_id, id);
CREATE INDEX ix_usage_events_model ON usage_events (model_id, id);
"""

SEL_KEY = "SELECT id, request_hash FROM usage_events WHERE idempotency_key = ?"
SEL_PRICE = (
    "SELECT id, input_ucr_per_mtok, output_ucr_per_mtok, cache_read_ucr_per_mtok,"
    " input_uusd_per_mtok, output_uusd_per_mtok, cache_read_uusd_per_mtok FROM prices"
    " WHERE model_id = ? AND effective_from <= ? ORDER BY effective_from DESC LIMIT 1"
)
# The balance check is the guard of the wallet's UPDATE (rowcount 0: insufficient funds).
UPD_WALLET = (
    "UPDATE accounts SET debits_posted = debits_posted + ?1 WHERE id = ?2"
    " AND credits_posted - debits_posted - debits_pending >= ?1"
    " RETURNING credits_posted - debits_posted"
)
UPD_ACCOUNT = (
    "UPDATE accounts SET debits_posted = debits_posted + ?, credits_posted = credits_posted + ?"
    " WHERE id = ?"
)
INS_USAGE = (
    "INSERT INTO usage_events (idempotency_key, request_hash, user_id, model_id,"
    " price_version_id, usage_type, input_tokens, cached_input_tokens, output_tokens, units,"
    " charge_ucr, cost_uusd, earnings_ucr, margin_ucr, balance_after_ucr, earnings_note,"
    " occurred_at, created_at, metadata)"
    " VALUES (?, ?, ?, ?, ?, 'chat', ?, ?, ?, 0, ?, ?, ?, ?, ?, NULL, ?, ?, NULL)"
)
INS_USAGE_WITH_ID = INS_USAGE.replace("(idempotency_key,", "(id, idempotency_key,", 1).replace(
    "VALUES (?,", "VALUES (?, ?,", 1
)
INS_TRANSFER = (
    "INSERT INTO transfers (idempotency_key, debit_account_id, credit_account_id, amount, code,"
    " flags, pending_id, reverses_id, expires_at, ref_type, ref_id, created_at, metadata)"
    " VALUES (NULL, ?, ?, ?, ?, 0, NULL, NULL, NULL, 'usage', ?, ?, NULL)"
)
FEE_BPS = 500  # the raw loop's third posting: 5% of each charge to platform_fees
EARN_BPS = 1_600  # creator's share: 20% x chat 0.8, as modelbank's default rule


class RawBank:
    """The charge pipeline in plain ``sqlite3``: the floor under what modelbank can reach."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode = WAL",
            "synchronous = NORMAL",
            "foreign_keys = ON",
            "busy_timeout = 30000",
        ):
            self.conn.execute(f"PRAGMA {pragma}")
        self.conn.executescript(RAW_SCHEMA)
        now = _now_text()
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")

        def account(code: str, owner: int | None, flags: int) -> int:
            cur.execute(
                "INSERT INTO accounts (code, owner_id, flags, created_at) VALUES (?, ?, ?, ?)",
                (code, owner, flags, now),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        self.revenue = account("platform_revenue", None, 0)
        self.fees = account("platform_fees", None, 0)
        sales = account("world_sales", None, 0)
        cur.execute("INSERT INTO users (external_id, created_at) VALUES ('creator', ?)", (now,))
        creator = cur.lastrowid
        self.creator_earnings = account("user_earnings", creator, 1)
        self.users: list[int] = []
        self.wallets: list[int] = []
        for i in range(USERS):
            cur.execute("INSERT INTO users (external_id, created_at) VALUES (?, ?)", (f"u{i}", now))
            assert cur.lastrowid is not None
            user = cur.lastrowid
            wallet = account("user_wallet", user, 1)
            account("user_earnings", user, 1)
            cur.execute(
                "INSERT INTO transfers (idempotency_key, debit_account_id, credit_account_id,"
                " amount, code, flags, ref_type, ref_id, created_at)"
                " VALUES (?, ?, ?, ?, 'purchase', 0, 'user', ?, ?)",
                (f"seed:{i}", sales, wallet, GRANT_UCR, user, now),
            )
            cur.execute(UPD_ACCOUNT, (0, GRANT_UCR, wallet))
            cur.execute(UPD_ACCOUNT, (GRANT_UCR, 0, sales))
            self.users.append(user)
            self.wallets.append(wallet)
        self.models: list[int] = []
        for slug, tier, cin, cout, ccache in MODELS:
            cur.execute("INSERT INTO models (slug, creator_id) VALUES (?, ?)", (slug, creator))
            assert cur.lastrowid is not None
            self.models.append(cur.lastrowid)
            factor = TIER_MARKUPS[tier] * CREDITS_PER_USD
            cur.execute(
                "INSERT INTO prices (model_id, version, effective_from, input_ucr_per_mtok,"
                " output_ucr_per_mtok, cache_read_ucr_per_mtok, input_uusd_per_mtok,"
                " output_uusd_per_mtok, cache_read_uusd_per_mtok)"
                " VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?)",
                (
                    cur.lastrowid,
                    now,
                    int(cin * factor),
                    int(cout * factor),
                    int(ccache * factor),
                    cin,
                    cout,
                    ccache,
                ),
            )
        cur.execute("COMMIT")
        self.cur = cur

    def charge(self, spec: Spec, now: str) -> None:
        """One event, in the caller's transaction."""
        cur = self.cur
        if cur.execute(SEL_KEY, (spec.key,)).fetchone() is not None:
            return  # a replay: nothing to write
        model = self.models[spec.model]
        price_id, pin, pout, pcache, cin, cout, ccache = cur.execute(
            SEL_PRICE, (model, now)
        ).fetchone()
        fresh = spec.input_tokens - spec.cached_input_tokens
        cached, out = spec.cached_input_tokens, spec.output_tokens
        charge = (fresh * pin + cached * pcache + out * pout + 500_000) // 1_000_000
        cost = (fresh * cin + cached * ccache + out * cout + 500_000) // 1_000_000
        earning = charge * EARN_BPS // 10_000
        fee = charge * FEE_BPS // 10_000
        wallet = self.wallets[spec.user]
        row = cur.execute(UPD_WALLET, (charge, wallet)).fetchone()
        if row is None:
            raise RuntimeError(f"insufficient funds in wallet {wallet}")
        cur.execute(
            INS_USAGE,
            (
                spec.key,
                spec.key,  # stands in for the SHA-256 of the body (same width class)
                self.users[spec.user],
                model,
                price_id,
                spec.input_tokens,
                spec.cached_input_tokens,
                spec.output_tokens,
                charge,
                cost,
                earning,
                charge - cost * CREDITS_PER_USD - earning - fee,
                row[0],
                now,
                now,
            ),
        )
        usage_id = cur.lastrowid
        revenue = self.revenue
        if charge > 0:
            cur.execute(INS_TRANSFER, (wallet, revenue, charge, "usage_charge", usage_id, now))
        if earning > 0:
            earnings_account = self.creator_earnings
            cur.execute(
                INS_TRANSFER, (revenue, earnings_account, earning, "earning", usage_id, now)
            )
        if fee > 0:
            cur.execute(INS_TRANSFER, (revenue, self.fees, fee, "fee", usage_id, now))
        cur.execute(UPD_ACCOUNT, (earning + fee, charge, revenue))
        cur.execute(UPD_ACCOUNT, (0, earning, self.creator_earnings))
        cur.execute(UPD_ACCOUNT, (0, fee, self.fees))

    def charge_set(self, chunk: Sequence[Spec], now: str) -> None:
        """A batch the way ``charge_batch`` works: one key lookup, prices and balances read
        once, executemany inserts with ids assigned under the write lock, one UPDATE per
        account touched."""
        cur = self.cur
        keys = [spec.key for spec in chunk]
        marks = ",".join("?" * len(keys))
        seen = {
            key
            for (key,) in cur.execute(
                f"SELECT idempotency_key FROM usage_events WHERE idempotency_key IN ({marks})",
                keys,
            )
        }
        prices = {
            m: cur.execute(SEL_PRICE, (self.models[m], now)).fetchone()
            for m in {spec.model for spec in chunk}
        }
        wallet_ids = sorted({self.wallets[spec.user] for spec in chunk})
        marks = ",".join("?" * len(wallet_ids))
        available = dict(
            cur.execute(
                "SELECT id, credits_posted - debits_posted - debits_pending FROM accounts"
                f" WHERE id IN ({marks})",
                wallet_ids,
            )
        )
        next_id = cur.execute("SELECT coalesce(max(id), 0) + 1 FROM usage_events").fetchone()[0]
        usage_rows: list[tuple[Any, ...]] = []
        transfer_rows: list[tuple[Any, ...]] = []
        debits: dict[int, int] = {}
        credits: dict[int, int] = {}
        revenue, fees, earnings_account = self.revenue, self.fees, self.creator_earnings
        for spec in chunk:
            if spec.key in seen:
                continue
            seen.add(spec.key)
            price_id, pin, pout, pcache, cin, cout, ccache = prices[spec.model]
            fresh = spec.input_tokens - spec.cached_input_tokens
            cached, out = spec.cached_input_tokens, spec.output_tokens
            charge = (fresh * pin + cached * pcache + out * pout + 500_000) // 1_000_000
            cost = (fresh * cin + cached * ccache + out * cout + 500_000) // 1_000_000
            earning = charge * EARN_BPS // 10_000
            fee = charge * FEE_BPS // 10_000
            wallet = self.wallets[spec.user]
            if charge > available[wallet]:
                raise RuntimeError(f"insufficient funds in wallet {wallet}")
            available[wallet] -= charge
            usage_id = next_id
            next_id += 1
            usage_rows.append(
                (
                    usage_id,
                    spec.key,
                    spec.key,
                    self.users[spec.user],
                    self.models[spec.model],
                    price_id,
                    spec.input_tokens,
                    spec.cached_input_tokens,
                    spec.output_tokens,
                    charge,
                    cost,
                    earning,
                    charge - cost * CREDITS_PER_USD - earning - fee,
                    available[wallet],
                    now,
                    now,
                )
            )
            for debit, credit, amount, code in (
                (wallet, revenue, charge, "usage_charge"),
                (revenue, earnings_account, earning, "earning"),
                (revenue, fees, fee, "fee"),
            ):
                if amount > 0:
                    transfer_rows.append((debit, credit, amount, code, usage_id, now))
                    debits[debit] = debits.get(debit, 0) + amount
                    credits[credit] = credits.get(credit, 0) + amount
        cur.executemany(INS_USAGE_WITH_ID, usage_rows)
        cur.executemany(INS_TRANSFER, transfer_rows)
        cur.executemany(
            UPD_ACCOUNT,
            [
                (debits.get(account, 0), credits.get(account, 0), account)
                for account in sorted(debits.keys() | credits.keys())
            ],
        )

    def check(self, expected: int) -> None:
        count = self.conn.execute("SELECT count(*) FROM usage_events").fetchone()[0]
        debits, credits = self.conn.execute(
            "SELECT sum(debits_posted), sum(credits_posted) FROM accounts"
        ).fetchone()
        if count != expected or debits != credits:
            raise RuntimeError(f"raw run broken: {count} rows, debits {debits} ≠ {credits}")

    def close(self) -> None:
        self.conn.close()


def _now_text() -> str:
    """Naive UTC as SQLAlchemy stores DateTime in SQLite."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat(" ")


def run_raw(
    workdir: Path,
    name: str,
    specs: Sequence[Spec],
    warmup: Sequence[Spec],
    per_txn: int,
    runner: Runner,
    *,
    set_based: bool = False,
) -> Result:
    bank = RawBank(workdir / f"raw-{name}.db")
    try:

        def txn(chunk: Sequence[Spec]) -> None:
            cur = bank.cur
            now = _now_text()
            cur.execute("BEGIN IMMEDIATE")
            if set_based:
                bank.charge_set(chunk, now)
            else:
                for spec in chunk:
                    bank.charge(spec, now)
            cur.execute("COMMIT")

        _chunked(warmup, per_txn, txn, lambda n: None)
        label = f"raw sqlite3, {per_txn}/txn" + (", set-based" if set_based else "")
        timing = runner.timed(label, specs, per_txn, txn)
        bank.check(timing.done + len(warmup))
    finally:
        bank.close()
    return timing.result(f"raw sqlite3 {name}", "sqlite", per_txn)


def _chunked(
    items: Sequence[Any],
    per_txn: int,
    txn: Callable[[Sequence[Any]], None],
    progress: Callable[[int], None],
    deadline: float | None = None,
) -> tuple[int, list[int]]:
    """Run ``txn`` over chunks of ``per_txn`` items, stopping after ``deadline``
    (``perf_counter``); return (items done, each transaction's latency in ns). The progress
    bar is told at most every 250 items (an update costs a few µs)."""
    latencies: list[int] = []
    append = latencies.append
    clock = time.perf_counter_ns
    deadline_ns = None if deadline is None else int(deadline * 1e9)
    next_report = 250
    done = 0
    for start in range(0, len(items), per_txn):
        chunk = items[start : start + per_txn]
        t0 = clock()
        txn(chunk)
        t1 = clock()
        append(t1 - t0)
        done = start + len(chunk)
        if done >= next_report:
            progress(done)
            next_report = done + 250
        if deadline_ns is not None and t1 > deadline_ns:
            break
    progress(done)
    return done, latencies


# ---------------------------------------------------------------- modelbank


@dataclass
class Fixture:
    engine: Engine
    factory: sessionmaker[Session]
    user_ids: list[int]
    model_ids: list[int]
    cleanup: Callable[[], None]

    def events(self, specs: Sequence[Spec]) -> list[UsageEvent]:
        return [
            UsageEvent(
                idempotency_key=s.key,
                user_id=self.user_ids[s.user],
                model=self.model_ids[s.model],
                usage_type="chat",
                input_tokens=s.input_tokens,
                cached_input_tokens=s.cached_input_tokens,
                output_tokens=s.output_tokens,
            )
            for s in specs
        ]


def seed(factory: sessionmaker[Session]) -> tuple[list[int], list[int]]:
    """A creator, ``USERS`` funded users and the ``MODELS`` priced from cost."""
    with factory() as s, s.begin():
        creator = users.create_user(s, "bench-creator").id
        user_ids = []
        for i in range(USERS):
            user_id = users.create_user(s, f"bench-user-{i}").id
            wallets.grant(s, user_id, GRANT_UCR, idempotency_key=f"bench-seed-{i}")
            user_ids.append(user_id)
        model_ids = []
        for slug, tier, cin, cout, ccache in MODELS:
            info = catalog.create_model(
                s,
                catalog.NewModel(
                    slug=slug,
                    name=slug,
                    provider="bench",
                    mode=Mode.CHAT,
                    tier=tier,
                    creator_id=creator,
                ),
            )
            pricing.set_price(
                s,
                info.id,
                tier=tier,
                cost_uusd=Rates(
                    input_per_mtok=Decimal(cin),
                    output_per_mtok=Decimal(cout),
                    cache_read_per_mtok=Decimal(ccache),
                ),
            )
            model_ids.append(info.id)
    return user_ids, model_ids


def sqlite_fixture(workdir: Path, name: str) -> Fixture:
    engine = make_engine(f"sqlite:///{workdir / name}.db")
    upgrade(engine)
    factory = session_factory(engine)
    user_ids, model_ids = seed(factory)
    return Fixture(engine, factory, user_ids, model_ids, engine.dispose)


def postgres_fixture(url: str, name: str) -> Fixture:
    schema = f"mb_bench_{name}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def cleanup() -> None:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    engine = make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        upgrade(engine)
        factory = session_factory(engine)
        user_ids, model_ids = seed(factory)
    except BaseException:
        cleanup()
        raise
    return Fixture(engine, factory, user_ids, model_ids, cleanup)


def run_modelbank(
    fixture: Fixture,
    backend: str,
    specs: Sequence[Spec],
    warmup: Sequence[Spec],
    per_txn: int,
    runner: Runner,
    stats: StatementStats | None = None,
) -> Result:
    """Charge ``specs`` through modelbank, ``per_txn`` events per transaction (1: the
    ``charge`` path, else ``charge_batch``). Every event must come back ``charged``."""
    factory = fixture.factory

    def single(chunk: Sequence[UsageEvent]) -> None:
        with factory() as s, s.begin():
            metering.charge(s, chunk[0])

    def batch(chunk: Sequence[UsageEvent]) -> None:
        with factory() as s, s.begin():
            results = metering.charge_batch(s, chunk)
        bad = [r for r in results if r.status != "charged"]
        if bad:
            raise RuntimeError(f"{len(bad)} events not charged, first: {bad[0]}")

    txn = single if per_txn == 1 else batch
    name = "charge" if per_txn == 1 else "charge_batch"
    _chunked(fixture.events(warmup), per_txn, txn, lambda n: None)
    events = fixture.events(specs)
    if stats:
        stats.attach(fixture.engine)
    try:
        timing = runner.timed(
            f"modelbank {name}, {per_txn}/txn ({backend})",
            events,
            per_txn,
            txn,
            profile_as=f"{backend}-{name}",
        )
    finally:
        if stats:
            stats.detach(fixture.engine)
    with factory() as s, s.begin():
        count = (
            s.connection()
            .execute(select(func.count()).select_from(usage_events_table))
            .scalar_one()
        )
        broken = invariants.check(s)
    if count != timing.done + len(warmup) or broken:
        raise RuntimeError(f"modelbank run broken: {count} usage rows, invariants {broken}")
    return timing.result(f"modelbank {name}", backend, per_txn)


def run_group(
    fixture: Fixture,
    backend: str,
    specs: Sequence[Spec],
    warmup: Sequence[Spec],
    threads: int,
    max_wait_s: float,
    runner: Runner,
) -> Result:
    """Charge ``specs`` one event per call from ``threads`` threads through a
    :class:`GroupCommitter`; latency = one whole ``submit`` (queue, batch, COMMIT, answer).
    Every event must come back ``charged``."""
    with GroupCommitter(fixture.factory, max_wait_s=max_wait_s) as committer:

        def call(event: UsageEvent) -> None:
            result = committer.submit(event)
            if result.status != "charged":
                raise RuntimeError(f"event not charged: {result}")

        for event in fixture.events(warmup):
            call(event)
        batches0, events0 = committer.batches, committer.events
        timing = runner.threaded(
            f"modelbank group commit, {threads} threads ({backend})",
            fixture.events(specs),
            threads,
            call,
        )
        batches = committer.batches - batches0
        per_txn = round((committer.events - events0) / batches) if batches else 0
    with fixture.factory() as s, s.begin():
        count = (
            s.connection()
            .execute(select(func.count()).select_from(usage_events_table))
            .scalar_one()
        )
        broken = invariants.check(s)
    if count != timing.done + len(warmup) or broken:
        raise RuntimeError(f"group commit run broken: {count} usage rows, invariants {broken}")
    return timing.result(f"modelbank group commit ×{threads}", backend, per_txn)


# ---------------------------------------------------------------- statement timing


class StatementStats:
    """Driver time and count per SQL statement (``--sql-stats``): which query dominates."""

    def __init__(self) -> None:
        self.by_statement: dict[str, list[float]] = {}  # sql → [calls, rows, seconds]

    def _before(
        self, conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool
    ) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    def _after(
        self, conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool
    ) -> None:
        elapsed = time.perf_counter() - conn.info.pop("bench_t0", time.perf_counter())
        entry = self.by_statement.setdefault(" ".join(sql.split()), [0, 0, 0.0])
        entry[0] += 1
        sets = (
            many
            and isinstance(params, list | tuple)
            and params
            and isinstance(params[0], tuple | list | dict)
        )
        entry[1] += len(params) if sets else 1  # insertmanyvalues passes one flat tuple
        entry[2] += elapsed

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def detach(self, engine: Engine) -> None:
        event.remove(engine, "before_cursor_execute", self._before)
        event.remove(engine, "after_cursor_execute", self._after)

    def table(self, title: str, total_seconds: float, top: int = 15) -> Table:
        table = Table(title=title)
        for column in ("statement", "calls", "rows", "ms total", "µs/call", "% of wall"):
            table.add_column(column, justify="left" if column == "statement" else "right")
        ranked = sorted(self.by_statement.items(), key=lambda kv: kv[1][2], reverse=True)
        for sql, (calls, rows, seconds) in ranked[:top]:
            table.add_row(
                sql[:90],
                f"{calls:,.0f}",
                f"{rows:,.0f}",
                f"{seconds * 1e3:,.1f}",
                f"{seconds / calls * 1e6:,.1f}",
                f"{seconds / total_seconds:.1%}",
            )
        driver = sum(entry[2] for entry in self.by_statement.values())
        table.caption = (
            f"driver time {driver:.2f} s of {total_seconds:.2f} s wall"
            f" ({driver / total_seconds:.0%}; COMMIT not included); the rest is Python"
            " (modelbank + SQLAlchemy)"
        )
        return table


# ---------------------------------------------------------------- report


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    passed: bool


def targets(results: dict[str, Result]) -> list[Target]:
    single, batch = results["sqlite single"], results["sqlite batch"]
    raw_batch = results["raw batch"]
    ratio = batch.eps / raw_batch.eps if raw_batch.eps else 0.0
    p99 = single.p99_ms or 0.0
    group = results.get("sqlite group")
    grouped = []
    if group is not None:
        grouped = [
            Target(
                f"SQLite group commit ≥ {TARGET_SINGLE_EPS:,} events/s",
                f"{group.eps:,.0f}/s",
                group.eps >= TARGET_SINGLE_EPS,
            ),
            Target(
                f"SQLite group commit p99 ≤ {TARGET_SINGLE_P99_MS:g} ms",
                f"{group.p99_ms or 0.0:.3f} ms",
                (group.p99_ms or 0.0) <= TARGET_SINGLE_P99_MS,
            ),
        ]
    base = [
        Target(
            f"SQLite charge_batch ≥ {TARGET_BATCH_EPS:,} events/s",
            f"{batch.eps:,.0f}/s",
            batch.eps >= TARGET_BATCH_EPS,
        ),
        Target(
            f"SQLite charge_batch ≥ {TARGET_BATCH_VS_RAW:.0%} of raw batch",
            f"{ratio:.0%}",
            ratio >= TARGET_BATCH_VS_RAW,
        ),
        Target(
            f"SQLite charge ≥ {TARGET_SINGLE_EPS:,} events/s",
            f"{single.eps:,.0f}/s",
            single.eps >= TARGET_SINGLE_EPS,
        ),
        Target(
            f"SQLite charge p99 ≤ {TARGET_SINGLE_P99_MS:g} ms",
            f"{p99:.3f} ms",
            p99 <= TARGET_SINGLE_P99_MS,
        ),
    ]
    return [*base, *grouped]


RAW_OF = {
    "sqlite single": "raw single",
    "sqlite group": "raw single",
    "sqlite batch": "raw batch",
}


def results_table(results: dict[str, Result], config: dict[str, Any]) -> Table:
    table = Table(
        title="Charge throughput",
        caption=(
            f"idempotency keys: {config['keys']}; latency = one whole transaction (session,"
            " BEGIN IMMEDIATE, charge, COMMIT); warm-up excluded; * = stopped at --max-seconds"
        ),
    )
    for column in (
        "phase",
        "db",
        "events",
        "events/txn",
        "events/s",
        "vs raw",
        "vs set-based",
        "p50 ms",
        "p99 ms",
        "max ms",
    ):
        table.add_column(column, justify="left" if column in ("phase", "db") else "right")
    set_based = results.get("raw set-based")
    for key, r in results.items():
        raw = results.get(RAW_OF.get(key, ""))
        table.add_row(
            r.phase,
            r.backend,
            f"{r.events:,}" + ("*" if r.capped else ""),
            f"{r.per_txn:,}",
            f"{r.eps:,.0f}",
            f"{r.eps / raw.eps:.0%}" if raw else "",
            f"{r.eps / set_based.eps:.0%}" if key == "sqlite batch" and set_based else "",
            _fmt_ms(r.p50_ms),
            _fmt_ms(r.p99_ms),
            _fmt_ms(r.max_ms),
        )
    return table


def _fmt_ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def targets_table(found: list[Target]) -> Table:
    table = Table(title="Targets (SQLite)")
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("result")
    for t in found:
        table.add_row(t.name, t.measured, "[green]PASS" if t.passed else "[red]FAIL")
    return table


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Charge throughput: raw sqlite3 vs modelbank charge / charge_batch.",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=100_000,
        help="events for the batch phases (raw batch and charge_batch); default 100,000",
    )
    parser.add_argument(
        "--single-events",
        type=int,
        default=20_000,
        help="events for the one-per-transaction phases (raw single and charge); default 20,000",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=metering.MAX_BATCH_EVENTS,
        help=f"events per batch transaction (1…{metering.MAX_BATCH_EVENTS}); default 1,000",
    )
    parser.add_argument(
        "--keys",
        choices=("uuid4", "ordered"),
        default="uuid4",
        help="idempotency keys: uuid4 hex (random, default) or time-ordered hex",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed of the event mix")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also run charge and charge_batch on PostgreSQL, in a fresh schema per phase",
    )
    parser.add_argument("--pg-events", type=int, default=20_000, help="PostgreSQL batch events")
    parser.add_argument(
        "--pg-single-events", type=int, default=2_000, help="PostgreSQL single events"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=40.0,
        help="stop a phase after this long and report the events it did; default 40",
    )
    parser.add_argument(
        "--group-threads",
        type=int,
        default=64,
        help="threads submitting single events through the GroupCommitter; default 64"
        " (0: skip the group-commit phases)",
    )
    parser.add_argument(
        "--group-wait",
        type=float,
        default=0.002,
        help="GroupCommitter max_wait_s: how long the oldest event waits for company;"
        " default 0.002",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="run modelbank phases under cProfile, save DIR/<db>-<path>.prof (slower figures)",
    )
    parser.add_argument(
        "--sql-stats",
        action="store_true",
        help="time every SQL statement of the modelbank SQLite phases (slower figures)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= metering.MAX_BATCH_EVENTS:
        parser.error(f"--batch must be 1…{metering.MAX_BATCH_EVENTS}")
    if args.group_threads < 0 or args.group_wait < 0:
        parser.error("--group-threads and --group-wait must be ≥ 0")
    if min(args.events, args.single_events, args.pg_events, args.pg_single_events) < 1:
        parser.error("event counts must be ≥ 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    err = Console(stderr=True)
    out = Console()
    if not out.is_terminal:
        out = Console(width=150)  # piped: do not squeeze the tables into 80 columns
    rng = random.Random(args.seed)
    warm_single, warm_batch = 300, 2 * args.batch

    def specs(count: int) -> list[Spec]:
        return make_specs(rng, make_keys(rng, args.keys, count))

    # Warm-up keys first: with --keys ordered, every measured key sorts after them.
    warmup_single, warmup_batch = specs(warm_single), specs(warm_batch)
    single_specs, batch_specs = specs(args.single_events), specs(args.events)
    config = {
        "events": args.events,
        "single_events": args.single_events,
        "batch": args.batch,
        "keys": args.keys,
        "group_threads": args.group_threads,
        "group_wait_s": args.group_wait,
        "seed": args.seed,
        "users": USERS,
        "models": len(MODELS),
        "sqlite": sqlite3.sqlite_version,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    runner = Runner(err, args.max_seconds, args.profile)
    sql_stats = {"single": StatementStats(), "batch": StatementStats()} if args.sql_stats else {}
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp, runner.progress:
        workdir = Path(tmp)
        results["raw single"] = run_raw(workdir, "single", single_specs, warmup_single, 1, runner)
        results["raw batch"] = run_raw(
            workdir, "batch", batch_specs, warmup_batch, args.batch, runner
        )
        results["raw set-based"] = run_raw(
            workdir,
            "batch, set-based",
            batch_specs,
            warmup_batch,
            args.batch,
            runner,
            set_based=True,
        )
        fixture = sqlite_fixture(workdir, "modelbank-single")
        try:
            results["sqlite single"] = run_modelbank(
                fixture,
                "sqlite",
                single_specs,
                warmup_single,
                1,
                runner,
                sql_stats.get("single"),
            )
        finally:
            fixture.cleanup()
        if args.group_threads:
            fixture = sqlite_fixture(workdir, "modelbank-group")
            try:
                results["sqlite group"] = run_group(
                    fixture,
                    "sqlite",
                    single_specs,
                    warmup_single,
                    args.group_threads,
                    args.group_wait,
                    runner,
                )
            finally:
                fixture.cleanup()
        fixture = sqlite_fixture(workdir, "modelbank-batch")
        try:
            results["sqlite batch"] = run_modelbank(
                fixture,
                "sqlite",
                batch_specs,
                warmup_batch,
                args.batch,
                runner,
                sql_stats.get("batch"),
            )
        finally:
            fixture.cleanup()
        if args.postgres:
            # The SQLite phases' events again (a prefix), fresh ones when more are asked.
            pg_single = single_specs[: args.pg_single_events]
            if len(pg_single) < args.pg_single_events:
                pg_single = specs(args.pg_single_events)
            pg_batch = batch_specs[: args.pg_events]
            if len(pg_batch) < args.pg_events:
                pg_batch = specs(args.pg_events)
            for key, phase_specs, warm, per_txn in (
                ("postgres single", pg_single, warmup_single, 1),
                ("postgres batch", pg_batch, warmup_batch, args.batch),
            ):
                fixture = postgres_fixture(args.postgres, key.split()[1])
                try:
                    results[key] = run_modelbank(
                        fixture, "postgres", phase_specs, warm, per_txn, runner
                    )
                finally:
                    fixture.cleanup()
            if args.group_threads:
                fixture = postgres_fixture(args.postgres, "group")
                try:
                    results["postgres group"] = run_group(
                        fixture,
                        "postgres",
                        pg_single,
                        warmup_single,
                        args.group_threads,
                        args.group_wait,
                        runner,
                    )
                finally:
                    fixture.cleanup()
    found = targets(results)
    if args.json:
        document = {
            "config": config,
            "results": {
                key: {
                    **r.as_dict(),
                    "vs_raw": (
                        round(r.eps / results[RAW_OF[key]].eps, 4) if key in RAW_OF else None
                    ),
                }
                for key, r in results.items()
            },
            "targets": [
                {"target": t.name, "measured": t.measured, "pass": t.passed} for t in found
            ],
        }
        out.print_json(data=document)
        return 0
    out.print(results_table(results, config))
    out.print(targets_table(found))
    for name, stats in sql_stats.items():
        key = f"sqlite {name}"
        out.print(stats.table(f"SQL statements, modelbank {name} (SQLite)", results[key].seconds))
    out.print(
        f"[dim]{config['users']} users, {config['models']} models with a creator;"
        f" SQLite {config['sqlite']}, Python {config['python']}, {config['cpus']} CPUs."
        " SQLite phases: a fresh file each, WAL, synchronous=NORMAL, foreign_keys=ON."
    )
    if args.profile:
        out.print(f"[dim]cProfile output in {args.profile} (figures above include its overhead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
