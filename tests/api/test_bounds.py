"""Abuse gets a typed 4xx, never a 500 or a silent acceptance (issue 16 part 1): body limit
(D4), metadata bounds (D5), strict JSON types (D6), Idempotency-Key lengths for every role
(D7), problem+json for unhandled errors without dropping the connection (D8), bounded
account totals (D10). SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from modelbank.api import create_app
from modelbank.config import load_settings
from modelbank.demo_gateway.servers import serving
from modelbank.ledger.models import MAX_ACCOUNT_TOTAL
from modelbank.wallets import service as wallets
from tests import factories
from tests.api.conftest import PROBLEM_JSON, TEST_SECRET_KEY, Api, problem
from tests.conftest import Db

SMALL_LIMIT = 64 * 1024
"""Body limit of the app under test: small, so a test never sends megabytes."""


@pytest.fixture
def small(db: Db, api: Api) -> Iterator[TestClient]:
    """The app with a 64 KiB body limit and a route that always raises."""
    app = create_app(
        load_settings(database_url=db.url, secret_key=TEST_SECRET_KEY, max_body_bytes=SMALL_LIMIT),
        engine=db.engine,
    )
    _add_failing_routes(app)
    with TestClient(app, raise_server_exceptions=True) as client:
        yield client


def _add_failing_routes(app: Any) -> None:
    from fastapi.responses import StreamingResponse

    def boom() -> None:
        raise RuntimeError("forced failure for the test")

    def broken_stream() -> StreamingResponse:
        def chunks() -> Iterator[bytes]:
            yield b"first,"
            raise RuntimeError("forced failure mid-stream")

        return StreamingResponse(chunks(), media_type="text/csv")

    app.add_api_route("/api/v1/test-boom", boom, methods=["GET", "POST"])
    app.add_api_route("/api/v1/test-broken-stream", broken_stream)


# ---------------------------------------------------------------- D4 body limit


def test_a_declared_large_body_is_refused_before_it_is_read(api: Api, small: TestClient) -> None:
    user_id, user = api.user("big", credits_ucr=1_000_000)
    body = json.dumps({"user_id": user_id, "model": 1, "metadata": {"p": "x" * SMALL_LIMIT}})
    before = api.ledger_state()
    r = small.post(
        "/api/v1/usage",
        content=body,
        headers={**user, "Idempotency-Key": "big-1", "Content-Type": "application/json"},
    )
    found = problem(r, 413, "body_too_large")
    assert str(SMALL_LIMIT) in found["detail"]
    assert r.headers["x-request-id"]
    assert api.ledger_state() == before


def test_a_chunked_large_body_is_refused_while_streaming(api: Api, small: TestClient) -> None:
    user_id, user = api.user("chunky", credits_ucr=1_000_000)
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"user_id": %d, "model": 1, "metadata": {"p": "' % user_id
        for _ in range(64):  # 64 × 4 KiB: 4 × the limit, never declared
            sent += 4096
            yield b"x" * 4096
        yield b'"}}'

    before = api.ledger_state()
    r = small.post(
        "/api/v1/usage",
        content=chunks(),
        headers={**user, "Idempotency-Key": "chunky-1", "Content-Type": "application/json"},
    )
    problem(r, 413, "body_too_large")
    assert api.ledger_state() == before


def test_a_body_under_the_limit_is_served(api: Api, small: TestClient) -> None:
    model = api.model("small-body")
    user_id, user = api.user("fits", credits_ucr=1_000_000)
    r = small.post(
        "/api/v1/usage",
        json={"user_id": user_id, "model": model["id"], "input_tokens": 10},
        headers={**user, "Idempotency-Key": "fits-1"},
    )
    assert r.status_code == 201, r.text


# ---------------------------------------------------------------- D5 metadata


@pytest.mark.parametrize(
    ("metadata", "why"),
    [
        ({"k" * 10_000: 1}, "longer than 64"),
        ({f"k{i}": i for i in range(200)}, "more than 64 keys"),
        ({"a": {"b": {"c": {"d": {"e": 1}}}}}, "deeper than 4"),
        ({"a": ["x" * 1000] * 40}, "larger than 16384 bytes"),
    ],
    ids=["long-key", "many-keys", "deep", "large"],
)
def test_metadata_out_of_bounds_is_a_422(api: Api, metadata: dict[str, Any], why: str) -> None:
    model = api.model("meta")
    user_id, _ = api.user("meta", credits_ucr=1_000_000)
    found = api.rejects(
        "POST",
        "/api/v1/usage",
        422,
        "validation_error",
        json={"user_id": user_id, "model": model["id"], "metadata": metadata},
        headers={**api.service, "Idempotency-Key": "meta-1"},
    )
    assert why in found["detail"]


def test_metadata_within_bounds_is_stored_truncated(api: Api) -> None:
    model = api.model("meta-ok")
    user_id, _ = api.user("meta-ok", credits_ucr=1_000_000)
    metadata = {f"k{i}": "v" * 500 for i in range(20)}
    r = api.charge(user_id, model["id"], key="meta-ok-1", metadata=metadata)
    assert r.status_code == 201, r.text


def test_the_metering_service_refuses_unbounded_metadata_too(db: Db) -> None:
    from modelbank.metering import service as metering
    from modelbank.metering.service import UsageEvent

    with db.tx() as session:
        user_id = factories.user(session, "svc", credits_ucr=1_000_000)
        model_id = factories.model(session, "svc-model")
        result = metering.charge_batch(
            session, [UsageEvent("svc-1", user_id, model_id, metadata={"k" * 100: 1})]
        )[0]
    assert result.status == "rejected"
    assert result.error_code == "invalid_usage"


# ---------------------------------------------------------------- D6 strict types


@pytest.mark.parametrize(
    "changes",
    [
        {"user_id": True},
        {"model": True},
        {"input_tokens": True},
        {"input_tokens": 1.0},
        {"input_tokens": 1e3},
        {"occurred_at": 12345},
        {"output_tokens": "10"},
    ],
    ids=[
        "user-bool",
        "model-bool",
        "tokens-bool",
        "tokens-float",
        "tokens-exp",
        "time-number",
        "tokens-str",
    ],
)
def test_wrong_json_types_are_refused(api: Api, changes: dict[str, Any]) -> None:
    model = api.model("typed")
    user_id, _ = api.user("typed", credits_ucr=1_000_000)
    body = {"user_id": user_id, "model": model["id"], "input_tokens": 5, **changes}
    api.rejects(
        "POST",
        "/api/v1/usage",
        422,
        "validation_error",
        json=body,
        headers={**api.service, "Idempotency-Key": "typed-1"},
    )


@pytest.mark.parametrize("amount", [1.0, 1e6, True, "1000"])
def test_grant_amounts_must_be_json_integers(api: Api, amount: Any) -> None:
    user_id, _ = api.user("granted")
    api.rejects(
        "POST",
        f"/api/v1/users/{user_id}/grants",
        422,
        "validation_error",
        json={"amount_ucr": amount, "source": "bonus"},
        headers={**api.admin, "Idempotency-Key": "g-1"},
    )


def test_iso_timestamps_and_decimal_rates_still_parse(api: Api) -> None:
    model = api.model("typed-ok", price={"input_ucr_per_mtok": 1.5, "output_ucr_per_mtok": "2"})
    user_id, _ = api.user("typed-ok", credits_ucr=1_000_000)
    r = api.charge(
        user_id, model["id"], key="typed-ok-1", input_tokens=5, occurred_at="2026-12-01T10:00:00Z"
    )
    assert r.status_code == 201, r.text


# ---------------------------------------------------------------- D7 idempotency keys


def test_a_200_character_key_works_for_every_role(api: Api) -> None:
    model = api.model("long-keys")
    user_id, user = api.user("long-keys", credits_ucr=10_000_000)
    for role, headers in (("user", user), ("service", api.service), ("admin", api.admin)):
        key = role[0] * 200
        r = api.charge(user_id, model["id"], key=key, headers=headers, input_tokens=1)
        assert r.status_code == 201, (role, r.text)
        again = api.charge(user_id, model["id"], key=key, headers=headers, input_tokens=1)
        assert again.headers["Idempotency-Hit"] == "true"
    for role, headers in (("service", api.service), ("admin", api.admin)):
        r = api.client.post(
            f"/api/v1/users/{user_id}/grants",
            json={"amount_ucr": 5, "source": "bonus"},
            headers={**headers, "Idempotency-Key": "g" * 200},
        )
        assert r.status_code in (201, 403), (role, r.text)
    api.rejects(
        "POST",
        "/api/v1/usage",
        422,
        json={"user_id": user_id, "model": model["id"]},
        headers={**user, "Idempotency-Key": "x" * 201},
    )


# ---------------------------------------------------------------- D8 unhandled errors


def test_an_unhandled_error_is_problem_json_with_a_request_id(small: TestClient) -> None:
    r = small.get("/api/v1/test-boom", headers={"X-Request-Id": "trace-me-1"})
    found = problem(r, 500, "internal_error")
    assert found["request_id"] == "trace-me-1"
    assert r.headers["x-request-id"] == "trace-me-1"
    r = small.post("/api/v1/test-boom", headers={"X-Request-Id": "\x01bad"})
    found = problem(r, 500, "internal_error")
    assert len(found["request_id"]) == 32
    assert r.headers.get_list("x-request-id") == [found["request_id"]]  # one id, the same


def test_an_unhandled_error_keeps_the_connection_open(db: Db, api: Api) -> None:
    app = create_app(
        load_settings(database_url=db.url, secret_key=TEST_SECRET_KEY), engine=db.engine
    )
    _add_failing_routes(app)
    with serving(app, "boom") as url, httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(3):
            r = client.get("/api/v1/test-boom")
            assert r.status_code == 500
            assert r.headers["content-type"] == PROBLEM_JSON
            assert r.json()["code"] == "internal_error"
        streamed = client.get("/api/v1/test-broken-stream")
        assert streamed.status_code == 200
        assert streamed.content.startswith(b"first,")
        health = client.get("/healthz")
        assert health.status_code == 200  # same pooled client: nothing was reset


# ---------------------------------------------------------------- D10 totals


def test_account_totals_stop_at_the_bound_with_a_typed_409(api: Api) -> None:
    user_id, _ = api.user("whale")
    with api.db.tx() as session:
        wallets.grant(session, user_id, MAX_ACCOUNT_TOTAL - 10**15, idempotency_key="whale-seed")
    api.grant(user_id, 10**15, key="whale-fill")  # exactly at the bound: allowed
    found = api.rejects(
        "POST",
        f"/api/v1/users/{user_id}/grants",
        409,
        "account_total_limit",
        json={"amount_ucr": 1, "source": "purchased"},
        headers={**api.admin, "Idempotency-Key": "whale-over"},
    )
    assert found["limit_ucr"] == MAX_ACCOUNT_TOTAL
    wallet = api.client.get(f"/api/v1/users/{user_id}/wallet", headers=api.admin).json()
    assert wallet["balance_ucr"] == MAX_ACCOUNT_TOTAL
    assert isinstance(wallet["balance_ucr"], int)
