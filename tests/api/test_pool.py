"""The resource pool over HTTP (DESIGN §9): deposits probed through an injected upstream,
credits to the µcr, refused and unreachable keys, duplicates (also racing), withdrawal,
platform keys, the admin panel, isolation, and the key never shown or logged."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from modelbank.db.models import metadata
from modelbank.metering.models import usage_events_table
from modelbank.pool import invariants, routelog
from tests.api.conftest import Api, problem

KEY = "sk-live-a1b2c3d4e5f6g7h8i9j0-7f3a"
"""The depositor's provider key: it must never come back out."""
V1 = "/api/v1"


@dataclass
class Upstream:
    """An OpenAI-compatible provider behind httpx.MockTransport: ``/models`` answers 200
    for the keys it knows, 401 otherwise; ``down`` makes every call a connect error."""

    keys: set[str] = field(default_factory=lambda: {KEY, "sk-other-key-0000000000"})
    down: bool = False
    calls: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.down:
            raise httpx.ConnectError("connection refused")
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.keys:
            return httpx.Response(401, json={"error": {"message": "Incorrect API key"}})
        return httpx.Response(200, json={"object": "list", "data": [{"id": "gpt-4o"}]})


@pytest.fixture
def upstream(api: Api) -> Iterator[Upstream]:
    fake = Upstream()
    app = api.client.app
    app.state.db.pool_http_client = httpx.AsyncClient(  # type: ignore[attr-defined]
        transport=httpx.MockTransport(fake)
    )
    yield fake


def body(**fields: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": "https://api.openai.example/v1",
        "api_key": KEY,
        "models": [{"model": "gpt-4o", "upstream_model": "gpt-4o-2024-08-06"}],
        "quota_uusd": 10_000_000,
        "market_quota_uusd": 2_000_000,
        **fields,
    }


def deposit(api: Api, user_id: int, headers: dict[str, str], key: str, **fields: Any) -> Any:
    return api.client.post(
        f"{V1}/users/{user_id}/resources",
        json=body(**fields),
        headers={**headers, "Idempotency-Key": key},
    )


def wallet(api: Api, user_id: int) -> int:
    r = api.client.get(f"{V1}/users/{user_id}/wallet", headers=api.admin)
    return int(r.json()["balance_ucr"])


@pytest.fixture
def people(api: Api) -> tuple[int, dict[str, str], int, dict[str, str]]:
    api.model("gpt-4o")
    a, a_headers = api.user("alice")
    b, b_headers = api.user("bob")
    return a, a_headers, b, b_headers


def _pool_ok(api: Api) -> None:
    with api.db.tx() as s:
        assert invariants.check(s) == []


def test_deposit_is_probed_activated_and_credited(
    api: Api, upstream: Upstream, people: tuple[int, dict[str, str], int, dict[str, str]]
) -> None:
    a, a_headers, _, _ = people
    r = deposit(api, a, a_headers, "dep-1")
    assert r.status_code == 201, r.text
    assert r.headers["Idempotency-Hit"] == "false"
    out = r.json()
    assert KEY not in r.text and "api_key" not in out
    assert out["status"] == "active" and out["owner_id"] == a
    assert out["key_mask"] == "sk-…7f3a" and len(out["key_fingerprint"]) == 64
    # pool part $8 of the $10 quota, at 100 credits per USD: 720 credits, fee 80
    assert (out["pool_quota_uusd"], out["deposit_credit_ucr"], out["fee_ucr"]) == (
        8_000_000,
        720_000_000,
        80_000_000,
    )
    assert out["models"] == [
        {
            "model_id": out["models"][0]["model_id"],
            "model": "gpt-4o",
            "upstream_model": "gpt-4o-2024-08-06",
        }
    ]
    assert wallet(api, a) == 720_000_000
    again = deposit(api, a, a_headers, "dep-1")  # a retry: the same resource, no new credit
    assert again.status_code == 201 and again.headers["Idempotency-Hit"] == "true"
    assert again.json()["id"] == out["id"] and wallet(api, a) == 720_000_000
    assert upstream.calls == 1  # an active resource is not probed again
    mine = api.client.get(f"{V1}/resources/{out['id']}", headers=a_headers)
    assert mine.status_code == 200 and mine.json() == again.json()
    listed = api.client.get(f"{V1}/users/{a}/resources", headers=a_headers).json()
    assert [item["id"] for item in listed["items"]] == [out["id"]]
    grants = api.client.get(f"{V1}/users/{a}/grants", headers=a_headers).json()["items"]
    assert [(g["source"], g["amount_ucr"]) for g in grants] == [("deposit", 720_000_000)]
    _pool_ok(api)


