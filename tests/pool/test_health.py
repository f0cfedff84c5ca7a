"""Shared health stores (DESIGN §9, §14; pool/health*.py), in the database (SQLite and
PostgreSQL) and in Redis: in-flight counts, EWMAs, the breaker's transitions, and the
half-open probe claimed by exactly one of several processes racing for it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from modelbank.db.engine import make_engine
from modelbank.pool.breaker import BreakerPolicy, Outcome, State
from modelbank.pool.health import Delta, Health, HealthStore, Result, health_store
from modelbank.pool.health_redis import RedisHealthStore
from modelbank.pool.health_sql import SqlHealthStore
from modelbank.pool.models import resources_table
from modelbank.secrets import SecretBox
from tests.conftest import Db

REDIS_URL = "redis://127.0.0.1:6379/0"
T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
POLICY = BreakerPolicy(failure_threshold=3, min_requests=10, window=9, cooldown_s=30)
BOX = SecretBox(SecretBox.generate_key())


def add_resources(db: Db, count: int) -> list[int]:
    """``count`` active platform resources, inserted directly (the key sealed)."""
    ids = []
    with db.tx() as session:
        for n in range(count):
            key = f"sk-health-{uuid.uuid4().hex}"
            row = session.execute(
                insert(resources_table)
                .values(
                    owner_id=None,
                    provider="openai",
                    base_url=f"http://upstream-{n}.test/v1",
                    key_encrypted=BOX.encrypt(key),
                    key_id="test",
                    key_mask="sk-…" + key[-4:],
                    key_fingerprint=uuid.uuid4().hex * 2,
                    status="active",
                    quota_uusd=10_000_000,
                    market_quota_uusd=0,
                    consumed_uusd=0,
                    deposit_credit_ucr=0,
                    fee_ucr=0,
                    clawed_back_ucr=0,
                    created_at=T0,
                    updated_at=T0,
                )
                .returning(resources_table.c.id)
            )
            ids.append(int(row.scalar_one()))
    return ids


def _redis_available() -> bool:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError:
        return False
    return True


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    if not _redis_available():
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    prefix = f"mbtest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    store = RedisHealthStore(REDIS_URL, prefix=prefix)
    keys = list(store.client.scan_iter(f"{prefix}*"))
    if keys:
        store.client.delete(*keys)
    store.close()


def _make(kind: str, db: Db, request: pytest.FixtureRequest, *, own_engine: bool) -> HealthStore:
    """A store; ``own_engine``: on its own engine, as another process would have."""
    if kind == "redis":
        return RedisHealthStore(
            REDIS_URL, policy=POLICY, prefix=request.getfixturevalue("redis_prefix")
        )
    engine = make_engine(db.url) if own_engine else db.engine
    if own_engine:
        request.addfinalizer(engine.dispose)
    return SqlHealthStore(engine, policy=POLICY)


@pytest.fixture(params=["sql", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(kind: str, db: Db, request: pytest.FixtureRequest) -> HealthStore:
    return _make(kind, db, request, own_engine=False)


def test_a_resource_never_used_is_healthy(store: HealthStore, db: Db) -> None:
    (rid,) = add_resources(db, 1)
    assert store.snapshot([rid]) == {rid: Health(rid)}
    assert store.snapshot([]) == {}


def test_in_flight_and_latency_ewmas(store: HealthStore, db: Db) -> None:
    a, b = add_resources(db, 2)
    first = store.begin(a, now=T0)
    second = store.begin(a, now=T0)
    other = store.begin(b, now=T0)
    assert first is not None and second is not None and other is not None
    assert {rid: h.in_flight for rid, h in store.snapshot([a, b]).items()} == {a: 2, b: 1}

    after = store.finish(first, Outcome.SUCCESS, latency_ms=100.0, ttft_ms=40.0, now=T0)
    assert (after.in_flight, after.latency_ms, after.ttft_ms) == (1, 100.0, 40.0)
    after = store.finish(second, Outcome.SUCCESS, latency_ms=200.0, now=T0)
    alpha = POLICY.alpha
    assert after.latency_ms == pytest.approx(100 + alpha * 100)
    assert after.ttft_ms == 40.0  # no TTFT measured: unchanged
    # a failure's duration teaches the latency nothing
    store.finish(other, Outcome.UPSTREAM_FAILURE, latency_ms=30_000.0, now=T0)
    snap = store.snapshot([a, b])
    assert snap[a] == after
    assert (snap[a].breaker.requests, snap[a].in_flight) == (2, 0)
    assert snap[b].latency_ms is None
    assert (snap[b].breaker.failures, snap[b].breaker.consecutive_failures) == (1, 1)
    assert snap[b].breaker.success_rate == pytest.approx(1 - alpha)


def _fail(store: HealthStore, rid: int, times: int, now: datetime) -> Health:
    health = Health(rid)
    for _ in range(times):
        ticket = store.begin(rid, now=now)
        assert ticket is not None
        health = store.finish(ticket, Outcome.UPSTREAM_FAILURE, latency_ms=5.0, now=now)
    return health


def test_breaker_opens_half_opens_and_closes(store: HealthStore, db: Db) -> None:
    (rid,) = add_resources(db, 1)
    assert store.begin(rid, probe=True, now=T0) is None  # closed: nothing to probe
    for _ in range(5):  # caller errors never count
        ticket = store.begin(rid, now=T0)
        assert ticket is not None
        store.finish(ticket, Outcome.CALLER_ERROR, latency_ms=3.0, now=T0)
    assert store.snapshot([rid])[rid].breaker.requests == 0

    opened = _fail(store, rid, 3, T0)
    assert (opened.breaker.state, opened.breaker.opened_at) == (State.OPEN, T0)
    assert store.snapshot([rid])[rid].breaker.state is State.OPEN
    assert store.begin(rid, probe=True, now=T0 + timedelta(seconds=29)) is None

    cooled = T0 + timedelta(seconds=30)
    probe = store.begin(rid, probe=True, now=cooled)
    assert probe is not None and probe.probe
    assert store.snapshot([rid])[rid].breaker.state is State.HALF_OPEN
    assert store.begin(rid, probe=True, now=cooled) is None  # one probe at a time

    closed = store.finish(probe, Outcome.SUCCESS, latency_ms=50.0, now=cooled)
    assert (closed.breaker.state, closed.breaker.opened_at) == (State.CLOSED, None)
    assert (closed.breaker.success_rate, closed.in_flight) == (1.0, 0)
    assert store.snapshot([rid])[rid] == closed


def test_a_failed_probe_reopens_a_cancelled_one_frees_the_claim(store: HealthStore, db: Db) -> None:
    (rid,) = add_resources(db, 1)
    _fail(store, rid, 3, T0)
    at = T0 + timedelta(seconds=30)
    probe = store.begin(rid, probe=True, now=at)
    assert probe is not None
    reopened = store.finish(probe, Outcome.UPSTREAM_FAILURE, latency_ms=1.0, now=at)
    assert (reopened.breaker.state, reopened.breaker.opened_at) == (State.OPEN, at)
    assert store.begin(rid, probe=True, now=at + timedelta(seconds=1)) is None

    later = at + timedelta(seconds=30)
    probe = store.begin(rid, probe=True, now=later)
    assert probe is not None
    store.finish(probe, Outcome.CANCELLED, now=later)  # the client left: no verdict
    again = store.begin(rid, probe=True, now=later)
    assert again is not None
    # and a probe whose process died is presumed lost after probe_timeout_s
    lost = later + timedelta(seconds=POLICY.probe_timeout_s)
    assert store.begin(rid, probe=True, now=lost - timedelta(seconds=1)) is None
    assert store.begin(rid, probe=True, now=lost) is not None


def _race(stores: list[HealthStore], rid: int, at: datetime) -> list[bool]:
    """Every store claims the probe of ``rid`` at once (one thread each): who won."""
    start = threading.Barrier(len(stores))
    won: list[bool] = []

    def claim(s: HealthStore) -> None:
        start.wait()
        won.append(s.begin(rid, probe=True, now=at) is not None)

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


def test_two_processes_race_for_the_probe_exactly_one_wins(
    kind: str, db: Db, request: pytest.FixtureRequest
) -> None:
    stores = [_make(kind, db, request, own_engine=True) for _ in range(4)]
    rids = add_resources(db, 5)
    for round_, rid in enumerate(rids):
        _fail(stores[0], rid, 3, T0)
        won = _race(stores, rid, T0 + timedelta(seconds=31 + round_))
        assert sorted(won) == [False, False, False, True], f"round {round_}"
        health = stores[1].snapshot([rid])[rid]
        assert (health.breaker.state, health.in_flight) == (State.HALF_OPEN, 1)


def test_concurrent_attempts_are_all_counted(
    kind: str, db: Db, request: pytest.FixtureRequest
) -> None:
    (rid,) = add_resources(db, 1)
    stores = [_make(kind, db, request, own_engine=True) for _ in range(3)]
    per_thread = 15

    def work(s: HealthStore) -> None:
        for n in range(per_thread):
            ticket = s.begin(rid, now=T0)
            assert ticket is not None
            s.finish(ticket, Outcome.SUCCESS, latency_ms=float(n), now=T0)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    health = stores[0].snapshot([rid])[rid]
    assert health.breaker.requests == per_thread * len(threads)
    assert (health.in_flight, health.breaker.failures) == (0, 0)


def test_health_store_follows_the_settings(db: Db) -> None:
    from modelbank.config import Settings

    sql = health_store(Settings(breaker_failure_threshold=7), db.engine)
    assert isinstance(sql, SqlHealthStore) and sql.policy.failure_threshold == 7
    if _redis_available():
        redis_store = health_store(Settings(redis_url=REDIS_URL), db.engine)
        assert isinstance(redis_store, RedisHealthStore)
        redis_store.close()


def test_record_applies_a_batch_in_order(store: HealthStore, db: Db) -> None:
    """The router's write-behind flush: in-flight deltas and results of several resources
    (rows never written before included), results applied in the order they finished."""
    a, b = add_resources(db, 2)
    fail = Result(Outcome.UPSTREAM_FAILURE, T0, latency_ms=9.0)
    ok = Result(Outcome.SUCCESS, T0, latency_ms=100.0, ttft_ms=20.0)
    fresh = store.record({a: Delta(2, [fail, fail, ok]), b: Delta(0, [fail] * 3)})
    assert fresh == store.snapshot([a, b])
    assert (fresh[a].in_flight, fresh[a].breaker.requests, fresh[a].breaker.failures) == (2, 3, 2)
    assert (fresh[a].breaker.state, fresh[a].breaker.consecutive_failures) == (State.CLOSED, 0)
    assert (fresh[a].latency_ms, fresh[a].ttft_ms) == (100.0, 20.0)
    assert (fresh[b].breaker.state, fresh[b].breaker.opened_at) == (State.OPEN, T0)
    after = store.record({a: Delta(-3, [])})
    assert after[a].in_flight == 0  # never below zero
    assert store.record({}) == {}
