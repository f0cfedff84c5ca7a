"""Every endpoint of the HTTP API: the happy path with exact amounts, and bad input refused
as RFC 9457 problem+json with the ledger left exactly as it was. Runs on both backends."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update

from modelbank.catalog.genai import genai_cost
from modelbank.earnings.models import earnings_table
from tests.api.conftest import Api, bearer, problem

V1 = "/api/v1"
CREDIT = 1_000_000
"""µcr in one credit."""
CREDITS_PER_USD = 100
"""DESIGN §4 default: 1 µUSD of provider cost = 100 µcr before markups."""
TIER = {"micro": "1.8", "small": "1.6", "medium": "1.5", "large": "1.4", "image": "2.0"}
DEMAND = {"high": "1.10", "medium": "1.00", "low": "0.90"}
NO_EARNINGS = {"per_token_ucr": 0, "share_bps": 0, "popularity_tiers": [], "type_multipliers": {}}


def cr(ucr: int) -> str:
    """The display string of ``ucr`` (as the API formats it), computed independently."""
    whole, frac = divmod(ucr, CREDIT)
    return f"{whole:,}.{frac:06d} cr"


def future(days: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# --- authentication and roles -------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer mb_a_not-a-real-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["none", "empty", "no-token", "unknown", "basic"],
)
def test_missing_or_invalid_key_is_401(api: Api, headers: dict[str, str]) -> None:
    body = api.rejects("GET", f"{V1}/models", 401, "unauthenticated", headers=headers)
    assert body["title"] == "Unauthorized"
    r = api.client.get(f"{V1}/users", headers=headers)
    assert r.headers["www-authenticate"] == "Bearer"
    # A credit-moving POST without a key is refused before anything else.
    api.rejects(
        "POST",
        f"{V1}/users/1/grants",
        401,
        "unauthenticated",
        json={"amount_ucr": 5},
        headers={**headers, "Idempotency-Key": "k"},
    )


def test_admin_keys_create_and_revoke(api: Api) -> None:
    r = api.client.post(
        f"{V1}/admin/keys", json={"role": "service", "name": "backend"}, headers=api.admin
    )
    assert r.status_code == 201, r.text
    key = r.json()
    assert key["role"] == "service" and key["user_id"] is None and key["name"] == "backend"
    assert key["key"].startswith("mb_s_") and key["prefix"] == key["key"][:12]
    service = bearer(key["key"])
    alice, _ = api.user("alice")
    assert api.client.get(f"{V1}/users/{alice}/wallet", headers=service).status_code == 200

    r = api.client.post(f"{V1}/admin/keys", json={"role": "admin"}, headers=api.admin)
    assert r.status_code == 201 and r.json()["key"].startswith("mb_a_")
    second_admin = bearer(r.json()["key"])
    assert api.client.get(f"{V1}/admin/stats", headers=second_admin).status_code == 200

    r = api.client.delete(f"{V1}/admin/keys/{key['id']}", headers=api.admin)
    assert r.status_code == 204 and r.content == b""
    api.rejects("GET", f"{V1}/users/{alice}/wallet", 401, "unauthenticated", headers=service)
    # Revoking is idempotent; an unknown key is 404.
    assert api.client.delete(f"{V1}/admin/keys/{key['id']}", headers=api.admin).status_code == 204
    api.rejects("DELETE", f"{V1}/admin/keys/999999", 404, "api_key_not_found", headers=api.admin)


def test_revoked_user_key_is_401(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=5 * CREDIT)
    api.model("m")
    r = api.client.post(f"{V1}/users/{alice}/keys", json={"name": "second"}, headers=api.admin)
    second = r.json()
    assert (
        api.client.get(f"{V1}/users/{alice}/wallet", headers=bearer(second["key"])).status_code
        == 200
    )
    assert (
        api.client.delete(f"{V1}/admin/keys/{second['id']}", headers=api.admin).status_code == 204
    )
    api.rejects(
        "POST",
        f"{V1}/usage",
        401,
        "unauthenticated",
        json={"user_id": alice, "model": "m", "input_tokens": 10},
        headers={**bearer(second["key"]), "Idempotency-Key": "k"},
    )
    # The user's other key still works.
    assert api.client.get(f"{V1}/users/{alice}/wallet", headers=alice_h).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"role": "user"}, 422),
        ({}, 422),
        ({"role": "service", "user_id": 1}, 422),
        ({"role": "service", "name": "x" * 201}, 422),
    ],
    ids=["user-role", "missing-role", "unknown-field", "long-name"],
)
def test_admin_key_bad_input(api: Api, body: dict[str, Any], status: int) -> None:
    api.rejects(
        "POST", f"{V1}/admin/keys", status, "validation_error", json=body, headers=api.admin
    )


def test_user_and_service_keys_get_403_on_admin_routes(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    m = api.model("m")
    for headers, role in ((alice_h, "user"), (api.service, "service")):
        for method, url, kwargs in [
            ("POST", f"{V1}/users", {"json": {"external_id": "mallory"}}),
            ("GET", f"{V1}/users", {}),
            (
                "POST",
                f"{V1}/users/{alice}/grants",
                {"json": {"amount_ucr": CREDIT}, "headers": {"Idempotency-Key": "free-money"}},
            ),
            ("POST", f"{V1}/models", {"json": {"slug": "x", "name": "x", "price": {}}}),
            ("PATCH", f"{V1}/models/{m['id']}", {"json": {"name": "pwned"}}),
            ("DELETE", f"{V1}/models/{m['id']}", {}),
            ("POST", f"{V1}/admin/keys", {"json": {"role": "admin"}}),
            ("DELETE", f"{V1}/admin/keys/1", {}),
            ("GET", f"{V1}/admin/pricing", {}),
            ("POST", f"{V1}/admin/pricing/recalculate", {"json": {}}),
            ("GET", f"{V1}/admin/stats", {}),
        ]:
            extra = kwargs.pop("headers", {})
            body = api.rejects(
                method, url, 403, "forbidden", headers={**headers, **extra}, **kwargs
            )
            assert body["role"] == role
    # Nothing was edited.
    assert api.client.get(f"{V1}/models/{m['id']}", headers=api.admin).json()["name"] == "m"
    # Batch usage is for admin and service keys only.
    api.rejects(
        "POST",
        f"{V1}/usage/batch",
        403,
        "forbidden",
        json={"events": [{"idempotency_key": "b", "user_id": alice, "model": "m"}]},
        headers=alice_h,
    )


# --- users ----------------------------------------------------------------------------------


def test_users_create_get_list(api: Api) -> None:
    r = api.client.post(
        f"{V1}/users", json={"external_id": "ext-1", "display_name": "Ada"}, headers=api.admin
    )
    assert r.status_code == 201, r.text
    ada = r.json()
    assert ada["external_id"] == "ext-1" and ada["display_name"] == "Ada"
    assert datetime.fromisoformat(ada["created_at"]).tzinfo is not None
    r = api.client.post(f"{V1}/users", json={"external_id": "ext-2"}, headers=api.admin)
    bob = r.json()
    assert bob["display_name"] == "ext-2"  # defaults to the external id

    assert api.client.get(f"{V1}/users/{ada['id']}", headers=api.admin).json() == ada
    assert api.client.get(f"{V1}/users/{ada['id']}", headers=api.service).json() == ada
    listed = api.client.get(f"{V1}/users", headers=api.admin).json()
    assert listed == {"items": [ada, bob], "next_cursor": None}
    api.rejects("GET", f"{V1}/users/999999", 404, "user_not_found", headers=api.admin)


def test_users_duplicate_external_id_is_409(api: Api) -> None:
    api.user("dup")
    body = api.rejects(
        "POST", f"{V1}/users", 409, "user_exists", json={"external_id": "dup"}, headers=api.admin
    )
    assert "dup" in body["detail"]
    assert len(api.client.get(f"{V1}/users", headers=api.admin).json()["items"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"external_id": ""},
        {"external_id": " padded"},
        {"external_id": "x" * 201},
        {"external_id": 5},
        {"external_id": None},
        {"external_id": "ok", "display_name": "d" * 201},
        {"external_id": "ok", "role": "admin"},
        [],
    ],
    ids=["missing", "empty", "padded", "too-long", "int", "null", "long-name", "unknown", "list"],
)
def test_users_create_bad_input_is_422(api: Api, body: Any) -> None:
    problem_body = api.rejects(
        "POST", f"{V1}/users", 422, "validation_error", json=body, headers=api.admin
    )
    assert problem_body["errors"] and {"loc", "msg", "type"} <= problem_body["errors"][0].keys()
    assert api.client.get(f"{V1}/users", headers=api.admin).json()["items"] == []


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b'{"external_id": ', "application/json"), (b"external_id=x", "application/json")],
    ids=["truncated", "not-json"],
)
def test_malformed_json_is_422(api: Api, content: bytes, content_type: str) -> None:
    body = api.rejects(
        "POST",
        f"{V1}/users",
        422,
        "validation_error",
        content=content,
        headers={**api.admin, "Content-Type": content_type},
    )
    assert body["errors"][0]["type"] == "json_invalid"


def test_users_list_pagination(api: Api) -> None:
    ids = [api.user(f"u{i}")[0] for i in range(5)]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.client.get(f"{V1}/users", params=params, headers=api.admin).json()
        pages += 1
        seen += [u["id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 3
    # Exactly `limit` items left: one more (empty) page.
    page = api.client.get(f"{V1}/users", params={"limit": 5}, headers=api.admin).json()
    assert len(page["items"]) == 5 and page["next_cursor"] is not None
    last = api.client.get(
        f"{V1}/users", params={"limit": 5, "cursor": page["next_cursor"]}, headers=api.admin
    ).json()
    assert last == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "!!!"},
        {"cursor": cursor_of("id:abc")},
        {"cursor": cursor_of("xx:5")},
        {"cursor": "c" * 201},
        {"limit": 0},
        {"limit": 501},
        {"limit": "ten"},
    ],
    ids=["garbage", "not-int", "wrong-prefix", "too-long", "limit-0", "limit-501", "limit-str"],
)
def test_users_list_bad_paging(api: Api, params: dict[str, Any]) -> None:
    api.user("u")
    body = api.rejects("GET", f"{V1}/users", 422, None, params=params, headers=api.admin)
    assert body["code"] in ("invalid_input", "validation_error")


def test_user_keys(api: Api) -> None:
    alice, _ = api.user("alice")
    r = api.client.post(f"{V1}/users/{alice}/keys", json={"name": "laptop"}, headers=api.admin)
    assert r.status_code == 201, r.text
    key = r.json()
    assert key["role"] == "user" and key["user_id"] == alice and key["name"] == "laptop"
    assert key["key"].startswith("mb_u_") and key["prefix"] == key["key"][:12]
    me = api.client.get(f"{V1}/users/{alice}", headers=bearer(key["key"]))
    assert me.status_code == 200 and me.json()["id"] == alice
    # No body at all is fine (name defaults to "").
    r = api.client.post(f"{V1}/users/{alice}/keys", headers=api.admin)
    assert r.status_code == 201 and r.json()["name"] == ""
    api.rejects(
        "POST", f"{V1}/users/999999/keys", 404, "user_not_found", json={}, headers=api.admin
    )
    api.rejects(
        "POST",
        f"{V1}/users/{alice}/keys",
        422,
        "validation_error",
        json={"name": "x", "role": "admin"},
        headers=api.admin,
    )


# --- grants and wallet ----------------------------------------------------------------------


def test_grants_bonus_and_purchased_with_idempotency(api: Api) -> None:
    alice, alice_h = api.user("alice")
    url = f"{V1}/users/{alice}/grants"
    expires = future()
    r = api.client.post(
        url,
        json={"amount_ucr": 2_500_000, "source": "bonus", "expires_at": expires},
        headers={**api.admin, "Idempotency-Key": "g1"},
    )
    assert r.status_code == 201, r.text
    assert r.headers["Idempotency-Hit"] == "false"
    first = r.json()
    assert first["amount_ucr"] == 2_500_000 and first["amount"] == cr(2_500_000) == "2.500000 cr"
    assert first["source"] == "bonus" and first["user_id"] == alice
    assert datetime.fromisoformat(first["expires_at"]) == datetime.fromisoformat(expires)
    assert first["balance_ucr"] == 2_500_000

    r = api.client.post(
        url,
        json={"amount_ucr": 7 * CREDIT, "source": "purchased"},
        headers={**api.admin, "Idempotency-Key": "g2"},
    )
    assert r.status_code == 201
    assert r.json()["balance_ucr"] == 9_500_000 and r.json()["source"] == "purchased"
    assert r.json()["expires_at"] is None
    # default source is bonus
    r = api.client.post(url, json={"amount_ucr": 1}, headers={**api.admin, "Idempotency-Key": "g3"})
    assert r.json()["source"] == "bonus" and r.json()["balance_ucr"] == 9_500_001

    # Same key, same body: the first response again, nothing written.
    before = api.ledger_state()
    again = api.client.post(
        url,
        json={"amount_ucr": 2_500_000, "source": "bonus", "expires_at": expires},
        headers={**api.admin, "Idempotency-Key": "g1"},
    )
    assert again.status_code == 201 and again.json() == first
    assert again.headers["Idempotency-Hit"] == "true"
    assert api.ledger_state() == before
    # Same key, other body: 409.
    api.rejects(
        "POST",
        url,
        409,
        "idempotency_key_reused",
        json={"amount_ucr": 2_500_001, "source": "bonus", "expires_at": expires},
        headers={**api.admin, "Idempotency-Key": "g1"},
    )
    wallet = api.client.get(f"{V1}/users/{alice}/wallet", headers=alice_h).json()
    assert wallet["balance_ucr"] == 9_500_001


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"amount_ucr": 0},
        {"amount_ucr": -1},
        {"amount_ucr": 10**15 + 1},
        {"amount_ucr": 10**30},
        {"amount_ucr": 1.5},
        {"amount_ucr": "lots"},
        {"amount_ucr": None},
        {"amount_ucr": 5, "source": "gift"},
        {"amount_ucr": 5, "expires_at": "2020-01-01T00:00:00Z"},
        {"amount_ucr": 5, "expires_at": "2999-01-01T00:00:00"},
        {"amount_ucr": 5, "expires_at": "soon"},
        {"amount_ucr": 5, "memo": "hi"},
    ],
    ids=[
        "missing",
        "zero",
        "negative",
        "over-max",
        "huge",
        "float",
        "string",
        "null",
        "bad-source",
        "expired",
        "naive-expiry",
        "bad-expiry",
        "unknown-field",
    ],
)
def test_grant_bad_input_is_422(api: Api, body: dict[str, Any]) -> None:
    alice, _ = api.user("alice")
    problem_body = api.rejects(
        "POST",
        f"{V1}/users/{alice}/grants",
        422,
        json=body,
        headers={**api.admin, "Idempotency-Key": "bad"},
    )
    assert problem_body["code"] in ("validation_error", "invalid_input")
    # The key was not consumed by the failure: a valid retry with it goes through.
    ok = api.client.post(
        f"{V1}/users/{alice}/grants",
        json={"amount_ucr": 5},
        headers={**api.admin, "Idempotency-Key": "bad"},
    )
    assert ok.status_code == 201 and ok.json()["balance_ucr"] == 5


def test_grant_expiry_in_the_past_is_422_with_a_reason(api: Api) -> None:
    alice, _ = api.user("alice")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    body = api.rejects(
        "POST",
        f"{V1}/users/{alice}/grants",
        422,
        json={"amount_ucr": 5, "expires_at": past},
        headers={**api.admin, "Idempotency-Key": "k"},
    )
    assert "future" in body["detail"]
    body = api.rejects(
        "POST",
        f"{V1}/users/{alice}/grants",
        422,
        "validation_error",
        json={"amount_ucr": 5, "expires_at": "2999-01-01T00:00:00"},
        headers={**api.admin, "Idempotency-Key": "k"},
    )
    assert "timezone" in body["detail"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Idempotency-Key": ""}, {"Idempotency-Key": "k" * 201}],
    ids=["missing", "empty", "too-long"],
)
def test_grant_needs_an_idempotency_key(api: Api, headers: dict[str, str]) -> None:
    alice, _ = api.user("alice")
    body = api.rejects(
        "POST",
        f"{V1}/users/{alice}/grants",
        422,
        json={"amount_ucr": 5},
        headers={**api.admin, **headers},
    )
    assert body["code"] in ("validation_error", "invalid_input")


def test_grant_to_unknown_user_is_404(api: Api) -> None:
    api.rejects(
        "POST",
        f"{V1}/users/999999/grants",
        404,
        "user_not_found",
        json={"amount_ucr": 5},
        headers={**api.admin, "Idempotency-Key": "k"},
    )


def test_wallet(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=3 * CREDIT)
    bob, _ = api.user("bob")
    rule = {**NO_EARNINGS, "per_use_ucr": 1234}
    api.model("bobs", creator_id=bob, earnings_rule=rule)
    r = api.charge(alice, "bobs", key="u1", input_tokens=1000, output_tokens=100)
    assert r.status_code == 201, r.text
    charge = 1000 * 1 + 100 * 2
    w = api.client.get(f"{V1}/users/{alice}/wallet", headers=alice_h).json()
    balance = 3 * CREDIT - charge
    assert w == {
        "user_id": alice,
        "balance_ucr": balance,
        "balance": cr(balance),
        "pending_ucr": 0,
        "pending": cr(0),
        "available_ucr": balance,
        "available": cr(balance),
        "earnings_ucr": 0,
        "earnings": cr(0),
    }
    wb = api.client.get(f"{V1}/users/{bob}/wallet", headers=api.service).json()
    assert wb["balance_ucr"] == 0 and wb["earnings_ucr"] == 1234 and wb["earnings"] == cr(1234)
    api.rejects("GET", f"{V1}/users/999999/wallet", 404, "user_not_found", headers=api.admin)
    api.rejects("GET", f"{V1}/users/{bob}/wallet", 404, "user_not_found", headers=alice_h)


# --- transfers ------------------------------------------------------------------------------


def test_transfers_empty_history(api: Api) -> None:
    alice, alice_h = api.user("alice")
    r = api.client.get(f"{V1}/users/{alice}/transfers", headers=alice_h)
    assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}


def test_transfers_filters_and_direction(api: Api) -> None:
    alice, alice_h = api.user("alice")
    bob, _ = api.user("bob")
    api.model("bobs", creator_id=bob, earnings_rule={**NO_EARNINGS, "per_use_ucr": 7})
    api.grant(alice, 5 * CREDIT, key="p", source="purchased")
    api.grant(alice, 2 * CREDIT, key="b", source="bonus")
    assert api.charge(alice, "bobs", key="u1", input_tokens=1000).status_code == 201
    url = f"{V1}/users/{alice}/transfers"
    items = api.client.get(url, headers=alice_h).json()["items"]
    assert [t["code"] for t in items] == ["usage_charge", "grant", "purchase"]  # newest first
    assert [t["direction"] for t in items] == ["out", "in", "in"]
    assert [t["amount_ucr"] for t in items] == [1000, 2 * CREDIT, 5 * CREDIT]
    assert items[0]["ref_type"] == "usage" and items[0]["amount"] == cr(1000)
    only = api.client.get(url, params={"code": "purchase"}, headers=alice_h).json()["items"]
    assert [t["amount_ucr"] for t in only] == [5 * CREDIT]
    # Bob's history holds his earning (earnings account), inbound.
    bobs = api.client.get(f"{V1}/users/{bob}/transfers", headers=api.admin).json()["items"]
    assert [(t["code"], t["direction"], t["amount_ucr"]) for t in bobs] == [("earning", "in", 7)]
    # Time filters: since inclusive, until exclusive.
    first_at = items[-1]["created_at"]
    last_at = items[0]["created_at"]
    since = api.client.get(url, params={"since": last_at}, headers=alice_h).json()["items"]
    assert items[0]["id"] in [t["id"] for t in since]
    until = api.client.get(url, params={"until": first_at}, headers=alice_h).json()["items"]
    assert until == []
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert api.client.get(url, params={"since": later}, headers=alice_h).json()["items"] == []
    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    window = api.client.get(url, params={"since": earlier, "until": later}, headers=alice_h).json()[
        "items"
    ]
    assert window == items


def test_transfers_cursor_pagination(api: Api) -> None:
    alice, alice_h = api.user("alice")
    for i in range(7):
        api.grant(alice, CREDIT + i, key=f"g{i}")
    url = f"{V1}/users/{alice}/transfers"
    amounts: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = api.client.get(url, params=params, headers=alice_h).json()
        pages += 1
        assert len(page["items"]) <= 3
        amounts += [t["amount_ucr"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert amounts == [CREDIT + i for i in reversed(range(7))]


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "%%%"},
        {"cursor": cursor_of("id:x")},
        {"code": "theft"},
        {"since": "yesterday"},
        {"limit": 0},
        {"limit": 10_000},
    ],
    ids=["cursor", "cursor-not-int", "code", "since", "limit-0", "limit-huge"],
)
def test_transfers_bad_query_is_422(api: Api, params: dict[str, Any]) -> None:
    alice, alice_h = api.user("alice")
    body = api.rejects("GET", f"{V1}/users/{alice}/transfers", 422, params=params, headers=alice_h)
    assert body["code"] in ("validation_error", "invalid_input")


def test_transfers_naive_since_is_422(api: Api) -> None:
    alice, alice_h = api.user("alice")
    api.rejects(
        "GET",
        f"{V1}/users/{alice}/transfers",
        422,
        params={"since": "2020-01-01T00:00:00"},
        headers=alice_h,
    )


# --- models ---------------------------------------------------------------------------------


def test_model_with_explicit_price(api: Api) -> None:
    r = api.client.post(
        f"{V1}/models",
        json={
            "slug": "house-70b",
            "name": "House 70B",
            "category": "Roleplay",
            "price": {
                "input_ucr_per_mtok": 3_000_000,
                "output_ucr_per_mtok": "4500000.5",
                "cache_read_ucr_per_mtok": 1_000_000,
                "per_request_ucr": 10,
            },
        },
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["slug"] == "house-70b" and m["name"] == "House 70B" and m["category"] == "Roleplay"
    assert m["provider"] == "platform" and m["provider_model_ref"] == "house-70b"
    assert m["mode"] == "chat" and m["demand"] == "medium" and m["tier"] == "medium"  # 70B
    assert m["is_active"] and not m["is_premium"] and m["creator_id"] is None
    assert m["purchased"] is False and m["owned"] is False and m["earnings_rule"] is None
    p = m["price"]
    assert p["version"] == 1 and p["source"] == "explicit"
    assert p["input_ucr_per_mtok"] == "3000000" and p["output_ucr_per_mtok"] == "4500000.5"
    assert p["cache_read_ucr_per_mtok"] == "1000000" and p["per_request_ucr"] == "10"
    assert p["input_uusd_per_mtok"] == "0"  # no provider cost known for this slug
    assert api.client.get(f"{V1}/models/{m['id']}", headers=api.service).json() == m

    # The charge follows the explicit rates exactly (half-even on the total).
    alice, _ = api.user("alice", credits_ucr=CREDIT)
    r = api.charge(
        alice, "house-70b", key="u", input_tokens=1000, cached_input_tokens=400, output_tokens=3
    )
    exact = (
        Decimal(600 * 3_000_000 + 400 * 1_000_000) / 10**6
        + Decimal(3) * Decimal("4500000.5") / 10**6
        + 10
    )
    assert r.status_code == 201, r.text
    assert r.json()["charge_ucr"] == round(exact) == 2224  # 2200 + 13.5000015 + 10 → 2224
    assert r.json()["cost_uusd"] == 0


def test_model_priced_from_genai_prices(api: Api) -> None:
    r = api.client.post(
        f"{V1}/models",
        json={
            "slug": "mini",
            "name": "GPT-4o mini",
            "provider": "openai",
            "provider_model_ref": "gpt-4o-mini",
        },
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    m = r.json()
    cost = genai_cost("gpt-4o-mini", "openai")
    assert cost is not None
    assert m["tier"] == "small" and m["provider"] == "openai"
    factor = Decimal(TIER["small"]) * Decimal(DEMAND["medium"]) * CREDITS_PER_USD
    p = m["price"]
    assert p["source"] == "cost" and p["version"] == 1
    assert Decimal(p["input_uusd_per_mtok"]) == cost.input_uusd_per_mtok == 150_000
    assert Decimal(p["output_uusd_per_mtok"]) == cost.output_uusd_per_mtok == 600_000
    assert Decimal(p["input_ucr_per_mtok"]) == cost.input_uusd_per_mtok * factor == 24_000_000
    assert Decimal(p["output_ucr_per_mtok"]) == cost.output_uusd_per_mtok * factor
    alice, _ = api.user("alice", credits_ucr=CREDIT)
    r = api.charge(alice, "mini", key="u", input_tokens=1000, output_tokens=500)
    assert r.status_code == 201, r.text
    # 1000 × 24 µcr + 500 × 96 µcr; provider cost 1000 × 0.15 + 500 × 0.6 µUSD
    assert r.json()["charge_ucr"] == 1000 * 24 + 500 * 96
    assert r.json()["cost_uusd"] == 150 + 300
    assert r.json()["cost"] == "$0.000450"


def test_model_priced_from_a_cost_object(api: Api) -> None:
    r = api.client.post(
        f"{V1}/models",
        json={
            "slug": "big",
            "name": "Big",
            "tier": "large",
            "demand": "high",
            "cost": {
                "input_uusd_per_mtok": 1_000_000,
                "output_uusd_per_mtok": "2000000",
                "per_unit_uusd": "0.5",
            },
        },
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    p = r.json()["price"]
    factor = Decimal(TIER["large"]) * Decimal(DEMAND["high"]) * CREDITS_PER_USD  # 154
    assert p["source"] == "cost" and r.json()["tier"] == "large" and r.json()["demand"] == "high"
    assert Decimal(p["input_ucr_per_mtok"]) == 1_000_000 * factor == 154_000_000
    assert Decimal(p["output_ucr_per_mtok"]) == 2_000_000 * factor
    assert Decimal(p["per_unit_ucr"]) == Decimal("0.5") * factor == 77


def test_model_without_price_or_known_cost_is_422(api: Api) -> None:
    body = api.rejects(
        "POST",
        f"{V1}/models",
        422,
        "invalid_price",
        json={"slug": "mystery-model", "name": "Mystery"},
        headers=api.admin,
    )
    assert "mystery-model" in body["detail"]
    assert api.client.get(f"{V1}/models", headers=api.admin).json()["items"] == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "x", "price": {}}, 422, "validation_error"),
        ({"slug": "x", "price": {}}, 422, "validation_error"),
        ({"slug": "Bad Slug", "name": "x", "price": {}}, 422, "invalid_input"),
        ({"slug": "x", "name": "x", "price": {"input_ucr_per_mtok": -1}}, 422, "validation_error"),
        (
            {"slug": "x", "name": "x", "price": {"input_ucr_per_mtok": "1e16"}},
            422,
            "validation_error",
        ),
        (
            {"slug": "x", "name": "x", "price": {"input_ucr_per_mtok": "NaN"}},
            422,
            "validation_error",
        ),
        (
            {"slug": "x", "name": "x", "price": {"input_ucr_per_mtok": "abc"}},
            422,
            "validation_error",
        ),
        ({"slug": "x", "name": "x", "price": {"input_per_mtok": 1}}, 422, "validation_error"),
        ({"slug": "x", "name": "x", "cost": {"input_uusd_per_mtok": -5}}, 422, "validation_error"),
        ({"slug": "x", "name": "x", "price": {}, "tier": "huge"}, 422, "validation_error"),
        ({"slug": "x", "name": "x", "price": {}, "mode": "telepathy"}, 422, "validation_error"),
        ({"slug": "x", "name": "x", "price": {}, "demand": "extreme"}, 422, "validation_error"),
        ({"slug": "x", "name": "x", "price": {}, "access_price_ucr": -1}, 422, "validation_error"),
        ({"slug": "x", "name": "x", "price": {}, "creator_id": 0}, 422, "validation_error"),
        ({"slug": "x", "name": "x", "price": {}, "creator_id": 999999}, 404, "user_not_found"),
        ({"slug": "x", "name": "x", "price": {}, "owner": 1}, 422, "validation_error"),
        (
            {"slug": "x", "name": "x", "price": {}, "earnings_rule": {"share_bps": 10_001}},
            422,
            "validation_error",
        ),
        (
            {"slug": "x", "name": "x", "price": {}, "earnings_rule": {"per_token_ucr": -1}},
            422,
            "validation_error",
        ),
        (
            {
                "slug": "x",
                "name": "x",
                "price": {},
                "earnings_rule": {"type_multipliers": {"chat": "-1"}},
            },
            422,
            "validation_error",
        ),
        (
            {"slug": "x", "name": "x", "price": {}, "earnings_rule": {"popularity_tiers": [[1]]}},
            422,
            "validation_error",
        ),
    ],
    ids=[
        "no-slug",
        "no-name",
        "bad-slug",
        "negative-price",
        "huge-price",
        "nan-price",
        "text-price",
        "unknown-price-field",
        "negative-cost",
        "bad-tier",
        "bad-mode",
        "bad-demand",
        "negative-access",
        "creator-0",
        "unknown-creator",
        "unknown-field",
        "share-over-100pct",
        "negative-per-token",
        "negative-multiplier",
        "bad-tier-pair",
    ],
)
def test_model_create_bad_input(api: Api, body: dict[str, Any], status: int, code: str) -> None:
    api.rejects("POST", f"{V1}/models", status, code, json=body, headers=api.admin)
    assert api.client.get(f"{V1}/models", headers=api.admin).json()["items"] == []


def test_model_duplicate_slug_is_409(api: Api) -> None:
    api.model("taken")
    api.rejects(
        "POST",
        f"{V1}/models",
        409,
        "model_exists",
        json={"slug": "taken", "name": "again", "price": {}},
        headers=api.admin,
    )


def test_earnings_rule_multipliers_as_numbers_and_strings(api: Api) -> None:
    alice, _ = api.user("alice", credits_ucr=10 * CREDIT)
    bob, _ = api.user("bob")
    rule = {
        "per_use_ucr": 100,
        "per_token_ucr": "0.5",
        "share_bps": 1000,
        "popularity_tiers": [[1, 1.5], [0, "1.25"]],
        "type_multipliers": {"chat": 2, "image_generation": "0.75", "*": "0.5"},
    }
    m = api.model("rules", creator_id=bob, earnings_rule=rule)
    out = m["earnings_rule"]
    assert out["version"] == 1 and out["per_use_ucr"] == 100 and out["share_bps"] == 1000
    assert out["per_token_ucr"] == "0.5"
    assert sorted(map(tuple, out["popularity_tiers"])) == [(0, "1.25"), (1, "1.5")]
    assert out["type_multipliers"] == {"chat": "2", "image_generation": "0.75"}
    assert out["other_multiplier"] == "0.5"

    def earned(charge: int, tokens: int, popularity: str, kind: str) -> int:
        base = Decimal(100) + Decimal(tokens) * Decimal("0.5") + Decimal(charge) * 1000 / 10_000
        return round(base * Decimal(popularity) * Decimal(kind))

    # 1st use: no prior uses → tier (0, 1.25); chat × 2.
    r = api.charge(alice, "rules", key="e1", input_tokens=1000, output_tokens=1000)
    charge = 1000 * 1 + 1000 * 2
    assert r.json()["charge_ucr"] == charge
    assert r.json()["earnings"] == [
        {"user_id": bob, "amount_ucr": earned(charge, 2000, "1.25", "2")}
    ]
    # 2nd use: 1 prior use → tier (1, 1.5); an unlisted type → other 0.5.
    r = api.charge(alice, "rules", key="e2", input_tokens=10, usage_type="tts")
    assert r.json()["earnings"] == [{"user_id": bob, "amount_ucr": earned(10, 10, "1.5", "0.5")}]
    # image_generation × 0.75
    r = api.charge(alice, "rules", key="e3", output_tokens=3, usage_type="image_generation")
    assert r.json()["earnings"] == [{"user_id": bob, "amount_ucr": earned(6, 3, "1.5", "0.75")}]


def test_models_list_filters_and_caller_flags(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    chat = api.model("chatty", category="Chat")
    img = api.model("painter", category="Art", mode="image_generation", price={"per_unit_ucr": 5})
    own = api.model("alices", category="Chat", creator_id=alice)
    prem = api.model("gold", category="Chat", is_premium=True, access_price_ucr=CREDIT)
    prem2 = api.model("platinum", category="Art", is_premium=True, access_price_ucr=2 * CREDIT)

    def slugs(params: dict[str, Any], headers: dict[str, str]) -> list[str]:
        r = api.client.get(f"{V1}/models", params=params, headers=headers)
        assert r.status_code == 200, r.text
        return [m["slug"] for m in r.json()["items"]]

    everything = ["chatty", "painter", "alices", "gold", "platinum"]
    assert slugs({}, alice_h) == everything
    assert slugs({"category": "Chat"}, alice_h) == ["chatty", "alices", "gold"]
    assert slugs({"category": "Nope"}, alice_h) == []
    assert slugs({"mode": "image_generation"}, alice_h) == ["painter"]
    assert slugs({"premium": "true"}, alice_h) == ["gold", "platinum"]
    assert slugs({"premium": "false"}, alice_h) == ["chatty", "painter", "alices"]
    assert slugs({"premium": "true", "category": "Art"}, alice_h) == ["platinum"]
    assert slugs({"search": "AIN"}, alice_h) == ["painter"]
    assert slugs({"limit": 2}, api.admin) == ["chatty", "painter"]

    items = {m["slug"]: m for m in api.client.get(f"{V1}/models", headers=alice_h).json()["items"]}
    assert {s for s, m in items.items() if m["owned"]} == {"alices"}
    assert not any(m["purchased"] for m in items.values())
    one = api.client.get(f"{V1}/models/{prem['id']}", headers=alice_h).json()
    assert one["purchased"] is False and one["owned"] is False and one["is_premium"] is True
    assert api.client.get(f"{V1}/models/{own['id']}", headers=alice_h).json()["owned"] is True
    # Admin and service keys see no flags.
    for headers in (api.admin, api.service):
        listed = api.client.get(f"{V1}/models", headers=headers).json()["items"]
        assert not any(m["purchased"] or m["owned"] for m in listed)
    assert chat["id"] < img["id"] < prem2["id"]


@pytest.mark.parametrize(
    "params",
    [
        {"mode": "telepathy"},
        {"premium": "maybe"},
        {"limit": 0},
        {"cursor": "!!"},
        {"category": "c" * 65},
    ],
    ids=["mode", "premium", "limit", "cursor", "category"],
)
def test_models_list_bad_query_is_422(api: Api, params: dict[str, Any]) -> None:
    api.model("m")
    body = api.rejects("GET", f"{V1}/models", 422, params=params, headers=api.admin)
    assert body["code"] in ("validation_error", "invalid_input")


def test_models_list_cursor_pagination(api: Api) -> None:
    ids = [api.model(f"m{i}")["id"] for i in range(5)]
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.client.get(f"{V1}/models", params=params, headers=api.service).json()
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


def test_get_model_unknown_and_bad_id(api: Api) -> None:
    api.rejects("GET", f"{V1}/models/999999", 404, "model_not_found", headers=api.admin)
    api.rejects("GET", f"{V1}/models/abc", 422, "validation_error", headers=api.admin)


def test_patch_model_price_rule_and_fields(api: Api) -> None:
    alice, _ = api.user("alice", credits_ucr=10 * CREDIT)
    bob, _ = api.user("bob")
    m = api.model("m", creator_id=bob, earnings_rule=NO_EARNINGS)
    assert m["price"]["version"] == 1 and m["earnings_rule"]["version"] == 1
    url = f"{V1}/models/{m['id']}"

    r = api.client.patch(
        url,
        json={"price": {"input_ucr_per_mtok": 5_000_000, "output_ucr_per_mtok": 0}},
        headers=api.admin,
    )
    assert r.status_code == 200, r.text
    p = r.json()["price"]
    assert p["version"] == 2 and p["source"] == "explicit" and p["input_ucr_per_mtok"] == "5000000"
    assert (
        api.charge(alice, "m", key="after-price", input_tokens=100, output_tokens=100).json()[
            "charge_ucr"
        ]
        == 100 * 5
    )

    r = api.client.patch(
        url, json={"earnings_rule": {**NO_EARNINGS, "per_use_ucr": 42}}, headers=api.admin
    )
    assert r.status_code == 200, r.text
    assert (
        r.json()["earnings_rule"]["version"] == 2 and r.json()["earnings_rule"]["per_use_ucr"] == 42
    )
    assert r.json()["price"]["version"] == 2  # unchanged
    e = api.charge(alice, "m", key="after-rule", input_tokens=1).json()["earnings"]
    assert e == [{"user_id": bob, "amount_ucr": 42}]

    r = api.client.patch(
        url,
        json={
            "name": "Renamed",
            "category": "Code",
            "tier": "micro",
            "demand": "low",
            "is_premium": True,
            "access_price_ucr": 9,
        },
        headers=api.admin,
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["name"], got["category"], got["tier"], got["demand"]) == (
        "Renamed",
        "Code",
        "micro",
        "low",
    )
    assert (
        got["is_premium"] is True and got["access_price_ucr"] == 9 and got["access_price"] == cr(9)
    )
    assert got["price"]["version"] == 2  # a tier change alone does not reprice
    # An empty patch changes nothing.
    assert api.client.patch(url, json={}, headers=api.admin).json()["name"] == "Renamed"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": ""}, 422, "validation_error"),
        ({"name": "   "}, 422, "invalid_input"),
        ({"slug": "new-slug"}, 422, "validation_error"),
        ({"price": {"input_ucr_per_mtok": -1}}, 422, "validation_error"),
        ({"tier": "gigantic"}, 422, "validation_error"),
        ({"access_price_ucr": -5}, 422, "validation_error"),
        ({"earnings_rule": {"share_bps": -1}}, 422, "validation_error"),
        ({"is_active": "perhaps"}, 422, "validation_error"),
    ],
    ids=["empty-name", "blank-name", "slug", "negative-price", "tier", "access", "share", "active"],
)
def test_patch_model_bad_input(api: Api, body: dict[str, Any], status: int, code: str) -> None:
    m = api.model("m")
    api.rejects("PATCH", f"{V1}/models/{m['id']}", status, code, json=body, headers=api.admin)
    after = api.client.get(f"{V1}/models/{m['id']}", headers=api.admin).json()
    assert after == m | {"earnings_rule": None}


def test_patch_unknown_model_is_404(api: Api) -> None:
    api.rejects(
        "PATCH",
        f"{V1}/models/999999",
        404,
        "model_not_found",
        json={"name": "x"},
        headers=api.admin,
    )


def test_delete_deactivates(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    m = api.model("doomed", is_premium=True, access_price_ucr=5)
    keep = api.model("kept")
    r = api.client.delete(f"{V1}/models/{m['id']}", headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["is_active"] is False and r.json()["id"] == m["id"]
    listed = api.client.get(f"{V1}/models", headers=alice_h).json()["items"]
    assert [x["id"] for x in listed] == [keep["id"]]
    api.rejects("GET", f"{V1}/models/{m['id']}", 404, "model_not_found", headers=alice_h)
    assert api.client.get(f"{V1}/models/{m['id']}", headers=api.admin).json()["is_active"] is False
    inactive = api.client.get(
        f"{V1}/admin/pricing", params={"include_inactive": True}, headers=api.admin
    )
    assert [x["slug"] for x in inactive.json()["items"]] == ["doomed", "kept"]
    for model in ("doomed", m["id"]):
        api.rejects(
            "POST",
            f"{V1}/usage",
            404,
            "model_not_found",
            json={"user_id": alice, "model": model, "input_tokens": 10},
            headers={**api.service, "Idempotency-Key": f"dead-{model}"},
        )
    api.rejects(
        "POST",
        f"{V1}/models/{m['id']}/purchase",
        404,
        "model_not_found",
        headers={**alice_h, "Idempotency-Key": "buy-dead"},
    )
    # Deleting again is harmless; an unknown id is 404.
    assert api.client.delete(f"{V1}/models/{m['id']}", headers=api.admin).status_code == 200
    api.rejects("DELETE", f"{V1}/models/999999", 404, "model_not_found", headers=api.admin)


# --- premium access -------------------------------------------------------------------------


def test_premium_purchase_debits_the_access_price_once(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    price = 3_333_333
    m = api.model("gold", is_premium=True, access_price_ucr=price)
    url = f"{V1}/models/{m['id']}/purchase"
    r = api.client.post(url, json={}, headers={**alice_h, "Idempotency-Key": "buy-1"})
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["user_id"] == alice and first["model_id"] == m["id"]
    assert first["price_ucr"] == price and first["price"] == cr(price)
    assert first["transfer_id"] is not None
    assert first["balance_ucr"] == 10 * CREDIT - price and first["balance"] == cr(
        10 * CREDIT - price
    )
    assert r.headers["Idempotency-Hit"] == "false"

    before = api.ledger_state()
    again = api.client.post(url, json={}, headers={**alice_h, "Idempotency-Key": "buy-1"})
    assert again.status_code == 201 and again.json() == first
    assert again.headers["Idempotency-Hit"] == "true"
    # Another key: buying again charges nothing.
    other = api.client.post(url, headers={**alice_h, "Idempotency-Key": "buy-2"})
    assert other.status_code == 201, other.text
    assert other.json()["balance_ucr"] == 10 * CREDIT - price
    assert other.json()["transfer_id"] == first["transfer_id"]
    assert api.ledger_state() == before
    wallet = api.client.get(f"{V1}/users/{alice}/wallet", headers=alice_h).json()
    assert wallet["balance_ucr"] == 10 * CREDIT - price

    # An admin or service key buys for a user named in the body.
    bob, _ = api.user("bob", credits_ucr=price)
    r = api.client.post(
        url, json={"user_id": bob}, headers={**api.service, "Idempotency-Key": "bob"}
    )
    assert r.status_code == 201 and r.json()["user_id"] == bob and r.json()["balance_ucr"] == 0
    stats = api.client.get(f"{V1}/admin/stats", headers=api.admin).json()
    assert stats["access_revenue_ucr"] == 2 * price
    # Bought access is usable.
    r = api.charge(alice, "gold", key="use", headers=alice_h, input_tokens=10)
    assert r.status_code == 201 and r.json()["balance_ucr"] == 10 * CREDIT - price - 10


def test_premium_purchase_with_insufficient_funds_is_402(api: Api) -> None:
    _, alice_h = api.user("alice", credits_ucr=CREDIT)
    gold = api.model("gold", is_premium=True, access_price_ucr=CREDIT + 1)
    url = f"{V1}/models/{gold['id']}/purchase"
    body = api.rejects(
        "POST", url, 402, "insufficient_funds", headers={**alice_h, "Idempotency-Key": "k1"}
    )
    assert body["title"] == "Payment Required"


def test_purchased_flag_for_a_user_key(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    api.model("alices", creator_id=alice)
    prem = api.model("gold", is_premium=True, access_price_ucr=CREDIT)
    api.model("platinum", is_premium=True, access_price_ucr=2 * CREDIT)
    r = api.client.post(
        f"{V1}/models/{prem['id']}/purchase", json={}, headers={**alice_h, "Idempotency-Key": "buy"}
    )
    assert r.status_code == 201, r.text
    items = {m["slug"]: m for m in api.client.get(f"{V1}/models", headers=alice_h).json()["items"]}
    assert {s for s, m in items.items() if m["purchased"]} == {"gold"}
    assert {s for s, m in items.items() if m["owned"]} == {"alices"}
    one = api.client.get(f"{V1}/models/{prem['id']}", headers=alice_h).json()
    assert one["purchased"] is True and one["owned"] is False


def test_premium_purchase_refusals(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=CREDIT)
    bob, _ = api.user("bob")
    gold = api.model("gold", is_premium=True, access_price_ucr=CREDIT + 1)
    free = api.model("free")
    url = f"{V1}/models/{gold['id']}/purchase"
    api.rejects(
        "POST",
        f"{V1}/models/{free['id']}/purchase",
        422,
        "model_not_premium",
        headers={**alice_h, "Idempotency-Key": "k2"},
    )
    api.rejects(
        "POST",
        f"{V1}/models/999999/purchase",
        404,
        "model_not_found",
        headers={**alice_h, "Idempotency-Key": "k3"},
    )
    api.rejects(
        "POST", url, 422, "invalid_input", json={}, headers={**api.admin, "Idempotency-Key": "k4"}
    )
    api.rejects(
        "POST",
        url,
        404,
        "user_not_found",
        json={"user_id": bob},
        headers={**alice_h, "Idempotency-Key": "k5"},
    )
    api.rejects(
        "POST",
        url,
        422,
        "validation_error",
        json={"user_id": alice, "x": 1},
        headers={**alice_h, "Idempotency-Key": "k6"},
    )
    api.rejects("POST", url, 422, "validation_error", json={}, headers=alice_h)  # no key
    assert api.client.get(f"{V1}/models/{gold['id']}", headers=alice_h).json()["purchased"] is False


def test_creator_gets_own_premium_model_free(api: Api) -> None:
    alice, alice_h = api.user("alice")
    m = api.model("mine", creator_id=alice, is_premium=True, access_price_ucr=5 * CREDIT)
    before = api.ledger_state()
    r = api.client.post(
        f"{V1}/models/{m['id']}/purchase", headers={**alice_h, "Idempotency-Key": "own"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["price_ucr"] == 0 and r.json()["transfer_id"] is None
    assert api.ledger_state() == before


def test_premium_usage_needs_a_purchase(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    bob, bob_h = api.user("bob", credits_ucr=10 * CREDIT)
    m = api.model("gold", creator_id=bob, is_premium=True, access_price_ucr=CREDIT)
    body = api.rejects(
        "POST",
        f"{V1}/usage",
        403,
        "model_access_required",
        json={"user_id": alice, "model": "gold", "input_tokens": 10},
        headers={**alice_h, "Idempotency-Key": "u1"},
    )
    assert body["access_price_ucr"] == CREDIT and body["model_id"] == m["id"]
    # The creator uses it without buying.
    assert api.charge(bob, "gold", key="own", headers=bob_h, input_tokens=10).status_code == 201


# --- usage ----------------------------------------------------------------------------------


def test_usage_single_charge_and_idempotency(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=CREDIT)
    m = api.model(
        "m",
        price={
            "input_ucr_per_mtok": 2_500_000,
            "output_ucr_per_mtok": 10_000_000,
            "per_unit_ucr": 7,
        },
    )
    body = {"input_tokens": 3, "output_tokens": 5, "units": 2, "metadata": {"chat_id": "c1"}}
    r = api.charge(alice, "m", key="evt-1", headers=alice_h, **body)
    assert r.status_code == 201, r.text
    assert r.headers["Idempotency-Hit"] == "false"
    out = r.json()
    exact = Decimal(3) * Decimal("2.5") + 5 * 10 + 2 * 7  # 7.5 + 50 + 14 = 71.5 → 72 (half-even)
    charge = round(exact)
    assert charge == 72
    assert out["charge_ucr"] == charge and out["charge"] == cr(charge)
    assert out["model_id"] == m["id"] and out["balance_ucr"] == CREDIT - charge
    assert out["balance"] == cr(CREDIT - charge) and out["earnings"] == []
    assert out["price_version_id"] is not None and out["usage_id"] >= 1

    before = api.ledger_state()
    again = api.charge(alice, "m", key="evt-1", headers=alice_h, **body)
    assert again.status_code == 201 and again.json() == out
    assert again.headers["Idempotency-Hit"] == "true"
    assert api.ledger_state() == before
    api.rejects(
        "POST",
        f"{V1}/usage",
        409,
        "idempotency_key_reused",
        json={"user_id": alice, "model": "m", **body, "output_tokens": 6},
        headers={**alice_h, "Idempotency-Key": "evt-1"},
    )
    # By id, through the service key.
    r = api.charge(alice, m["id"], key="evt-2", input_tokens=2)
    assert r.status_code == 201 and r.json()["charge_ucr"] == 5
    assert r.json()["balance_ucr"] == CREDIT - 72 - 5


def test_usage_insufficient_funds_writes_nothing(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=999)
    api.model("m")  # 1 µcr per input token
    body = api.rejects(
        "POST",
        f"{V1}/usage",
        402,
        "insufficient_funds",
        json={"user_id": alice, "model": "m", "input_tokens": 1000},
        headers={**alice_h, "Idempotency-Key": "too-much"},
    )
    assert body["available_ucr"] == 999 and body["needed_ucr"] == 1000
    # Exactly the balance goes through, and the key is still free.
    r = api.charge(alice, "m", key="too-much", headers=alice_h, input_tokens=999)
    assert r.status_code == 201 and r.json()["balance_ucr"] == 0


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"input_tokens": -1}, "validation_error"),
        ({"output_tokens": 10**12 + 1}, "validation_error"),
        ({"units": 10**40}, "validation_error"),
        ({"input_tokens": 1.5}, "validation_error"),
        ({"input_tokens": "many"}, "validation_error"),
        ({"input_tokens": 5, "cached_input_tokens": 6}, "invalid_usage"),
        ({"usage_type": ""}, "validation_error"),
        ({"usage_type": "x" * 33}, "validation_error"),
        ({"occurred_at": "2026-01-01T00:00:00"}, "validation_error"),
        ({"occurred_at": "noon"}, "validation_error"),
        ({"metadata": "text"}, "validation_error"),
        ({"tokens": 5}, "validation_error"),
        ({"model": ""}, "validation_error"),
        ({"model": None}, "validation_error"),
        ({"user_id": 0}, "validation_error"),
        ({"user_id": "me"}, "validation_error"),
    ],
    ids=[
        "negative",
        "over-max",
        "huge",
        "float",
        "string",
        "cached-over-input",
        "empty-type",
        "long-type",
        "naive-time",
        "bad-time",
        "metadata-str",
        "unknown-field",
        "empty-model",
        "null-model",
        "user-0",
        "user-str",
    ],
)
def test_usage_bad_input_is_422(api: Api, fields: dict[str, Any], code: str) -> None:
    alice, _ = api.user("alice", credits_ucr=CREDIT)
    api.model("m")
    body = {"user_id": alice, "model": "m", "input_tokens": 10, **fields}
    api.rejects(
        "POST", f"{V1}/usage", 422, code, json=body, headers={**api.service, "Idempotency-Key": "k"}
    )


def test_usage_missing_fields_and_malformed_body(api: Api) -> None:
    alice, _ = api.user("alice", credits_ucr=CREDIT)
    api.model("m")
    h = {**api.service, "Idempotency-Key": "k"}
    api.rejects("POST", f"{V1}/usage", 422, "validation_error", json={"model": "m"}, headers=h)
    api.rejects("POST", f"{V1}/usage", 422, "validation_error", json={"user_id": alice}, headers=h)
    api.rejects("POST", f"{V1}/usage", 422, "validation_error", headers=h)
    api.rejects(
        "POST",
        f"{V1}/usage",
        422,
        "validation_error",
        content=b"{not json",
        headers={**h, "Content-Type": "application/json"},
    )
    api.rejects(
        "POST",
        f"{V1}/usage",
        422,
        "validation_error",
        json={"user_id": alice, "model": "m"},
        headers=api.service,
    )


def test_usage_unknown_model_user_and_scope(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=CREDIT)
    bob, _ = api.user("bob", credits_ucr=CREDIT)
    api.model("m")
    for model in ("nope", 999999):
        api.rejects(
            "POST",
            f"{V1}/usage",
            404,
            "model_not_found",
            json={"user_id": alice, "model": model, "input_tokens": 1},
            headers={**alice_h, "Idempotency-Key": f"k{model}"},
        )
    api.rejects(
        "POST",
        f"{V1}/usage",
        404,
        "user_not_found",
        json={"user_id": 999999, "model": "m", "input_tokens": 1},
        headers={**api.service, "Idempotency-Key": "k"},
    )
    # A user key charging another user: 404, as if that user did not exist.
    api.rejects(
        "POST",
        f"{V1}/usage",
        404,
        "user_not_found",
        json={"user_id": bob, "model": "m", "input_tokens": 1},
        headers={**alice_h, "Idempotency-Key": "k"},
    )


def test_usage_batch(api: Api) -> None:
    alice, _ = api.user("alice", credits_ucr=1500)
    bob, _ = api.user("bob", credits_ucr=CREDIT)
    carol, _ = api.user("carol")
    api.model("m", creator_id=carol, earnings_rule={**NO_EARNINGS, "per_use_ucr": 3})
    events = [
        {"idempotency_key": "b1", "user_id": alice, "model": "m", "input_tokens": 1000},
        {"idempotency_key": "b2", "user_id": alice, "model": "m", "input_tokens": 1000},  # dry
        {"idempotency_key": "b3", "user_id": bob, "model": "nope", "input_tokens": 1},
        {"idempotency_key": "b4", "user_id": bob, "model": "m", "output_tokens": 10},
        {
            "idempotency_key": "b5",
            "user_id": alice,
            "model": "m",
            "input_tokens": 5,
            "cached_input_tokens": 9,
        },
        {"idempotency_key": "b6", "user_id": 999999, "model": "m", "input_tokens": 1},
        {"idempotency_key": "b7", "user_id": alice, "model": "m", "input_tokens": 500},
    ]
    r = api.client.post(f"{V1}/usage/batch", json={"events": events}, headers=api.service)
    assert r.status_code == 200, r.text
    out = r.json()
    res = out["results"]
    assert [x["idempotency_key"] for x in res] == [e["idempotency_key"] for e in events]
    assert [x["status"] for x in res] == [
        "charged",
        "rejected",
        "rejected",
        "charged",
        "rejected",
        "rejected",
        "charged",
    ]
    assert (out["charged"], out["replayed"], out["rejected"]) == (3, 0, 4)
    assert [x["error"]["code"] if x["error"] else None for x in res] == [
        None,
        "insufficient_funds",
        "model_not_found",
        None,
        "invalid_usage",
        "user_not_found",
        None,
    ]
    assert all(x["error"] is None or x["error"]["detail"] for x in res)
    assert [x["charge_ucr"] for x in res] == [1000, 0, 0, 20, 0, 0, 500]
    assert res[0]["balance_ucr"] == 500 and res[6]["balance_ucr"] == 0
    assert res[3]["balance_ucr"] == CREDIT - 20
    assert res[0]["earnings"] == [{"user_id": carol, "amount_ucr": 3}]
    assert all(x["usage_id"] is None for x in res if x["status"] == "rejected")

    # The same batch again: charged events replay, nothing new is written.
    before = api.ledger_state()
    again = api.client.post(
        f"{V1}/usage/batch", json={"events": [events[0], events[3]]}, headers=api.admin
    )
    assert [x["status"] for x in again.json()["results"]] == ["replayed", "replayed"]
    assert again.json()["results"][0]["usage_id"] == res[0]["usage_id"]
    assert api.ledger_state() == before
    # A reused key with another body is rejected in place, not the whole batch.
    mixed = api.client.post(
        f"{V1}/usage/batch",
        json={"events": [{**events[0], "input_tokens": 1}, {**events[3], "idempotency_key": "b8"}]},
        headers=api.admin,
    ).json()["results"]
    assert [x["status"] for x in mixed] == ["rejected", "charged"]
    assert mixed[0]["error"]["code"] == "idempotency_key_reused"
    wallet = api.client.get(f"{V1}/users/{bob}/wallet", headers=api.admin).json()
    assert wallet["balance_ucr"] == CREDIT - 40


@pytest.mark.parametrize(
    "body",
    [
        {"events": []},
        {},
        {"events": [{"user_id": 1, "model": "m"}]},
        {"events": [{"idempotency_key": "k", "user_id": 1, "model": "m", "input_tokens": -1}]},
        {"events": [{"idempotency_key": "k", "user_id": 1, "model": "m", "extra": 1}]},
        {"events": [], "atomic": True},
    ],
    ids=["empty", "missing", "no-key", "negative", "unknown-field", "unknown-top-field"],
)
def test_usage_batch_bad_input_is_422(api: Api, body: dict[str, Any]) -> None:
    api.user("alice", credits_ucr=CREDIT)
    api.model("m")
    api.rejects(
        "POST", f"{V1}/usage/batch", 422, "validation_error", json=body, headers=api.service
    )


def test_usage_batch_of_1001_is_422(api: Api) -> None:
    alice, _ = api.user("alice", credits_ucr=CREDIT)
    api.model("m")
    event = {"user_id": alice, "model": "m", "input_tokens": 1}
    events = [{**event, "idempotency_key": f"k{i}"} for i in range(1001)]
    api.rejects(
        "POST",
        f"{V1}/usage/batch",
        422,
        "validation_error",
        json={"events": events},
        headers=api.service,
    )
    r = api.client.post(f"{V1}/usage/batch", json={"events": events[:1000]}, headers=api.service)
    assert r.status_code == 200 and r.json()["charged"] == 1000
    wallet = api.client.get(f"{V1}/users/{alice}/wallet", headers=api.admin).json()
    assert wallet["balance_ucr"] == CREDIT - 1000


# --- earnings and analytics -----------------------------------------------------------------


def test_earnings_period_filter(api: Api) -> None:
    alice, _ = api.user("alice", credits_ucr=CREDIT)
    bob, bob_h = api.user("bob")
    m = api.model("m", creator_id=bob, earnings_rule={**NO_EARNINGS, "per_use_ucr": 100})
    for i in range(3):
        assert (
            api.charge(alice, "m", key=f"e{i}", input_tokens=10, output_tokens=5).status_code == 201
        )
    # Age one earning by 10 days and one by 100 days.
    with api.db.tx() as session:
        rows = session.execute(earnings_table.select().order_by(earnings_table.c.id)).all()
        assert len(rows) == 3
        for row, days in zip(rows[:2], (10, 100), strict=True):
            session.execute(
                update(earnings_table)
                .where(earnings_table.c.id == row.id)
                .values(created_at=datetime.now(UTC) - timedelta(days=days))
            )
    url = f"{V1}/users/{bob}/earnings"
    expected = {"7d": 1, "30d": 2, "90d": 2, "365d": 3, "all": 3}
    for period, uses in expected.items():
        r = api.client.get(url, params={"period": period}, headers=bob_h)
        assert r.status_code == 200, r.text
        e = r.json()
        assert e["period"] == period and e["user_id"] == bob
        assert (
            e["total_uses"] == uses
            and e["total_ucr"] == 100 * uses
            and e["total"] == cr(100 * uses)
        )
        assert e["total_tokens"] == 15 * uses
        assert [x["model_id"] for x in e["models"]] == [m["id"]]
    default = api.client.get(url, headers=bob_h).json()
    assert default["period"] == "all" and default["total_uses"] == 3
    for bad in ("1d", "ALL", "", "30"):
        api.rejects("GET", url, 422, "validation_error", params={"period": bad}, headers=bob_h)
    api.rejects("GET", f"{V1}/users/999999/earnings", 404, "user_not_found", headers=api.admin)


def test_model_analytics(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    bob, _ = api.user("bob", credits_ucr=10 * CREDIT)
    api.model(
        "alice-a",
        creator_id=alice,
        category="Chat",
        earnings_rule={**NO_EARNINGS, "per_use_ucr": 50},
    )
    api.model(
        "alice-b",
        creator_id=alice,
        category="Chat",
        earnings_rule={**NO_EARNINGS, "per_use_ucr": 70},
    )
    api.model("paint", category="Art")
    gold = api.model("gold", category="Chat", is_premium=True, access_price_ucr=12345)
    r = api.client.post(
        f"{V1}/models/{gold['id']}/purchase", headers={**alice_h, "Idempotency-Key": "b"}
    )
    assert r.status_code == 201
    api.charge(alice, "paint", key="a1", input_tokens=100)  # 100
    api.charge(alice, "gold", key="a2", output_tokens=100)  # 200
    api.charge(bob, "alice-a", key="b1", input_tokens=1)
    api.charge(bob, "alice-b", key="b2", input_tokens=1)
    api.charge(bob, "alice-b", key="b3", input_tokens=1)
    r = api.client.get(f"{V1}/users/{alice}/model-analytics", headers=alice_h)
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["user_id"] == alice
    assert (a["models_available"], a["models_purchased"], a["models_owned"]) == (4, 1, 2)
    assert a["usage_spent_ucr"] == 300 and a["access_spent_ucr"] == 12345
    assert a["credits_spent_ucr"] == 12645 and a["credits_spent"] == cr(12645)
    assert a["earnings_from_owned_ucr"] == 50 + 140
    assert a["most_profitable_model"]["name"] == "alice-b"
    assert a["most_profitable_model"]["earnings_ucr"] == 140
    assert [(c["category"], c["spent_ucr"]) for c in a["by_category"]] == [
        ("Chat", 200),
        ("Art", 100),
    ]
    assert len(a["activity_30d"]) == 30
    today = a["activity_30d"][-1]
    assert today["uses"] == 2 and today["spent_ucr"] == 300 and today["earned_ucr"] == 190


# --- admin ----------------------------------------------------------------------------------


def test_admin_pricing_panel(api: Api) -> None:
    cost = {"input_uusd_per_mtok": 1_000_000, "output_uusd_per_mtok": 3_000_000}
    api.client.post(
        f"{V1}/models",
        json={"slug": "c", "name": "c", "tier": "medium", "demand": "high", "cost": cost},
        headers=api.admin,
    )
    api.model("e", category="Other")
    r = api.client.get(f"{V1}/admin/pricing", headers=api.admin)
    assert r.status_code == 200, r.text
    rows = {x["slug"]: x for x in r.json()["items"]}
    markup = Decimal(TIER["medium"]) * Decimal(DEMAND["high"])  # 1.65
    assert Decimal(rows["c"]["markup"]) == markup
    # margin = (price − cost) / price on 1M in + 1M out: 1 − 1/1.65 = 0.393939… → 3939 bps
    price = (1_000_000 + 3_000_000) * markup * CREDITS_PER_USD
    cost_ucr = Decimal(4_000_000 * CREDITS_PER_USD)
    assert rows["c"]["margin_bps"] == round((price - cost_ucr) * 10_000 / price) == 3939
    # An explicit price with no provider cost: all margin.
    assert rows["e"]["margin_bps"] == 10_000 and Decimal(rows["e"]["markup"]) == Decimal(
        TIER["medium"]
    )
    assert rows["e"]["price"]["source"] == "explicit"
    only = api.client.get(
        f"{V1}/admin/pricing", params={"category": "Other"}, headers=api.admin
    ).json()
    assert [x["slug"] for x in only["items"]] == ["e"]
    api.rejects("GET", f"{V1}/admin/pricing", 422, params={"mode": "x"}, headers=api.admin)
    api.rejects("GET", f"{V1}/admin/pricing", 422, params={"cursor": "@@"}, headers=api.admin)


def test_admin_recalculate(api: Api) -> None:
    r = api.client.post(
        f"{V1}/models",
        json={
            "slug": "costed",
            "name": "costed",
            "tier": "medium",
            "cost": {"input_uusd_per_mtok": 1_000_000},
        },
        headers=api.admin,
    )
    costed = r.json()
    assert (
        Decimal(costed["price"]["input_ucr_per_mtok"]) == 1_000_000 * Decimal(TIER["medium"]) * 100
    )
    explicit = api.model("explicit", tier="medium")
    url = f"{V1}/admin/pricing/recalculate"

    r = api.client.post(url, json={}, headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "updated": [],
        "unchanged": [costed["id"]],
        "skipped": {str(explicit["id"]): "explicit_price"},
    }

    api.client.patch(f"{V1}/models/{costed['id']}", json={"tier": "micro"}, headers=api.admin)
    r = api.client.post(url, json={"model_ids": [costed["id"], explicit["id"]]}, headers=api.admin)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [u["model_id"] for u in out["updated"]] == [costed["id"]]
    new = out["updated"][0]
    assert (
        new["price"]["version"] == 2 and new["price"]["source"] == "cost" and new["tier"] == "micro"
    )
    assert Decimal(new["price"]["input_ucr_per_mtok"]) == 1_000_000 * Decimal(TIER["micro"]) * 100
    assert Decimal(new["markup"]) == Decimal(TIER["micro"])
    assert out["skipped"] == {str(explicit["id"]): "explicit_price"}
    got = api.client.get(f"{V1}/models/{costed['id']}", headers=api.admin).json()
    assert got["price"]["version"] == 2
    # include_explicit: the explicit model has no cost to start from.
    r = api.client.post(
        url, json={"model_ids": [explicit["id"]], "include_explicit": True}, headers=api.admin
    )
    assert r.json()["skipped"] == {str(explicit["id"]): "no_cost"}
    # filters
    r = api.client.post(url, json={"category": "Nope"}, headers=api.admin)
    assert r.json() == {"updated": [], "unchanged": [], "skipped": {}}
    api.rejects(
        "POST",
        url,
        404,
        "model_not_found",
        json={"model_ids": [costed["id"], 999999]},
        headers=api.admin,
    )
    assert (
        api.client.get(f"{V1}/models/{costed['id']}", headers=api.admin).json()["price"]["version"]
        == 2
    )
    for bad in ({"model_ids": [0]}, {"model_ids": "all"}, {"mode": "x"}, {"everything": True}):
        api.rejects("POST", url, 422, "validation_error", json=bad, headers=api.admin)


def test_admin_stats_sum_what_was_charged(api: Api) -> None:
    alice, _ = api.user("alice", credits_ucr=10 * CREDIT)
    bob, _ = api.user("bob", credits_ucr=2 * CREDIT)
    r = api.client.post(
        f"{V1}/models",
        json={
            "slug": "costed",
            "name": "costed",
            "tier": "large",
            "creator_id": bob,
            "cost": {"input_uusd_per_mtok": 1_000_000, "output_uusd_per_mtok": 2_000_000},
            "earnings_rule": {**NO_EARNINGS, "share_bps": 2000},
        },
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    api.model("gold", is_premium=True, access_price_ucr=250_000)
    api.model("gone")
    api.client.delete(f"{V1}/models/{api.model('gone2')['id']}", headers=api.admin)

    # price per token: 1 µUSD × 1.4 × 100 = 140 µcr in, 280 µcr out
    charges = [(alice, 1000, 500), (alice, 7, 3), (bob, 100, 100)]
    revenue = earned = cost = 0
    for i, (user, inp, outp) in enumerate(charges):
        r = api.charge(user, "costed", key=f"s{i}", input_tokens=inp, output_tokens=outp)
        assert r.status_code == 201, r.text
        charge = inp * 140 + outp * 280
        assert r.json()["charge_ucr"] == charge
        # empty tiers and type multipliers: multiplier 1; self-usage earns nothing
        pay = 0 if user == bob else round(Decimal(charge) * 2000 / 10_000)
        assert r.json()["earnings"] == ([{"user_id": bob, "amount_ucr": pay}] if pay else [])
        revenue += charge
        earned += pay
        cost += inp * 1 + outp * 2
    r = api.client.get(f"{V1}/admin/stats", headers=api.admin)
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["usage_revenue_ucr"] == revenue and s["usage_revenue"] == cr(revenue)
    assert s["access_revenue_ucr"] == 0  # purchases: see test_premium_purchase_debits_…
    assert s["provider_cost_uusd"] == cost
    assert s["creator_earnings_ucr"] == earned and s["earnings_owed_ucr"] == earned
    assert s["margin_ucr"] == revenue - cost * CREDITS_PER_USD - earned
    assert s["wallet_balances_ucr"] == 12 * CREDIT - revenue
    assert (s["users"], s["active_models"], s["usage_events"]) == (2, 3, 3)


# --- health and schema ----------------------------------------------------------------------


def test_health_and_readiness(api: Api) -> None:
    r = api.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = api.client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["revision"]


def test_openapi_is_3_1_and_lists_every_route(api: Api) -> None:
    r = api.client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["title"] == "modelbank"
    assert "/api/v1/usage" in spec["paths"] and "post" in spec["paths"]["/api/v1/usage"]
    grant = spec["paths"]["/api/v1/users/{user_id}/grants"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in grant["parameters"])
    assert spec["components"]["schemas"]["UserIn"]["additionalProperties"] is False


def test_unknown_route_and_method_are_problems(api: Api) -> None:
    problem(api.client.get(f"{V1}/nothing-here", headers=api.admin), 404, "not_found")
    problem(api.client.put(f"{V1}/users", headers=api.admin), 405, "method_not_allowed")


# --- integers beyond the database's range -------------------------------------------------

BIG = 2**63  # one past the largest BIGINT


@pytest.mark.parametrize(
    ("method", "url", "kwargs"),
    [
        ("GET", f"{V1}/users/{BIG}", {}),
        ("GET", f"{V1}/models/{BIG}", {}),
        ("DELETE", f"{V1}/admin/keys/{BIG}", {}),
        (
            "POST",
            f"{V1}/usage",
            {"json": {"user_id": 1, "model": BIG}, "headers": {"Idempotency-Key": "k"}},
        ),
        ("GET", f"{V1}/users", {"params": {"cursor": cursor_of(f"id:{BIG}")}}),
        (
            "POST",
            f"{V1}/models",
            {"json": {"slug": "x", "name": "x", "price": {}, "creator_id": BIG}},
        ),
        ("POST", f"{V1}/admin/pricing/recalculate", {"json": {"model_ids": [BIG]}}),
    ],
    ids=["user", "model", "key", "usage-model", "cursor", "creator", "recalculate"],
)
def test_ids_beyond_bigint_are_refused_not_500(
    api: Api, request: pytest.FixtureRequest, method: str, url: str, kwargs: dict[str, Any]
) -> None:
    api.user("alice", credits_ucr=CREDIT)
    headers = {**api.admin, **kwargs.pop("headers", {})}
    before = api.ledger_state()
    r = api.client.request(method, url, headers=headers, **kwargs)
    assert r.status_code in (404, 422), r.text  # not found, or out of range: never a 500
    problem(r, r.status_code)
    assert api.ledger_state() == before


def test_occurred_at_out_of_range_is_422(api: Api) -> None:
    alice, _ = api.user("alice", credits_ucr=CREDIT)
    api.model("m")
    api.rejects(
        "POST",
        f"{V1}/usage",
        422,
        json={"user_id": alice, "model": "m", "occurred_at": "0001-01-01T00:00:00+05:00"},
        headers={**api.service, "Idempotency-Key": "k"},
    )


@pytest.mark.parametrize(
    ("method", "url", "kwargs"),
    [
        ("POST", f"{V1}/users", {"json": {"external_id": "a\x00b"}}),
        ("POST", f"{V1}/models", {"json": {"slug": "nul", "name": "n\x00", "price": {}}}),
        ("GET", f"{V1}/models", {"params": {"search": "\x00"}}),
    ],
    ids=["external-id", "model-name", "search"],
)
def test_nul_in_strings_is_422(api: Api, method: str, url: str, kwargs: dict[str, Any]) -> None:
    api.rejects(method, url, 422, headers=api.admin, **kwargs)
