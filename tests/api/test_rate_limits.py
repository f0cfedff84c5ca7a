"""Rate limits (issue 16 part 7): per key and per user, requests per second and tokens per
minute, the user's limits by the plan of their balance; 429 problem+json with Retry-After on
/api/v1, OpenAI's 429 on /v1; counters in memory (SQLite), the database (PostgreSQL) or
Redis. The clock is pinned so that every request of a test falls in one window."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, insert

from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.config import load_settings
from modelbank.ratelimits.models import rate_limit_plans_table as plans
from modelbank.ratelimits.service import Limiter
from modelbank.ratelimits.store import DatabaseStore, Hit, MemoryStore, RedisStore
from tests.api.conftest import TEST_SECRET_KEY, Api, bearer, problem
from tests.conftest import Db
from tests.pool.test_health import REDIS_URL, _redis_available

V1 = "/api/v1"
NOW = 1_800_000_000.25
"""A pinned clock, 0.25 s into a minute (1.8e9 % 60 == 0); tests move it."""
CREDIT = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limited(db: Db) -> Iterator[tuple[Api, Clock]]:
    """The app with rate limits on: 6 requests/s per key; plans: under 10 credits 3
    requests/s and 100 tokens/min, from 10 credits 5/s and 1,000 tokens/min."""
    with db.tx() as session:
        session.execute(delete(plans))
        session.execute(
            insert(plans),
            [
                {"name": "low", "min_balance_ucr": 0, "requests_per_s": 3, "tokens_per_min": 100},
                {
                    "name": "rich",
                    "min_balance_ucr": 10 * CREDIT,
                    "requests_per_s": 5,
                    "tokens_per_min": 1_000,
                },
            ],
        )
        admin = auth.create_key(session, auth.Role.ADMIN, name="admin").secret
        service = auth.create_key(session, auth.Role.SERVICE, name="service").secret
    settings = load_settings(
        database_url=db.url,
        secret_key=TEST_SECRET_KEY,
        rate_limits=True,
        rate_limit_key_requests_per_s=6,
    )
    app = create_app(settings, engine=db.engine)
    limiter: Limiter = app.state.db.limiter
    clock = Clock()
    limiter.clock = clock
    expected = DatabaseStore if db.backend == "postgres" else MemoryStore
    assert isinstance(limiter.store, expected)
    with TestClient(app) as client:
        yield Api(client, db, bearer(admin), bearer(service)), clock


def _user(api: Api, clock: Clock, name: str, credits: int = 0) -> tuple[int, dict[str, str]]:
    clock.now += 1  # the admin's set-up requests count against the admin key
    uid, headers = api.user(name, credits_ucr=credits * CREDIT)
    clock.now += 1
    return uid, headers


def test_a_key_over_its_requests_per_second_gets_429_with_retry_after(
    limited: tuple[Api, Clock],
) -> None:
    api, clock = limited
    clock.now += 1
    for _ in range(6):
        assert api.client.get(f"{V1}/models", headers=api.service).status_code == 200
    r = api.client.get(f"{V1}/models", headers=api.service)
    body = problem(r, 429, "rate_limited")
    assert r.headers["retry-after"] == "1"
    assert body["limit"] == "key_requests_per_s"
    assert api.client.get(f"{V1}/models", headers=api.admin).status_code == 200  # another key
    clock.now += 1  # the next second
    assert api.client.get(f"{V1}/models", headers=api.service).status_code == 200


def test_a_users_limits_follow_the_plan_of_their_balance(limited: tuple[Api, Clock]) -> None:
    api, clock = limited
    _, poor = _user(api, clock, "poor")
    _, rich = _user(api, clock, "rich", credits=20)
    for _ in range(3):
        assert api.client.get(f"{V1}/models", headers=poor).status_code == 200
    body = problem(api.client.get(f"{V1}/models", headers=poor), 429, "rate_limited")
    assert body["limit"] == "user_requests_per_s" and body["limit_value"] == 3
    assert "low plan" in body["detail"]
    for _ in range(5):
        assert api.client.get(f"{V1}/models", headers=rich).status_code == 200
    body = problem(api.client.get(f"{V1}/models", headers=rich), 429, "rate_limited")
    assert body["limit_value"] == 5 and "rich plan" in body["detail"]


def test_tokens_per_minute_refuse_the_request_after_the_one_that_crossed(
    limited: tuple[Api, Clock],
) -> None:
    api, clock = limited
    api.model("m")
    uid, user = _user(api, clock, "talker", credits=1)  # low plan: 100 tokens/min
    assert api.charge(uid, "m", key="a", input_tokens=60, headers=user).status_code == 201
    assert api.charge(uid, "m", key="b", input_tokens=60, headers=user).status_code == 201
    clock.now += 1
    r = api.client.post(
        f"{V1}/usage",
        json={"user_id": uid, "model": "m", "input_tokens": 1},
        headers={**user, "Idempotency-Key": "c"},
    )
    body = problem(r, 429, "rate_limited")
    assert body["limit"] == "user_tokens_per_min"
    assert r.headers["retry-after"] == str(math.ceil(60 - clock.now % 60))  # the minute's end
    # the service key acting for the user meets the same minute; nothing was charged
    before = api.ledger_state()
    problem(api.charge(uid, "m", key="d", input_tokens=1), 429, "rate_limited")
    assert api.ledger_state() == before
    clock.now += 60
    assert api.charge(uid, "m", key="e", input_tokens=1, headers=user).status_code == 201


def test_the_gateway_answers_openais_429(limited: tuple[Api, Clock]) -> None:
    api, clock = limited
    _, poor = _user(api, clock, "gw")
    for _ in range(3):
        assert api.client.get("/v1/models", headers=poor).status_code == 200
    r = api.client.get("/v1/models", headers=poor)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.json()["error"]["code"] == "rate_limited"


def _stores(db: Db) -> Iterator[Any]:
    yield MemoryStore()
    yield DatabaseStore(db.factory)
    if _redis_available():
        yield RedisStore(REDIS_URL, prefix=f"modelbank:test:{uuid.uuid4().hex}:")


def test_every_store_counts_windows_apart(db: Db) -> None:
    for store in _stores(db):
        first = store.hit([Hit("k:1:r", 10, 1, 2), Hit("u:1:t", 5, 40, 120)])
        second = store.hit([Hit("k:1:r", 10, 1, 2), Hit("u:1:t", 5, 0, 120)])
        other = store.hit([Hit("k:1:r", 11, 1, 2)])
        assert (first, second, other) == ([1, 40], [2, 40], [1]), type(store).__name__
