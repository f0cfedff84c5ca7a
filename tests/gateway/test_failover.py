"""Routing in the request path (DESIGN §9): failover before the first byte, none after it,
the breaker opening and half-opening, a client leaving mid-stream, and the other endpoints.
Real HTTP throughout: the official ``openai`` SDK → modelbank → fake upstreams."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from modelbank.gateway.fake_upstream import FakeUpstream
from tests.gateway.conftest import SECOND_KEY, Gw
from tests.gateway.test_gateway import CREDITS, priced, route_logs, usage_rows

Upstream = tuple[str, FakeUpstream]


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    # The best candidate always first (ties by resource id: the first deposited), a breaker
    # that opens after two failures and half-opens after 0.3 s.
    return {"router_top_k": 1, "breaker_failure_threshold": 2, "breaker_cooldown_s": 0.3}


def fail_with(url: str, kind: str) -> None:
    httpx.post(f"{url}/_fake/config", json={"error_rate": 1, "error_kind": kind}).raise_for_status()


def heal(url: str) -> None:
    httpx.post(f"{url}/_fake/config", json={"error_rate": 0}).raise_for_status()


def chat_requests(url: str) -> int:
    return int(httpx.get(f"{url}/_fake/stats").json()["requests"].get("chat.completions", 0))


def ask(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="chat-a", messages=[{"role": "user", "content": "hello"}], max_tokens=4, **kwargs
    )


@pytest.mark.parametrize("kind", ["500", "429", "timeout", "reset"])
def test_a_failing_first_resource_fails_over_to_the_next_with_one_charge(
    gw: Gw, upstream: Upstream, second: Upstream, kind: str
) -> None:
    (url_a, _), (url_b, _) = upstream, second
    gw.model("chat-a")
    a = gw.resource(url_a, {"chat-a": "up-a"})
    b = gw.resource(url_b, {"chat-a": "up-b"}, api_key=SECOND_KEY)
    fail_with(url_a, kind)
    user_id, secret = gw.user("alice", CREDITS)
    raw = ask(gw.client(secret))
    answer = raw.parse()
    assert raw.headers["x-modelbank-route"].startswith(f"resource={b['id']}; attempts=2")
    assert (chat_requests(url_a), chat_requests(url_b)) == (1, 1)
    assert gw.wallet(user_id) == (
        CREDITS - priced(answer.usage.prompt_tokens, answer.usage.completion_tokens),
        0,
    )
    (row,) = usage_rows(gw)
    assert row["resource_id"] == b["id"]
    (log,) = route_logs(gw)
    assert [attempt["resource_id"] for attempt in log["attempts"]] == [a["id"], b["id"]]  # type: ignore[union-attr]
    assert log["attempts"][0]["outcome"] == "upstream_failure"  # type: ignore[index]


def test_the_breaker_opens_then_half_opens_with_one_probe(gw: Gw, upstream: Upstream) -> None:
    url, _ = upstream
    gw.model("chat-a")
    gw.resource(url, {"chat-a": "up-a"})
    user_id, secret = gw.user("alice", CREDITS)
    client = gw.client(secret)
    fail_with(url, "500")
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as failed:
            ask(client)
        assert failed.value.status_code == 502
    with pytest.raises(openai.APIStatusError) as refused:  # open: nothing is sent upstream
        ask(client)
    assert refused.value.status_code == 503
    assert refused.value.body["code"] == "no_route"  # type: ignore[index]
    assert chat_requests(url) == 2
    heal(url)
    time.sleep(0.4)  # past the cool-down: the next request is the half-open probe
    assert ask(client).parse().usage is not None
    assert ask(client).parse().usage is not None  # closed again
    assert chat_requests(url) == 4
    assert gw.wallet(user_id)[1] == 0
    assert [log["outcome"] for log in route_logs(gw)] == [
        "failed",
        "failed",
        "no_route",
        "served",
        "served",
    ]


def test_caller_errors_are_passed_on_never_retried_never_counted(
    gw: Gw, upstream: Upstream, second: Upstream
) -> None:
    (url_a, _), (url_b, _) = upstream, second
    gw.model("image-a", mode="image_generation", price={"per_unit_ucr": 1_000})
    gw.resource(url_a, {"image-a": "up-image"})
    gw.resource(url_b, {"image-a": "up-image"}, api_key=SECOND_KEY)
    user_id, secret = gw.user("alice", CREDITS)
    # a response format the upstream does not know: its 400, the caller's own error
    r = gw.http.post(
        f"{gw.url}/v1/images/generations",
        json={"model": "image-a", "prompt": "a cat", "response_format": "svg"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "upstream_rejected"
    assert "response_format" in r.json()["error"]["message"]
    images = [
        httpx.get(f"{u}/_fake/stats").json()["requests"].get("images.generations", 0)
        for u in (url_a, url_b)
    ]
    assert sum(images) == 1
    assert gw.wallet(user_id) == (CREDITS, 0)
    (log,) = route_logs(gw)
    assert log["outcome"] == "rejected"


def test_a_stream_broken_after_its_first_byte_is_not_retried_and_charged_an_estimate(
    gw: Gw, upstream: Upstream, second: Upstream
) -> None:
    (url_a, _), (url_b, _) = upstream, second
    gw.model("chat-a")
    gw.resource(url_a, {"chat-a": "up-a"})
    gw.resource(url_b, {"chat-a": "up-b"}, api_key=SECOND_KEY)
    fail_with(url_a, "midstream")
    user_id, secret = gw.user("alice", CREDITS)
    text = ""
    stream = gw.client(secret).chat.completions.create(
        model="chat-a", messages=[{"role": "user", "content": "hello"}], max_tokens=10, stream=True
    )
    try:
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    except (httpx.HTTPError, openai.APIError):
        pass
    assert text  # half the tokens arrived
    assert (chat_requests(url_a), chat_requests(url_b)) == (1, 0)
    (row,) = wait_for_usage(gw, 1)
    assert row["usage_estimated"] is True
    assert row["output_tokens"] == -(-len(text.encode()) // 4)
    assert gw.wallet(user_id) == (CREDITS - int(row["charge_ucr"]), 0)  # type: ignore[call-overload]


def wait_for_usage(gw: Gw, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 5
    while True:
        rows = usage_rows(gw)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_a_client_leaving_mid_stream_cancels_the_upstream_and_pays_for_what_it_saw(
    gw: Gw, upstream: Upstream
) -> None:
    url, _ = upstream
    httpx.post(f"{url}/_fake/config", json={"tokens_per_s": 50}).raise_for_status()
    gw.model("chat-a")
    gw.resource(url, {"chat-a": "up-a"})
    user_id, secret = gw.user("alice", CREDITS)
    body = {
        "model": "chat-a",
        "messages": [{"role": "user", "content": "tell me a long story"}],
        "max_tokens": 500,
        "stream": True,
    }
    seen = 0
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                seen += 1
            if seen >= 5:
                break
    deadline = time.monotonic() + 5
    while httpx.get(f"{url}/_fake/stats").json()["streams"].get("cancelled", 0) < 1:
        assert time.monotonic() < deadline, "the upstream stream was not cancelled"
        time.sleep(0.05)
    (row,) = wait_for_usage(gw, 1)
    assert row["usage_estimated"] is True
    assert 0 < int(row["output_tokens"]) < 500  # type: ignore[call-overload]
    assert gw.wallet(user_id) == (CREDITS - int(row["charge_ucr"]), 0)  # type: ignore[call-overload]
    (log,) = route_logs(gw)
    assert log["outcome"] == "disconnected"


def test_embeddings_and_images_are_charged_by_tokens_and_by_image(
    gw: Gw, upstream: Upstream
) -> None:
    url, _ = upstream
    gw.model("embed-a", mode="embedding")
    gw.model(
        "image-a",
        mode="image_generation",
        price={"per_unit_ucr": 3_000_000},
    )
    gw.resource(url, {"embed-a": "up-embed", "image-a": "up-image"})
    user_id, secret = gw.user("alice", CREDITS)
    client = gw.client(secret)
    embedded = client.embeddings.create(model="embed-a", input=["one text", "two texts"])
    assert len(embedded.data) == 2
    images = client.images.generate(model="image-a", prompt="a cat", n=2)
    assert images.data is not None and len(images.data) == 2
    rows = sorted(usage_rows(gw), key=lambda r: int(r["id"]))  # type: ignore[call-overload]
    assert rows[0]["input_tokens"] == embedded.usage.prompt_tokens
    assert rows[1]["units"] == 2 and rows[1]["charge_ucr"] == 6_000_000
    assert gw.wallet(user_id) == (
        CREDITS - embedded.usage.prompt_tokens - 6_000_000,
        0,
    )


def test_a_service_key_acts_for_a_user_and_a_user_key_only_for_itself(
    gw: Gw, upstream: Upstream
) -> None:
    url, _ = upstream
    gw.model("chat-a")
    gw.resource(url, {"chat-a": "up-a"})
    alice, alice_key = gw.user("alice", CREDITS)
    bob, _ = gw.user("bob", CREDITS)
    service = gw.post("/api/v1/admin/keys", {"role": "service", "name": "backend"})["key"]
    answer = gw.client(service, default_headers={"X-Modelbank-User": str(bob)})
    assert ask(answer).parse().usage is not None
    assert gw.wallet(bob)[0] < CREDITS and gw.wallet(alice) == (CREDITS, 0)
    with pytest.raises(openai.BadRequestError):  # a service key must say for whom
        ask(gw.client(service))
    with pytest.raises(openai.NotFoundError):  # a user key cannot spend another's wallet
        ask(gw.client(alice_key, default_headers={"X-Modelbank-User": str(bob)}))
