"""The marketplace pages (DESIGN §10, issue 15 item 5) over HTTP, on SQLite and PostgreSQL:
browse with exact prices and buy through the form (once per form key), the buyer's orders
and quota as it is consumed, a dispute opened on the page and resolved on the admin's, the
seller's listings page (list quota at the suggested price, re-price, cancel, a stake), bad
input shown with nothing written, and other users' pages refused."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Api
from tests.api.test_marketplace import (
    CREDIT,
    Market,
    consume,
    list_quota,
    make_market,
    wallet,
)
from tests.web.conftest import csrf_of, form_key_of, signed_in


@pytest.fixture
def market(api: Api) -> Market:
    """A seller with a deposited key ($2 market part), a buyer with 100 credits, gpt-4o
    (tests/api/test_marketplace.py)."""
    return make_market(api)


def _row(html: str, attr: str, value: int) -> str:
    found = re.search(rf'<tr data-{attr}="{value}".*?</tr>', html, re.S)
    assert found, f"no row {attr}={value}"
    return found.group(0)


def _field(html: str, name: str) -> str:
    found = re.search(rf'data-field="{name}">([^<]*)<', html)
    assert found, name
    return found.group(1).strip()


def _flash(html: str) -> tuple[str, str]:
    found = re.search(r'class="flash flash-(ok|error)"[^>]*>\s*([^<]+?)\s*</div>', html)
    assert found, "no flash message on the page"
    return found.group(1), found.group(2).replace("&#39;", "'").replace("&#34;", '"')


def _keys(html: str, marker: str) -> dict[str, str]:
    """The CSRF token and form key of the first form after ``marker`` in ``html``."""
    part = html[html.index(marker) :]
    return {"csrf_token": csrf_of(part), "form_key": form_key_of(part)}


def _post(client: TestClient, url: str, page: str, data: dict[str, Any]) -> str:
    r = client.post(url, data=data, headers={"Referer": f"http://testserver{page}"})
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return r.text


def _clients(api: Api, m: Market) -> tuple[TestClient, TestClient]:
    return signed_in(api, m.seller_headers), signed_in(api, m.buyer_headers)


def test_browse_buy_consume_dispute_and_refund(api: Api, market: Market) -> None:
    m = market
    _, buyer = _clients(api, m)
    listing = list_quota(api, m)
    html = buyer.get("/app/marketplace").text
    row = _row(html, "listing-id", listing["id"])
    assert (_field(row, "available"), _field(row, "price"), _field(row, "per-mtok")) == (
        "$1.00",
        "160.00",
        "1,600.00",
    )
    assert "gpt-4o" in row and "100.0% ok" in row and "Buy" in row
    data = {**_keys(html, f'data-listing-id="{listing["id"]}"'), "listing_id": listing["id"]}
    page = _post(buyer, "/app/marketplace/buy", "/app/marketplace", {**data, "quantity": "0.25"})
    kind, text = _flash(page)
    assert kind == "ok" and "bought $0.25 of provider spend for 40.00 credits" in text, text
    assert wallet(api, m.buyer) == 60 * CREDIT
    again = _post(buyer, "/app/marketplace/buy", "/app/marketplace", {**data, "quantity": "0.25"})
    assert _flash(again) == (kind, text) and wallet(api, m.buyer) == 60 * CREDIT

    orders_page = f"/app/users/{m.buyer}/marketplace/orders"
    alloc_id = api.client.get(
        f"/api/v1/users/{m.buyer}/allocations", headers=m.buyer_headers
    ).json()["items"][0]["id"]
    consume(api, alloc_id, m.model_id, 100_000)
    html = buyer.get(orders_page).text
    row = _row(html, "allocation-id", alloc_id)
    assert (_field(row, "consumed"), _field(row, "remaining")) == ("$0.10", "$0.15")
    assert (_field(row, "paid"), _field(row, "released"), _field(row, "returned")) == (
        "40.00",
        "16.00",
        "0.00",
    )
    assert re.search(r"In escrow</p>\s*<p class=\"card-value\">24.00<", html)

    data = {**_keys(html, f'data-allocation-id="{alloc_id}"'), "allocation_id": alloc_id}
    page = _post(
        buyer, f"/app/users/{m.buyer}/marketplace/disputes", orders_page, {**data, "reason": "503s"}
    )
    assert _flash(page)[0] == "ok" and "disputed" in _row(page, "allocation-id", alloc_id)

    admin = signed_in(api, api.admin)
    html = admin.get("/app/admin/marketplace").text
    assert re.search(r"Volume</p>\s*<p class=\"card-value\">40.00<", html)
    assert re.search(r"Open escrow</p>\s*<p class=\"card-value\">24.00<", html)
    [dispute_id] = re.findall(r'<tr data-dispute-id="(\d+)"', html)
    data = {**_keys(html, f'data-dispute-id="{dispute_id}"'), "dispute_id": dispute_id}
    page = _post(
        admin,
        "/app/admin/marketplace/resolve",
        "/app/admin/marketplace",
        {**data, "action": "refund", "reason": "the key answers 503"},
    )
    assert _flash(page) == (
        "ok",
        f"Dispute #{dispute_id} resolved: 24.00 credits refunded to the buyer.",
    )
    assert wallet(api, m.buyer) == 84 * CREDIT
    assert re.search(r"Commission earned</p>\s*<p class=\"card-value\">2.40<", page)
    assert "the key answers 503" in page and "No open disputes." in page


def test_the_buy_form_pays_no_more_than_the_price_it_showed(api: Api, market: Market) -> None:
    """The seller re-prices after the buyer loaded the page: the form's buy is refused with
    a message, nothing written; after a reload it buys at the new price."""
    m = market
    _, buyer = _clients(api, m)
    listing = list_quota(api, m)
    html = buyer.get("/app/marketplace").text
    data = {**_keys(html, f'data-listing-id="{listing["id"]}"'), "listing_id": listing["id"]}
    data["max_unit_price_ucr"] = re.search(r'name="max_unit_price_ucr" value="(\d+)"', html)[1]
    r = api.client.patch(
        f"/api/v1/marketplace/listings/{listing['id']}",
        json={"unit_price_ucr": 10 * int(data["max_unit_price_ucr"])},
        headers=m.seller_headers,
    )
    assert r.status_code == 200, r.text
    page = _post(buyer, "/app/marketplace/buy", "/app/marketplace", {**data, "quantity": "0.25"})
    kind, text = _flash(page)
    assert kind == "error" and "above the" in text, text
    assert wallet(api, m.buyer) == 100 * CREDIT


def test_a_form_field_with_a_nul_character_is_refused_not_a_500(api: Api, market: Market) -> None:
    """PostgreSQL cannot store NUL: a dispute reason holding one is refused with a message,
    no dispute written (it was a 500 on PostgreSQL)."""
    m = market
    _, buyer = _clients(api, m)
    listing = list_quota(api, m)
    r = api.client.post(
        f"/api/v1/marketplace/listings/{listing['id']}/buy",
        json={"quantity": 250_000},
        headers={**m.buyer_headers, "Idempotency-Key": "nul"},
    )
    [alloc] = r.json()["allocations"]
    orders_page = f"/app/users/{m.buyer}/marketplace/orders"
    html = buyer.get(orders_page).text
    data = {**_keys(html, f'data-allocation-id="{alloc["id"]}"'), "allocation_id": alloc["id"]}
    page = _post(
        buyer,
        f"/app/users/{m.buyer}/marketplace/disputes",
        orders_page,
        {**data, "reason": "it\x00failed"},
    )
    kind, text = _flash(page)
    assert kind == "error" and "NUL" in text, text
    disputes = api.client.get(f"/api/v1/users/{m.buyer}/disputes", headers=m.buyer_headers)
    assert disputes.json()["items"] == []


def test_seller_lists_at_the_suggested_price_reprices_and_cancels(api: Api, market: Market) -> None:
    m = market
    seller, _ = _clients(api, m)
    page = f"/app/users/{m.seller}/marketplace/listings"
    html = seller.get(page).text
    row = _row(html, "resource-id", m.resource_id)
    assert _field(row, "free") == "$2.00"
    assert _field(row, "suggested").startswith("160.00")
    assert 'name="price" required inputmode="decimal" value="160.000000"' in html
    form = {**_keys(html, 'id="quota-form"'), "kind": "quota", "resource_id": m.resource_id}
    bad = _post(seller, page, page, {**form, "quantity": "abc", "price": "150"})
    assert _flash(bad)[0] == "error" and "not a number" in _flash(bad)[1]
    too_much = _post(seller, page, page, {**form, "quantity": "2.50", "price": "150"})
    assert _flash(too_much)[0] == "error" and "market part" in _flash(too_much)[1]
    assert (
        api.client.get("/api/v1/marketplace/listings", headers=m.seller_headers).json()["items"]
        == []
    )
    done = _post(
        seller, page, page, {**form, "quantity": "1.50", "price": "150", "min_fill": "0.1"}
    )
    assert _flash(done)[0] == "ok", _flash(done)
    [listing] = api.client.get("/api/v1/marketplace/listings", headers=m.seller_headers).json()[
        "items"
    ]
    assert (listing["quantity"], listing["unit_price_ucr"], listing["min_fill"]) == (
        1_500_000,
        150 * CREDIT,
        100_000,
    )
    row = _row(done, "listing-id", listing["id"])
    assert (_field(row, "available"), _field(row, "price")) == ("$1.50", "150.00")
    assert _field(_row(done, "resource-id", m.resource_id), "free") == "$0.50"

    data = {**_keys(done, f'data-listing-id="{listing["id"]}"'), "listing_id": listing["id"]}
    repriced = _post(seller, f"{page}/price", page, {**data, "price": "170.5"})
    assert _flash(repriced)[0] == "ok", _flash(repriced)
    assert _field(_row(repriced, "listing-id", listing["id"]), "price") == "170.50"
    cancel_form = repriced[repriced.index(f'{page}/cancel"') :]
    cancelled = _post(
        seller,
        f"{page}/cancel",
        page,
        {
            "csrf_token": csrf_of(cancel_form),
            "form_key": form_key_of(cancel_form),
            **{"listing_id": listing["id"]},
        },
    )
    assert _flash(cancelled) == ("ok", f"Listing #{listing['id']} is cancelled.")
    assert 'data-status="cancelled"' in _row(cancelled, "listing-id", listing["id"])

    model = api.model("sellers-model", creator_id=m.seller)
    stake_form = {**_keys(cancelled, 'id="stake-form"'), "kind": "stake"}
    listed = _post(
        seller, page, page, {**stake_form, "model": model["slug"], "quantity": "500", "price": "2"}
    )
    assert _flash(listed)[0] == "ok", _flash(listed)
    stakes = api.client.get(
        "/api/v1/marketplace/listings", params={"kind": "stake"}, headers=m.seller_headers
    ).json()["items"]
    assert [(s["quantity"], s["unit_price_ucr"]) for s in stakes] == [(500, 2 * CREDIT)]


def test_pages_are_the_owners_and_the_admins(api: Api, market: Market) -> None:
    m = market
    seller, buyer = _clients(api, m)
    for page in ("listings", "orders"):
        assert seller.get(f"/app/users/{m.seller}/marketplace/{page}").status_code == 200
        r = buyer.get(f"/app/users/{m.seller}/marketplace/{page}")
        assert r.status_code == 404, page
    assert buyer.get("/app/admin/marketplace").status_code == 403
    admin = signed_in(api, api.admin)
    assert admin.get(f"/app/users/{m.seller}/marketplace/listings").status_code == 200
    listing = list_quota(api, m)
    html = buyer.get(f"/app/users/{m.buyer}/marketplace/orders").text
    token = csrf_of(html)
    before = api.ledger_state()
    r = buyer.post(
        f"/app/users/{m.seller}/marketplace/listings/cancel",
        data={"csrf_token": token, "form_key": "k1", "listing_id": listing["id"]},
        follow_redirects=False,
    )
    assert r.status_code == 404
    r = buyer.post(
        "/app/admin/marketplace/resolve",
        data={"csrf_token": token, "form_key": "k2", "dispute_id": "1", "action": "refund"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    own = seller.get("/app/marketplace").text
    assert "yours" in _row(own, "listing-id", listing["id"])
    assert api.ledger_state() == before
    nav = buyer.get("/app/marketplace").text
    assert 'href="/app/marketplace" aria-current="page">Marketplace' in nav


def test_seller_moves_pool_quota_to_the_market_part(api: Api, market: Market) -> None:
    m = market
    seller, _ = _clients(api, m)
    page = f"/app/users/{m.seller}/marketplace/listings"
    html = seller.get(page).text
    row = _row(html, "resource-id", m.resource_id)
    assert (_field(row, "free"), _field(row, "pool-left")) == ("$2.00", "$8.00")
    form = {**_keys(html, 'id="move-form"'), "resource_id": m.resource_id}
    url = f"/app/users/{m.seller}/marketplace/market-part"
    done = _post(seller, url, page, {**form, "amount": "1"})
    assert _flash(done) == (
        "ok",
        f"Moved $1.00 of resource #{m.resource_id}'s pool part to its market part: 90.00"
        " credits of deposit credit were taken back.",
    )
    assert wallet(api, m.seller) == 630 * CREDIT
    row = _row(done, "resource-id", m.resource_id)
    assert (_field(row, "free"), _field(row, "pool-left")) == ("$3.00", "$7.00")
    again = _post(seller, url, page, {**form, "amount": "1"})  # the same form: once
    assert _flash(again)[0] == "ok" and wallet(api, m.seller) == 630 * CREDIT
    form = {**_keys(again, 'id="move-form"'), "resource_id": m.resource_id}
    refused = _post(seller, url, page, {**form, "amount": "7.5"})
    assert _flash(refused)[0] == "error" and wallet(api, m.seller) == 630 * CREDIT
