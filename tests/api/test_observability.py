"""/metrics, request ids and JSON logs (issue 16 part 5): the counters move with the work,
the database gauges read the database, every request has an id, and no key or secret a
flow created ever reaches a log line."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelbank.observability import logs
from modelbank.observability.logs import REDACTED, scrub
from tests.api.conftest import Api, bearer, problem
from tests.api.test_pool import KEY as PROVIDER_KEY
from tests.api.test_pool import Upstream, deposit

V1 = "/api/v1"


def samples(api: Api, headers: dict[str, str] | None = None) -> dict[tuple[str, frozenset], float]:
    """Every sample of GET /metrics: (name, labels) → value."""
    r = api.client.get("/metrics", headers=headers or api.admin)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_request_ids_are_taken_or_given_and_echoed(api: Api) -> None:
    r = api.client.get("/healthz", headers={"X-Request-Id": "abc-123.x:y"})
    assert r.headers["x-request-id"] == "abc-123.x:y"
    given = api.client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", given)
    # not an id: replaced (no header injection, no unbounded label or log value)
    r = api.client.get("/healthz", headers={"X-Request-Id": "a b" + "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    # problem+json answers and the gateway's errors carry it too
    assert problem(api.client.get(f"{V1}/users/1/wallet"), 401)
    assert "x-request-id" in api.client.get(f"{V1}/users/1/wallet").headers
    assert "x-request-id" in api.client.get("/v1/models").headers


def test_metrics_count_requests_charges_and_rejections(api: Api) -> None:
    api.model("m1")
    uid, user = api.user("ann", credits_ucr=10_000)
    before = samples(api)
    assert api.charge(uid, "m1", key="k1", input_tokens=1000).status_code == 201
    assert api.charge(uid, "m1", key="k1", input_tokens=1000).status_code == 201  # replay
    assert api.charge(uid, "m1", key="k2", input_tokens=10**9).status_code == 402
    assert api.client.get(f"{V1}/users/{uid}/wallet", headers=user).status_code == 200
    assert api.client.get(f"{V1}/users/999/wallet", headers=user).status_code == 404
    after = samples(api)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("modelbank_charges_total", outcome="charged") == 1
    assert delta("modelbank_charges_total", outcome="replayed") == 1
    assert delta("modelbank_charge_rejections_total", code="insufficient_funds") == 1
    wallet = "/api/v1/users/{user_id}/wallet"
    assert delta("modelbank_http_requests_total", method="GET", route=wallet, status="200") == 1
    assert delta("modelbank_http_requests_total", method="GET", route=wallet, status="404") == 1
    assert (
        delta("modelbank_http_requests_total", method="POST", route="/api/v1/usage", status="201")
        == 2
    )
    assert delta("modelbank_http_request_duration_seconds_count", method="GET", route=wallet) == 2
    # a path no route knows is one label, whatever the path
    api.client.get("/nowhere/12345")
    final = samples(api)
    assert value(
        final, "modelbank_http_requests_total", method="GET", route="unmatched", status="404"
    )
    assert not [k for k in final if "12345" in str(k)]
    assert value(final, "modelbank_db_pool_size") >= 0


def test_metrics_read_holds_and_the_outbox_from_the_database(api: Api) -> None:
    uid, user = api.user("hal", credits_ucr=5_000_000)
    r = api.client.post(
        f"{V1}/users/{uid}/holds",
        json={"amount_ucr": 1_234, "timeout_s": 600},
        headers={**user, "Idempotency-Key": "h1"},
    )
    assert r.status_code == 201, r.text
    found = samples(api)
    assert value(found, "modelbank_holds_open") == 1
    assert value(found, "modelbank_holds_open_ucr") == 1_234
    assert value(found, "modelbank_outbox_pending") == 0
    assert value(found, "modelbank_outbox_lag_seconds") == 0


def test_metrics_need_an_admin_key_or_the_token(api: Api) -> None:
    _, user = api.user("eve")
    problem(api.client.get("/metrics"), 401, "unauthenticated")
    problem(api.client.get("/metrics", headers=user), 403, "forbidden")
    problem(api.client.get("/metrics", headers=api.service), 403, "forbidden")
    problem(api.client.get("/metrics", headers=bearer("mb_a_nope")), 401, "unauthenticated")
    assert "/metrics" not in api.client.get("/openapi.json").json()["paths"]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every log line of the process, as :func:`logs.configure` writes them."""
    stream = io.StringIO()
    handler = logs.configure("DEBUG", stream)
    yield stream
    logs.unconfigure(handler)


