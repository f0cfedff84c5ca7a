"""The gateway end to end with the official ``openai`` SDK (DESIGN §9, issue 14): a real
modelbank server and a fake upstream, both over HTTP. Every scenario checks the wallet to the
µcr, that no hold is left pending, and the ledger invariants (the ``db`` fixture)."""

from __future__ import annotations

import httpx
import openai
import pytest
from sqlalchemy import select

from modelbank.gateway.fake_upstream import FakeUpstream
from modelbank.metering.models import usage_events_table
from modelbank.money import div_half_even
from modelbank.pool.models import resources_table, route_logs_table
from tests.gateway.conftest import Gw

CREDITS = 10_000_000
"""The test user's purchased credits (µcr): 10 credits."""

# The test model's price: 1 µcr per input token, 2 per output token (and 0.5 / 1 µUSD cost).
COST = {"input_uusd_per_mtok": 500_000, "output_uusd_per_mtok": 1_000_000}


def priced(prompt: int, completion: int) -> int:
    return prompt * 1 + completion * 2


def cost_uusd(prompt: int, completion: int) -> int:
    return div_half_even(prompt * 500_000 + completion * 1_000_000, 1_000_000)


@pytest.fixture
def setup(gw: Gw, upstream: tuple[str, FakeUpstream]) -> tuple[Gw, int, str, int]:
    url, _ = upstream
    gw.model("chat-a", cost=COST)
    resource = gw.resource(url, {"chat-a": "up-chat-a"})
    assert resource["status"] == "active", resource
    user_id, secret = gw.user("alice", CREDITS)
    return gw, user_id, secret, int(resource["id"])


def usage_rows(gw: Gw) -> list[dict[str, object]]:
    with gw.db.tx() as session:
        return [dict(r._mapping) for r in session.execute(select(usage_events_table))]


def route_logs(gw: Gw) -> list[dict[str, object]]:
    with gw.db.tx() as session:
        rows = session.execute(select(route_logs_table).order_by(route_logs_table.c.id))
        return [dict(r._mapping) for r in rows]


def consumed(gw: Gw, resource_id: int) -> int:
    with gw.db.tx() as session:
        return int(
            session.execute(
                select(resources_table.c.consumed_uusd).where(resources_table.c.id == resource_id)
            ).scalar_one()
        )


def test_chat_is_held_routed_and_charged_exactly(setup: tuple[Gw, int, str, int]) -> None:
    gw, user_id, secret, resource_id = setup
    raw = gw.client(secret).chat.completions.with_raw_response.create(
        model="chat-a", messages=[{"role": "user", "content": "Hello there"}], max_tokens=20
    )
    answer = raw.parse()
    assert answer.usage is not None
    prompt, completion = answer.usage.prompt_tokens, answer.usage.completion_tokens
    assert completion == 20
    assert raw.headers["x-modelbank-route"].startswith(f"resource={resource_id}; attempts=1")
    assert gw.wallet(user_id) == (CREDITS - priced(prompt, completion), 0)
    (row,) = usage_rows(gw)
    assert (row["input_tokens"], row["output_tokens"]) == (prompt, completion)
    assert (row["resource_id"], row["usage_estimated"]) == (resource_id, False)
    assert row["charge_ucr"] == priced(prompt, completion)
    assert consumed(gw, resource_id) == row["cost_uusd"] == cost_uusd(prompt, completion)
    (log,) = route_logs(gw)
    assert (log["outcome"], log["resource_id"], log["usage_id"]) == (
        "served",
        resource_id,
        row["id"],
    )


def test_stream_without_usage_asked_is_charged_and_the_usage_chunk_kept_back(
    setup: tuple[Gw, int, str, int],
) -> None:
    gw, user_id, secret, _resource_id = setup
    chunks = list(
        gw.client(secret).chat.completions.create(
            model="chat-a",
            messages=[{"role": "user", "content": "Stream to me"}],
            max_tokens=7,
            stream=True,
        )
    )
    assert all(chunk.choices for chunk in chunks)  # no usage-only chunk: not asked for
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text
    (row,) = usage_rows(gw)
    assert row["output_tokens"] == 7 and row["usage_estimated"] is False
    assert gw.wallet(user_id) == (CREDITS - priced(int(row["input_tokens"]), 7), 0)  # type: ignore[arg-type]


