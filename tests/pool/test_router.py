"""The router (DESIGN §9; pool/router.py) against real HTTP calls (httpx on mock transports
and on the fake upstream's ASGI app): candidates, failover before the first byte, caller
errors passed through uncounted, bounded attempts and time, the breaker skipping and probing
a resource, the caches, and the route log (pool/routelog.py)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import insert, select, update

from modelbank.config import Settings
from modelbank.db.engine import read_session_factory
from modelbank.gateway.fake_upstream import FakeUpstreamConfig, create_app
from modelbank.pool import keys, routelog
from modelbank.pool import router as routing
from modelbank.pool.breaker import BreakerPolicy, Outcome, State, UpstreamFailure, classify
from modelbank.pool.health import HealthStore
from modelbank.pool.health_redis import RedisHealthStore
from modelbank.pool.health_sql import SqlHealthStore
from modelbank.pool.models import resource_models_table, resources_table, route_logs_table
from modelbank.pool.router import (
    AllAttemptsFailed,
    NoRoute,
    Router,
    RouteResult,
    Target,
    route_header,
)
from modelbank.secrets import SecretBox
from tests import factories
from tests.conftest import Db
from tests.pool import test_health

BOX = SecretBox(SecretBox.generate_key())
T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
POLICY = BreakerPolicy(failure_threshold=2, cooldown_s=30)


@dataclass
class Pool:
    """A model served by resources ``ids`` (base URL ``http://r<n>.test/v1``, key
    ``keys_by_id``), a clock the test moves, and the router's settings."""

    db: Db
    model_id: int
    ids: list[int]
    keys_by_id: dict[int, str]
    now: list[datetime] = field(default_factory=lambda: [T0])

    def clock(self) -> datetime:
        return self.now[0]

    def router(self, store: HealthStore | None = None, **overrides: Any) -> Router:
        options: dict[str, Any] = {"router_top_k": 1, "router_cache_ttl_s": 0.0}
        options.update(overrides)
        return Router(
            read_session_factory(self.db.engine),
            store or SqlHealthStore(self.db.engine, policy=POLICY),
            BOX,
            Settings(**options),
            rng=random.Random(7),
            clock=self.clock,
        )


def add_resource(db: Db, model_id: int, n: int, **values: Any) -> tuple[int, str]:
    key = f"sk-router-{n}-{uuid.uuid4().hex}"
    token, key_id = keys.seal(BOX, key)
    row = {
        "owner_id": None,
        "provider": "openai",
        "base_url": f"http://r{n}.test/v1",
        "key_encrypted": token,
        "key_id": key_id,
        "key_mask": keys.mask(key),
        "key_fingerprint": keys.fingerprint(key),
        "status": "active",
        "quota_uusd": 10_000_000,
        "market_quota_uusd": 0,
        "consumed_uusd": 0,
        "deposit_credit_ucr": 0,
        "fee_ucr": 0,
        "clawed_back_ucr": 0,
        "created_at": T0,
        "updated_at": T0,
        **values,
    }
    with db.tx() as session:
        rid = int(
            session.execute(
                insert(resources_table).values(**row).returning(resources_table.c.id)
            ).scalar_one()
        )
        session.execute(
            insert(resource_models_table).values(
                resource_id=rid, model_id=model_id, upstream_model=f"upstream-{n}"
            )
        )
    return rid, key


@pytest.fixture
def pool(db: Db) -> Pool:
    with db.tx() as session:
        model_id = factories.model(session, "gpt-4o")
    pairs = [add_resource(db, model_id, n) for n in range(3)]
    return Pool(db, model_id, [rid for rid, _ in pairs], dict(pairs))