def test_service_key_deposits_for_a_user(
    api: Api, upstream: Upstream, people: tuple[int, dict[str, str], int, dict[str, str]]
) -> None:
    a = people[0]
    r = deposit(api, a, api.service, "svc")
    assert r.status_code == 201 and r.json()["owner_id"] == a
    assert wallet(api, a) == 720_000_000


def test_refused_key_fails_and_credits_nothing(
    api: Api, upstream: Upstream, people: tuple[int, dict[str, str], int, dict[str, str]]
) -> None:
    a, a_headers, _, _ = people
    r = deposit(api, a, a_headers, "bad", api_key="sk-revoked-0000000000")
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["status"] == "failed" and "401" in out["status_reason"]
    assert out["deposit_credit_ucr"] == 0 and wallet(api, a) == 0
    # a failed key is not live: the corrected deposit of another key works
    assert deposit(api, a, a_headers, "good").json()["status"] == "active"
    _pool_ok(api)


def test_unreachable_upstream_leaves_it_pending_until_a_retry(
    api: Api, upstream: Upstream, people: tuple[int, dict[str, str], int, dict[str, str]]
) -> None:
    a, a_headers, _, _ = people
    upstream.down = True
    first = deposit(api, a, a_headers, "flaky")
    assert first.status_code == 201
    assert first.json()["status"] == "pending"
    assert first.json()["status_reason"] == "probe: network error (ConnectError)"
    assert wallet(api, a) == 0
    upstream.down = False
    retry = deposit(api, a, a_headers, "flaky")
    assert retry.headers["Idempotency-Hit"] == "true"
    assert retry.json()["id"] == first.json()["id"] and retry.json()["status"] == "active"
    assert retry.json()["status_reason"] is None and wallet(api, a) == 720_000_000
    other_body = api.client.post(
        f"{V1}/users/{a}/resources",
        json=body(quota_uusd=20_000_000),
        headers={**a_headers, "Idempotency-Key": "flaky"},
    )
    problem(other_body, 409, "idempotency_key_reused")


def test_a_key_already_in_the_pool_is_a_409(
    api: Api, upstream: Upstream, people: tuple[int, dict[str, str], int, dict[str, str]]
) -> None:
    a, a_headers, b, b_headers = people
    first = deposit(api, a, a_headers, "one")
    assert first.status_code == 201
    found = api.rejects(
        "POST",
        f"{V1}/users/{b}/resources",
        409,
        "resource_key_exists",
        json=body(),
        headers={**b_headers, "Idempotency-Key": "two"},
    )
    assert "resource_id" not in found and KEY not in str(found)
    own = problem(deposit(api, a, a_headers, "three"), 409, "resource_key_exists")
    assert own["resource_id"] == first.json()["id"]


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"base_url": "ftp://example.com/v1"}, "validation_error"),
        ({"base_url": "https://u:p@example.com/v1"}, "invalid_resource"),
        ({"base_url": "https://example.com/v1?api_key=x"}, "invalid_resource"),
        ({"base_url": "https://example.com/" + "a" * 500}, "validation_error"),
        ({"api_key": "k" * 501}, "validation_error"),
        ({"api_key": "sk with spaces"}, "validation_error"),
        (
            {"models": [{"model": "gpt-4o", "upstream_model": f"m{i}"} for i in range(101)]},
            "validation_error",
        ),
        ({"models": []}, "validation_error"),
        ({"models": [{"model": "nope", "upstream_model": "x"}]}, "invalid_resource"),
        ({"quota_uusd": 0}, "validation_error"),
        ({"quota_uusd": 10**16}, "validation_error"),
        ({"market_quota_uusd": 10_000_001}, "invalid_resource"),
        ({"extra": 1}, "validation_error"),
    ],
)
def test_bad_deposits_are_422_and_change_nothing(
    api: Api,
    upstream: Upstream,
    people: tuple[int, dict[str, str], int, dict[str, str]],
    fields: dict[str, Any],
    code: str,
) -> None:
    a, a_headers, _, _ = people
    found = api.rejects(
        "POST",
        f"{V1}/users/{a}/resources",
        422,
        code,
        json=body(**fields),
        headers={**a_headers, "Idempotency-Key": "bad"},
    )
    assert KEY not in str(found) and upstream.calls == 0
    assert api.client.get(f"{V1}/users/{a}/resources", headers=a_headers).json()["items"] == []


