"""The deposited provider keys never leak (DESIGN §9 "never logged, never returned", issue 14
"Keys never appear in logs, errors, responses or the database in clear (a test greps
them)"), and a key the provider revokes at request time ends its resource.

Every scenario goes through real HTTP (modelbank and the upstreams served by uvicorn): the
successes, the caller's errors, every upstream failure kind, an upstream that echoes the key
it was sent in its error text, and the ``/api/v1`` pool endpoints. Then the keys are looked
for in every response body and header, the log records at DEBUG, the captured stdout/stderr
(uvicorn's own output included), every row of every table, and the exceptions the upstream
client raises."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelbank.db.models import metadata
from modelbank.gateway.fake_upstream import FakeUpstream
from modelbank.gateway.upstream import Upstream
from modelbank.pool.breaker import UpstreamFailure
from modelbank.pool.models import resources_table, route_logs_table
from modelbank.pool.router import Target
from modelbank.pool.scoring import TERMS
from tests.gateway.conftest import SECOND_KEY, UPSTREAM_KEY, Gw, serving

ECHO_KEY = "sk-echoed-upstream-key-55aa55aa55aa55aa"
"""The key of an upstream that repeats the key it was sent in its error messages."""
KEYS = (UPSTREAM_KEY, SECOND_KEY, ECHO_KEY)
CREDITS = 100_000_000
V1 = "/api/v1"


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    # The first-deposited resource first (cost alone is scored: ties, broken by id), no
    # breaker opening between the scenarios, a short first-byte timeout for the hang.
    return {
        "router_top_k": 1,
        "router_weights": {t: 1.0 if t == "cost" else 0.0 for t in TERMS},
        "breaker_failure_threshold": 1_000,
        "breaker_min_requests": 1_000,
        "gateway_first_byte_timeout_s": 1,
    }


def fragments(key: str) -> list[str]:
    """The key and a long middle part of it (a masked echo such as ``sk-ec****55aa`` keeps
    the ends only, which the API shows anyway as the mask)."""
    return [key, key[6:-6]]


def leaked(text: str) -> list[str]:
    return [f for key in KEYS for f in fragments(key) if f in text]


class Seen:
    """Every response modelbank gave in a test: its status, headers and body."""

    def __init__(self, gw: Gw) -> None:
        self.gw = gw
        self.responses: list[httpx.Response] = []
        self.client = httpx.Client(timeout=30, event_hooks={"response": [self._keep]})

    def _keep(self, response: httpx.Response) -> None:
        response.read()
        self.responses.append(response)

    def close(self) -> None:
        self.client.close()

    def v1(self, path: str, secret: str, body: Any = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {secret}", **kw.pop("headers", {})}
        if body is None and "content" not in kw:
            return self.client.get(f"{self.gw.url}/v1{path}", headers=headers)
        return self.client.post(f"{self.gw.url}/v1{path}", json=body, headers=headers, **kw)

    def api(self, method: str, path: str, body: Any = None, **headers: str) -> httpx.Response:
        return self.client.request(
            method,
            f"{self.gw.url}{V1}{path}",
            json=body,
            headers={**self.gw.admin, **headers},
        )

    def check(self) -> None:
        assert self.responses
        for r in self.responses:
            text = r.text + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items())
            assert not leaked(text), (r.request.url, r.status_code, text[:500])
            if r.request.url.path.startswith("/v1") and r.status_code >= 400:
                error = r.json()["error"]  # OpenAI's error shape on every /v1 error
                assert set(error) == {"message", "type", "param", "code"}, r.text


@pytest.fixture
def seen(gw: Gw) -> Iterator[Seen]:
    made = Seen(gw)
    yield made
    made.close()


# -- an upstream that repeats the key it was sent ------------------------------------------

ECHO_MODE: dict[str, Any] = {"status": 400}


async def _echo_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": "echo", "object": "model"}]})


async def _echo_chat(request: Request) -> Response:
    key = request.headers.get("authorization", "").removeprefix("Bearer ")
    status = ECHO_MODE["status"]
    if ECHO_MODE.get("escaped"):  # the key written with JSON \u escapes: the same string
        escaped = "".join(f"\\u{ord(c):04x}" for c in key)
        raw = '{"error": {"message": "bad key ' + escaped + '", "type": "invalid_request_error"}}'
        return Response(raw, status_code=status, media_type="application/json")
    message = f"Incorrect request for API key {key} (json: {json.dumps(key)})"
    body = {"error": {"message": message, "type": "invalid_request_error", "code": "echo"}}
    return JSONResponse(body, status_code=status)


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    app = Starlette(
        routes=[
            Route("/v1/models", _echo_models),
            Route("/v1/chat/completions", _echo_chat, methods=["POST"]),
        ]
    )
    with serving(app, lifespan="off") as url:
        yield url


# -- helpers -------------------------------------------------------------------------------


def configure(url: str, **changes: Any) -> None:
    httpx.post(f"{url}/_fake/config", json=changes).raise_for_status()


def chat(stream: bool = False, model: str = "chat-a", **fields: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "héllo, wörld ✓"}],
        "max_tokens": 5,
        "stream": stream,
        **fields,
    }


def every_row_text(gw: Gw) -> Iterator[tuple[str, str]]:
    """(table, text of a row) for every row of every table."""
    with gw.db.tx() as session:
        for table in metadata.sorted_tables:
            for row in session.execute(select(table)):
                yield table.name, json.dumps([str(v) for v in row])


def deposit(seen: Seen, user_id: int, base_url: str, key: str, models: list[str]) -> Any:
    body = {
        "provider": "fake",
        "base_url": f"{base_url}/v1",
        "api_key": key,
        "models": [{"model": m, "upstream_model": f"up-{m}"} for m in models],
        "quota_uusd": 10_000_000,
    }
    return seen.api("POST", f"/users/{user_id}/resources", body, **{"Idempotency-Key": key[-8:]})


def status_of(gw: Gw, resource_id: int) -> tuple[str, str | None]:
    with gw.db.tx() as session:
        row = session.execute(
            select(resources_table.c.status, resources_table.c.status_reason).where(
                resources_table.c.id == resource_id
            )
        ).one()
    return str(row[0]), row[1]


def until_the_revoked_key_is_tried(seen: Seen, secret: str, url: str, *, stream: bool) -> list[str]:
    """Chat until the router tries the key ``url`` refuses (it may prefer another resource
    first); every answer a 200. The routes taken (``X-Modelbank-Route``)."""
    routes = []
    for _ in range(20):
        r = seen.v1("/chat/completions", secret, chat(stream=stream))
        assert r.status_code == 200, r.text
        assert not stream or "data: [DONE]" in r.text, r.text
        routes.append(r.headers["x-modelbank-route"])
        if httpx.get(f"{url}/_fake/stats").json()["errors"].get("401"):
            return routes
    raise AssertionError(f"the revoked key was never tried: {routes}")


# -- the tests -----------------------------------------------------------------------------


def test_provider_keys_never_appear_in_responses_logs_or_tables(
    gw: Gw,
    upstream: tuple[str, FakeUpstream],
    second: tuple[str, FakeUpstream],
    echo_url: str,
    seen: Seen,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    (url_a, _), (url_b, _) = upstream, second
    for slug in ("chat-a", "echo-a"):
        gw.model(slug)
    gw.model("embed-a", mode="embedding")
    gw.model("image-a", mode="image_generation", price={"per_unit_ucr": 1_000})
    depositor, _ = gw.user("depositor")
    caller, secret = gw.user("caller", CREDITS)
    a = deposit(seen, depositor, url_a, UPSTREAM_KEY, ["chat-a", "embed-a", "image-a"])
    assert a.status_code == 201 and a.json()["status"] == "active", a.text
    b = gw.resource(url_b, {"chat-a": "up-b"}, api_key=SECOND_KEY)
    gw.resource(echo_url, {"echo-a": "echo"}, api_key=ECHO_KEY)
    a_id = int(a.json()["id"])

    # successes
    assert seen.v1("/chat/completions", secret, chat()).status_code == 200
    assert seen.v1("/chat/completions", secret, chat(stream=True)).status_code == 200
    assert seen.v1("/embeddings", secret, {"model": "embed-a", "input": "x"}).status_code == 200
    assert seen.v1("/images/generations", secret, {"model": "image-a", "prompt": "a"}).is_success
    assert seen.v1("/models", secret).status_code == 200

    # the caller's errors
    assert seen.v1("/chat/completions", secret, content=b"{nope").status_code == 400
    assert seen.v1("/chat/completions", secret, {"model": "chat-a"}).status_code == 400
    assert seen.v1("/chat/completions", secret, chat(model="nope")).status_code == 404
    assert seen.v1("/chat/completions", UPSTREAM_KEY, chat()).status_code == 401
    assert seen.v1("/chat/completions", "mb_u_wrong", chat()).status_code == 401
    bad_format = {"model": "image-a", "prompt": "a", "response_format": "svg"}
    assert seen.v1("/images/generations", secret, bad_format).status_code == 400

    # an upstream repeating the key it was sent: as the caller's error, and as a failure
    echoed = {}
    for status in (400, 422, 500, 401):
        ECHO_MODE["status"] = status
        echoed[status] = seen.v1("/chat/completions", secret, chat(model="echo-a"))
    # every upstream failure kind, on both upstreams at once (no failover to save it)
    configure(url_a, hang_s=5)
    configure(url_b, hang_s=5)
    for kind in ("500", "429", "reset", "timeout"):
        configure(url_a, error_rate=1, error_kind=kind)
        configure(url_b, error_rate=1, error_kind=kind)
        for stream in (False, True):
            r = seen.v1("/chat/completions", secret, chat(stream=stream))
            assert r.status_code in (502, 503, 504), (kind, r.text)
    configure(url_b, error_rate=0)
    configure(url_a, error_rate=1, error_kind="midstream")
    seen.v1("/chat/completions", secret, chat(stream=True))
    configure(url_a, error_rate=0)

    # the provider revokes the deposited key: the request fails over, the resource ends
    configure(url_a, revoked_keys=[UPSTREAM_KEY])
    routes = until_the_revoked_key_is_tried(seen, secret, url_a, stream=False)
    assert routes[-1].startswith(f"resource={b['id']}; attempts=2"), routes
    assert status_of(gw, a_id)[0] == "failed"

    # the pool endpoints, successes and errors
    seen.api("GET", f"/resources/{a_id}")
    seen.api("GET", f"/users/{depositor}/resources")
    seen.api("GET", "/admin/pool")
    seen.api("GET", f"/resources/{a_id}/route-logs")
    seen.api("GET", f"/resources/{b['id']}/route-logs")
    seen.api("GET", "/exports/usage.csv")
    again = deposit(seen, depositor, url_b, SECOND_KEY, ["chat-a"])
    assert again.status_code == 409, again.text
    assert seen.api("POST", "/admin/resources", {"api_key": UPSTREAM_KEY}).status_code == 422
    short = {"provider": "x", "base_url": "http://x/v1", "api_key": SECOND_KEY, "models": []}
    assert seen.api("POST", "/admin/resources", short).status_code == 422
    assert seen.api("POST", f"/resources/{a_id}/withdraw").status_code in (200, 409)

    seen.check()
    logged = caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
    assert not leaked(logged), logged[-3000:]
    out, err = capfd.readouterr()
    assert not leaked(out + err), (out + err)[-3000:]
    rows = [(table, text) for table, text in every_row_text(gw) if leaked(text)]
    assert rows == []
    # the upstream's own message passed on for the caller's errors, with the key scrubbed;
    # its failures (500, the key refused) answered as modelbank's own 502
    for status in (400, 422):
        assert echoed[status].status_code == status
        message = echoed[status].json()["error"]["message"]
        assert message.count("[redacted]") == 2, message
    assert [echoed[s].status_code for s in (500, 401)] == [502, 502]
    assert gw.wallet(caller)[1] == 0


def test_a_key_revoked_at_request_time_fails_over_ends_the_resource_and_claws_back(
    gw: Gw, upstream: tuple[str, FakeUpstream], second: tuple[str, FakeUpstream], seen: Seen
) -> None:
    (url_a, _), (url_b, _) = upstream, second
    gw.model("chat-a", cost={"input_uusd_per_mtok": 500_000, "output_uusd_per_mtok": 1_000_000})
    depositor, _ = gw.user("depositor")
    caller, secret = gw.user("caller", CREDITS)
    a = deposit(seen, depositor, url_a, UPSTREAM_KEY, ["chat-a"]).json()
    assert a["status"] == "active" and a["deposit_credit_ucr"] > 0
    assert gw.wallet(depositor) == (a["deposit_credit_ucr"], 0)
    # served once by the deposited key alone: part of its quota consumed
    first = seen.v1("/chat/completions", secret, chat())
    assert first.headers["x-modelbank-route"].startswith(f"resource={a['id']}; attempts=1")
    b = gw.resource(url_b, {"chat-a": "up-b"}, api_key=SECOND_KEY)
    configure(url_a, revoked_keys=[UPSTREAM_KEY])

    routes = until_the_revoked_key_is_tried(seen, secret, url_a, stream=True)
    assert routes[-1].startswith(f"resource={b['id']}; attempts=2"), routes
    status, reason = status_of(gw, int(a["id"]))
    assert status == "failed" and reason is not None and "refused" in reason
    ended = seen.api("GET", f"/resources/{a['id']}").json()
    consumed_share = a["deposit_credit_ucr"] - ended["clawed_back_ucr"]
    assert 0 <= consumed_share < a["deposit_credit_ucr"]
    assert ended["consumed_uusd"] > 0
    # the depositor keeps only the share of the quota consumed
    assert gw.wallet(depositor) == (consumed_share, 0)
    # one charge per request, every hold settled
    with gw.db.tx() as session:
        logs = session.execute(select(route_logs_table).order_by(route_logs_table.c.id)).all()
    assert [log.outcome for log in logs] == ["served"] * (1 + len(routes))
    assert [a_["outcome"] for a_ in logs[-1].attempts] == ["upstream_failure", "success"]
    assert gw.wallet(caller)[1] == 0
    # later requests go straight to the remaining resource
    later = seen.v1("/chat/completions", secret, chat())
    assert later.headers["x-modelbank-route"].startswith(f"resource={b['id']}; attempts=1")
    stats = httpx.get(f"{url_a}/_fake/stats").json()
    assert stats["errors"]["401"] == 1
    seen.check()


def test_a_revoked_key_with_nowhere_to_fail_over_voids_the_hold(
    gw: Gw, upstream: tuple[str, FakeUpstream], seen: Seen
) -> None:
    url, _ = upstream
    gw.model("chat-a")
    depositor, _ = gw.user("depositor")
    caller, secret = gw.user("caller", CREDITS)
    a = deposit(seen, depositor, url, UPSTREAM_KEY, ["chat-a"]).json()
    configure(url, revoked_keys=[UPSTREAM_KEY])
    r = seen.v1("/chat/completions", secret, chat())
    assert r.status_code == 502, r.text
    assert gw.wallet(caller) == (CREDITS, 0)
    assert status_of(gw, int(a["id"]))[0] == "failed"
    assert gw.wallet(depositor) == (0, 0)  # nothing consumed: all the deposit credit back
    r = seen.v1("/chat/completions", secret, chat())
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_route", r.text
    seen.check()


def test_a_key_echoed_with_json_escapes_is_scrubbed_too(gw: Gw, echo_url: str, seen: Seen) -> None:
    gw.model("echo-a")
    gw.resource(echo_url, {"echo-a": "echo"}, api_key=ECHO_KEY)
    _, secret = gw.user("caller", CREDITS)
    ECHO_MODE.update(status=400, escaped=True)
    try:
        r = seen.v1("/chat/completions", secret, chat(model="echo-a"))
    finally:
        ECHO_MODE.pop("escaped")
    assert r.status_code == 400
    seen.check()


# -- the upstream client's exceptions ------------------------------------------------------


def _target() -> Target:
    return Target(
        resource_id=1,
        base_url="http://upstream.test/v1",
        api_key=UPSTREAM_KEY,
        upstream_model="m",
        provider="fake",
        owner_id=None,
    )


async def _failures(upstream: Upstream) -> list[UpstreamFailure]:
    found = []
    for call in (upstream.call, upstream.open_stream):
        with pytest.raises(UpstreamFailure) as caught:
            await call(_target(), "/chat/completions", {"model": "m"})
        found.append(caught.value)
    await upstream.aclose()
    return found


def _text(failure: UpstreamFailure) -> str:
    attributes = {
        name: getattr(failure, name, None) for name in dir(failure) if not name.startswith("__")
    }
    return " ".join([str(failure), repr(failure), str(failure.args), str(attributes)])


@pytest.mark.parametrize("status", [400, 401, 429, 500])
def test_upstream_failures_carry_no_key_even_when_the_upstream_echoes_it(status: int) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        key = request.headers["authorization"]
        return httpx.Response(status, json={"error": {"message": f"bad key {key}"}})

    upstream = Upstream(httpx.AsyncClient(transport=httpx.MockTransport(answer)))
    for failure in asyncio.run(_failures(upstream)):
        assert not leaked(_text(failure)), _text(failure)


def test_transport_errors_carry_no_key() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused: {request.headers['authorization']}", request=request)

    upstream = Upstream(httpx.AsyncClient(transport=httpx.MockTransport(answer)))
    for failure in asyncio.run(_failures(upstream)):
        assert not leaked(_text(failure)), _text(failure)
        assert failure.__cause__ is None and failure.__suppress_context__


# -- a 403 the caller provoked ----------------------------------------------------------------


async def _moderated_chat(request: Request) -> Response:
    """OpenRouter's answer to a prompt its moderation flags: 403 with code 403."""
    body = await request.json()
    if "FLAGGED" in json.dumps(body):
        error = {
            "code": 403,
            "message": "Input was flagged by moderation",
            "metadata": {"reasons": ["harassment"], "flagged_input": "FLAGGED"},
        }
        return JSONResponse({"error": error}, status_code=403)
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    message = {"role": "assistant", "content": "ok"}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return JSONResponse(
        {"id": "m", "object": "chat.completion", "choices": [choice], "usage": usage}
    )


@pytest.fixture(scope="module")
def moderated_url() -> Iterator[str]:
    app = Starlette(
        routes=[
            Route("/v1/models", _echo_models),
            Route("/v1/chat/completions", _moderated_chat, methods=["POST"]),
        ]
    )
    with serving(app, lifespan="off") as url:
        yield url


def test_one_403_a_caller_provoked_does_not_end_a_deposited_resource(
    gw: Gw, moderated_url: str, seen: Seen
) -> None:
    gw.model("chat-a")
    depositor, _ = gw.user("depositor")
    _, secret = gw.user("griefer", CREDITS)
    a = deposit(seen, depositor, moderated_url, UPSTREAM_KEY, ["chat-a"]).json()
    assert a["status"] == "active", a
    r = seen.v1(
        "/chat/completions", secret, chat(messages=[{"role": "user", "content": "FLAGGED"}])
    )
    assert r.status_code >= 400
    assert status_of(gw, int(a["id"]))[0] == "active"
    assert gw.wallet(depositor) == (a["deposit_credit_ucr"], 0)
    assert seen.v1("/chat/completions", secret, chat()).status_code == 200
