"""Contention never answers 500 (issue 16 D1, D3): racing resolutions of one hold, concurrent
price and earnings-rule edits, concurrent user creation with one external_id.

Each race runs against TWO servers (two apps, each with its own engine and pool, served by
uvicorn on their own ports, like two processes) on one PostgreSQL database, with requests
released together from threads; the last test runs the races against two ``modelbank
serve`` processes. The second of two conflicting writers must get a typed 409, never a 500.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from modelbank.api import create_app
from modelbank.config import load_settings
from modelbank.demo_gateway.servers import serving
from tests.api.conftest import TEST_SECRET_KEY, Api
from tests.conftest import Db

pytestmark = [
    pytest.mark.postgres,
    # FastAPI builds a parameter's schema lazily on a route's first request and silences a
    # pydantic warning with warnings.catch_warnings(), which is not thread-safe: racing first
    # requests can see the suite's "error" filter and fail. Not a defect of a served app.
    pytest.mark.filterwarnings("ignore::pydantic.warnings.UnsupportedFieldAttributeWarning"),
]

TRIALS = 8
"""Hold races per pair: the probe saw 8–9 of 10 trials fail, so 8 catches it surely."""
WRITERS = 12
"""Concurrent admin writers (the probe used 20; 12 fail as reliably and faster)."""


@pytest.fixture
def servers(api: Api, db: Db) -> Iterator[list[str]]:
    """Base URLs of two servers on the test database (PostgreSQL only)."""
    if db.backend != "postgres":
        pytest.skip("row-lock races are a PostgreSQL test (SQLite serialises writers)")
    apps = [
        create_app(load_settings(database_url=db.url, secret_key=TEST_SECRET_KEY)) for _ in range(2)
    ]
    with serving(apps[0], "a") as first, serving(apps[1], "b") as second:
        yield [first, second]
    for app in apps:
        app.state.db.engine.dispose()


def race(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run ``calls`` at once (released by a barrier); their responses in order."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    for r in responses:
        assert r.status_code < 500, r.text
    return Counter(r.status_code for r in responses)


def _post(url: str, headers: dict[str, str], json: Any = None) -> Callable[[], httpx.Response]:
    return lambda: httpx.post(url, headers=headers, json=json, timeout=30)


def test_racing_hold_resolutions_answer_one_success_and_one_409(
    api: Api, servers: list[str]
) -> None:
    model = api.model("race-model")
    user_id, _ = api.user("racer", credits_ucr=10_000_000)
    for trial in range(TRIALS):
        hold = api.client.post(
            f"/api/v1/users/{user_id}/holds",
            json={"amount_ucr": 100_000, "timeout_s": 600, "model": model["id"]},
            headers={**api.service, "Idempotency-Key": f"hold-{trial}"},
        )
        assert hold.status_code == 201, hold.text
        hold_id = hold.json()["id"]
        void = f"/api/v1/holds/{hold_id}/void"
        second: Callable[[], httpx.Response]
        if trial % 2:
            second = _post(
                servers[1] + f"/api/v1/holds/{hold_id}/capture",
                {**api.service, "Idempotency-Key": f"capture-{trial}"},
                {"amount_ucr": 40_000},
            )
        else:
            second = _post(servers[1] + void, {**api.service, "Idempotency-Key": f"v2-{trial}"})
        responses = race(
            [_post(servers[0] + void, {**api.service, "Idempotency-Key": f"v1-{trial}"}), second]
        )
        assert statuses(responses) == Counter({200: 1, 409: 1}), [r.text for r in responses]
        loser = next(r for r in responses if r.status_code == 409)
        assert loser.json()["code"] == "hold_not_pending"
    wallet = api.client.get(f"/api/v1/users/{user_id}/wallet", headers=api.admin).json()
    assert wallet["pending_ucr"] == 0


def test_concurrent_price_and_rule_edits_make_one_version_each(
    api: Api, servers: list[str]
) -> None:
    model = api.model("edited")
    admin = api.admin
    price_calls = [
        (
            lambda i=i: httpx.patch(
                f"{servers[i % 2]}/api/v1/models/{model['id']}",
                headers=admin,
                json={"price": {"input_ucr_per_mtok": 1_000 + i, "output_ucr_per_mtok": 1}},
                timeout=30,
            )
        )
        for i in range(WRITERS)
    ]
    assert statuses(race(price_calls)) == Counter({200: WRITERS})
    rule_calls = [
        (
            lambda i=i: httpx.put(
                f"{servers[i % 2]}/api/v1/models/{model['id']}/earnings-rule",
                headers=admin,
                json={"per_use_ucr": i},
                timeout=30,
            )
        )
        for i in range(WRITERS)
    ]
    assert statuses(race(rule_calls)) == Counter({200: WRITERS})
    history = api.client.get(f"/api/v1/models/{model['id']}/earnings-rule", headers=admin).json()
    versions = sorted(v["version"] for v in history["versions"] if v["version"] > 0)
    assert versions == list(range(1, WRITERS + 1))


def test_concurrent_user_creation_with_one_external_id(api: Api, servers: list[str]) -> None:
    calls = [
        _post(f"{servers[i % 2]}/api/v1/users", api.admin, {"external_id": "twin"})
        for i in range(WRITERS)
    ]
    responses = race(calls)
    assert statuses(responses) == Counter({201: 1, 409: WRITERS - 1})
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"user_exists"}


def test_two_server_processes_race_without_500(api: Api, db: Db) -> None:
    """The same races against two ``modelbank serve`` processes on one database."""
    if db.backend != "postgres":
        pytest.skip("row-lock races are a PostgreSQL test (SQLite serialises writers)")
    from tests.test_crash import _serve

    model = api.model("two-processes")
    user_id, _ = api.user("two-processes", credits_ucr=10_000_000)
    started = [_serve(db), _serve(db)]
    urls = [url for _, url in started]
    try:
        creations = [
            _post(f"{urls[i % 2]}/api/v1/users", api.admin, {"external_id": "process-twin"})
            for i in range(WRITERS)
        ]
        assert statuses(race(creations)) == Counter({201: 1, 409: WRITERS - 1})
        edits = [
            (
                lambda i=i: httpx.put(
                    f"{urls[i % 2]}/api/v1/models/{model['id']}/earnings-rule",
                    headers=api.admin,
                    json={"per_use_ucr": i},
                    timeout=30,
                )
            )
            for i in range(WRITERS)
        ]
        assert statuses(race(edits)) == Counter({200: WRITERS})
        hold = api.client.post(
            f"/api/v1/users/{user_id}/holds",
            json={"amount_ucr": 100_000, "timeout_s": 600, "model": model["id"]},
            headers={**api.service, "Idempotency-Key": "two-processes-hold"},
        ).json()
        voids = [
            _post(
                f"{urls[i]}/api/v1/holds/{hold['id']}/void",
                {**api.service, "Idempotency-Key": f"two-processes-void-{i}"},
            )
            for i in range(2)
        ]
        assert statuses(race(voids)) == Counter({200: 1, 409: 1})
    finally:
        for proc, _ in started:
            proc.terminate()
            proc.wait(30)