Behaviour = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Upstreams:
    """Mock upstreams by host (``r0.test`` …): each answers with its behaviour; every call
    is recorded (host, Authorization header)."""

    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        self.behaviours = behaviours
        self.calls: list[tuple[str, str]] = []
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.url.host, request.headers["authorization"]))
        behaviour = self.behaviours.get(request.url.host, ok)
        return await behaviour(request)

    async def attempt(self, target: Target) -> dict[str, Any]:
        """What the gateway's attempt does: call, classify, return the JSON body."""
        try:
            response = await self.client.post(
                f"{target.base_url}/chat/completions",
                headers={"Authorization": f"Bearer {target.api_key}"},
                json={
                    "model": target.upstream_model,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
        except httpx.HTTPError as error:
            raise classify(error=error) from None
        if response.status_code >= 400:
            raise classify(status=response.status_code, body=response.text)
        body: dict[str, Any] = response.json()
        return body

    @property
    def hosts(self) -> list[str]:
        return [host for host, _ in self.calls]


async def ok(request: httpx.Request) -> httpx.Response:
    model = json.loads(request.content)["model"]
    return httpx.Response(200, json={"model": model, "usage": {"prompt_tokens": 1}})


def status(code: int, body: dict[str, Any] | None = None) -> Behaviour:
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(code, json=body or {"error": {"message": f"status {code}"}})

    return answer


def raises(error: Exception) -> Behaviour:
    async def answer(request: httpx.Request) -> httpx.Response:
        raise error

    return answer


def hangs(seconds: float) -> Behaviour:
    async def answer(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(seconds)
        return httpx.Response(200, json={})

    return answer


def run(upstreams: Upstreams, coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        try:
            return await coro
        finally:
            await upstreams.client.aclose()

    return asyncio.run(main())


def health_of(pool: Pool, rid: int) -> Any:
    return SqlHealthStore(pool.db.engine).snapshot([rid])[rid]


def test_serves_from_the_best_resource_with_its_key(pool: Pool) -> None:
    upstreams = Upstreams({})
    router = pool.router()
    result: RouteResult[dict[str, Any]] = run(
        upstreams, router.route(pool.model_id, upstreams.attempt, request_id="req-1")
    )
    first = pool.ids[0]  # equal scores: the lowest id leads with top_k=1
    assert result.target.resource_id == first
    assert result.value["model"] == "upstream-0"
    assert upstreams.calls == [("r0.test", f"Bearer {pool.keys_by_id[first]}")]
    assert pool.keys_by_id[first] not in repr(result.target)
    assert [a.outcome for a in result.attempts] == [Outcome.SUCCESS]
    assert sorted(c.resource_id for c in result.candidates) == pool.ids
    assert route_header(result) == f"resource={first}; attempts=1; request=req-1"
    health = health_of(pool, first)
    assert (health.breaker.requests, health.in_flight) == (1, 0)
    assert health.latency_ms is not None and health.latency_ms >= 0


@pytest.mark.parametrize(
    "failure",
    [
        status(500),
        status(503),
        status(429),
        status(401),
        raises(httpx.ConnectError("refused")),
        raises(httpx.ReadTimeout("slow")),
        raises(httpx.RemoteProtocolError("reset")),
    ],
)
def test_fails_over_before_the_first_byte(pool: Pool, failure: Behaviour) -> None:
    upstreams = Upstreams({"r0.test": failure})
    result = run(upstreams, pool.router().route(pool.model_id, upstreams.attempt))
    assert upstreams.hosts == ["r0.test", "r1.test"]
    assert result.target.resource_id == pool.ids[1]
    first, second = result.attempts
    assert (first.outcome, second.outcome) == (Outcome.UPSTREAM_FAILURE, Outcome.SUCCESS)
    assert first.failure is not None and first.failure.retryable
    assert route_header(result) == f"resource={pool.ids[1]}; attempts=2"
    failed = health_of(pool, pool.ids[0])
    assert (failed.breaker.failures, failed.in_flight) == (1, 0)


def test_a_refused_key_is_reported_permanent(pool: Pool) -> None:
    upstreams = Upstreams({"r0.test": status(401)})
    result = run(upstreams, pool.router().route(pool.model_id, upstreams.attempt))
    failure = result.attempts[0].failure
    assert failure is not None and (failure.kind, failure.permanent) == ("auth", True)


@pytest.mark.parametrize("code", [400, 404, 413, 422])
def test_a_caller_error_goes_back_at_once_and_never_counts(pool: Pool, code: int) -> None:
    upstreams = Upstreams({"r0.test": status(code)})
    with pytest.raises(UpstreamFailure) as raised:
        run(upstreams, pool.router().route(pool.model_id, upstreams.attempt))
    assert raised.value.caller_error and raised.value.status == code
    assert raised.value.body is not None and f"status {code}" in raised.value.body
    assert upstreams.hosts == ["r0.test"]  # no failover
    assert len(raised.value.attempts) == 1  # type: ignore[attr-defined]
    health = health_of(pool, pool.ids[0])
    assert (health.breaker.requests, health.breaker.failures, health.in_flight) == (0, 0, 0)


def test_attempts_are_bounded(pool: Pool) -> None:
    upstreams = Upstreams({f"r{n}.test": status(500) for n in range(3)})
    with pytest.raises(AllAttemptsFailed) as raised:
        run(upstreams, pool.router(router_max_attempts=2).route(pool.model_id, upstreams.attempt))
    assert upstreams.hosts == ["r0.test", "r1.test"]
    error = raised.value
    assert error.code == "upstream_unavailable"
    assert [a.resource_id for a in error.attempts] == pool.ids[:2]
    assert error.last is not None and error.last.status == 500
    assert len(error.candidates) == 3


def test_total_time_is_bounded(pool: Pool) -> None:
    upstreams = Upstreams({"r0.test": hangs(30)})
    loop_started = datetime.now(UTC)
    with pytest.raises(AllAttemptsFailed) as raised:
        run(upstreams, pool.router(router_deadline_s=0.3).route(pool.model_id, upstreams.attempt))
    assert datetime.now(UTC) - loop_started < timedelta(seconds=5)
    (only,) = raised.value.attempts
    assert only.failure is not None and only.failure.kind == "deadline"
    assert health_of(pool, pool.ids[0]).in_flight == 0


def test_no_route_without_an_active_resource_with_pool_quota_left(pool: Pool) -> None:
    a, b, c = pool.ids
    with pool.db.tx() as session:
        session.execute(
            update(resources_table).where(resources_table.c.id == a).values(status="suspended")
        )
        # the pool part is used up: only the market part (sold elsewhere) is left
        session.execute(
            update(resources_table)
            .where(resources_table.c.id == b)
            .values(market_quota_uusd=4_000_000, consumed_uusd=6_000_000)
        )
        session.execute(
            update(resources_table).where(resources_table.c.id == c).values(status="depleted")
        )
        other_model = factories.model(session, "other-model")
    upstreams = Upstreams({})
    router = pool.router()
    with pytest.raises(NoRoute) as raised:
        run(upstreams, router.route(pool.model_id, upstreams.attempt))
    assert raised.value.code == "no_route" and upstreams.calls == []
    with pytest.raises(NoRoute):
        asyncio.run(router.route(other_model, upstreams.attempt))


def test_quota_left_and_load_steer_the_choice(pool: Pool) -> None:
    a, b, _ = pool.ids
    with pool.db.tx() as session:
        session.execute(
            update(resources_table)
            .where(resources_table.c.id.in_([a, pool.ids[2]]))
            .values(consumed_uusd=9_000_000)
        )
    upstreams = Upstreams({})
    result = run(upstreams, pool.router().route(pool.model_id, upstreams.attempt))
    assert result.target.resource_id == b
    scores = {s.resource_id: s.score for s in result.candidates}
    assert scores[b] > scores[a]


def _open(pool: Pool, rid: int) -> None:
    store = SqlHealthStore(pool.db.engine, policy=POLICY)
    for _ in range(POLICY.failure_threshold):
        ticket = store.begin(rid, now=pool.clock())
        assert ticket is not None
        store.finish(ticket, Outcome.UPSTREAM_FAILURE, latency_ms=1.0, now=pool.clock())


def test_an_open_breaker_is_skipped_then_probed_after_the_cooldown(pool: Pool) -> None:
    a, b, _ = pool.ids
    _open(pool, a)
    upstreams = Upstreams({})
    router = pool.router()

    async def scenario() -> list[RouteResult[dict[str, Any]]]:
        skipped = await router.route(pool.model_id, upstreams.attempt)
        pool.now[0] = T0 + timedelta(seconds=POLICY.cooldown_s)
        probed = await router.route(pool.model_id, upstreams.attempt)
        after = await router.route(pool.model_id, upstreams.attempt)
        return [skipped, probed, after]

    skipped, probed, after = run(upstreams, scenario())
    assert skipped.target.resource_id == b and len(skipped.attempts) == 1
    assert probed.target.resource_id == a and probed.attempts[0].probe
    assert health_of(pool, a).breaker.state is State.CLOSED
    assert not after.attempts[0].probe


def test_a_failed_probe_reopens_and_the_request_fails_over(pool: Pool) -> None:
    a, b, _ = pool.ids
    _open(pool, a)
    pool.now[0] = T0 + timedelta(seconds=POLICY.cooldown_s)
    upstreams = Upstreams({"r0.test": status(502)})
    result = run(upstreams, pool.router().route(pool.model_id, upstreams.attempt))
    assert upstreams.hosts == ["r0.test", "r1.test"] and result.target.resource_id == b
    assert result.attempts[0].probe
    health = health_of(pool, a)
    assert (health.breaker.state, health.breaker.opened_at) == (State.OPEN, pool.now[0])


def test_two_processes_one_probe(pool: Pool) -> None:
    """Two routers (as two processes) with requests in flight together: only one of them
    sends its request to the half-open resource; the other serves from the next."""
    a, b, _ = pool.ids
    _open(pool, a)
    pool.now[0] = T0 + timedelta(seconds=POLICY.cooldown_s)
    routers = [pool.router(), pool.router()]
    gate = asyncio.Event()

    async def slow_ok(request: httpx.Request) -> httpx.Response:
        await gate.wait()  # hold the probe in flight until both requests were routed
        return await ok(request)

    upstreams = Upstreams({"r0.test": slow_ok})

    async def scenario() -> list[RouteResult[dict[str, Any]]]:
        tasks = [asyncio.create_task(r.route(pool.model_id, upstreams.attempt)) for r in routers]
        while len(upstreams.calls) < 2:
            await asyncio.sleep(0.01)
        gate.set()
        return list(await asyncio.gather(*tasks))

    results = run(upstreams, scenario())
    assert sorted(r.target.resource_id for r in results) == [a, b]
    assert sum(r.attempts[0].probe for r in results) == 1
    assert sorted(upstreams.hosts) == ["r0.test", "r1.test"]


@pytest.mark.parametrize("flush_s", [0.0, 0.1])
def test_a_cancelled_request_ends_its_count(pool: Pool, flush_s: float) -> None:
    """Written through (flush 0) or behind (0.1 s): in flight while it runs, not after."""
    upstreams = Upstreams({"r0.test": hangs(30)})
    router = pool.router(router_health_flush_s=flush_s)

    async def scenario() -> None:
        task = asyncio.create_task(router.route(pool.model_id, upstreams.attempt))
        while not upstreams.calls:
            await asyncio.sleep(0.01)
        await router.flush()
        assert health_of(pool, pool.ids[0]).in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        await router.aclose()

    run(upstreams, scenario())
    health = health_of(pool, pool.ids[0])
    assert (health.in_flight, health.breaker.requests) == (0, 0)


def test_keys_are_decrypted_once_and_candidates_cached(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []
    real = keys.reveal

    def counting(box: SecretBox, token: str, key_id: str) -> str:
        opened.append(1)
        return real(box, token, key_id)

    monkeypatch.setattr(routing.keys, "reveal", counting)
    upstreams = Upstreams({})
    router = pool.router(router_cache_ttl_s=5.0)

    async def scenario() -> list[int]:
        served = [(await router.route(pool.model_id, upstreams.attempt)).target.resource_id]
        with pool.db.tx() as session:  # suspended: another process would see it at once
            session.execute(
                update(resources_table)
                .where(resources_table.c.id == pool.ids[0])
                .values(status="suspended")
            )
        for _ in range(3):
            served.append((await router.route(pool.model_id, upstreams.attempt)).target.resource_id)
        return served

    served = run(upstreams, scenario())
    assert served == [pool.ids[0]] * 4  # the cached candidate list (TTL 5 s)
    assert len(opened) == 1
    fresh = pool.router()  # TTL 0: the suspension counts at once
    upstreams = Upstreams({})
    assert (
        run(upstreams, fresh.route(pool.model_id, upstreams.attempt)).target.resource_id
        == (pool.ids[1])
    )


def test_this_process_load_counts_before_the_next_snapshot(pool: Pool) -> None:
    """With a long cache TTL, requests in flight in this process still spread the load."""
    gate = asyncio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return await ok(request)

    upstreams = Upstreams({f"r{n}.test": held for n in range(3)})
    router = pool.router(router_cache_ttl_s=5.0, router_weights={"load": 100})

    async def scenario() -> list[int]:
        tasks = [
            asyncio.create_task(router.route(pool.model_id, upstreams.attempt)) for _ in range(3)
        ]
        while len(upstreams.calls) < 3:
            await asyncio.sleep(0.01)
        gate.set()
        return [(await t).target.resource_id for t in tasks]

    assert sorted(run(upstreams, scenario())) == pool.ids


def test_through_the_fake_upstream(pool: Pool) -> None:
    """Real OpenAI-shaped HTTP: a failing fake upstream (500 every time) and a healthy one."""
    failing = create_app(FakeUpstreamConfig(error_rate=1.0, error_kind="500"))
    healthy = create_app(FakeUpstreamConfig())
    client = httpx.AsyncClient(
        mounts={
            "http://r0.test": httpx.ASGITransport(app=failing),
            "http://r1.test": httpx.ASGITransport(app=healthy),
            "http://r2.test": httpx.ASGITransport(app=healthy),
        }
    )
    upstreams = Upstreams({})
    upstreams.client = client
    result = run(upstreams, pool.router().route(pool.model_id, upstreams.attempt))
    assert result.target.resource_id == pool.ids[1]
    assert [a.status for a in result.attempts] == [500, None]
    assert result.value["model"] == "upstream-1"


def test_route_log_rows(pool: Pool) -> None:
    with pool.db.tx() as session:
        user = factories.user(session, "ada")
        other = factories.user(session, "bob")
    upstreams = Upstreams({"r0.test": status(500)})
    result = run(upstreams, pool.router().route(pool.model_id, upstreams.attempt))
    entry = routelog.RouteLogEntry(
        request_id="req-log-1",
        user_id=user,
        model_id=pool.model_id,
        endpoint="chat",
        outcome="served",
        candidates=result.candidates,
        attempts=result.attempts,
        resource_id=result.target.resource_id,
        charge_ucr=1_234,
        cost_uusd=56,
        latency_ms=12.5,
    )
    with pool.db.tx() as session:
        first = routelog.write(session, entry)
        assert routelog.write(session, entry) == first  # a retried settle changes nothing
        routelog.write(
            session,
            routelog.RouteLogEntry(
                request_id="req-log-2",
                user_id=other,
                model_id=pool.model_id,
                endpoint="chat",
                outcome="no_route",
            ),
        )
    with pool.db.tx() as session:
        served = routelog.list_for_resource(session, pool.ids[1])
        assert [r.request_id for r in served] == ["req-log-1"]
        row = served[0]
        assert [a["outcome"] for a in row.attempts] == ["upstream_failure", "success"]
        assert [a["status"] for a in row.attempts] == [500, None]
        assert {c["resource_id"] for c in row.candidates} == set(pool.ids)
        assert all(0 <= c["score"] <= 1 for c in row.candidates)
        assert (row.charge_ucr, row.cost_uusd, row.outcome) == (1_234, 56, "served")
        assert [r.request_id for r in routelog.list_for_user(session, other)] == ["req-log-2"]
        assert routelog.list_for_user(session, user, after_id=first) == []
        assert routelog.list_for_resource(session, pool.ids[0]) == []
        stored = json.dumps(
            [list(r) for r in session.execute(select(route_logs_table))], default=str
        )
    for key in pool.keys_by_id.values():
        assert key not in stored
    with pytest.raises(ValueError, match="outcome"), pool.db.tx() as session:
        routelog.write(session, routelog.RouteLogEntry("x", user, None, "chat", "weird"))


@pytest.fixture(autouse=True)
def _no_leaked_keys(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    assert "sk-router-" not in caplog.text


REDIS_URL = test_health.REDIS_URL
redis_prefix = test_health.redis_prefix  # the fixture: a key prefix, cleaned up after


def test_the_breaker_shared_through_redis(pool: Pool, redis_prefix: str) -> None:
    """Two routers (processes) sharing Redis: one trips the breaker, the other skips it."""
    store = RedisHealthStore(REDIS_URL, policy=POLICY, prefix=redis_prefix)
    only_cost = {"cost": 1, "latency": 0, "ttft": 0, "success": 0, "load": 0, "quota": 0}
    first = pool.router(store, router_weights=only_cost)  # ties: r0 leads every time
    second = pool.router(RedisHealthStore(REDIS_URL, policy=POLICY, prefix=redis_prefix))
    upstreams = Upstreams({"r0.test": status(500)})

    async def scenario() -> RouteResult[dict[str, Any]]:
        for _ in range(POLICY.failure_threshold):
            await first.route(pool.model_id, upstreams.attempt)
        await first.flush()
        return await second.route(pool.model_id, upstreams.attempt)

    result = run(upstreams, scenario())
    assert result.target.resource_id == pool.ids[1] and len(result.attempts) == 1
    assert store.snapshot([pool.ids[0]])[pool.ids[0]].breaker.state is State.OPEN
    store.close()


class _AwayStore:
    """A store whose writes fail until ``back`` is set (the database restarting)."""

    def __init__(self, store: SqlHealthStore) -> None:
        self.store = store
        self.policy = store.policy
        self.back = False
        self.begin = store.begin
        self.finish = store.finish
        self.snapshot = store.snapshot

    def record(self, deltas: Any) -> Any:
        if not self.back:
            raise ConnectionError("database away")
        return self.store.record(deltas)


def test_health_written_behind_survives_a_store_outage(pool: Pool) -> None:
    away = _AwayStore(SqlHealthStore(pool.db.engine, policy=POLICY))
    router = pool.router(away)
    upstreams = Upstreams({"r0.test": status(500)})

    async def scenario() -> None:
        await router.route(pool.model_id, upstreams.attempt)
        await router.flush()  # fails: kept for later
        assert health_of(pool, pool.ids[0]).breaker.requests == 0
        away.back = True
        await router.flush()

    run(upstreams, scenario())
    failed, served = health_of(pool, pool.ids[0]), health_of(pool, pool.ids[1])
    assert (failed.breaker.failures, failed.in_flight) == (1, 0)
    assert (served.breaker.requests, served.in_flight) == (1, 0)


@pytest.mark.parametrize("flush_s", [0.0, 0.1])
def test_a_failure_after_the_first_byte_is_reported_not_retried(pool: Pool, flush_s: float) -> None:
    upstreams = Upstreams({})
    router = pool.router(router_health_flush_s=flush_s)

    async def scenario() -> RouteResult[dict[str, Any]]:
        result = await router.route(pool.model_id, upstreams.attempt)
        # the stream broke mid-way: the gateway reports it; a caller error would count nothing
        await router.report(result.target.resource_id, classify(error=httpx.ReadError("reset")))
        await router.report(result.target.resource_id, classify(status=400))
        await router.aclose()
        return result

    result = run(upstreams, scenario())
    assert upstreams.hosts == ["r0.test"]
    health = health_of(pool, result.target.resource_id)
    assert (health.breaker.requests, health.breaker.failures, health.in_flight) == (2, 1, 0)


def test_route_header_of_refusals(pool: Pool) -> None:
    upstreams = Upstreams({f"r{n}.test": status(503) for n in range(3)})
    with pytest.raises(AllAttemptsFailed) as raised:
        run(upstreams, pool.router().route(pool.model_id, upstreams.attempt))
    assert route_header(raised.value, "req-9") == "resource=none; attempts=3; request=req-9"
    assert route_header(NoRoute("none", model_id=1)) == "resource=none; attempts=0"
    upstreams = Upstreams({"r0.test": status(422)})
    with pytest.raises(UpstreamFailure) as caller:
        run(upstreams, pool.router().route(pool.model_id, upstreams.attempt))
    assert route_header(caller.value) == "resource=none; attempts=1"


class _SlowStore(_AwayStore):
    """Writes wait for ``release`` (a flush caught in the middle of its transaction)."""

    def __init__(self, store: SqlHealthStore) -> None:
        super().__init__(store)
        self.back = True
        self.writing = threading.Event()
        self.release = threading.Event()

    def record(self, deltas: Any) -> Any:
        self.writing.set()
        assert self.release.wait(10)
        return super().record(deltas)


def test_a_snapshot_never_misses_results_being_written(pool: Pool) -> None:
    """A snapshot read while a flush is being written would see neither the results taken
    out of the pending deltas nor (before the commit) the store's copy of them: reads wait
    for the write, so a breaker this process tripped stays open in its view."""
    slow = _SlowStore(SqlHealthStore(pool.db.engine, policy=POLICY))
    only_cost = {"cost": 1, "latency": 0, "ttft": 0, "success": 0, "load": 0, "quota": 0}
    router = pool.router(slow, router_weights=only_cost)
    upstreams = Upstreams({"r0.test": status(500)})

    async def scenario() -> State:
        for _ in range(POLICY.failure_threshold):
            await router.route(pool.model_id, upstreams.attempt)
        flushing = asyncio.create_task(router.flush())
        await anyio.to_thread.run_sync(slow.writing.wait)
        reading = asyncio.create_task(router.candidates(pool.model_id))
        await asyncio.sleep(0.05)
        assert not reading.done()  # waits for the write
        slow.release.set()
        await flushing
        pairs = await reading
        return {row.resource_id: h for row, h in pairs}[pool.ids[0]].breaker.state

    assert run(upstreams, scenario()) is State.OPEN
