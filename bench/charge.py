"""Charge throughput: the lean physical limit and raw ``sqlite3`` vs modelbank's ``charge``,
``charge_batch``, group commit and hold + capture pairs, on SQLite and PostgreSQL.

Run by hand (see bench/README.md)::

    .venv/bin/python bench/charge.py [--events N] [--single-events N] [--batch 1000]
        [--hold-pairs N] [--keys uuid4|ordered] [--postgres URL] [--pg-events N]
        [--pg-single-events N] [--pg-hold-pairs N] [--contention-events N]
        [--contention-threads 8] [--json] [--sql-stats] [--profile DIR]
        [--group-threads 64] [--group-wait 0.002] [--max-seconds 40]

Phases, each on a fresh database (SQLite: a file in a temp dir, WAL, synchronous=NORMAL,
foreign_keys=ON, BEGIN IMMEDIATE, as :mod:`modelbank.db.engine` sets them; PostgreSQL: a
fresh schema, dropped at the end):

* ``lean`` (see ``bench/lean.py``): the physical limit of a full charge (DESIGN §16), the
  plain driver on a minimal schema (accounts, usage with ascending ids and a 64-bit key hash,
  transfers): idempotency check, guarded wallet debit, usage insert, transfer inserts,
  revenue / earnings / fees credits. SQLite: those statements per event, 1/txn and
  ``--batch``/txn (the batch targets compare with the latter), and a set-based batch for
  reference. PostgreSQL (psycopg 3): 1/txn as ~7 round trips, 1/txn as ONE statement (one
  round trip), and a set-based ``--batch``/txn.
* ``raw single`` / ``raw batch``: the plain ``sqlite3`` module on a copy of OUR schema,
  doing per event an idempotency SELECT, a price SELECT, a guarded wallet UPDATE (the
  balance check), the usage INSERT, three transfer INSERTs (charge, earning, fee) and three
  more account UPDATEs: one event per transaction, then ``--batch`` events per transaction.
  It carries our schema's own costs (indexes, random-key UNIQUE indexes).
* ``raw batch, set-based`` (reference, no target): the same work done the way
  ``charge_batch`` does it: one key lookup per batch, executemany inserts, one UPDATE per
  account touched.
* ``modelbank charge``: ``with factory() as s, s.begin(): metering.charge(s, event)``.
* ``modelbank charge_batch``: ``metering.charge_batch`` with ``--batch`` events per
  transaction.
* ``modelbank seal``: after ``charge_batch``, :func:`modelbank.chain.seal_all` links every
  transfer it wrote into the hash chain (blocks of 1,000 on SQLite, 5,000 on PostgreSQL),
  then ``verify_all`` must find the chain sound. Its rate is in charged events per second;
  ``charge_batch + seal`` is the rate when the same cores charge and seal (issue 16: the
  chain's cost).
* ``modelbank group commit``: the ``charge`` events again, one per call, submitted from
  ``--group-threads`` threads through :class:`modelbank.metering.group.GroupCommitter`
  (``--group-wait`` s of collecting); latency is one whole ``submit``. ``events/txn`` is
  the mean batch the committer formed.
* ``modelbank hold + capture``: per pair, transaction 1 places a hold, transaction 2
  captures part of it (:func:`hold_place`, :func:`hold_capture`); latency is the pair.
* PostgreSQL contention: ``metering.charge`` one event per transaction from 1 thread, then
  ``--contention-threads`` threads (a session each) on ONE hot wallet, then on as many
  distinct wallets; then no wallet may be overdrawn and the ledger invariants must hold.

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
from dataclasses import dataclass, replace
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

import lean
from modelbank import chain
from modelbank.catalog import service as catalog
from modelbank.catalog.costs import Mode
from modelbank.catalog.tiers import Tier
from modelbank.chain.seal import SEAL_BATCH, SEAL_BATCH_SQLITE
from modelbank.db.base import utcnow
from modelbank.db.engine import make_engine, session_factory
from modelbank.db.migrate import upgrade
from modelbank.ledger import invariants
from modelbank.metering import service as metering
from modelbank.metering.capture import capture
from modelbank.metering.group import GroupCommitter
from modelbank.metering.models import usage_events_table
from modelbank.pricing import service as pricing
from modelbank.pricing.formulas import Rates
from modelbank.pricing.markups import TIER_MARKUPS
from modelbank.users import service as users
from modelbank.wallets import holds
from modelbank.wallets import service as wallets
from modelbank.wallets.models import holds_table

# Targets of the performance issue ("charge engine").
TARGET_BATCH_EPS = 50_000  # SQLite charge_batch
TARGET_BATCH_VS_LEAN = 0.70  # SQLite charge_batch / lean batch
TARGET_SINGLE_EPS = 8_000  # SQLite charge, in-process
TARGET_SINGLE_P99_MS = 1.0
TARGET_HOLD_PAIRS = 4_000  # SQLite hold + capture pairs/s
TARGET_PG_SINGLE_EPS = 1_500  # PostgreSQL charge, one connection
TARGET_PG_SINGLE_P99_MS = 3.0
TARGET_PG_BATCH_EPS = 30_000  # PostgreSQL charge_batch
TARGET_PG_SCALING = 3.0  # PostgreSQL: 8 distinct wallets / one connection

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
    """The charge pipeline in plain ``sqlite3`` on a copy of our schema (its indexes and
    random-key UNIQUE indexes included)."""

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


# ---------------------------------------------------------------- lean reference


def lean_prices() -> list[lean.Price]:
    """The bench models' prices as the lean reference holds them: µcr per 1M tokens
    (cost x tier markup x credits per USD, as the raw loop) and the µUSD costs."""
    prices: list[lean.Price] = []
    for _slug, tier, cin, cout, ccache in MODELS:
        factor = TIER_MARKUPS[tier] * CREDITS_PER_USD
        prices.append(
            (int(cin * factor), int(cout * factor), int(ccache * factor), cin, cout, ccache)
        )
    return prices


def run_lean(
    bank: lean.LeanBank,
    phase: str,
    backend: str,
    specs: Sequence[Spec],
    warmup: Sequence[Spec],
    per_txn: int,
    runner: Runner,
) -> Result:
    """Time the lean reference ``bank`` (closed afterwards) over ``specs``."""
    try:
        _chunked(warmup, per_txn, bank.txn, lambda n: None)
        timing = runner.timed(f"{phase}, {per_txn}/txn ({backend})", specs, per_txn, bank.txn)
        bank.check(timing.done + len(warmup))
    finally:
        bank.close()
    return timing.result(phase, backend, per_txn)


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

    def events(self, specs: Sequence[Spec]) -> list[metering.UsageEvent]:
        return [
            metering.UsageEvent(
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

    def single(chunk: Sequence[metering.UsageEvent]) -> None:
        with factory() as s, s.begin():
            metering.charge(s, chunk[0])

    def batch(chunk: Sequence[metering.UsageEvent]) -> None:
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


def run_seal(fixture: Fixture, backend: str, charged: Result) -> list[tuple[str, Result]]:
    """Seal the hash chains over what the ``charge_batch`` phase wrote (its warm-up too) and
    time it (issue 16: chaining is done by a sealer off the write path). Gives two rows:
    the sealer's own rate in charged events per second, and ``charge_batch`` + seal, the
    rate when the same cores do both (1 / (1/charge + 1/seal))."""
    with fixture.factory() as s, s.begin():
        events = (
            s.connection()
            .execute(select(func.count()).select_from(usage_events_table))
            .scalar_one()
        )
    started = time.perf_counter()
    sealed = chain.seal_all(fixture.factory)
    seconds = time.perf_counter() - started
    with fixture.factory() as s, s.begin():
        reports = chain.verify_all(s)
    bad = [r.problem for r in reports if not r.ok]
    if bad or not sealed["transfers"]:
        raise RuntimeError(f"sealing broken: {sealed}, {bad}")
    seal = Result(
        f"modelbank seal, {sealed['transfers']:,} transfers",
        backend,
        events,
        SEAL_BATCH_SQLITE if backend == "sqlite" else SEAL_BATCH,
        seconds,
    )
    both_seconds = charged.seconds + seconds * charged.events / events
    both = Result(
        "modelbank charge_batch + seal", backend, charged.events, charged.per_txn, both_seconds
    )
    return [("seal", seal), ("batch+seal", both)]


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

        def call(event: metering.UsageEvent) -> None:
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


# ---------------------------------------------------------------- holds

HOLD_UCR = 5_000_000  # 5 credits reserved per call; the capture takes the call's price, ≤ that
HOLD_TIMEOUT_S = 600


# The two calls of a hold + capture pair, in one place (capturing lives in
# ``modelbank.metering.capture``; placing stays in ``modelbank.wallets.holds``).
def hold_place(session: Session, user_id: int, amount_ucr: int, *, key: str, model: int) -> int:
    """Transaction 1 of a pair: reserve ``amount_ucr``; returns the hold's id."""
    hold = holds.place(
        session,
        user_id,
        amount_ucr,
        timeout_s=HOLD_TIMEOUT_S,
        idempotency_key=key,
        model=model,
        now=utcnow(),
    )
    return int(hold.id)


