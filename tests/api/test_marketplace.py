"""The marketplace over HTTP (DESIGN §10, issue 15), on SQLite and PostgreSQL: quota and
stake listings, buying into escrow with balances to the µcr, consumption released 85/15,
the rest returned when the key is withdrawn, idempotent buys, re-pricing and cancelling,
disputes refunded or released, the pricing suggestion, the admin view, bad input and races
refused with typed problems and nothing written. The db fixture checks the ledger
invariants after each test."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import update

from modelbank.marketplace import allocations
from modelbank.marketplace.models import listings_table
from modelbank.pool import service as pool
from modelbank.secrets import SecretBox
from tests.api.conftest import TEST_SECRET_KEY, Api, problem

V1 = "/api/v1"
MARKET = f"{V1}/marketplace"
CREDIT = 1_000_000
PRICE_PER_USD = 160_000_000
"""The listing's price: 160 credits per USD of provider spend (the suggestion, below)."""
_keys = itertools.count(1)


@dataclass
class Market:
    seller: int
    seller_headers: dict[str, str]
    buyer: int
    buyer_headers: dict[str, str]
    model_id: int
    resource_id: int


def _resource(api: Api, owner: int, key: str, *, market_uusd: int = 2_000_000) -> int:
    """An active resource of ``owner`` ($10 quota, ``market_uusd`` of it the market part)
    serving gpt-4o: registered and activated through the pool service (no probe)."""
    with api.db.tx() as session:
        info = pool.register(
            session,
            owner,
            provider="openai",
            base_url="https://api.openai.example/v1",
            api_key=key,
            models=[("gpt-4o", "gpt-4o-2024-08-06")],
            quota_uusd=10_000_000,
            market_quota_uusd=market_uusd,
            box=SecretBox(TEST_SECRET_KEY),
        )
        return pool.activate(session, info.id).id


@pytest.fixture
def market(api: Api) -> Market:
    """The marketplace's cast (:func:`make_market`)."""
    return make_market(api)


def make_market(api: Api) -> Market:
    """gpt-4o priced at 2,000 credits and costing $10 per 1M input + 1M output tokens (the
    platform charges 200 credits per USD of spend); a seller with a deposited key ($2 of
    market part; 720 credits of deposit credit for the $8 pool part) and a buyer with 100
    credits."""
    model = api.model(
        "gpt-4o",
        price={"input_ucr_per_mtok": 500_000_000, "output_ucr_per_mtok": 1_500_000_000},
        cost={"input_uusd_per_mtok": 2_500_000, "output_uusd_per_mtok": 7_500_000},
    )
    seller, seller_headers = api.user("seller")
    buyer, buyer_headers = api.user("buyer", credits_ucr=100 * CREDIT)
    resource_id = _resource(api, seller, "sk-seller-key-000000000001")
    return Market(seller, seller_headers, buyer, buyer_headers, int(model["id"]), resource_id)


def wallet(api: Api, user_id: int) -> int:
    r = api.client.get(f"{V1}/users/{user_id}/wallet", headers=api.admin)
    assert r.status_code == 200, r.text
    return int(r.json()["balance_ucr"])


