"""The gateway against odd and hostile requests (DESIGN §9, issue 14): malformed and huge
bodies, values that validate loosely, models it cannot serve or the caller may not use,
acting for other users, holds that expire during the call, and upstreams that report more
than they were allowed. Each answer is in OpenAI's error shape, never a 500, and leaves the
wallet as it was (nothing held, or the hold settled)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelbank import jobs
from modelbank.gateway.fake_upstream import FakeUpstream
from modelbank.ledger.models import accounts_table
from modelbank.secrets import SecretBox
from modelbank.wallets import holds
from modelbank.wallets.models import holds_table
from tests.api.conftest import TEST_SECRET_KEY
from tests.gateway.conftest import Gw, serving
from tests.gateway.test_gateway import CREDITS, route_logs, usage_rows

Upstream = tuple[str, FakeUpstream]


@pytest.fixture
def setup(gw: Gw, upstream: Upstream) -> tuple[Gw, int, str, str]:
    """A chat model served by the fake upstream; (gw, user id, user key, upstream URL)."""
    url, _ = upstream
    gw.model("chat-a")
    gw.model("embed-a", mode="embedding")
    gw.resource(url, {"chat-a": "up-chat-a", "embed-a": "up-embed"})
    user_id, secret = gw.user("alice", CREDITS)
    return gw, user_id, secret, url


def post(gw: Gw, secret: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}", **kwargs.pop("headers", {})}
    return gw.http.post(f"{gw.url}/v1{path}", headers=headers, **kwargs)


def openai_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, r.text
    if code is not None:
        assert error["code"] == code, r.text
    return dict(error)


def holds_placed(gw: Gw) -> int:
    with gw.db.tx() as session:
        return int(session.execute(select(func.count()).select_from(holds_table)).scalar_one())


def pending_total(gw: Gw) -> int:
    with gw.db.tx() as session:
        total = session.execute(select(func.sum(accounts_table.c.debits_pending))).scalar_one()
        return int(total or 0)


def upstream_chats(url: str) -> int:
    return int(httpx.get(f"{url}/_fake/stats").json()["requests"].get("chat.completions", 0))


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "chat-a", "messages": [{"role": "user", "content": "hi"}], **fields}


# -- bodies ----------------------------------------------------------------------------------


MALFORMED = [
    (b"{not json", "invalid_input"),
    (b"[1, 2]", "invalid_input"),
    (b'"a string"', "invalid_input"),
    (b"", "invalid_input"),
    (b'{"model": "chat-a", "messages": "hi"}', "invalid_request"),
    (b'{"model": "chat-a", "messages": [{}], "max_tokens": 0}', "invalid_request"),
    (b'{"model": "chat-a", "messages": [{}], "max_tokens": -5}', "invalid_request"),
    (b'{"model": "chat-a", "messages": [{}], "n": 129, "max_tokens": 1}', "invalid_request"),
    (b'{"model": 7, "messages": [{}]}', "invalid_request"),
    (b'{"messages": [{}]}', "invalid_request"),
    (b'{"model": "chat-a", "messages": [{}], "max_tokens": 1e400}', "invalid_request"),
    (b'\xff\xfe{"model": "chat-a"}', "invalid_input"),
]
"""Bodies the gateway must refuse with a 400 and the OpenAI error code expected."""


def test_malformed_bodies_answer_400_and_hold_nothing(setup: tuple[Gw, int, str, str]) -> None:
    gw, user_id, secret, url = setup
    for content, code in MALFORMED:
        r = post(gw, secret, "/chat/completions", content=content)
        openai_error(r, 400, code)
    assert gw.wallet(user_id) == (CREDITS, 0) and holds_placed(gw) == 0
    assert upstream_chats(url) == 0


def test_a_body_over_4_mib_is_413_with_or_without_a_content_length(
    setup: tuple[Gw, int, str, str],
) -> None:
    gw, user_id, secret, _ = setup
    big = json.dumps(chat(max_tokens=1, padding="x" * (4 * 1024 * 1024))).encode()
    openai_error(post(gw, secret, "/chat/completions", content=big), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: read until over the limit
        for start in range(0, len(big), 65_536):
            yield big[start : start + 65_536]

    openai_error(post(gw, secret, "/chat/completions", content=chunks()), 413)
    exactly = json.dumps(chat(max_tokens=1, padding="")).encode()
    room = 4 * 1024 * 1024 - len(exactly)
    at_limit = json.dumps(chat(max_tokens=1, padding="x" * room)).encode()
    assert len(at_limit) == 4 * 1024 * 1024
    assert post(gw, secret, "/chat/completions", content=at_limit).status_code == 200
    assert holds_placed(gw) == 1 and gw.wallet(user_id)[1] == 0


def test_unicode_prompts_are_held_by_bytes_and_charged_what_the_upstream_reports(
    setup: tuple[Gw, int, str, str],
) -> None:
    gw, user_id, secret, _ = setup
    text = 'naïve 日本語 🤖 — ﷽ \u0000 \\ " end'
    for raw in (
        json.dumps(chat(messages=[{"role": "user", "content": text}], max_tokens=3)),
        json.dumps(
            chat(messages=[{"role": "user", "content": text}], max_tokens=3), ensure_ascii=False
        ),
    ):
        r = post(gw, secret, "/chat/completions", content=raw.encode())
        assert r.status_code == 200, r.text
    rows = usage_rows(gw)
    assert len(rows) == 2 and rows[0]["input_tokens"] == rows[1]["input_tokens"]
    assert gw.wallet(user_id) == (CREDITS - sum(int(r["charge_ucr"]) for r in rows), 0)  # type: ignore[call-overload]


# -- values that validate loosely -------------------------------------------------------------


def test_a_loosely_typed_stream_flag_is_still_charged(setup: tuple[Gw, int, str, str]) -> None:
    gw, user_id, secret, _ = setup
    served = 0
    for value in ("false", "true", 1):
        r = post(gw, secret, "/chat/completions", json=chat(max_tokens=5, stream=value))
        assert r.status_code in (200, 400), r.text
        served += r.status_code == 200
        rows = usage_rows(gw)
        assert len(rows) == served, (value, r.text[:200])
        assert all(int(row["output_tokens"]) == 5 for row in rows)  # type: ignore[call-overload]
        charged = sum(int(row["charge_ucr"]) for row in rows)  # type: ignore[call-overload]
        assert gw.wallet(user_id) == (CREDITS - charged, 0)


def test_stream_options_that_are_not_an_object_are_refused_without_a_hold_left(
    setup: tuple[Gw, int, str, str],
) -> None:
    gw, user_id, secret, _ = setup
    for options in ("x", [1], 5):
        body = chat(max_tokens=5, stream=True, stream_options=options)
        r = post(gw, secret, "/chat/completions", json=body)
        openai_error(r, 400, "invalid_request")  # once a 500 with the hold left pending
        assert holds_placed(gw) == 0 and gw.wallet(user_id) == (CREDITS, 0)


def test_embeddings_asked_as_a_stream_are_charged_or_refused(
    setup: tuple[Gw, int, str, str],
) -> None:
    gw, user_id, secret, _ = setup
    r = post(
        gw, secret, "/embeddings", json={"model": "embed-a", "input": "x" * 400, "stream": True}
    )
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        (row,) = usage_rows(gw)
        assert int(row["charge_ucr"]) > 0  # type: ignore[call-overload]
    assert gw.wallet(user_id)[1] == 0


def test_a_large_n_is_held_per_choice(setup: tuple[Gw, int, str, str]) -> None:
    gw, _, _, url = setup
    body = json.dumps(chat(max_tokens=1_000, n=128), separators=(",", ":")).encode()
    hold = len(body) + 2 * 1_000 * 128  # µcr: the prompt bound, and 128 choices of 1,000
    poor, poor_key = gw.user("poor", hold - 1)
    openai_error(post(gw, poor_key, "/chat/completions", content=body), 402, "insufficient_funds")
    assert upstream_chats(url) == 0 and gw.wallet(poor) == (hold - 1, 0)
    enough, enough_key = gw.user("enough", hold)
    assert post(gw, enough_key, "/chat/completions", content=body).status_code == 200
    balance, pending = gw.wallet(enough)
    assert pending == 0 and 0 <= balance < hold


# -- who may use what ---------------------------------------------------------------------------


def test_a_model_no_resource_serves_is_503_no_route_with_the_hold_voided(
    setup: tuple[Gw, int, str, str],
) -> None:
    gw, user_id, secret, _ = setup
    gw.model("orphan")
    openai_error(
        post(gw, secret, "/chat/completions", json=chat(model="orphan", max_tokens=3)),
        503,
        "no_route",
    )
    openai_error(
        post(gw, secret, "/chat/completions", json=chat(model="orphan", max_tokens=3, stream=True)),
        503,
        "no_route",
    )
    assert gw.wallet(user_id) == (CREDITS, 0) and holds_placed(gw) == 2
    assert [log["outcome"] for log in route_logs(gw)] == ["no_route", "no_route"]
    assert usage_rows(gw) == []


def test_a_premium_model_without_access_is_403_before_any_hold(gw: Gw, upstream: Upstream) -> None:
    url, _ = upstream
    gw.model("gold", is_premium=True, access_price_ucr=1_000)
    gw.resource(url, {"gold": "up-gold"})
    user_id, secret = gw.user("alice", CREDITS)
    r = post(gw, secret, "/chat/completions", json=chat(model="gold", max_tokens=3))
    openai_error(r, 403)
    assert holds_placed(gw) == 0 and gw.wallet(user_id) == (CREDITS, 0)
    assert upstream_chats(url) == 0
    listed = gw.http.get(f"{gw.url}/v1/models", headers={"Authorization": f"Bearer {secret}"})
    (gold,) = listed.json()["data"]
    assert gold["modelbank"]["access_required"] is True


def test_a_user_key_cannot_act_for_anyone_else(setup: tuple[Gw, int, str, str]) -> None:
    gw, user_id, secret, _ = setup
    other, _ = gw.user("bob", CREDITS)
    for header in ("{other}", "0{me}", "{me}, {other}", "{me}0", "-1", "abc", "{me}"):
        acting_as(gw, secret, header.format(me=user_id, other=other), user_id, other)


def acting_as(gw: Gw, secret: str, value: str, user_id: int, other: int) -> None:
    r = post(
        gw,
        secret,
        "/chat/completions",
        json=chat(max_tokens=3),
        headers={"X-Modelbank-User": value},
    )
    if value.strip() == str(user_id):
        assert r.status_code == 200, r.text  # a header naming oneself is harmless
    else:
        openai_error(r, 404)
    assert gw.wallet(other) == (CREDITS, 0)
    assert usage_rows(gw) == [] or all(row["user_id"] == user_id for row in usage_rows(gw))


def test_an_admin_key_acting_for_nobody_is_refused_in_openai_shape(
    setup: tuple[Gw, int, str, str],
) -> None:
    gw, _, _, url = setup
    for who in ("999999", "0", ""):
        acting_for_nobody(gw, who, url)


def acting_for_nobody(gw: Gw, who: str, url: str) -> None:
    admin = gw.admin["Authorization"].removeprefix("Bearer ")
    r = post(
        gw, admin, "/chat/completions", json=chat(max_tokens=3), headers={"X-Modelbank-User": who}
    )
    assert r.status_code in (400, 404), r.text
    openai_error(r, r.status_code)
    assert holds_placed(gw) == 0 and upstream_chats(url) == 0


# -- holds and usage ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_hold_that_expires_during_the_call_bills_nothing_and_is_swept(
    setup: tuple[Gw, int, str, str], monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    gw, user_id, secret, url = setup
    place = holds.place

    def short_lived(*args: Any, **kwargs: Any) -> Any:
        return place(*args, **{**kwargs, "timeout_s": 1})

    monkeypatch.setattr(holds, "place", short_lived)
    httpx.post(f"{url}/_fake/config", json={"latency_ms": 1_500}).raise_for_status()
    r = post(gw, secret, "/chat/completions", json=chat(max_tokens=3, stream=stream))
    assert r.status_code == 200, r.text  # the answer was already there: it is delivered
    assert not stream or "data: [DONE]" in r.text, r.text
    (log,) = route_logs(gw)
    assert log["outcome"] == "unbilled" and usage_rows(gw) == []
    jobs.run_once(gw.db.factory, box=SecretBox(TEST_SECRET_KEY), deliver=False)
    assert gw.wallet(user_id) == (CREDITS, 0) and pending_total(gw) == 0


OVER = {"prompt_tokens": 1_000_000, "completion_tokens": 5_000_000, "total_tokens": 6_000_000}


async def _models(_: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": "greedy", "object": "model"}]})


async def _greedy(request: Request) -> Response:
    body = await request.json()
    message = {"role": "assistant", "content": "ok"}
    if body.get("stream"):
        chunk = {
            "id": "x",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": message}],
        }
        tail = {"id": "x", "object": "chat.completion.chunk", "choices": [], "usage": OVER}
        events = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(tail)}\n\ndata: [DONE]\n\n"
        return Response(events, media_type="text/event-stream")
    answer = {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": OVER,
    }
    return JSONResponse(answer)


@pytest.fixture(scope="module")
def greedy_url() -> Iterator[str]:
    app = Starlette(
        routes=[
            Route("/v1/models", _models),
            Route("/v1/chat/completions", _greedy, methods=["POST"]),
        ]
    )
    with serving(app, lifespan="off") as url:
        yield url


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_reporting_more_than_allowed_is_charged_the_hold_at_most(
    gw: Gw, greedy_url: str, stream: bool
) -> None:
    gw.model("chat-a")
    gw.resource(greedy_url, {"chat-a": "greedy"})
    user_id, secret = gw.user("alice", CREDITS)
    body = json.dumps(chat(max_tokens=10, stream=stream), separators=(",", ":")).encode()
    hold = len(body) + 2 * 10
    r = post(gw, secret, "/chat/completions", content=body)
    assert r.status_code == 200, r.text
    (row,) = usage_rows(gw)
    assert int(row["charge_ucr"]) == hold  # type: ignore[call-overload]
    assert gw.wallet(user_id) == (CREDITS - hold, 0)


# -- upstreams that answer in ways the relay may not expect ------------------------------------

CRLF_USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


async def _crlf(request: Request) -> Response:
    """A stream whose events end in CRLF CRLF (valid SSE), or an answer without ``usage``."""
    body = await request.json()
    if not body.get("stream"):
        message = {"role": "assistant", "content": "one two three"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return JSONResponse({"id": "y", "object": "chat.completion", "choices": [choice]})
    chunk = {
        "id": "y",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "one two three"}}],
    }
    tail = {"id": "y", "object": "chat.completion.chunk", "choices": [], "usage": CRLF_USAGE}
    events = (
        f"data: {json.dumps(chunk)}\r\n\r\ndata: {json.dumps(tail)}\r\n\r\ndata: [DONE]\r\n\r\n"
    )
    return Response(events, media_type="text/event-stream")


@pytest.fixture(scope="module")
def crlf_url() -> Iterator[str]:
    app = Starlette(
        routes=[
            Route("/v1/models", _models),
            Route("/v1/chat/completions", _crlf, methods=["POST"]),
        ]
    )
    with serving(app, lifespan="off") as url:
        yield url


def test_a_stream_with_crlf_line_endings_is_charged_its_reported_usage(
    gw: Gw, crlf_url: str
) -> None:
    gw.model("chat-a")
    gw.resource(crlf_url, {"chat-a": "greedy"})
    user_id, secret = gw.user("alice", CREDITS)
    r = post(gw, secret, "/chat/completions", json=chat(max_tokens=10, stream=True))
    assert r.status_code == 200 and "one two three" in r.text, r.text
    (row,) = usage_rows(gw)
    assert (row["input_tokens"], row["output_tokens"]) == (9, 3)
    assert gw.wallet(user_id) == (CREDITS - 9 - 2 * 3, 0)


def test_an_answer_without_usage_is_charged_an_estimate(gw: Gw, crlf_url: str) -> None:
    gw.model("chat-a")
    gw.resource(crlf_url, {"chat-a": "greedy"})
    user_id, secret = gw.user("alice", CREDITS)
    r = post(gw, secret, "/chat/completions", json=chat(max_tokens=10))
    assert r.status_code == 200, r.text
    (row,) = usage_rows(gw)
    assert row["usage_estimated"] is True and int(row["charge_ucr"]) > 0  # type: ignore[call-overload]
    assert gw.wallet(user_id)[0] < CREDITS


def test_every_routed_answer_carries_the_route_header(
    setup: tuple[Gw, int, str, str],
) -> None:
    gw, _, secret, url = setup
    gw.model("orphan")
    answers = [post(gw, secret, "/chat/completions", json=chat(max_tokens=2))]
    answers.append(post(gw, secret, "/chat/completions", json=chat(model="orphan", max_tokens=2)))
    httpx.post(f"{url}/_fake/config", json={"error_rate": 1}).raise_for_status()
    answers.append(post(gw, secret, "/chat/completions", json=chat(max_tokens=2)))
    assert [r.status_code for r in answers] == [200, 503, 502]
    for r in answers:  # the request id too, so a failure can be found in the route logs
        assert "; request=" in r.headers.get("x-modelbank-route", ""), dict(r.headers)
