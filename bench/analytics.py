"""Dashboards at scale: the creator and admin analytics on 10 million usage rows.

Run by hand (see bench/README.md)::

    .venv/bin/python bench/analytics.py [--rows 10000000] [--sqlite-only] [--postgres URL]
        [--runs 20] [--contrast-runs 5] [--users 3000] [--models 200] [--creators 50]
        [--days 365] [--seed 7] [--json]

For each backend (a fresh SQLite file in a temp dir; a fresh PostgreSQL schema, dropped at
the end): users, creators, models, prices and stakes are made through the services; then
``--rows`` usage rows spread over ``--days`` UTC days are bulk-loaded (not through the API or
the charge pipeline) together with the three daily rollups, computed during the load exactly
as :mod:`modelbank.metering.rollups` would have maintained them. Then, through the real
service functions, each in its own read transaction as the API runs them:

* ``creator_analytics(30d)`` for the busiest creator (target ≤ 50 ms);
* ``admin_analytics(30d)`` and ``admin_analytics(365d)`` (target ≤ 500 ms);
* for contrast, the creator's 30-day figures as a ``GROUP BY`` over ``usage_events``.

Median and p95 of ``--runs`` runs (after one warm-up run), PASS/FAIL against the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, Index, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from modelbank.analytics import dashboards
from modelbank.catalog import service as catalog
from modelbank.catalog.costs import Mode
from modelbank.catalog.tiers import Tier
from modelbank.db.engine import make_engine, read_session_factory, session_factory
from modelbank.db.migrate import upgrade
from modelbank.earnings import service as earnings
from modelbank.metering.models import usage_events_table as usage
from modelbank.metering.rollups import creator_day_table, model_day_table, user_day_table
from modelbank.pricing import service as pricing
from modelbank.pricing.formulas import Rates
from modelbank.users import service as users

CREATOR_TARGET_MS = 50.0
ADMIN_TARGET_MS = 500.0
TOKEN_PAIRS = 4_096
"""Distinct (input, output) token pairs drawn per run (log-normal), reused by index."""
SQLITE_COMMIT_ROWS = 1_000_000
"""Usage rows per SQLite load transaction."""
USAGE_COLUMNS = (
    "id",
    "idempotency_key",
    "request_hash",
    "user_id",
    "model_id",
    "price_version_id",
    "usage_type",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "units",
    "charge_ucr",
    "cost_uusd",
    "earnings_ucr",
    "margin_ucr",
    "balance_after_ucr",
    "earnings_note",
    "occurred_at",
    "created_at",
)
TYPE_MULTIPLIER = {"chat": (8, 10), "image_generation": (1, 1), "other": (6, 10)}
"""DESIGN §7 default type multipliers as fractions; the default share is 2000 bps."""

console = Console(stderr=True)


@dataclass(frozen=True)
class Spec:
    rows: int
    users: int
    models: int
    creators: int
    days: int
    seed: int


@dataclass
class World:
    """What the services made: user ids (creators first), and per model index its id,
    usage type, price version and beneficiaries ((user id, bps)); per-pair charge tables."""

    user_ids: list[int]
    model_ids: list[int]
    model_type: list[str]
    price_version: list[int]
    beneficiaries: list[list[tuple[int, int]]]
    charge: list[list[int]] = field(default_factory=list)
    cost: list[list[int]] = field(default_factory=list)
    pool: list[list[int]] = field(default_factory=list)
    pairs: list[tuple[int, int]] = field(default_factory=list)
    rates: list[Rates] = field(default_factory=list)


@dataclass
class Figure:
    backend: str
    query: str
    runs: int
    median_ms: float
    p95_ms: float
    target_ms: float | None

    @property
    def result(self) -> str:
        if self.target_ms is None:
            return ""
        return "PASS" if self.p95_ms <= self.target_ms else "FAIL"


@dataclass
class Loaded:
    backend: str
    rows: int
    load_s: float
    model_days: int
    user_days: int
    creator_days: int
    size_mb: float | None


# ---------------------------------------------------------------- the world


def make_world(factory: sessionmaker[Session], spec: Spec, since: datetime) -> World:
    """Users (the first ``creators`` are creators), models (three quarters with a creator,
    one in ten of those split 70/30 with another creator; the rest platform models), prices
    in force since ``since``, through the services."""
    rng = random.Random(spec.seed)
    modes = [
        ("image_generation", Mode.IMAGE_GENERATION) if i % 10 < 2 else ("chat", Mode.CHAT)
        for i in range(spec.models)
    ]
    with factory() as session, session.begin():
        user_ids = [
            users.create_user(session, f"bench-{i}", f"Bench {i}").id for i in range(spec.users)
        ]
        creators = user_ids[: spec.creators]
        world = World(user_ids, [], [], [], [])
        for i in range(spec.models):
            creator = creators[i % len(creators)] if i < spec.models * 3 // 4 else None
            kind, mode = modes[i]
            if kind == "chat" and i % 10 == 2:
                kind = "other"
            info = catalog.create_model(
                session,
                catalog.NewModel(
                    slug=f"bench-model-{i}",
                    name=f"Bench model {i}",
                    provider="openai",
                    mode=mode,
                    tier=Tier.MEDIUM,
                    creator_id=creator,
                    category=("Anime", "Realistic", "Fantasy", "Cartoon", "Other")[i % 5],
                ),
            )
            input_rate = rng.randint(100_000, 20_000_000)
            price = pricing.set_price(
                session,
                info.id,
                tier=Tier.MEDIUM,
                explicit_ucr=Rates(
                    input_per_mtok=Decimal(input_rate),
                    output_per_mtok=Decimal(input_rate * rng.randint(2, 4)),
                    per_unit=Decimal(rng.choice((3, 8, 10)) * 1_000_000),
                ),
                cost_uusd=Rates(input_per_mtok=Decimal(input_rate // 150)),
                effective_from=since,
            )
            shares: list[tuple[int, int]] = [] if creator is None else [(creator, 10_000)]
            if creator is not None and i % 10 == 5:
                other = creators[(i * 7 + 3) % len(creators)]
                if other != creator:
                    shares = [(creator, 7_000), (other, 3_000)]
                    earnings.set_beneficiaries(session, info.id, shares)
            world.model_ids.append(info.id)
            world.model_type.append(kind)
            world.price_version.append(price.id)
            world.beneficiaries.append(shares)
            world.rates.append(price.price_ucr)
    _price_tables(world, rng)
    return world


def _price_tables(world: World, rng: random.Random) -> None:
    """Per model and token pair: charge (µcr), cost (µUSD), earnings pool (µcr)."""
    world.pairs = [
        (max(1, int(rng.lognormvariate(6.5, 1.0))), max(1, int(rng.lognormvariate(5.0, 1.0))))
        for _ in range(TOKEN_PAIRS)
    ]
    for m, rates in enumerate(world.rates):
        kind = world.model_type[m]
        charges = []
        for inp, out in world.pairs:
            if kind == "image_generation":
                charges.append(int(rates.per_unit))
            else:
                exact = inp * rates.input_per_mtok + out * rates.output_per_mtok
                charges.append(int((exact + 500_000) // 1_000_000))
        num, den = TYPE_MULTIPLIER[kind]
        world.charge.append(charges)
        world.cost.append([c * 2 // 3 // 100 for c in charges])
        world.pool.append([(c * 2_000 * num + 5_000 * den) // (10_000 * den) for c in charges])


def zipf_weights(n: int, s: float) -> list[float]:
    """Cumulative Zipf-like weights over n items (item 0 most popular)."""
    total, out = 0.0, []
    for rank in range(1, n + 1):
        total += 1.0 / rank**s
        out.append(total)
    return out


# ---------------------------------------------------------------- generating a day


@dataclass
class DayBatch:
    day: date
    usage: list[tuple[Any, ...]]
    model_day: list[tuple[Any, ...]]
    user_day: list[tuple[Any, ...]]
    creator_day: list[tuple[Any, ...]]


def generate(world: World, spec: Spec, first_day: date) -> Iterator[DayBatch]:
    """``spec.rows`` usage rows over ``spec.days`` days, with each day's rollup rows
    (deterministic from ``spec.seed``)."""
    rng = random.Random(spec.seed + 1)
    user_w = zipf_weights(len(world.user_ids), 0.7)
    model_w = zipf_weights(len(world.model_ids), 1.0)
    users_by_rank = world.user_ids[:]
    rng.shuffle(users_by_rank)
    models_by_rank = list(range(len(world.model_ids)))
    rng.shuffle(models_by_rank)
    tod = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.000000" for s in range(86_400)]
    next_id = 1
    per_day, extra = divmod(spec.rows, spec.days)
    for d in range(spec.days):
        n = per_day + (1 if d < extra else 0)
        day = first_day + timedelta(days=d)
        prefix = day.isoformat() + " "
        payers = rng.choices(users_by_rank, cum_weights=user_w, k=n)
        models = rng.choices(models_by_rank, cum_weights=model_w, k=n)
        pairs = rng.choices(range(TOKEN_PAIRS), k=n)
        seconds = sorted(rng.choices(range(86_400), k=n))
        rows: list[tuple[Any, ...]] = []
        md: dict[int, list[int]] = {}
        ud: dict[tuple[int, int], list[int]] = {}
        cd: dict[tuple[int, int], list[int]] = {}
        for j in range(n):
            u, m, p = payers[j], models[j], pairs[j]
            inp, out = world.pairs[p]
            kind = world.model_type[m]
            units = 1 if kind == "image_generation" else 0
            charge, cost, pool = world.charge[m][p], world.cost[m][p], world.pool[m][p]
            tokens = inp + out
            earned, note = 0, None
            bens = world.beneficiaries[m]
            if not bens:
                note = "no_creator"
            for b, bps in bens:
                if b == u:
                    continue
                part = pool * bps // 10_000
                if part > 0:
                    earned += part
                    c = cd.get((b, m))
                    if c is None:
                        c = cd[(b, m)] = [0, 0, 0]
                    c[0] += 1
                    c[1] += tokens
                    c[2] += part
            if bens and not earned:
                note = "self_usage" if any(b == u for b, _ in bens) else "zero"
            ts = prefix + tod[seconds[j]]
            rows.append(
                (
                    next_id,
                    f"b{next_id:012d}",
                    f"{next_id:064x}",
                    u,
                    world.model_ids[m],
                    world.price_version[m],
                    kind,
                    inp,
                    0,
                    out,
                    units,
                    charge,
                    cost,
                    earned,
                    charge - cost * 100 - earned,
                    0,
                    note,
                    ts,
                    ts,
                )
            )
            next_id += 1
            mm = md.get(m)
            if mm is None:
                mm = md[m] = [0, 0, 0, 0, 0]
            mm[0] += 1
            mm[1] += tokens
            mm[2] += charge
            mm[3] += cost
            mm[4] += earned
            key = (u, m)
            uu = ud.get(key)
            if uu is None:
                uu = ud[key] = [0, 0, 0]
            uu[0] += 1
            uu[1] += tokens
            uu[2] += charge
        ids, kinds, iso = world.model_ids, world.model_type, day.isoformat()
        yield DayBatch(
            day,
            rows,
            [(iso, ids[m], *v, 0, 0) for m, v in md.items()],
            [(iso, u, ids[m], kinds[m], *v, 0) for (u, m), v in ud.items()],
            [(iso, b, ids[m], *v, 0) for (b, m), v in cd.items()],
        )


# ---------------------------------------------------------------- loading


ROLLUPS = (
    (model_day_table, "model_day"),
    (user_day_table, "user_day"),
    (creator_day_table, "creator_day"),
)


def _secondary_indexes() -> list[Index]:
    return [ix for ix in usage.indexes if not ix.unique]


def load_sqlite(path: Path, world: World, spec: Spec, first_day: date) -> tuple[float, int]:
    """Bulk-load through the plain sqlite3 module: foreign keys off, synchronous off, the
    non-unique usage indexes dropped during the load and rebuilt after; ANALYZE at the end.
    Returns (seconds, rows)."""
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA cache_size = -262144")  # 256 MiB
    for ix in _secondary_indexes():
        conn.execute(f"DROP INDEX {ix.name}")
    usage_sql = (
        f"INSERT INTO usage_events ({', '.join(USAGE_COLUMNS)})"
        f" VALUES ({', '.join('?' * len(USAGE_COLUMNS))})"
    )
    rollup_sql = {
        name: f"INSERT INTO {t.name} ({', '.join(c.name for c in t.columns)})"
        f" VALUES ({', '.join('?' * len(t.columns))})"
        for t, name in ROLLUPS
    }
    loaded = pending = 0
    conn.execute("BEGIN")
    with _progress("SQLite load", spec.rows) as (progress, task):
        for batch in generate(world, spec, first_day):
            conn.executemany(usage_sql, batch.usage)
            conn.executemany(rollup_sql["model_day"], batch.model_day)
            conn.executemany(rollup_sql["user_day"], batch.user_day)
            conn.executemany(rollup_sql["creator_day"], batch.creator_day)
            loaded += len(batch.usage)
            pending += len(batch.usage)
            if pending >= SQLITE_COMMIT_ROWS:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
                pending = 0
            progress.update(task, completed=loaded)
    conn.execute("COMMIT")
    with console.status("SQLite: rebuilding usage indexes, ANALYZE…"):
        for ix in _secondary_indexes():
            columns = ", ".join(c.name for c in ix.columns)
            conn.execute(f"CREATE INDEX {ix.name} ON usage_events ({columns})")
        conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - started, loaded


def load_postgres(engine: Engine, world: World, spec: Spec, first_day: date) -> tuple[float, int]:
    """Bulk-load with COPY (psycopg ``cursor.copy``), foreign-key triggers off for the
    session (``session_replication_role = replica``), the non-unique usage indexes dropped
    during the load and rebuilt after, the id sequence moved past the ids, ANALYZE.
    Returns (seconds, rows)."""
    started = time.perf_counter()
    raw = engine.raw_connection()
    try:
        conn: Any = raw.driver_connection
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("SET session_replication_role = replica")
            for ix in _secondary_indexes():
                cur.execute(f"DROP INDEX {ix.name}")
            conn.commit()
            loaded = 0
            usage_copy = f"COPY usage_events ({', '.join(USAGE_COLUMNS)}) FROM STDIN"
            with _progress("PostgreSQL load", spec.rows) as (progress, task):
                for batch in generate(world, spec, first_day):
                    with cur.copy(usage_copy) as copy:
                        for row in batch.usage:
                            copy.write_row(row)
                    for table, name in ROLLUPS:
                        columns = ", ".join(c.name for c in table.columns)
                        with cur.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                            for row in getattr(batch, name):
                                copy.write_row(row)
                    loaded += len(batch.usage)
                    if loaded % SQLITE_COMMIT_ROWS < len(batch.usage):
                        conn.commit()
                    progress.update(task, completed=loaded)
            conn.commit()
            with console.status("PostgreSQL: rebuilding usage indexes, ANALYZE…"):
                for ix in _secondary_indexes():
                    columns = ", ".join(c.name for c in ix.columns)
                    cur.execute(f"CREATE INDEX {ix.name} ON usage_events ({columns})")
                cur.execute(
                    "SELECT setval(pg_get_serial_sequence('usage_events', 'id'),"
                    " (SELECT max(id) FROM usage_events))"
                )
                conn.commit()
                conn.autocommit = True
                cur.execute("ANALYZE")
    finally:
        raw.close()
    return time.perf_counter() - started, loaded


class _progress:
    def __init__(self, label: str, total: int) -> None:
        self.bar = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.bar.add_task(label, total=total)

    def __enter__(self) -> tuple[Progress, Any]:
        self.bar.start()
        return self.bar, self.task

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


# ---------------------------------------------------------------- timing


def timed(call: Callable[[], object], runs: int) -> tuple[float, float]:
    """(median, p95) milliseconds of ``runs`` calls after one warm-up call."""
    call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, max(0, round(0.95 * len(samples)) - 1))]
    return statistics.median(samples), p95


def measure(
    engine: Engine, backend: str, world: World, runs: int, contrast_runs: int
) -> list[Figure]:
    reads = read_session_factory(engine)
    with reads() as session, session.begin():
        creator = int(
            session.execute(
                select(creator_day_table.c.user_id)
                .group_by(creator_day_table.c.user_id)
                .order_by(func.sum(creator_day_table.c.uses).desc())
                .limit(1)
            ).scalar_one()
        )
        last_day = select(func.max(user_day_table.c.day)).scalar_subquery()
        payer = int(
            session.execute(
                select(user_day_table.c.user_id)
                .where(user_day_table.c.day == last_day)
                .group_by(user_day_table.c.user_id)
                .order_by(func.sum(user_day_table.c.uses).desc())
                .limit(1)
            ).scalar_one()
        )
        end = session.execute(select(func.max(model_day_table.c.day))).scalar_one()
    end_day = end if isinstance(end, date) else date.fromisoformat(str(end))
    now = datetime.combine(end_day, datetime.min.time(), UTC) + timedelta(hours=23)
    own = [
        world.model_ids[m]
        for m, bens in enumerate(world.beneficiaries)
        if any(b == creator for b, _ in bens)
    ]
    since = datetime.combine(end_day - timedelta(days=29), datetime.min.time(), UTC)

    def in_read(fn: Callable[[Session], object]) -> Callable[[], object]:
        def call() -> object:
            with reads() as session, session.begin():
                return fn(session)

        return call

    def contrast(session: Session) -> object:
        day = func.date(usage.c.created_at)
        return session.execute(
            select(
                day,
                usage.c.model_id,
                func.count(),
                func.sum(usage.c.input_tokens + usage.c.output_tokens),
                func.sum(usage.c.earnings_ucr),
            )
            .where(usage.c.model_id.in_(own), usage.c.created_at >= since)
            .group_by(day, usage.c.model_id)
        ).all()

    cases: list[tuple[str, Callable[[Session], object], float | None, int]] = [
        (
            f"creator_analytics 30d (user {creator}, {len(own)} models)",
            lambda s: dashboards.creator_analytics(s, creator, "30d", now=now),
            CREATOR_TARGET_MS,
            runs,
        ),
        (
            "admin_analytics 30d",
            lambda s: dashboards.admin_analytics(s, "30d", now=now),
            ADMIN_TARGET_MS,
            runs,
        ),
        (
            "admin_analytics 365d",
            lambda s: dashboards.admin_analytics(s, "365d", now=now),
            ADMIN_TARGET_MS,
            runs,
        ),
        (
            f"user_analytics 30d (user {payer}, the busiest)",
            lambda s: dashboards.user_analytics(s, payer, "30d", now=now),
            None,
            runs,
        ),
        ("contrast: creator 30d GROUP BY over usage_events", contrast, None, contrast_runs),
    ]
    figures = []
    for label, fn, target, n in cases:
        with console.status(f"{backend}: timing {label}…"):
            median, p95 = timed(in_read(fn), n)
        figures.append(Figure(backend, label, n, median, p95, target))
    return figures


def rollup_sizes(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        found = [
            int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t, _ in ROLLUPS
        ]
    return found[0], found[1], found[2]


# ---------------------------------------------------------------- backends


def run_sqlite(spec: Spec, args: argparse.Namespace) -> tuple[Loaded, list[Figure]]:
    with tempfile.TemporaryDirectory(prefix="mb-analytics-") as tmp:
        path = Path(args.keep or tmp) / "bench.db"
        if path.exists():
            raise SystemExit(f"{path} exists: pass an empty --keep directory")
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine)
        first_day, since = _span(spec)
        world = make_world(session_factory(engine), spec, since)
        engine.dispose()
        seconds, rows = load_sqlite(path, world, spec, first_day)
        engine = make_engine(f"sqlite:///{path}")
        try:
            figures = measure(engine, "sqlite", world, args.runs, args.contrast_runs)
            sizes = rollup_sizes(engine)
        finally:
            engine.dispose()
        size_mb = sum(p.stat().st_size for p in path.parent.glob("bench.db*")) / 2**20
    return Loaded("sqlite", rows, seconds, *sizes, size_mb), figures


def run_postgres(spec: Spec, args: argparse.Namespace) -> tuple[Loaded, list[Figure]]:
    url = args.postgres
    schema = f"mb_bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        upgrade(engine)
        first_day, since = _span(spec)
        world = make_world(session_factory(engine), spec, since)
        seconds, rows = load_postgres(engine, world, spec, first_day)
        figures = measure(engine, "postgres", world, args.runs, args.contrast_runs)
        sizes = rollup_sizes(engine)
        with engine.connect() as conn:
            size = conn.execute(
                text(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = :s AND c.relkind = 'r'"
                ),
                {"s": schema},
            ).scalar_one()
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    return Loaded("postgres", rows, seconds, *sizes, int(size or 0) / 2**20), figures


def _span(spec: Spec) -> tuple[date, datetime]:
    """(first loaded day, price in force since): the ``days`` days ending yesterday."""
    today = datetime.now(UTC).date()
    first = today - timedelta(days=spec.days)
    return first, datetime.combine(first, datetime.min.time(), UTC) - timedelta(days=1)


# ---------------------------------------------------------------- main


def report(loads: Sequence[Loaded], figures: Sequence[Figure], spec: Spec) -> None:
    out = Console(width=150)
    loaded = Table(title="Bulk load (usage rows + their daily rollups)")
    for name in (
        "db",
        "usage rows",
        "load s",
        "rows/s",
        "model days",
        "user days",
        "creator days",
        "size MB",
    ):
        loaded.add_column(name, justify="right")
    for x in loads:
        loaded.add_row(
            x.backend,
            f"{x.rows:,}",
            f"{x.load_s:.1f}",
            f"{x.rows / x.load_s:,.0f}",
            f"{x.model_days:,}",
            f"{x.user_days:,}",
            f"{x.creator_days:,}",
            "" if x.size_mb is None else f"{x.size_mb:,.0f}",
        )
    out.print(loaded)
    timing = Table(title="Dashboard queries (each in its own read transaction)")
    for name in ("db", "query", "runs", "median ms", "p95 ms", "target", "result"):
        timing.add_column(name, justify="left" if name == "query" else "right")
    for f in figures:
        timing.add_row(
            f.backend,
            f.query,
            str(f.runs),
            f"{f.median_ms:.1f}",
            f"{f.p95_ms:.1f}",
            "" if f.target_ms is None else f"≤ {f.target_ms:.0f} ms (p95)",
            f.result,
        )
    out.print(timing)
    out.print(
        f"{spec.users:,} users ({spec.creators} creators), {spec.models} models, {spec.days}"
        f" days, seed {spec.seed}; SQLite {sqlite3.sqlite_version},"
        f" Python {sys.version.split()[0]}, {os.cpu_count()} CPUs",
        highlight=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=3_000)
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--creators", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--contrast-runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "MODELBANK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print figures as JSON")
    parser.add_argument(
        "--keep", metavar="DIR", help="load SQLite into DIR/bench.db and keep it (to explore)"
    )
    args = parser.parse_args(argv)
    spec = Spec(args.rows, args.users, args.models, args.creators, args.days, args.seed)
    if spec.creators > spec.users or spec.rows < spec.days:
        parser.error("need creators ≤ users and rows ≥ days")
    loads, figures = [], []
    for run in (run_sqlite,) if args.sqlite_only else (run_sqlite, run_postgres):
        loaded, found = run(spec, args)
        loads.append(loaded)
        figures.extend(found)
    if args.json:
        print(
            json.dumps(
                {
                    "spec": asdict(spec),
                    "loads": [asdict(x) for x in loads],
                    "figures": [{**asdict(f), "result": f.result} for f in figures],
                },
                indent=2,
            )
        )
    else:
        report(loads, figures, spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