def list_quota(api: Api, m: Market, **fields: Any) -> dict[str, Any]:
    body = {
        "kind": "quota",
        "resource_id": m.resource_id,
        "quantity": 1_000_000,
        "unit_price_ucr": PRICE_PER_USD,
        "min_fill": 100_000,
        **fields,
    }
    r = api.client.post(f"{MARKET}/listings", json=body, headers=m.seller_headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def buy(api: Api, headers: dict[str, str], listing_id: int, quantity: int, key: str = "") -> Any:
    return api.client.post(
        f"{MARKET}/listings/{listing_id}/buy",
        json={"quantity": quantity},
        headers={**headers, "Idempotency-Key": key or f"buy-{next(_keys)}"},
    )


def consume(api: Api, allocation_id: int, model_id: int, cost_uusd: int) -> None:
    """A gateway call served from the allocation at ``cost_uusd`` of provider spend (the
    gateway's reserve → settle, as the gateway runs them)."""
    request_id = f"req-{next(_keys)}"
    with api.db.tx() as session:
        assert allocations.reserve(
            session, allocation_id, request_id, model_id, cost_uusd, timeout_s=60
        )
    with api.db.tx() as session:
        allocations.settle(session, request_id, cost_uusd)


def test_quota_is_listed_bought_consumed_and_returned_to_the_microcredit(
    api: Api, market: Market
) -> None:
    m, c = market, api.client
    assert wallet(api, m.seller) == 720 * CREDIT
    listing = list_quota(api, m)
    assert (listing["kind"], listing["seller_id"], listing["status"]) == ("quota", m.seller, "open")
    assert (listing["available"], listing["unit"], listing["models"]) == (
        1_000_000,
        "usd",
        [m.model_id],
    )
    # 1M in + 1M out tokens cost $10: at 160 credits per USD, 1,600 credits
    assert listing["price_ucr_per_mtok"] == 1_600 * CREDIT
    assert listing["reputation"][0]["resource_id"] == m.resource_id

    r = buy(api, m.buyer_headers, listing["id"], 250_000, key="b-1")
    assert r.status_code == 201, r.text
    assert r.headers["Idempotency-Hit"] == "false"
    order = r.json()
    # $0.25 of spend at 160 credits per USD: 40 credits, all in escrow
    assert (order["paid_ucr"], order["in_escrow_ucr"], order["commission_bps"]) == (
        40 * CREDIT,
        40 * CREDIT,
        1_500,
    )
    assert (order["buyer_id"], order["seller_id"], order["status"]) == (m.buyer, m.seller, "open")
    [alloc] = order["allocations"]
    assert (alloc["quantity_uusd"], alloc["remaining_uusd"], alloc["paid_ucr"]) == (
        250_000,
        250_000,
        40 * CREDIT,
    )
    assert wallet(api, m.buyer) == 60 * CREDIT
    again = buy(api, m.buyer_headers, listing["id"], 250_000, key="b-1")
    assert again.status_code == 201 and again.headers["Idempotency-Hit"] == "true"
    assert again.json() == order and wallet(api, m.buyer) == 60 * CREDIT
    api.rejects(
        "POST",
        f"{MARKET}/listings/{listing['id']}/buy",
        409,
        "idempotency_key_reused",
        json={"quantity": 300_000},
        headers={**m.buyer_headers, "Idempotency-Key": "b-1"},
    )
    left = c.get(f"{MARKET}/listings/{listing['id']}", headers=m.buyer_headers).json()
    assert (left["filled"], left["available"]) == (250_000, 750_000)

    consume(api, alloc["id"], m.model_id, 100_000)  # 40 % consumed: 16 credits released
    mine = c.get(f"{V1}/users/{m.buyer}/allocations", headers=m.buyer_headers).json()["items"]
    assert [
        (a["consumed_uusd"], a["remaining_uusd"], a["released_ucr"], a["in_escrow_ucr"])
        for a in mine
    ] == [(100_000, 150_000, 16 * CREDIT, 24 * CREDIT)]
    assert (mine[0]["seller_ucr"], mine[0]["commission_ucr"]) == (13_600_000, 2_400_000)
    assert wallet(api, m.seller) == 720 * CREDIT + 13_600_000

    out = c.post(
        f"{V1}/resources/{m.resource_id}/withdraw",
        headers={**m.seller_headers, "Idempotency-Key": "wd"},
    )
    assert out.status_code == 200, out.text
    # the unconsumed 24 credits return to the buyer; the seller keeps 85 % of the consumed
    # part and loses the deposit credit of the unconsumed pool part (720 credits)
    assert wallet(api, m.buyer) == 84 * CREDIT
    assert wallet(api, m.seller) == 13_600_000
    done = c.get(f"{MARKET}/allocations/{alloc['id']}", headers=m.buyer_headers).json()
    assert (done["status"], done["returned_ucr"], done["in_escrow_ucr"]) == (
        "returned",
        24 * CREDIT,
        0,
    )
    closed = c.get(f"{MARKET}/orders/{order['id']}", headers=m.seller_headers).json()
    assert (closed["status"], closed["seller_ucr"], closed["commission_ucr"]) == (
        "closed",
        13_600_000,
        2_400_000,
    )
    assert closed["returned_ucr"] == 24 * CREDIT and closed["in_escrow_ucr"] == 0
    listed = c.get(f"{MARKET}/listings/{listing['id']}", headers=m.buyer_headers).json()
    assert listed["status"] == "closed" and listed["available"] == 0
    panel = c.get(f"{V1}/admin/marketplace", headers=api.admin).json()
    assert (panel["orders"], panel["volume_ucr"], panel["commission_ucr"]) == (
        1,
        40 * CREDIT,
        2_400_000,
    )
    assert (panel["open_escrow_ucr"], panel["listings_open"], panel["allocations_active"]) == (
        0,
        0,
        0,
    )


def test_pricing_suggestion_undercuts_the_platform_above_the_floor(
    api: Api, market: Market
) -> None:
    m, c = market, api.client
    hint = c.get(
        f"{MARKET}/pricing-suggestion",
        params={"resource_id": m.resource_id},
        headers=m.seller_headers,
    )
    assert hint.status_code == 200, hint.text
    # the platform's 200 cr/USD undercut by 20 %; the floor covers 1 USD at 100 cr/USD after
    # the 15 % commission: ceil(100e6 / 0.85)
    assert {k: hint.json()[k] for k in ("unit_price_ucr", "platform_ucr", "floor_ucr")} == {
        "unit_price_ucr": PRICE_PER_USD,
        "platform_ucr": 200_000_000,
        "floor_ucr": 117_647_059,
    }


def test_pricing_suggestion_is_the_resource_owners(api: Api, market: Market) -> None:
    m, c = market, api.client
    url = f"{MARKET}/pricing-suggestion"
    mine = c.get(url, params={"resource_id": m.resource_id}, headers=m.seller_headers)
    assert mine.status_code == 200, mine.text
    assert (mine.json()["unit_price_ucr"], mine.json()["commission_bps"]) == (PRICE_PER_USD, 1_500)
    assert mine.json()["unit_price"] == "160.000000 cr"
    admin = c.get(url, params={"resource_id": m.resource_id}, headers=api.admin)
    assert admin.json() == mine.json()
    problem(
        c.get(url, params={"resource_id": m.resource_id}, headers=m.buyer_headers),
        404,
        "resource_not_found",
    )


def test_stake_is_sold_at_once_85_15(api: Api, market: Market) -> None:
    m, c = market, api.client
    model = api.model("sellers-model", creator_id=m.seller)
    r = c.post(
        f"{MARKET}/listings",
        json={"kind": "stake", "model_id": model["id"], "quantity": 2_000, "unit_price_ucr": 1_000},
        headers=m.seller_headers,
    )
    assert r.status_code == 201, r.text
    listing = r.json()
    assert (listing["unit"], listing["min_fill"], listing["price_ucr_per_mtok"]) == (
        "bps",
        2_000,
        None,
    )
    bought = buy(api, m.buyer_headers, listing["id"], 2_000)
    assert bought.status_code == 201, bought.text
    order = bought.json()
    assert (order["paid_ucr"], order["seller_ucr"], order["commission_ucr"]) == (
        2_000_000,
        1_700_000,
        300_000,
    )
    assert (order["status"], order["in_escrow_ucr"], order["allocations"]) == ("closed", 0, [])
    assert wallet(api, m.buyer) == 98 * CREDIT
    assert wallet(api, m.seller) == 720 * CREDIT + 1_700_000
    stakes = c.get(f"{V1}/models/{model['id']}/stakes", headers=m.buyer_headers).json()
    shares = {s["user_id"]: s["share_bps"] for s in stakes["stakes"]}
    assert shares == {m.seller: 8_000, m.buyer: 2_000}
    sold = c.get(f"{MARKET}/listings/{listing['id']}", headers=m.buyer_headers).json()
    assert sold["status"] == "filled"
    orders = c.get(
        f"{V1}/users/{m.seller}/orders", params={"role": "seller"}, headers=m.seller_headers
    ).json()["items"]
    assert [o["id"] for o in orders] == [order["id"]]
    none = c.get(
        f"{V1}/users/{m.seller}/orders", params={"role": "buyer"}, headers=m.seller_headers
    ).json()
    assert none == {"items": [], "next_cursor": None}


def test_browse_filters_by_model_price_and_kind(api: Api, market: Market) -> None:
    m, c = market, api.client
    cheap = list_quota(api, m, quantity=500_000, unit_price_ucr=120_000_000)
    dear = list_quota(api, m, quantity=500_000, unit_price_ucr=180_000_000)
    other = api.model("other-model")

    def ids(**params: Any) -> list[int]:
        r = c.get(f"{MARKET}/listings", params=params, headers=m.buyer_headers)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["items"]]

    assert ids() == [cheap["id"], dear["id"]]
    assert ids(model_id=m.model_id) == [cheap["id"], dear["id"]]
    assert ids(model_id=other["id"]) == []
    assert ids(max_price_ucr_per_mtok=1_200 * CREDIT) == [cheap["id"]]
    assert ids(kind="stake") == []
    assert ids(min_success_rate=0.5) == [cheap["id"], dear["id"]]
    first = c.get(f"{MARKET}/listings", params={"limit": 1}, headers=m.buyer_headers).json()
    assert [x["id"] for x in first["items"]] == [cheap["id"]] and first["next_cursor"]
    rest = c.get(
        f"{MARKET}/listings",
        params={"limit": 1, "cursor": first["next_cursor"]},
        headers=m.buyer_headers,
    ).json()
    assert [x["id"] for x in rest["items"]] == [dear["id"]]
    c.post(f"{MARKET}/listings/{cheap['id']}/cancel", headers=m.seller_headers)
    assert ids() == [dear["id"]]
    assert ids(status="cancelled") == [cheap["id"]]
    assert ids(status="any", seller_id=m.seller) == [cheap["id"], dear["id"]]