def hold_capture(
    session: Session,
    hold_id: int,
    amount_ucr: int,
    *,
    model: int,
    input_tokens: int,
    output_tokens: int,
) -> Any:
    """Transaction 2 of a pair: charge ``amount_ucr`` (≤ held), release the rest."""
    return capture(
        session,
        hold_id,
        amount_ucr,
        model=model,
        usage_type="chat",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def run_holds(
    fixture: Fixture,
    backend: str,
    specs: Sequence[Spec],
    warmup: Sequence[Spec],
    runner: Runner,
) -> Result:
    """Per spec one pair: a hold of :data:`HOLD_UCR` in one transaction, its capture for the
    call's list price (at most the hold) in a second. Latency = the pair."""
    factory = fixture.factory
    prices = lean_prices()

    def pair(chunk: Sequence[Spec]) -> None:
        spec = chunk[0]
        user, model = fixture.user_ids[spec.user], fixture.model_ids[spec.model]
        with factory() as s, s.begin():
            hold_id = hold_place(s, user, HOLD_UCR, key=f"hold-{spec.key}", model=model)
        amount = min(HOLD_UCR, lean.amounts(spec, prices[spec.model])[0])
        with factory() as s, s.begin():
            hold_capture(
                s,
                hold_id,
                amount,
                model=model,
                input_tokens=spec.input_tokens,
                output_tokens=spec.output_tokens,
            )

    _chunked(warmup, 1, pair, lambda n: None)
    timing = runner.timed(f"modelbank hold + capture pairs ({backend})", specs, 1, pair)
    with factory() as s, s.begin():
        conn = s.connection()
        count = conn.execute(select(func.count()).select_from(usage_events_table)).scalar_one()
        captured = conn.execute(
            select(func.count()).select_from(holds_table).where(holds_table.c.usage_id.is_not(None))
        ).scalar_one()
        broken = invariants.check(s)
    expected = timing.done + len(warmup)
    if count != expected or captured != expected or broken:
        raise RuntimeError(
            f"hold run broken: {count} usage rows, {captured} captured holds"
            f" (expected {expected}), invariants {broken}"
        )
    return timing.result("modelbank hold + capture (pairs)", backend, 1)


# ---------------------------------------------------------------- contention


@dataclass
class Contention:
    threads: int
    alone: Result
    hot: Result
    distinct: Result
    errors: int
    never_overdrawn: bool
    lowest_balance_ucr: int
    hot_balance_ucr: int
    broken: list[str]

    @property
    def scaling(self) -> float:
        return self.distinct.eps / self.alone.eps if self.alone.eps else 0.0


def run_contention(
    fixture: Fixture,
    make: Callable[[int], list[Spec]],
    events: int,
    threads: int,
    runner: Runner,
) -> Contention:
    """``metering.charge``, one event per transaction: 1 thread (users spread over
    ``threads`` wallets), ``threads`` threads all on ONE wallet (user 0), ``threads`` threads
    on as many wallets (thread t charges user t). Each thread has its own session and so its
    own connection. Afterwards: every wallet's balance ≥ 0, ledger invariants."""
    factory = fixture.factory
    errors = [0]
    lock = threading.Lock()

    def call(event: metering.UsageEvent) -> None:
        try:
            with factory() as s, s.begin():
                result = metering.charge(s, event)
            if result.status != "charged":
                raise RuntimeError(f"event not charged: {result}")
        except Exception:
            with lock:
                errors[0] += 1

    def specs_for(count: int, user: Callable[[int], int]) -> list[Spec]:
        return [replace(spec, user=user(i)) for i, spec in enumerate(make(count))]

    warm = specs_for(100, lambda i: i % threads)
    alone = specs_for(events, lambda i: i % threads)
    hot = specs_for(events, lambda i: 0)
    distinct = specs_for(events, lambda i: i % threads)  # runner: thread t takes t, t + n, …
    # The hot wallet must cover the whole run: top it up to 4x the list price of its events.
    prices = lean_prices()
    hot_spend = sum(lean.amounts(spec, prices[spec.model])[0] for spec in [*warm, *hot])
    if 4 * hot_spend > GRANT_UCR:
        with factory() as s, s.begin():
            wallets.grant(
                s,
                fixture.user_ids[0],
                4 * hot_spend - GRANT_UCR,
                idempotency_key="bench-hot-top-up",
            )
    for warm_event in fixture.events(warm):
        call(warm_event)
    results = []
    for label, phase_specs, n_threads in (
        ("1 thread", alone, 1),
        (f"{threads} threads, one hot wallet", hot, threads),
        (f"{threads} threads, {threads} wallets", distinct, threads),
    ):
        timing = runner.threaded(
            f"modelbank charge, {label} (postgres)",
            fixture.events(phase_specs),
            n_threads,
            call,
        )
        results.append(timing.result(f"modelbank charge, {label}", "postgres", 1))
    with factory() as s, s.begin():
        balances = [wallets.balance(s, fixture.user_ids[u]) for u in range(threads)]
        broken = [str(v) for v in invariants.check(s)]
        count = (
            s.connection()
            .execute(select(func.count()).select_from(usage_events_table))
            .scalar_one()
        )
    lowest = min(min(b.balance_ucr, b.available_ucr) for b in balances)
    expected = len(warm) + sum(r.events for r in results) - errors[0]
    if count != expected:
        broken.append(f"usage rows {count} ≠ {expected} charged")
    alone_result, hot_result, distinct_result = results
    return Contention(
        threads,
        alone_result,
        hot_result,
        distinct_result,
        errors=errors[0],
        never_overdrawn=lowest >= 0 and not broken,
        lowest_balance_ucr=lowest,
        hot_balance_ucr=balances[0].balance_ucr,
        broken=broken,
    )


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


def targets(results: dict[str, Result], contention: Contention | None) -> list[Target]:
    """The issue's targets, for the phases that ran."""

    def ratio(key: str, reference: str) -> float:
        ref = results.get(reference)
        return results[key].eps / ref.eps if ref and ref.eps else 0.0

    found: list[Target] = []

    def at_least(name: str, key: str, floor: float, unit: str = "events/s") -> None:
        if key in results:
            eps = results[key].eps
            found.append(Target(f"{name} ≥ {floor:,.0f} {unit}", f"{eps:,.0f}/s", eps >= floor))

    def p99_at_most(name: str, key: str, ceiling: float) -> None:
        if key in results:
            p99 = results[key].p99_ms or 0.0
            found.append(Target(f"{name} p99 ≤ {ceiling:g} ms", f"{p99:.3f} ms", p99 <= ceiling))

    at_least("SQLite charge_batch", "sqlite batch", TARGET_BATCH_EPS)
    if "sqlite batch" in results and "lean batch" in results:
        share = ratio("sqlite batch", "lean batch")
        found.append(
            Target(
                f"SQLite charge_batch ≥ {TARGET_BATCH_VS_LEAN:.0%} of lean batch",
                f"{share:.0%}",
                share >= TARGET_BATCH_VS_LEAN,
            )
        )
    at_least("SQLite charge (in-process)", "sqlite single", TARGET_SINGLE_EPS)
    p99_at_most("SQLite charge", "sqlite single", TARGET_SINGLE_P99_MS)
    at_least("SQLite hold + capture", "sqlite holds", TARGET_HOLD_PAIRS, "pairs/s")
    at_least("PostgreSQL charge, one connection", "postgres single", TARGET_PG_SINGLE_EPS)
    p99_at_most("PostgreSQL charge", "postgres single", TARGET_PG_SINGLE_P99_MS)
    at_least("PostgreSQL charge_batch", "postgres batch", TARGET_PG_BATCH_EPS)
    if contention is not None:
        found.append(
            Target(
                f"PostgreSQL {contention.threads} distinct wallets"
                f" ≥ {TARGET_PG_SCALING:g}x one connection",
                f"{contention.scaling:.2f}x",
                contention.scaling >= TARGET_PG_SCALING,
            )
        )
        found.append(
            Target(
                "PostgreSQL contention: never overdrawn, ledger invariants hold",
                f"lowest balance {contention.lowest_balance_ucr / 1e6:,.0f} cr"
                + (f"; {'; '.join(contention.broken)}" if contention.broken else ""),
                contention.never_overdrawn,
            )
        )
    return found


RAW_OF = {
    "sqlite single": "raw single",
    "sqlite group": "raw single",
    "sqlite batch": "raw batch",
}
# Each modelbank phase against the lean physical limit of the same shape (DESIGN §16):
# one event per transaction against lean 1/txn (on PostgreSQL its one-round-trip form),
# batches against lean batch. Hold pairs compare pairs/s with lean events/s.
LEAN_OF = {
    "raw single": "lean single",
    "raw batch": "lean batch",
    "raw set-based": "lean set-based",
    "sqlite single": "lean single",
    "sqlite group": "lean single",
    "sqlite batch": "lean batch",
    "sqlite seal": "lean batch",
    "sqlite batch+seal": "lean batch",
    "sqlite holds": "lean single",
    "postgres single": "pg lean single",
    "postgres group": "pg lean single",
    "postgres batch": "pg lean batch",
    "postgres seal": "pg lean batch",
    "postgres batch+seal": "pg lean batch",
    "postgres holds": "pg lean single",
    "postgres alone": "pg lean single",
    "postgres hot": "pg lean single",
    "postgres distinct": "pg lean single",
}


def vs(results: dict[str, Result], key: str, table: dict[str, str]) -> float | None:
    reference = results.get(table.get(key, ""))
    if reference is None or not reference.eps:
        return None
    return results[key].eps / reference.eps


def results_table(results: dict[str, Result], config: dict[str, Any]) -> Table:
    table = Table(
        title="Charge throughput",
        caption=(
            f"idempotency keys: {config['keys']}; latency = one whole transaction (session,"
            " BEGIN, charge, COMMIT; a hold pair: both transactions; group commit: one submit);"
            " warm-up excluded; * = stopped at --max-seconds. vs lean: against the lean"
            " physical limit of the same shape (PostgreSQL 1/txn: its one-round-trip form);"
            " vs raw: against raw sqlite3 on our schema"
        ),
    )
    for column in (
        "phase",
        "db",
        "events",
        "events/txn",
        "events/s",
        "vs lean",
        "vs raw",
        "vs set-based",
        "p50 ms",
        "p99 ms",
        "max ms",
    ):
        table.add_column(column, justify="left" if column in ("phase", "db") else "right")
    set_based = results.get("raw set-based")
    for key, r in results.items():
        to_lean, to_raw = vs(results, key, LEAN_OF), vs(results, key, RAW_OF)
        table.add_row(
            r.phase,
            r.backend,
            f"{r.events:,}" + ("*" if r.capped else ""),
            f"{r.per_txn:,}",
            f"{r.eps:,.0f}",
            "" if to_lean is None else f"{to_lean:.0%}",
            "" if to_raw is None else f"{to_raw:.0%}",
            f"{r.eps / set_based.eps:.0%}" if key == "sqlite batch" and set_based else "",
            _fmt_ms(r.p50_ms),
            _fmt_ms(r.p99_ms),
            _fmt_ms(r.max_ms),
        )
    return table


def _fmt_ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def targets_table(found: list[Target]) -> Table:
    table = Table(title="Targets (issue: charge engine)")
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("result")
    for t in found:
        table.add_row(t.name, t.measured, "[green]PASS" if t.passed else "[red]FAIL")
    return table


def contention_line(c: Contention) -> str:
    return (
        f"PostgreSQL contention: 1 thread {c.alone.eps:,.0f}/s, one hot wallet"
        f" {c.hot.eps:,.0f}/s ({c.hot.eps / c.alone.eps if c.alone.eps else 0:.2f}x),"
        f" distinct wallets {c.distinct.eps:,.0f}/s ({c.scaling:.2f}x one connection);"
        f" {'never overdrawn' if c.never_overdrawn else 'OVERDRAWN OR BROKEN'}"
        f" (lowest wallet {c.lowest_balance_ucr / 1e6:,.0f} cr, hot wallet"
        f" {c.hot_balance_ucr / 1e6:,.0f} cr after), failed charges {c.errors}"
        + (f"; broken: {'; '.join(c.broken)}" if c.broken else "")
    )


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Charge throughput: the lean physical limit and raw sqlite3 vs modelbank"
        " charge / charge_batch / group commit / hold + capture, SQLite and PostgreSQL.",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=100_000,
        help="events for the batch phases (lean, raw and charge_batch); default 100,000",
    )
    parser.add_argument(
        "--single-events",
        type=int,
        default=20_000,
        help="events for the one-per-transaction phases (lean, raw, charge, group commit);"
        " default 20,000",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=metering.MAX_BATCH_EVENTS,
        help=f"events per batch transaction (1…{metering.MAX_BATCH_EVENTS}); default 1,000",
    )
    parser.add_argument(
        "--hold-pairs",
        type=int,
        default=5_000,
        help="hold + capture pairs on SQLite; default 5,000 (0: skip the hold phases)",
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
        help="also run the lean reference, charge, charge_batch, group commit, hold pairs and"
        " the contention phase on PostgreSQL, each in a fresh schema",
    )
    parser.add_argument("--pg-events", type=int, default=20_000, help="PostgreSQL batch events")
    parser.add_argument(
        "--pg-single-events",
        type=int,
        default=2_000,
        help="PostgreSQL one-per-transaction events",
    )
    parser.add_argument(
        "--pg-hold-pairs", type=int, default=1_000, help="PostgreSQL hold + capture pairs"
    )
    parser.add_argument(
        "--contention-events",
        type=int,
        default=2_000,
        help="PostgreSQL contention: events per sub-phase (1 thread, one hot wallet, distinct"
        " wallets); default 2,000 (0: skip)",
    )
    parser.add_argument(
        "--contention-threads",
        type=int,
        default=8,
        help="PostgreSQL contention: threads (one connection each); default 8",
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
    if min(args.hold_pairs, args.pg_hold_pairs, args.contention_events) < 0:
        parser.error("--hold-pairs, --pg-hold-pairs and --contention-events must be ≥ 0")
    if args.contention_threads < 1:
        parser.error("--contention-threads must be ≥ 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    err = Console(stderr=True)
    out = Console()
    if not out.is_terminal:
        out = Console(width=170)  # piped: do not squeeze the tables into 80 columns
    rng = random.Random(args.seed)
    warm_single, warm_batch = 300, 2 * args.batch

    def specs(count: int) -> list[Spec]:
        return make_specs(rng, make_keys(rng, args.keys, count))

    # Warm-up keys first: with --keys ordered, every measured key sorts after them.
    warmup_single, warmup_batch = specs(warm_single), specs(warm_batch)
    warmup_holds = warmup_single[:100]
    single_specs, batch_specs = specs(args.single_events), specs(args.events)
    hold_specs = specs(args.hold_pairs)
    config = {
        "events": args.events,
        "single_events": args.single_events,
        "batch": args.batch,
        "hold_pairs": args.hold_pairs,
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
    contention: Contention | None = None
    prices = lean_prices()
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp, runner.progress:
        workdir = Path(tmp)

        def sqlite_lean(name: str, mode: str = "events") -> lean.SqliteLean:
            return lean.SqliteLean(workdir / f"lean-{name}.db", prices, USERS, GRANT_UCR, mode)

        for key, name, mode, phase_specs, warm, per_txn in (
            ("lean single", "single", "events", single_specs, warmup_single, 1),
            ("lean batch", "batch", "events", batch_specs, warmup_batch, args.batch),
            ("lean set-based", "batch, set-based", "set", batch_specs, warmup_batch, args.batch),
        ):
            results[key] = run_lean(
                sqlite_lean(name, mode),
                f"lean sqlite3 {name}",
                "sqlite",
                phase_specs,
                warm,
                per_txn,
                runner,
            )
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
            for key, result in run_seal(fixture, "sqlite", results["sqlite batch"]):
                results[f"sqlite {key}"] = result
        finally:
            fixture.cleanup()
        if args.hold_pairs:
            fixture = sqlite_fixture(workdir, "modelbank-holds")
            try:
                results["sqlite holds"] = run_holds(
                    fixture, "sqlite", hold_specs, warmup_holds, runner
                )
            finally:
                fixture.cleanup()
        if args.postgres:
            url = args.postgres
            # The SQLite phases' events again (a prefix), fresh ones when more are asked.
            pg_single = single_specs[: args.pg_single_events]
            if len(pg_single) < args.pg_single_events:
                pg_single = specs(args.pg_single_events)
            pg_batch = batch_specs[: args.pg_events]
            if len(pg_batch) < args.pg_events:
                pg_batch = specs(args.pg_events)
            pg_holds = hold_specs[: args.pg_hold_pairs]
            if len(pg_holds) < args.pg_hold_pairs:
                pg_holds = specs(args.pg_hold_pairs)
            for key, mode, phase, phase_specs, warm, per_txn in (
                (
                    "pg lean statements",
                    "statements",
                    "lean psycopg single, ~7 round trips",
                    pg_single,
                    warmup_single,
                    1,
                ),
                (
                    "pg lean single",
                    "one",
                    "lean psycopg single, 1 round trip",
                    pg_single,
                    warmup_single,
                    1,
                ),
                (
                    "pg lean batch",
                    "set",
                    "lean psycopg batch, set-based",
                    pg_batch,
                    warmup_batch,
                    args.batch,
                ),
            ):
                results[key] = run_lean(
                    lean.PostgresLean(url, mode, prices, USERS, GRANT_UCR),
                    phase,
                    "postgres",
                    phase_specs,
                    warm,
                    per_txn,
                    runner,
                )
            for key, phase_specs, warm, per_txn in (
                ("postgres single", pg_single, warmup_single, 1),
                ("postgres batch", pg_batch, warmup_batch, args.batch),
            ):
                fixture = postgres_fixture(url, key.split()[1])
                try:
                    results[key] = run_modelbank(
                        fixture, "postgres", phase_specs, warm, per_txn, runner
                    )
                    if per_txn > 1:
                        for sub, result in run_seal(fixture, "postgres", results[key]):
                            results[f"postgres {sub}"] = result
                finally:
                    fixture.cleanup()
            if args.group_threads:
                fixture = postgres_fixture(url, "group")
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
            if args.pg_hold_pairs:
                fixture = postgres_fixture(url, "holds")
                try:
                    results["postgres holds"] = run_holds(
                        fixture, "postgres", pg_holds, warmup_holds, runner
                    )
                finally:
                    fixture.cleanup()
            if args.contention_events:
                fixture = postgres_fixture(url, "contention")
                try:
                    contention = run_contention(
                        fixture, specs, args.contention_events, args.contention_threads, runner
                    )
                finally:
                    fixture.cleanup()
                results["postgres alone"] = contention.alone
                results["postgres hot"] = contention.hot
                results["postgres distinct"] = contention.distinct
    found = targets(results, contention)
    if args.json:
        document = {
            "config": config,
            "results": {
                key: {
                    **r.as_dict(),
                    "vs_lean": _round(vs(results, key, LEAN_OF)),
                    "vs_raw": _round(vs(results, key, RAW_OF)),
                }
                for key, r in results.items()
            },
            "contention": None
            if contention is None
            else {
                "threads": args.contention_threads,
                "one_connection_eps": round(contention.alone.eps, 1),
                "hot_wallet_eps": round(contention.hot.eps, 1),
                "distinct_wallets_eps": round(contention.distinct.eps, 1),
                "distinct_vs_one_connection": round(contention.scaling, 3),
                "never_overdrawn": contention.never_overdrawn,
                "lowest_balance_ucr": contention.lowest_balance_ucr,
                "hot_balance_ucr": contention.hot_balance_ucr,
                "failed_charges": contention.errors,
                "broken": contention.broken,
            },
            "targets": [
                {"target": t.name, "measured": t.measured, "pass": t.passed} for t in found
            ],
        }
        out.print_json(data=document)
        return 0
    out.print(results_table(results, config))
    if contention is not None:
        out.print(contention_line(contention))
    out.print(targets_table(found))
    for name, stats in sql_stats.items():
        key = f"sqlite {name}"
        out.print(stats.table(f"SQL statements, modelbank {name} (SQLite)", results[key].seconds))
    out.print(
        f"[dim]{config['users']} users, {config['models']} models with a creator;"
        f" SQLite {config['sqlite']}, Python {config['python']}, {config['cpus']} CPUs."
        " SQLite phases: a fresh file each, WAL, synchronous=NORMAL, foreign_keys=ON."
        " Lean = the physical limit of a full charge on a minimal schema (DESIGN §16);"
        " raw = the plain driver on our own schema, which carries that schema's costs."
    )
    if args.profile:
        out.print(f"[dim]cProfile output in {args.profile} (figures above include its overhead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
