"""The gateway with a limited key (issue 13), through the official ``openai`` SDK: the hold
is reserved on the key, the capture counts what was used, a call whose hold would pass the
limit gets an OpenAI-shaped 402 ``key_limit_reached`` before any upstream call, and a chat
without ``max_tokens`` is bounded by what the key has left."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from modelbank.gateway.fake_upstream import FakeUpstream
from tests.gateway.conftest import Gw
from tests.gateway.test_gateway import COST, CREDITS, priced

LIMIT = 200
"""The key's daily limit (µcr): a few short calls at 1 / 2 µcr per input / output token."""


def _limited(gw: Gw, user_id: int, limit_ucr: int = LIMIT) -> dict[str, Any]:
    return dict(
        gw.post(f"/api/v1/users/{user_id}/keys", {"limit_ucr": limit_ucr, "limit_period": "day"})
    )


def _limit(gw: Gw, user_id: int, key_id: int) -> dict[str, Any]:
    r = gw.http.get(f"{gw.url}/api/v1/users/{user_id}/keys", headers=gw.admin)
    (found,) = [k["limit"] for k in r.json()["items"] if k["id"] == key_id]
    return dict(found)


@pytest.fixture
def limited(gw: Gw, upstream: tuple[str, FakeUpstream]) -> tuple[Gw, int, dict[str, Any], str]:
    url, _ = upstream
    gw.model("chat-a", cost=COST)
    gw.resource(url, {"chat-a": "up-chat-a"})
    user_id, _secret = gw.user("alice", CREDITS)
    return gw, user_id, _limited(gw, user_id), url


def test_calls_count_on_the_key_until_a_hold_would_pass_it(
    limited: tuple[Gw, int, dict[str, Any], str],
) -> None:
    gw, user_id, key, url = limited
    client = gw.client(key["key"])
    answer = client.chat.completions.create(
        model="chat-a", messages=[{"role": "user", "content": "Hello"}], max_tokens=10
    )
    assert answer.usage is not None
    spent = priced(answer.usage.prompt_tokens, answer.usage.completion_tokens)
    state = _limit(gw, user_id, key["id"])
    assert (state["spent_ucr"], state["reserved_ucr"], state["left_ucr"]) == (
        spent,
        0,
        LIMIT - spent,
    )
    calls_before = httpx.get(f"{url}/_fake/stats").json()["requests"].get("chat.completions", 0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="chat-a", messages=[{"role": "user", "content": "Hello"}], max_tokens=500
        )
    assert caught.value.status_code == 402
    body = caught.value.body
    assert isinstance(body, dict)
    assert (body["code"], body["type"]) == ("key_limit_reached", "insufficient_quota")
    assert "limit" in body["message"]
    # Nothing held, nothing charged, nothing sent upstream.
    assert gw.wallet(user_id) == (CREDITS - spent, 0)
    assert _limit(gw, user_id, key["id"])["spent_ucr"] == spent
    calls_after = httpx.get(f"{url}/_fake/stats").json()["requests"].get("chat.completions", 0)
    assert calls_after == calls_before


def test_without_max_tokens_the_key_left_bounds_the_output(
    limited: tuple[Gw, int, dict[str, Any], str],
) -> None:
    gw, user_id, key, _ = limited
    answer = gw.client(key["key"]).chat.completions.create(
        model="chat-a", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.usage is not None
    charged = priced(answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert 0 < charged <= LIMIT
    state = _limit(gw, user_id, key["id"])
    assert (state["spent_ucr"], state["reserved_ucr"]) == (charged, 0)
    assert gw.wallet(user_id) == (CREDITS - charged, 0)


def test_a_spent_key_gets_402_and_an_unlimited_key_still_works(
    limited: tuple[Gw, int, dict[str, Any], str],
) -> None:
    gw, user_id, _, _ = limited
    spent = _limited(gw, user_id, limit_ucr=0)
    with pytest.raises(openai.APIStatusError) as caught:
        gw.client(spent["key"]).chat.completions.create(
            model="chat-a", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 402
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "key_limit_reached"
    unlimited = gw.post(f"/api/v1/users/{user_id}/keys", {})["key"]
    answer = gw.client(unlimited).chat.completions.create(
        model="chat-a", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert answer.usage is not None and answer.usage.completion_tokens == 3