def test_a_buy_is_refused_when_the_seller_repriced_above_what_the_buyer_saw(
    api: Api, market: Market
) -> None:
    """The buyer sends the unit price they saw (``max_unit_price_ucr``): a seller who raised
    it meanwhile gets no sale at the new price (409, nothing written); at or below it buys."""
    m, c = market, api.client
    listing = list_quota(api, m)
    url = f"{MARKET}/listings/{listing['id']}"
    r = c.patch(url, json={"unit_price_ucr": 10 * PRICE_PER_USD}, headers=m.seller_headers)
    assert r.status_code == 200, r.text
    body = api.rejects(
        "POST",
        f"{url}/buy",
        409,
        "market_price_changed",
        json={"quantity": 500_000, "max_unit_price_ucr": PRICE_PER_USD},
        headers={**m.buyer_headers, "Idempotency-Key": "saw-old-price"},
    )
    assert body["unit_price_ucr"] == 10 * PRICE_PER_USD
    assert wallet(api, m.buyer) == 100 * CREDIT
    assert c.get(url, headers=m.buyer_headers).json()["filled"] == 0
    r = c.patch(url, json={"unit_price_ucr": PRICE_PER_USD // 2}, headers=m.seller_headers)
    r = c.post(
        f"{url}/buy",
        json={"quantity": 500_000, "max_unit_price_ucr": PRICE_PER_USD},
        headers={**m.buyer_headers, "Idempotency-Key": "cheaper-is-fine"},
    )
    assert r.status_code == 201 and r.json()["paid_ucr"] == 40 * CREDIT, r.text
    assert wallet(api, m.buyer) == 60 * CREDIT


def test_seller_reprices_and_cancels_the_unfilled_part(api: Api, market: Market) -> None:
    m, c = market, api.client
    listing = list_quota(api, m)
    url = f"{MARKET}/listings/{listing['id']}"
    assert buy(api, m.buyer_headers, listing["id"], 250_000).status_code == 201
    api.rejects(
        "PATCH",
        url,
        404,
        "market_listing_not_found",
        json={"unit_price_ucr": 1},
        headers=m.buyer_headers,
    )
    r = c.patch(url, json={"unit_price_ucr": 200_000_000}, headers=m.seller_headers)
    assert r.status_code == 200 and r.json()["unit_price_ucr"] == 200_000_000, r.text
    second = buy(api, m.buyer_headers, listing["id"], 250_000)
    assert second.json()["paid_ucr"] == 50 * CREDIT  # the new price; the first order kept 40
    assert wallet(api, m.buyer) == 10 * CREDIT
    api.rejects("POST", f"{url}/cancel", 404, "market_listing_not_found", headers=m.buyer_headers)
    cancelled = c.post(f"{url}/cancel", headers=m.seller_headers)
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["filled"]) == ("cancelled", 500_000)
    api.rejects("POST", f"{url}/cancel", 409, "market_listing_state", headers=m.seller_headers)
    api.rejects(
        "PATCH",
        url,
        409,
        "market_listing_state",
        json={"unit_price_ucr": 1},
        headers=m.seller_headers,
    )
    body = api.rejects(
        "POST",
        f"{url}/buy",
        409,
        "market_listing_state",
        json={"quantity": 100_000},
        headers={**m.buyer_headers, "Idempotency-Key": "late"},
    )
    assert body["status"] == 409
    # its allocations stay the buyer's
    mine = c.get(f"{V1}/users/{m.buyer}/allocations", headers=m.buyer_headers).json()["items"]
    assert [(a["status"], a["paid_ucr"]) for a in mine] == [
        ("active", 40 * CREDIT),
        ("active", 50 * CREDIT),
    ]


def test_refusals_are_typed_and_write_nothing(api: Api, market: Market) -> None:
    m = market
    listing = list_quota(api, m)
    buy_url = f"{MARKET}/listings/{listing['id']}/buy"
    api.rejects(
        "POST",
        buy_url,
        422,
        "own_market_listing",
        json={"quantity": 100_000},
        headers={**m.seller_headers, "Idempotency-Key": "own"},
    )
    api.rejects(
        "POST",
        buy_url,
        422,
        "invalid_fill",
        json={"quantity": 99_999},
        headers={**m.buyer_headers, "Idempotency-Key": "small"},
    )
    api.rejects(
        "POST",
        buy_url,
        422,
        "invalid_fill",
        json={"quantity": 1_000_001},
        headers={**m.buyer_headers, "Idempotency-Key": "big"},
    )
    api.rejects(
        "POST",
        buy_url,
        422,
        "validation_error",
        json={"quantity": 100_000},
        headers=m.buyer_headers,
    )  # no Idempotency-Key
    _, poor_headers = api.user("poor", credits_ucr=CREDIT)
    api.rejects(
        "POST",
        buy_url,
        402,
        "insufficient_funds",
        json={"quantity": 100_000},
        headers={**poor_headers, "Idempotency-Key": "poor"},
    )
    api.rejects(
        "POST",
        f"{MARKET}/listings/999999/buy",
        404,
        "market_listing_not_found",
        json={"quantity": 1},
        headers={**m.buyer_headers, "Idempotency-Key": "x"},
    )
    create = f"{MARKET}/listings"
    base = {"kind": "quota", "resource_id": m.resource_id, "unit_price_ucr": 1}
    for bad in (
        {**base, "quantity": 0},
        {**base, "quantity": 10**16},
        {**base, "quantity": 10, "min_fill": 11},
        {**base, "quantity": 10, "unit_price_ucr": -1},
        {**base, "quantity": 10, "model_id": m.model_id},
        {"kind": "stake", "quantity": 10, "unit_price_ucr": 1},
        {**base, "quantity": 10, "extra": 1},
        {**base, "quantity": 10, "expires_at": "2030-01-01T00:00:00"},
    ):
        api.rejects("POST", create, 422, "validation_error", json=bad, headers=m.seller_headers)
    # $1 is listed; $1 of the $2 market part is left: more is refused, and the pool part
    # (credited at deposit) is never for sale
    api.rejects(
        "POST",
        create,
        422,
        "market_quota_unavailable",
        json={**base, "quantity": 1_000_001},
        headers=m.seller_headers,
    )
    api.rejects(
        "POST",
        create,
        422,
        "invalid_listing",
        json={**base, "quantity": 10, "expires_at": "2020-01-01T00:00:00Z"},
        headers=m.seller_headers,
    )
    # another user's resource does not exist for the buyer
    api.rejects(
        "POST",
        create,
        404,
        "resource_not_found",
        json={**base, "quantity": 10},
        headers=m.buyer_headers,
    )
    api.rejects(
        "POST", create, 422, "invalid_input", json={**base, "quantity": 10}, headers=api.admin
    )  # an admin names the seller


def test_disputes_are_refunded_or_released_by_an_admin(api: Api, market: Market) -> None:
    m, c = market, api.client
    listing = list_quota(api, m)
    first = buy(api, m.buyer_headers, listing["id"], 250_000).json()["allocations"][0]
    second = buy(api, m.buyer_headers, listing["id"], 250_000).json()["allocations"][0]
    consume(api, first["id"], m.model_id, 50_000)  # 20 %: 8 credits released (6.8 + 1.2)
    assert wallet(api, m.buyer) == 20 * CREDIT

    def dispute(alloc_id: int, headers: dict[str, str]) -> Any:
        return c.post(
            f"{MARKET}/allocations/{alloc_id}/disputes",
            json={"reason": "every call times out"},
            headers=headers,
        )

    _, stranger_headers = api.user("stranger")
    problem(dispute(first["id"], stranger_headers), 404, "allocation_not_found")
    problem(dispute(first["id"], m.seller_headers), 409, "allocation_state")
    opened = dispute(first["id"], m.buyer_headers)
    assert opened.status_code == 201, opened.text
    problem(dispute(first["id"], m.buyer_headers), 409, "dispute_state")
    d = opened.json()
    assert (d["status"], d["buyer_id"], d["amount_ucr"]) == ("open", m.buyer, 0)
    by_service = dispute(second["id"], api.service)  # the operator's backend, for the buyer
    assert by_service.status_code == 201 and by_service.json()["buyer_id"] == m.buyer

    panel = c.get(f"{V1}/admin/marketplace", headers=api.admin).json()
    assert panel["disputes_open"] == 2
    assert [x["id"] for x in panel["disputes"]] == [d["id"], by_service.json()["id"]]
    listed = c.get(f"{V1}/users/{m.buyer}/disputes", headers=m.buyer_headers).json()["items"]
    assert len(listed) == 2

    resolve = f"{V1}/admin/marketplace/disputes/{d['id']}/resolve"
    body = {"action": "refund", "reason": "the key was revoked upstream"}
    api.rejects(
        "POST",
        resolve,
        403,
        "forbidden",
        json=body,
        headers={**m.buyer_headers, "Idempotency-Key": "r1"},
    )
    r = c.post(resolve, json=body, headers={**api.admin, "Idempotency-Key": "r1"})
    assert r.status_code == 200, r.text
    refunded = r.json()
    assert (refunded["status"], refunded["amount_ucr"], refunded["resolution"]) == (
        "refunded",
        32 * CREDIT,
        "the key was revoked upstream",
    )
    assert wallet(api, m.buyer) == 52 * CREDIT
    again = c.post(resolve, json=body, headers={**api.admin, "Idempotency-Key": "r1"})
    assert again.headers["Idempotency-Hit"] == "true" and again.json() == refunded
    api.rejects(
        "POST",
        resolve,
        409,
        "dispute_state",
        json=body,
        headers={**api.admin, "Idempotency-Key": "r2"},
    )

    release = f"{V1}/admin/marketplace/disputes/{by_service.json()['id']}/resolve"
    r = c.post(
        release,
        json={"action": "release", "reason": "served fine per the route log"},
        headers={**api.admin, "Idempotency-Key": "r3"},
    )
    assert r.status_code == 200 and r.json()["status"] == "released", r.text
    # the second allocation's 40 credits go to the seller, less 15 %
    assert wallet(api, m.seller) == 720 * CREDIT + 6_800_000 + 34 * CREDIT
    # each resolution is in the admin audit log, once, with the dispute before and after
    audit = c.get(
        f"{V1}/admin/audit", params={"action": "marketplace.dispute.resolve"}, headers=api.admin
    ).json()["items"]
    assert sorted((a["target_id"], a["before"]["status"], a["after"]["status"]) for a in audit) == [
        (str(d["id"]), "open", "refunded"),
        (str(by_service.json()["id"]), "open", "released"),
    ]
    assert wallet(api, m.buyer) == 52 * CREDIT
    allocs = c.get(
        f"{V1}/users/{m.buyer}/allocations", params={"status": "active"}, headers=m.buyer_headers
    ).json()["items"]
    assert allocs == []
    panel = c.get(f"{V1}/admin/marketplace", headers=api.admin).json()
    assert (panel["disputes_open"], panel["open_escrow_ucr"]) == (0, 0)
    assert panel["commission_ucr"] == 1_200_000 + 6 * CREDIT


def test_concurrent_buyers_never_overfill(api: Api, market: Market) -> None:
    m = market
    listing = list_quota(api, m, quantity=500_000, min_fill=100_000)
    buyers = [api.user(f"racer-{n}", credits_ucr=100 * CREDIT) for n in range(8)]

    def attempt(n: int) -> Any:
        return buy(api, buyers[n][1], listing["id"], 100_000, key=f"race-{n}")

    with ThreadPoolExecutor(max_workers=8) as pool_:
        results = list(pool_.map(attempt, range(8)))
    won = [r for r in results if r.status_code == 201]
    lost = [r for r in results if r.status_code != 201]
    assert len(won) == 5, [r.text for r in results]
    for r in lost:  # the listing filled meanwhile: a typed conflict, never a 500
        problem(r, 409, "market_listing_state")
    final = api.client.get(f"{MARKET}/listings/{listing['id']}", headers=m.buyer_headers).json()
    assert (final["filled"], final["status"]) == (500_000, "filled")
    paid = sum(100 * CREDIT - wallet(api, b) for b, _ in buyers)
    assert paid == 5 * 16 * CREDIT


def test_concurrent_disputes_on_one_allocation_open_one(api: Api, market: Market) -> None:
    """The buyer double-clicks "dispute": on PostgreSQL 8 racing requests open exactly one
    dispute, the rest a typed 409 (two open disputes on one allocation were possible)."""
    m = market
    listing = list_quota(api, m)
    [alloc] = buy(api, m.buyer_headers, listing["id"], 250_000).json()["allocations"]
    url = f"{MARKET}/allocations/{alloc['id']}/disputes"

    def attempt(n: int) -> Any:
        return api.client.post(url, json={"reason": f"503s {n}"}, headers=m.buyer_headers)

    with ThreadPoolExecutor(max_workers=8) as pool_:
        results = list(pool_.map(attempt, range(8)))
    assert sorted(r.status_code for r in results) == [201] + [409] * 7, [r.text for r in results]
    for r in results:
        if r.status_code == 409:
            problem(r, 409, "dispute_state")
    mine = api.client.get(f"{V1}/users/{m.buyer}/disputes", headers=m.buyer_headers).json()
    assert len(mine["items"]) == 1


def test_a_bundle_is_bought_whole(api: Api, market: Market) -> None:
    m, c = market, api.client
    second = _resource(api, m.seller, "sk-seller-key-000000000002", market_uusd=1_000_000)
    r = c.post(
        f"{MARKET}/listings",
        json={
            "kind": "bundle",
            "items": [
                {"resource_id": m.resource_id, "quantity_uusd": 300_000},
                {"resource_id": second, "quantity_uusd": 200_000},
            ],
            "unit_price_ucr": PRICE_PER_USD,
            "seller_id": m.seller,
        },
        headers=api.service,  # the operator's backend, for the seller
    )
    assert r.status_code == 201, r.text
    bundle = r.json()
    assert (bundle["kind"], bundle["quantity"], bundle["min_fill"]) == ("bundle", 500_000, 500_000)
    assert bundle["items"] == [
        {"resource_id": m.resource_id, "quantity_uusd": 300_000},
        {"resource_id": second, "quantity_uusd": 200_000},
    ]
    url = f"{MARKET}/listings/{bundle['id']}/buy"
    api.rejects(
        "POST",
        url,
        422,
        "invalid_fill",
        json={"quantity": 300_000},
        headers={**m.buyer_headers, "Idempotency-Key": "part"},
    )
    bought = buy(api, m.buyer_headers, bundle["id"], 500_000)
    assert bought.status_code == 201, bought.text
    order = bought.json()
    assert order["paid_ucr"] == 80 * CREDIT  # $0.50 at 160 credits per USD
    assert [
        (a["resource_id"], a["quantity_uusd"], a["paid_ucr"]) for a in order["allocations"]
    ] == [
        (m.resource_id, 300_000, 48 * CREDIT),
        (second, 200_000, 32 * CREDIT),
    ]
    assert wallet(api, m.buyer) == 20 * CREDIT


def test_expired_listings_and_unheld_stakes_are_refused(api: Api, market: Market) -> None:
    m = market
    listing = list_quota(api, m)
    with api.db.tx() as session:
        session.execute(
            update(listings_table)
            .where(listings_table.c.id == listing["id"])
            .values(expires_at=datetime(2020, 1, 1, tzinfo=UTC))
        )
    body = api.rejects(
        "POST",
        f"{MARKET}/listings/{listing['id']}/buy",
        409,
        "market_listing_state",
        json={"quantity": 100_000},
        headers={**m.buyer_headers, "Idempotency-Key": "expired"},
    )
    assert body["status"] == 409 and "expired" in body["detail"]
    ids = [
        x["id"]
        for x in api.client.get(f"{MARKET}/listings", headers=m.buyer_headers).json()["items"]
    ]
    assert listing["id"] not in ids
    model = api.model("nobodys-model")
    api.rejects(
        "POST",
        f"{MARKET}/listings",
        422,
        "stake_unavailable",
        json={"kind": "stake", "model_id": model["id"], "quantity": 100, "unit_price_ucr": 1},
        headers=m.seller_headers,
    )


def test_pool_quota_moves_to_the_market_part_only_while_its_credit_is_held(
    api: Api, market: Market
) -> None:
    m, c = market, api.client
    url = f"{V1}/resources/{m.resource_id}/market-part"
    api.rejects(
        "POST",
        url,
        404,
        "resource_not_found",
        json={"amount_uusd": 1_000_000},
        headers={**m.buyer_headers, "Idempotency-Key": "mv-0"},
    )
    first = {
        "json": {"amount_uusd": 1_000_000},
        "headers": {**m.seller_headers, "Idempotency-Key": "mv-1"},
    }
    r = c.post(url, **first)
    assert r.status_code == 200, r.text
    moved = r.json()
    # $1 of the $8 pool part: 1/8 of its 720 credits of deposit credit is reversed
    assert (moved["market_quota_uusd"], moved["pool_quota_uusd"], moved["moved_credit_ucr"]) == (
        3_000_000,
        7_000_000,
        90 * CREDIT,
    )
    assert wallet(api, m.seller) == 630 * CREDIT
    again = c.post(url, **first)
    assert again.headers["Idempotency-Hit"] == "true" and again.json() == moved
    assert wallet(api, m.seller) == 630 * CREDIT
    listing = list_quota(api, m, quantity=3_000_000)  # the whole market part is now listable
    assert listing["quantity"] == 3_000_000
    # the seller spends 500 credits: moving $2 more would reverse 180 they no longer hold
    assert api.charge(m.seller, "gpt-4o", key="spend", input_tokens=1_000_000).status_code == 201
    assert wallet(api, m.seller) == 130 * CREDIT
    body = api.rejects(
        "POST",
        url,
        409,
        "deposit_credit_spent",
        json={"amount_uusd": 2_000_000},
        headers={**m.seller_headers, "Idempotency-Key": "mv-2"},
    )
    assert (body["credit_ucr"], body["available_ucr"]) == (180 * CREDIT, 130 * CREDIT)
    api.rejects(
        "POST",
        url,
        422,
        "validation_error",
        json={"amount_uusd": 0},
        headers={**m.seller_headers, "Idempotency-Key": "mv-3"},
    )


def test_the_admin_view_is_the_admins_alone(api: Api, market: Market) -> None:
    m = market
    for headers, role in ((m.buyer_headers, "user"), (api.service, "service")):
        for method, url, kwargs in (
            ("GET", f"{V1}/admin/marketplace", {}),
            ("GET", f"{V1}/admin/marketplace/disputes", {}),
            (
                "POST",
                f"{V1}/admin/marketplace/disputes/1/resolve",
                {"json": {"action": "refund", "reason": "x"}},
            ),
        ):
            body = api.rejects(
                method, url, 403, "forbidden", headers={**headers, "Idempotency-Key": "a"}, **kwargs
            )
            assert body["role"] == role
    empty = api.client.get(f"{V1}/admin/marketplace", headers=api.admin).json()
    assert {k: empty[k] for k in ("orders", "volume_ucr", "commission_ucr", "open_escrow_ucr")} == {
        "orders": 0,
        "volume_ucr": 0,
        "commission_ucr": 0,
        "open_escrow_ucr": 0,
    }
    assert empty["volume"] == "0.000000 cr" and empty["disputes"] == []
    api.rejects(
        "POST",
        f"{V1}/admin/marketplace/disputes/999999/resolve",
        404,
        "dispute_not_found",
        json={"action": "release", "reason": "x"},
        headers={**api.admin, "Idempotency-Key": "missing"},
    )
    api.rejects(
        "POST",
        f"{V1}/admin/marketplace/disputes/1/resolve",
        422,
        "validation_error",
        json={"action": "keep", "reason": " "},
        headers={**api.admin, "Idempotency-Key": "bad"},
    )
