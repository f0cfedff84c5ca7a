"""A marketplace allocation consumed through the gateway with the official ``openai`` SDK
(DESIGN §10, issue 15's "done when"): a seller deposits a key with a market part over HTTP
and lists quota; a buyer buys part of it; the buyer's calls to that key's model are served
from the allocation at provider cost (no wallet debit), escrow is released 85/15 exactly in
proportion to the cost consumed; when the seller withdraws the key, the rest returns to the
buyer. The ``db`` fixture checks the ledger, pool and marketplace invariants afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from modelbank.analytics.rebuild import verify_rollups
from modelbank.api import app as api_app
from modelbank.config import Settings
from modelbank.db.base import utcnow
from modelbank.earnings.models import earnings_table
from modelbank.gateway.fake_upstream import FakeUpstream
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.marketplace import service as market
from modelbank.marketplace.escrow import released_gross, split
from modelbank.marketplace.models import uses_table
from modelbank.metering.models import usage_events_table
from modelbank.metering.rollups import creator_day_table, model_day_table, user_day_table
from modelbank.money import div_half_even
from modelbank.pool.breaker import Outcome
from modelbank.pool.health import Delta, Result, breaker_policy
from modelbank.pool.health_redis import RedisHealthStore
from modelbank.pool.models import resources_table, route_logs_table
from tests.conftest import Db
from tests.gateway.conftest import SECOND_KEY, UPSTREAM_KEY, Gw
from tests.pool.test_health import REDIS_URL, _redis_available

COST = {"input_uusd_per_mtok": 500_000, "output_uusd_per_mtok": 1_000_000}
"""The model's provider cost: 0.5 µUSD per input token, 1 per output token."""
BUYER_CREDITS = 200_000_000
PRICE = 80_000_000
"""80 credits per USD of provider spend."""
BOUGHT_UUSD = 1_000_000
PAID = 80_000_000


def cost_uusd(prompt: int, completion: int) -> int:
    return div_half_even(prompt * 500_000 + completion * 1_000_000, 1_000_000)


def _platform(gw: Gw, code: AccountCode) -> int:
    with gw.db.tx() as s:
        return ledger.get_balance(s, ledger.platform_account(s, code)).balance


@pytest.fixture
def bought(gw: Gw, upstream: tuple[str, FakeUpstream]) -> tuple[Gw, dict[str, int], str]:
    url, _ = upstream
    creator, _ = gw.user("creator")
    # A creator paid per use and per token: allocation calls must pay them nothing.
    gw.model(
        "chat-a",
        cost=COST,
        creator_id=creator,
        earnings_rule={
            "per_use_ucr": 7_000,
            "per_token_ucr": 10,
            "share_bps": 1_000,
            "popularity_tiers": [],
            "type_multipliers": {},
        },
    )
    seller, _ = gw.user("seller")
    buyer, buyer_key = gw.user("buyer", BUYER_CREDITS)
    resource = gw.post(
        f"/api/v1/users/{seller}/resources",
        {
            "provider": "fake",
            "base_url": f"{url}/v1",
            "api_key": UPSTREAM_KEY,
            "models": [{"model": "chat-a", "upstream_model": "up-chat-a"}],
            "quota_uusd": 20_000_000,
            "market_quota_uusd": 10_000_000,
        },
        key="deposit-1",
    )
    assert resource["status"] == "active", resource
    with gw.db.tx() as s:
        listing = market.create_listing(
            s,
            seller,
            kind="quota",
            resource_id=int(resource["id"]),
            quantity=5_000_000,
            unit_price_ucr=PRICE,
        )
        done = market.buy(s, listing.id, buyer, BOUGHT_UUSD, idempotency_key="buy-1")
    assert done.order.paid_ucr == PAID
    ids = {
        "seller": seller,
        "buyer": buyer,
        "creator": creator,
        "resource": int(resource["id"]),
        "allocation": done.allocations[0].id,
        "order": done.order.id,
    }
    return gw, ids, buyer_key


