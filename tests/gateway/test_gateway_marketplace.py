"""A marketplace allocation consumed through the gateway with the official ``openai`` SDK
(DESIGN §10, issue 15's "done when"): a seller deposits a key with a market part over HTTP
and lists quota; a buyer buys part of it; the buyer's calls to that key's model are served
from the allocation at provider cost (no wallet debit), escrow is released 85/15 exactly in
proportion to the cost consumed; when the seller withdraws the key, the rest returns to the
buyer. The ``db`` fixture checks the ledger, pool and marketplace invariants afterwards."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from modelbank.gateway.fake_upstream import FakeUpstream
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.marketplace import service as market
from modelbank.marketplace.escrow import released_gross, split
from modelbank.marketplace.models import uses_table
from modelbank.money import div_half_even
from modelbank.pool.models import resources_table, route_logs_table
from tests.gateway.conftest import UPSTREAM_KEY, Gw

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
    gw.model("chat-a", cost=COST)
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