def test_stream_with_usage_asked_passes_it_on(setup: tuple[Gw, int, str, int]) -> None:
    gw, user_id, secret, _ = setup
    chunks = list(
        gw.client(secret).chat.completions.create(
            model="chat-a",
            messages=[{"role": "user", "content": "Stream to me"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert gw.wallet(user_id) == (CREDITS - priced(usage.prompt_tokens, 5), 0)


def test_no_max_tokens_is_set_to_what_the_balance_covers(
    gw: Gw, upstream: tuple[str, FakeUpstream]
) -> None:
    url, _fake = upstream
    gw.model("chat-a", cost=COST)
    gw.resource(url, {"chat-a": "up-chat-a"})
    user_id, secret = gw.user("poor", 1_000)  # 1,000 µcr: the prompt bound plus a few hundred
    answer = gw.client(secret).chat.completions.create(
        model="chat-a", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.usage is not None
    balance, pending = gw.wallet(user_id)
    assert pending == 0 and balance >= 0
    assert balance == 1_000 - priced(answer.usage.prompt_tokens, answer.usage.completion_tokens)


def test_a_wallet_short_of_the_hold_gets_402_and_nothing_reaches_the_upstream(
    setup: tuple[Gw, int, str, int], upstream: tuple[str, FakeUpstream]
) -> None:
    gw, _, _, _ = setup
    url, _ = upstream
    user_id, secret = gw.user("bob", 50)
    with pytest.raises(openai.APIStatusError) as caught:
        gw.client(secret).chat.completions.create(
            model="chat-a", messages=[{"role": "user", "content": "x" * 100}], max_tokens=100
        )
    assert caught.value.status_code == 402
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "insufficient_funds"
    assert gw.wallet(user_id) == (50, 0)
    assert httpx.get(f"{url}/_fake/stats").json()["requests"].get("chat.completions", 0) == 0


def test_unknown_model_and_bad_body_answer_in_openai_shape(setup: tuple[Gw, int, str, int]) -> None:
    gw, user_id, secret, _ = setup
    with pytest.raises(openai.NotFoundError) as missing:
        gw.client(secret).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}], max_tokens=1
        )
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    r = gw.http.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": "chat-a", "messages": []},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = gw.http.post(f"{gw.url}/v1/chat/completions", json={"model": "chat-a"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert gw.wallet(user_id) == (CREDITS, 0)


def test_every_attempt_failing_voids_the_hold(
    setup: tuple[Gw, int, str, int], upstream: tuple[str, FakeUpstream]
) -> None:
    gw, user_id, secret, _ = setup
    url, _ = upstream
    httpx.post(
        f"{url}/_fake/config", json={"error_rate": 1, "error_kind": "500"}
    ).raise_for_status()
    with pytest.raises(openai.APIStatusError) as caught:
        gw.client(secret).chat.completions.create(
            model="chat-a", messages=[{"role": "user", "content": "x"}], max_tokens=3
        )
    assert caught.value.status_code == 502
    route = caught.value.response.headers["x-modelbank-route"]
    assert route.startswith("resource=") and "; attempts=" in route
    assert gw.wallet(user_id) == (CREDITS, 0)
    assert usage_rows(gw) == []
    (log,) = route_logs(gw)
    assert log["outcome"] == "failed" and log["usage_id"] is None


def test_models_lists_what_the_pool_serves(setup: tuple[Gw, int, str, int]) -> None:
    gw, _, secret, _ = setup
    listed = gw.client(secret).models.list()
    assert [m.id for m in listed.data] == ["chat-a"]