def test_logs_are_json_with_the_request_id_and_never_a_secret(
    api: Api, captured: io.StringIO
) -> None:
    """A flow that creates every kind of secret (admin, service and user keys, a deposited
    provider key, a webhook signing secret), uses them (a wrong key too) and logs a failure
    whose message carries a key: none of them is in the captured lines."""
    secrets = [api.admin["Authorization"][7:], api.service["Authorization"][7:]]
    api.model("gpt-4o")
    uid, user = api.user("sam", credits_ucr=1_000_000)
    secrets.append(user["Authorization"][7:])
    r = api.client.post(f"{V1}/admin/keys", json={"role": "service"}, headers=api.admin)
    assert r.status_code == 201, r.text
    secrets.append(r.json()["key"])
    fake = Upstream()
    api.client.app.state.db.pool_http_client = httpx.AsyncClient(  # type: ignore[attr-defined]
        transport=httpx.MockTransport(fake)
    )
    assert deposit(api, uid, user, "dep").status_code == 201
    secrets.append(PROVIDER_KEY)
    r = api.client.post(
        f"{V1}/admin/webhooks",
        json={"url": "https://example.com/hook", "events": ["*"]},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    secrets.append(r.json()["secret"])
    wrong = "mb_u_" + "Z" * 43
    secrets.append(wrong)
    assert api.client.get(f"{V1}/users/{uid}/wallet", headers=bearer(wrong)).status_code == 401
    assert api.charge(uid, "gpt-4o", key="c1", input_tokens=10, headers=user).status_code == 201
    # a careless log call: the redaction is the second wall
    logging.getLogger("modelbank.test").warning(
        "upstream said %s", f"bad key {PROVIDER_KEY}", extra={"api_key": secrets[0]}
    )
    try:
        raise RuntimeError(f"Authorization: Bearer {secrets[2]}")
    except RuntimeError:
        logging.getLogger("modelbank.test").exception("failed")

    text = captured.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    requests = [line for line in lines if line.get("event") == "request"]
    assert requests, text[:2000]
    for line in requests:
        assert re.fullmatch(r"[0-9a-f]{32}", line["request_id"]), line
        assert {"method", "route", "status", "duration_ms", "timestamp", "level"} <= line.keys()
    assert {line["route"] for line in requests} >= {
        "/api/v1/users/{user_id}/wallet",
        "/api/v1/usage",
        "/api/v1/users/{user_id}/resources",
    }
    assert REDACTED in text
    for secret in secrets:
        assert secret not in text, secret[:8]
        assert secret[8:30] not in text, secret[:8]


def test_scrub_finds_secrets_in_any_shape() -> None:
    key = "mb_a_" + "k" * 43
    assert scrub(f"x {key} y") == f"x {REDACTED} y"
    assert scrub({"nested": [f"Bearer {'t' * 20}"], "password": "p"}) == {
        "nested": [REDACTED],
        "password": REDACTED,
    }
    for text in ("sk-proj-abcdefghijklmnop", "sk_live_abcdefghijklmnop", "whsec_abcdefghij"):
        assert scrub(f"({text})") == f"({REDACTED})"
    assert scrub("user 42 charged 1000 ucr") == "user 42 charged 1000 ucr"


def test_a_response_with_its_own_request_id_keeps_one_header() -> None:
    """The gateway answers with its call's id (the key of its route log and usage event):
    the observer adds no second X-Request-Id (httpx would join the two with ", ")."""
    from fastapi import FastAPI, Response
    from fastapi.testclient import TestClient

    from modelbank.api.observe import RequestObserver

    inner = FastAPI()

    @inner.get("/own")
    def own() -> Response:
        return Response("x", headers={"X-Request-Id": "call-1"})

    @inner.get("/plain")
    def plain() -> Response:
        return Response("x")

    with TestClient(RequestObserver(inner, log_requests=False)) as client:
        r = client.get("/own", headers={"X-Request-Id": "caller-7"})
        assert r.headers.get_list("x-request-id") == ["call-1"]
        r = client.get("/plain", headers={"X-Request-Id": "caller-7"})
        assert r.headers.get_list("x-request-id") == ["caller-7"]