def test_allocation_served_at_cost_released_in_proportion_and_returned(
    bought: tuple[Gw, dict[str, int], str],
) -> None:
    gw, ids, buyer_key = bought
    seller_before = gw.wallet(ids["seller"])[0]
    fees_before = _platform(gw, AccountCode.PLATFORM_FEES)
    client = gw.client(buyer_key)

    raw = client.chat.completions.with_raw_response.create(
        model="chat-a", messages=[{"role": "user", "content": "Hello there"}], max_tokens=20
    )
    answer = raw.parse()
    assert answer.usage is not None
    first = cost_uusd(answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert raw.headers["x-modelbank-route"].startswith(f"resource={ids['resource']}; attempts=1")

    stream = client.chat.completions.create(
        model="chat-a",
        messages=[{"role": "user", "content": "Stream a story"}],
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    usages = [c.usage for c in stream if c.usage is not None]
    assert len(usages) == 1
    second = cost_uusd(usages[0].prompt_tokens, usages[0].completion_tokens)

    # No wallet debit, no hold left: the buyer paid only the order, into escrow.
    assert gw.wallet(ids["buyer"]) == (BUYER_CREDITS - PAID, 0)
    with gw.db.tx() as s:
        alloc = market.get_allocation(s, ids["allocation"])
        statuses = s.execute(select(uses_table.c.status)).scalars().all()
        logs = s.execute(
            select(
                route_logs_table.c.outcome,
                route_logs_table.c.cost_uusd,
                route_logs_table.c.charge_ucr,
            ).order_by(route_logs_table.c.id)
        ).all()
        pool_consumed = s.execute(
            select(resources_table.c.consumed_uusd).where(resources_table.c.id == ids["resource"])
        ).scalar_one()
    assert statuses == ["settled", "settled"]
    assert (alloc.consumed_uusd, alloc.held_uusd) == (first + second, 0)
    assert [tuple(r) for r in logs] == [("served", first, 0), ("served", second, 0)]
    assert pool_consumed == 0  # the market part's spend is not the pool part's
    # Escrow released exactly in proportion: gross = paid × consumed / quantity, then 85/15.
    gross = released_gross(PAID, first + second, BOUGHT_UUSD)
    seller_part, fee_part = split(gross, 1_500)
    assert (alloc.seller_ucr, alloc.commission_ucr) == (seller_part, fee_part)
    assert gw.wallet(ids["seller"])[0] == seller_before + seller_part
    assert _platform(gw, AccountCode.PLATFORM_FEES) == fees_before + fee_part
    assert _platform(gw, AccountCode.MARKETPLACE_ESCROW) == PAID - gross

    # The seller withdraws the key: the unconsumed escrow returns to the buyer.
    gw.post(f"/api/v1/resources/{ids['resource']}/withdraw", {})
    assert gw.wallet(ids["buyer"]) == (BUYER_CREDITS - gross, 0)
    assert _platform(gw, AccountCode.MARKETPLACE_ESCROW) == 0
    with gw.db.tx() as s:
        order = market.get_order(s, ids["order"])
    assert order.status == "closed"
    assert (order.seller_ucr, order.commission_ucr, order.returned_ucr) == (
        seller_part,
        fee_part,
        PAID - gross,
    )


def test_other_users_pay_the_platform_price_and_a_too_big_call_uses_the_wallet(
    bought: tuple[Gw, dict[str, int], str],
) -> None:
    gw, ids, buyer_key = bought
    other, other_key = gw.user("other", 10_000_000)
    answer = gw.client(other_key).chat.completions.create(
        model="chat-a", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
    )
    assert answer.usage is not None
    # gw.model's price: 1 µcr per input token, 2 per output token
    charged = answer.usage.prompt_tokens + 2 * answer.usage.completion_tokens
    assert gw.wallet(other) == (10_000_000 - charged, 0)
    # A bound larger than the allocation (1,000,000 µUSD = 1M output tokens) goes to the
    # wallet at the platform's price; the upstream answers the max_tokens it was sent.
    big = gw.client(buyer_key).chat.completions.create(
        model="chat-a", messages=[{"role": "user", "content": "Hi"}], max_tokens=1_500_000
    )
    assert big.usage is not None
    charged = big.usage.prompt_tokens + 2 * big.usage.completion_tokens
    assert gw.wallet(ids["buyer"]) == (BUYER_CREDITS - PAID - charged, 0)
    with gw.db.tx() as s:
        assert market.get_allocation(s, ids["allocation"]).consumed_uusd == 0


def _request_id(headers: httpx.Headers) -> str:
    """The gateway's request id, from ``X-Modelbank-Route`` (``…; request=<id>``)."""
    return headers["x-modelbank-route"].rsplit("request=", 1)[1]


def _rows(gw: Gw, table: Any) -> list[dict[str, Any]]:
    with gw.db.tx() as s:
        return [dict(r._mapping) for r in s.execute(select(table).order_by(*table.primary_key))]


def test_allocation_calls_are_usage_events_at_cost_with_no_charge_and_no_earnings(
    bought: tuple[Gw, dict[str, int], str],
) -> None:
    """Gap 1: a call served from an allocation is a usage event (key ``gw:<request id>``)
    charged 0 µcr, with its tokens, model, resource and provider cost; no creator earnings
    (the seller is paid through escrow); the rollups and analytics count its use and tokens
    and cost, never a spend."""
    gw, ids, buyer_key = bought
    client = gw.client(buyer_key)
    raw = client.chat.completions.with_raw_response.create(
        model="chat-a", messages=[{"role": "user", "content": "Hello there"}], max_tokens=20
    )
    answer = raw.parse()
    assert answer.usage is not None
    streamed = client.chat.completions.with_raw_response.create(
        model="chat-a",
        messages=[{"role": "user", "content": "Stream a story"}],
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    usages = [c.usage for c in streamed.parse() if c.usage is not None]
    calls = [
        (_request_id(raw.headers), answer.usage.prompt_tokens, answer.usage.completion_tokens),
        (_request_id(streamed.headers), usages[0].prompt_tokens, usages[0].completion_tokens),
    ]
    costs = [cost_uusd(p, c) for _, p, c in calls]
    assert all(costs)

    assert gw.wallet(ids["buyer"]) == (BUYER_CREDITS - PAID, 0)  # nothing charged
    rows = _rows(gw, usage_events_table)
    assert [
        (
            r["idempotency_key"],
            r["user_id"],
            r["usage_type"],
            r["input_tokens"],
            r["output_tokens"],
            r["charge_ucr"],
            r["cost_uusd"],
            r["earnings_ucr"],
            r["earnings_note"],
            r["resource_id"],
        )
        for r in rows
    ] == [
        (f"gw:{rid}", ids["buyer"], "chat", p, c, 0, cost, 0, "prepaid", ids["resource"])
        for (rid, p, c), cost in zip(calls, costs, strict=True)
    ]
    logs = _rows(gw, route_logs_table)
    assert [(log["usage_id"], log["charge_ucr"], log["cost_uusd"]) for log in logs] == [
        (r["id"], 0, cost) for r, cost in zip(rows, costs, strict=True)
    ]
    # No creator earnings: no earning line, nothing in the creator's rollup.
    assert _rows(gw, earnings_table) == []
    assert _rows(gw, creator_day_table) == []
    tokens = sum(p + c for _, p, c in calls)
    (model_day,) = _rows(gw, model_day_table)
    assert (model_day["uses"], model_day["tokens"], model_day["revenue_ucr"]) == (2, tokens, 0)
    assert (model_day["cost_uusd"], model_day["earnings_ucr"]) == (sum(costs), 0)
    (user_day,) = _rows(gw, user_day_table)
    assert (user_day["user_id"], user_day["uses"], user_day["tokens"]) == (ids["buyer"], 2, tokens)
    assert user_day["spend_ucr"] == 0
    with gw.db.tx() as s:
        assert verify_rollups(s) == []  # the incremental rollups equal a rebuild

    # What the analytics API shows: the buyer's uses and tokens, no spend; the admin's
    # provider cost of the model.
    mine = gw.http.get(
        f"{gw.url}/api/v1/users/{ids['buyer']}/model-analytics", headers=gw.admin
    ).json()
    assert (mine["uses"], mine["tokens"], mine["spent_ucr"]) == (2, tokens, 0)
    (line,) = mine["spend_by_model"]
    assert (line["uses"], line["tokens"], line["spent_ucr"]) == (2, tokens, 0)
    platform = gw.http.get(f"{gw.url}/api/v1/admin/analytics", headers=gw.admin).json()
    (figures,) = platform["models"]
    assert (figures["uses"], figures["revenue_ucr"], figures["cost_uusd"]) == (
        2,
        0,
        sum(costs),
    )


def fail_with(url: str, kind: str) -> None:
    httpx.post(f"{url}/_fake/config", json={"error_rate": 1, "error_kind": kind}).raise_for_status()


def chat_requests(url: str) -> int:
    return int(httpx.get(f"{url}/_fake/stats").json()["requests"].get("chat.completions", 0))


def _ask(client: openai.OpenAI, stream: bool) -> tuple[str, int, int, str]:
    """One chat call: (route header, prompt tokens, completion tokens, request id)."""
    raw = client.chat.completions.with_raw_response.create(
        model="chat-a",
        messages=[{"role": "user", "content": "Hello there"}],
        max_tokens=9,
        stream=stream,
        stream_options={"include_usage": True} if stream else None,
    )
    used = raw.parse().usage if not stream else None
    if stream:  # read to the end: the stream is settled before its last event
        (used,) = [c.usage for c in raw.parse() if c.usage is not None]
    assert used is not None
    return (
        raw.headers["x-modelbank-route"],
        used.prompt_tokens,
        used.completion_tokens,
        _request_id(raw.headers),
    )


def _allocation_untouched(gw: Gw, ids: dict[str, int], uses: int) -> None:
    """The allocation consumed and holds nothing; its ``uses`` holds were voided; the
    escrow and the seller are where the purchase left them."""
    with gw.db.tx() as s:
        alloc = market.get_allocation(s, ids["allocation"])
        statuses = s.execute(select(uses_table.c.status)).scalars().all()
    assert (alloc.consumed_uusd, alloc.held_uusd, alloc.seller_ucr) == (0, 0, 0)
    assert statuses == ["voided"] * uses
    assert _platform(gw, AccountCode.MARKETPLACE_ESCROW) == PAID


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_allocation_falls_back_to_the_pool_at_the_platform_price(
    bought: tuple[Gw, dict[str, int], str],
    upstream: tuple[str, FakeUpstream],
    second: tuple[str, FakeUpstream],
    stream: bool,
) -> None:
    """Gap 2: the allocation's resource answers 5xx before the first byte: the call is
    served the normal way (another pool resource, the wallet charged the platform's price)
    and the allocation is not charged for the failed attempt."""
    gw, ids, buyer_key = bought
    (url_a, _), (url_b, _) = upstream, second
    pool = gw.resource(url_b, {"chat-a": "up-b"}, api_key=SECOND_KEY)
    fail_with(url_a, "500")
    header, prompt, completion, request_id = _ask(gw.client(buyer_key), stream)
    # One failed attempt on the allocation's resource, then the pool's (the failed
    # resource is not tried again by the normal route).
    assert header.startswith(f"resource={pool['id']}; attempts=2")
    assert (chat_requests(url_a), chat_requests(url_b)) == (1, 1)
    charged = prompt + 2 * completion  # the platform's price of chat-a
    assert gw.wallet(ids["buyer"]) == (BUYER_CREDITS - PAID - charged, 0)
    _allocation_untouched(gw, ids, 1)
    (usage,) = _rows(gw, usage_events_table)
    assert (usage["charge_ucr"], usage["resource_id"]) == (charged, pool["id"])
    (log,) = _rows(gw, route_logs_table)
    assert (log["request_id"], log["outcome"], log["resource_id"]) == (
        request_id,
        "served",
        pool["id"],
    )
    assert [(a["resource_id"], a["outcome"]) for a in log["attempts"]] == [
        (ids["resource"], "upstream_failure"),
        (pool["id"], "success"),
    ]
    assert (log["usage_id"], log["charge_ucr"]) == (usage["id"], charged)


def test_a_failing_allocation_with_no_pool_left_fails_as_usual(
    bought: tuple[Gw, dict[str, int], str], upstream: tuple[str, FakeUpstream]
) -> None:
    """Gap 2: nothing else serves the model: the usual 502, nothing charged anywhere."""
    gw, ids, buyer_key = bought
    url_a, _ = upstream
    fail_with(url_a, "500")
    with pytest.raises(openai.APIStatusError) as failed:
        _ask(gw.client(buyer_key), False)
    assert failed.value.status_code == 502
    assert failed.value.code == "upstream_unavailable"
    assert failed.value.response.headers["x-modelbank-route"].startswith("resource=")
    assert gw.wallet(ids["buyer"]) == (BUYER_CREDITS - PAID, 0)
    _allocation_untouched(gw, ids, 1)
    assert _rows(gw, usage_events_table) == []
    (log,) = _rows(gw, route_logs_table)
    # The wallet hold taken for the normal way was voided (nothing pending above).
    assert (log["outcome"], log["charge_ucr"]) == ("failed", 0)
    assert log["hold_id"] is not None
    assert [a["resource_id"] for a in log["attempts"]] == [ids["resource"]]


def test_a_failing_allocation_the_wallet_way_cannot_cover_gets_the_usual_refusal(
    bought: tuple[Gw, dict[str, int], str],
    upstream: tuple[str, FakeUpstream],
    second: tuple[str, FakeUpstream],
) -> None:
    """Gap 2: the normal way needs a wallet hold; a key whose spend limit cannot cover it
    gets the usual 402 ``key_limit_reached``, the pool is not called, nothing is charged
    or held, and the request's route log row keeps the allocation's failed attempt."""
    gw, ids, _ = bought
    (url_a, _), (url_b, _) = upstream, second
    gw.resource(url_b, {"chat-a": "up-b"}, api_key=SECOND_KEY)
    tight = gw.post(f"/api/v1/users/{ids['buyer']}/keys", {"limit_ucr": 1, "limit_period": "day"})[
        "key"
    ]
    fail_with(url_a, "500")
    with pytest.raises(openai.APIStatusError) as refused:
        _ask(gw.client(tight), False)
    assert (refused.value.status_code, refused.value.code) == (402, "key_limit_reached")
    assert (chat_requests(url_a), chat_requests(url_b)) == (1, 0)
    assert gw.wallet(ids["buyer"]) == (BUYER_CREDITS - PAID, 0)
    _allocation_untouched(gw, ids, 1)
    (log,) = _rows(gw, route_logs_table)
    assert (log["outcome"], log["hold_id"], log["charge_ucr"]) == ("failed", None, 0)
    assert [a["resource_id"] for a in log["attempts"]] == [ids["resource"]]


@pytest.fixture
def redis_health(monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisHealthStore]:
    """The gateway's health in Redis (under a prefix of this test's own)."""
    if not _redis_available():
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    prefix = f"modelbank:test:{uuid.uuid4().hex}:"
    made: list[RedisHealthStore] = []

    def store(settings: Settings, engine: Any) -> RedisHealthStore:
        made.append(RedisHealthStore(REDIS_URL, policy=breaker_policy(settings), prefix=prefix))
        return made[-1]

    monkeypatch.setattr(api_app, "health_store", store)
    view = RedisHealthStore(REDIS_URL, prefix=prefix)
    yield view
    for key in view.client.scan_iter(f"{prefix}*"):
        view.client.delete(key)
    view.close()
    for one in made:
        one.close()


@pytest.mark.parametrize("stream", [False, True])
def test_an_allocation_whose_breaker_is_open_in_redis_goes_the_normal_way(
    redis_health: RedisHealthStore,
    db: Db,
    request: pytest.FixtureRequest,
    upstream: tuple[str, FakeUpstream],
    second: tuple[str, FakeUpstream],
    stream: bool,
) -> None:
    """Gap 3: with the Redis health store, an allocation whose resource's breaker is open
    is served the normal way (not a 503), its resource not even tried."""
    # ``bought`` (and the gateway) after ``redis_health``: the app must build its router on
    # the Redis store.
    gw, ids, buyer_key = request.getfixturevalue("bought")
    (url_a, _), (url_b, _) = upstream, second
    pool = gw.resource(url_b, {"chat-a": "up-b"}, api_key=SECOND_KEY)
    now = utcnow()
    failures = [Result(Outcome.UPSTREAM_FAILURE, now)] * 5  # the default threshold
    opened = redis_health.record({ids["resource"]: Delta(0, failures)})[ids["resource"]]
    assert opened.breaker.state.value == "open"
    header, prompt, completion, _ = _ask(gw.client(buyer_key), stream)
    assert header.startswith(f"resource={pool['id']}; attempts=1")
    assert (chat_requests(url_a), chat_requests(url_b)) == (0, 1)
    charged = prompt + 2 * completion
    assert gw.wallet(ids["buyer"]) == (BUYER_CREDITS - PAID - charged, 0)
    _allocation_untouched(gw, ids, 1)
    (log,) = _rows(gw, route_logs_table)
    assert (log["outcome"], log["resource_id"]) == ("served", pool["id"])


def test_an_allocation_call_whose_model_goes_mid_stream_still_settles_on_the_allocation(
    bought: tuple[Gw, dict[str, int], str],
    upstream: tuple[str, FakeUpstream],
) -> None:
    """The model is deactivated while a call served from an allocation streams: the call
    was served, so it settles on the allocation (cost booked, use settled, a route log
    row) without a usage event, as settlement's docstring says ("None when the pipeline
    refused it"), instead of the whole settlement failing."""
    from modelbank.catalog.manage import deactivate_model

    gw, ids, buyer_key = bought
    url, _ = upstream
    httpx.post(f"{url}/_fake/config", json={"tokens_per_s": 20}).raise_for_status()
    client = gw.client(buyer_key)
    raw = client.chat.completions.with_raw_response.create(
        model="chat-a",
        messages=[{"role": "user", "content": "Stream a story"}],
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    rid = _request_id(raw.headers)
    chunks = iter(raw.parse())
    next(chunks)
    with gw.db.tx() as s:
        model_id = s.execute(select(usage_events_table.c.model_id).limit(1)).scalar()
        assert model_id is None  # nothing recorded yet
        from modelbank.catalog.models import models_table

        model_id = s.execute(
            select(models_table.c.id).where(models_table.c.slug == "chat-a")
        ).scalar_one()
        deactivate_model(s, model_id)
    rest = list(chunks)
    assert any(c.usage is not None for c in rest)
    logs = [log for log in _rows(gw, route_logs_table) if log["request_id"] == rid]
    assert len(logs) == 1, logs
    assert logs[0]["usage_id"] is None and logs[0]["cost_uusd"] > 0
    with gw.db.tx() as s:
        alloc = market.get_allocation(s, ids["allocation"])
        statuses = s.execute(select(uses_table.c.status)).scalars().all()
    assert alloc.held_uusd == 0 and alloc.consumed_uusd == logs[0]["cost_uusd"]
    assert "pending" not in statuses