def test_withdrawal_claws_back_and_others_cannot(
    api: Api, upstream: Upstream, people: tuple[int, dict[str, str], int, dict[str, str]]
) -> None:
    a, a_headers, _, b_headers = people
    rid = deposit(api, a, a_headers, "dep").json()["id"]
    api.rejects(
        "POST", f"{V1}/resources/{rid}/withdraw", 404, "resource_not_found", headers=b_headers
    )
    r = api.client.post(
        f"{V1}/resources/{rid}/withdraw", headers={**a_headers, "Idempotency-Key": "w"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["clawed_back_ucr"]) == ("withdrawn", 720_000_000)
    assert wallet(api, a) == 0
    replay = api.client.post(
        f"{V1}/resources/{rid}/withdraw", headers={**a_headers, "Idempotency-Key": "w"}
    )
    assert replay.headers["Idempotency-Hit"] == "true" and replay.json() == r.json()
    by_admin = api.client.post(f"{V1}/resources/{rid}/withdraw", headers=api.admin)
    assert by_admin.status_code == 200 and by_admin.json()["status"] == "withdrawn"
    _pool_ok(api)


def test_other_users_get_404_on_every_resource_route(
    api: Api, upstream: Upstream, people: tuple[int, dict[str, str], int, dict[str, str]]
) -> None:
    a, a_headers, _, b_headers = people
    rid = deposit(api, a, a_headers, "dep").json()["id"]
    c = api.client
    for r in (
        c.get(f"{V1}/resources/{rid}", headers=b_headers),
        c.get(f"{V1}/resources/999999", headers=b_headers),
    ):
        body_ = problem(r, 404, "resource_not_found")
        assert KEY not in r.text and "key_mask" not in body_
    problem(c.get(f"{V1}/users/{a}/resources", headers=b_headers), 404, "user_not_found")
    problem(
        deposit(api, a, b_headers, "x", api_key="sk-other-key-0000000000"), 404, "user_not_found"
    )
    problem(c.get(f"{V1}/admin/pool", headers=b_headers), 403, "forbidden")
    problem(c.post(f"{V1}/admin/resources", json=body(), headers=a_headers), 403, "forbidden")
    problem(c.get(f"{V1}/resources/{rid}"), 401, "unauthenticated")


def test_platform_keys_and_the_admin_panel(
    api: Api, upstream: Upstream, people: tuple[int, dict[str, str], int, dict[str, str]]
) -> None:
    a, a_headers, _, _ = people
    platform = api.client.post(
        f"{V1}/admin/resources",
        json=body(api_key="sk-other-key-0000000000", market_quota_uusd=0),
        headers=api.admin,
    )
    assert platform.status_code == 201, platform.text
    assert platform.json()["owner_id"] is None and platform.json()["deposit_credit_ucr"] == 0
    mine = deposit(api, a, a_headers, "dep").json()
    # a charged usage served by the user's resource: charge − cost × 100 is the spread
    used = api.charge(a, "gpt-4o", key="u1", input_tokens=1_000_000)
    assert used.status_code == 201, used.text
    with api.db.tx() as s:
        s.execute(
            update(usage_events_table)
            .where(usage_events_table.c.id == used.json()["usage_id"])
            .values(resource_id=mine["id"], cost_uusd=2_500_000)
        )
        charge = s.execute(select(usage_events_table.c.charge_ucr)).scalar_one()
    r = api.client.get(f"{V1}/admin/pool", headers=api.admin)
    assert r.status_code == 200, r.text
    panel = r.json()
    assert panel["by_status"]["active"] == 2 and panel["by_status"]["failed"] == 0
    assert panel["quota_uusd"] == 20_000_000 and panel["market_quota_uusd"] == 2_000_000
    assert (panel["deposit_credit_ucr"], panel["fee_ucr"]) == (720_000_000, 80_000_000)
    assert panel["served"]["requests"] == 1
    assert panel["served"]["spread_ucr"] == charge - 250_000_000
    lines = {line["resource"]["id"]: line for line in panel["resources"]}
    assert lines[mine["id"]]["served"]["charge_ucr"] == charge
    assert lines[platform.json()["id"]]["served"]["requests"] == 0
    assert KEY not in r.text


def test_the_key_never_appears_in_logs_responses_or_the_database(
    api: Api,
    upstream: Upstream,
    people: tuple[int, dict[str, str], int, dict[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, a_headers, b, b_headers = people
    caplog.set_level(logging.DEBUG)
    texts = [deposit(api, a, a_headers, "dep").text]
    texts.append(deposit(api, b, b_headers, "dup").text)  # 409
    texts.append(deposit(api, a, a_headers, "bad", base_url="https://u:p@x/v1").text)
    upstream.keys.clear()
    texts.append(deposit(api, a, a_headers, "refused", api_key=KEY + "x").text)
    rid = api.client.get(f"{V1}/users/{a}/resources", headers=a_headers).json()["items"][0]["id"]
    texts.append(api.client.post(f"{V1}/resources/{rid}/withdraw", headers=a_headers).text)
    texts.append(api.client.get(f"{V1}/admin/pool", headers=api.admin).text)
    for text_ in texts:
        assert KEY not in text_
    assert KEY not in caplog.text and KEY[8:] not in caplog.text
    with api.db.tx() as s:
        for table in metadata.sorted_tables:
            for row in s.execute(select(table)):
                assert KEY[8:] not in repr(tuple(row)), table.name


def test_concurrent_deposits_of_one_key_answer_201_and_409(
    api: Api, upstream: Upstream, people: tuple[int, dict[str, str], int, dict[str, str]]
) -> None:
    """Two users deposit the same key at once, five rounds: one 201, one typed 409, never a
    500 (on PostgreSQL the second insert waits on the partial unique index)."""
    a, a_headers, b, b_headers = people
    for round_ in range(5):
        key = f"sk-race-{round_}-000000000000"
        upstream.keys.add(key)
        barrier = threading.Barrier(2)

        def send(who: tuple[int, dict[str, str]], key: str = key, barrier: Any = barrier) -> Any:
            barrier.wait(5)
            return deposit(api, who[0], who[1], f"race-{key}", api_key=key)

        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(send, [(a, a_headers), (b, b_headers)]))
        assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
        problem(next(r for r in responses if r.status_code == 409), 409, "resource_key_exists")
    _pool_ok(api)


def test_route_logs_are_scoped_to_the_resource_and_hide_other_users(
    api: Api, upstream: Upstream, people: tuple[int, dict[str, str], int, dict[str, str]]
) -> None:
    a, a_headers, b, b_headers = people
    mine = deposit(api, a, a_headers, "dep").json()["id"]
    with api.db.tx() as s:
        routelog.write(
            s,
            routelog.RouteLogEntry(
                request_id="req-1",
                user_id=b,
                model_id=None,
                endpoint="chat",
                outcome="served",
                candidates=[
                    {"resource_id": mine, "score": 0.9},
                    {"resource_id": mine + 1000, "score": 0.5},
                ],
                attempts=[
                    {"resource_id": mine + 1000, "outcome": "upstream_failure", "status": 500},
                    {"resource_id": mine, "outcome": "success", "status": 200},
                ],
                resource_id=mine,
                charge_ucr=1_234,
                cost_uusd=56,
            ),
        )
    url = f"{V1}/resources/{mine}/route-logs"
    own = api.client.get(url, headers=a_headers)
    assert own.status_code == 200, own.text
    (row,) = own.json()["items"]
    assert row["user_id"] is None and row["charge_ucr"] is None and row["hold_id"] is None
    assert row["cost_uusd"] == 56 and row["outcome"] == "served"
    assert [c["resource_id"] for c in row["candidates"]] == [mine]
    assert [x["status"] for x in row["attempts"]] == [200]
    full = api.client.get(url, headers=api.admin).json()["items"][0]
    assert full["user_id"] == b and full["charge_ucr"] == 1_234 and len(full["attempts"]) == 2
    problem(api.client.get(url, headers=b_headers), 404, "resource_not_found")
