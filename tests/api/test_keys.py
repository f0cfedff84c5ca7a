"""Users' own API keys and their spend limits over HTTP (issue 13): create, list (never the
secret; the limit, spent, reserved, left and reset time), revoke; a limited key's charges
and holds are refused with 402 ``key_limit_reached`` past the limit, ledger unchanged."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api, bearer, problem

V1 = "/api/v1"
CREDIT = 1_000_000
CHARGE = 3_000  # 1,000 input + 1,000 output tokens at 1 / 2 credits per 1M tokens


def _key(api: Api, user: int, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = api.client.post(f"{V1}/users/{user}/keys", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _listed(api: Api, user: int, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    r = api.client.get(f"{V1}/users/{user}/keys", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def _use(api: Api, user: int, key: str, idem: str) -> Any:
    return api.charge(
        user, "m", key=idem, headers=bearer(key), input_tokens=1_000, output_tokens=1_000
    )


def test_a_user_creates_lists_and_revokes_own_keys(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    made = _key(api, alice, alice_h, name="my app", limit_ucr=5_000, limit_period="week")
    assert made["key"].startswith("mb_u_")
    assert (made["limit_ucr"], made["limit_period"], made["name"]) == (5_000, "week", "my app")
    listed = _listed(api, alice, alice_h)
    assert [k["id"] for k in listed][-1] == made["id"]
    mine = listed[-1]
    assert "key" not in mine and made["key"] not in str(listed)
    assert mine["limit"]["limit_ucr"] == 5_000
    assert (mine["limit"]["spent_ucr"], mine["limit"]["left_ucr"]) == (0, 5_000)
    assert mine["limit"]["period"] == "week" and mine["limit"]["resets_at"]
    assert listed[0]["limit"] is None  # the key api.user made: no limit

    r = api.client.delete(f"{V1}/users/{alice}/keys/{made['id']}", headers=alice_h)
    assert r.status_code == 204
    assert made["id"] not in [k["id"] for k in _listed(api, alice, alice_h)]
    revoked = _listed(api, alice, alice_h, include_revoked="true")[-1]
    assert revoked["id"] == made["id"] and revoked["revoked_at"]
    # The revoked key is refused at once, everywhere (401), nothing charged.
    api.model("m")
    api.rejects(
        "POST",
        f"{V1}/usage",
        401,
        "unauthenticated",
        json={"user_id": alice, "model": "m", "input_tokens": 10},
        headers={**bearer(made["key"]), "Idempotency-Key": "after-revoke"},
    )
    # Revoking twice is fine.
    assert (
        api.client.delete(f"{V1}/users/{alice}/keys/{made['id']}", headers=alice_h).status_code
        == 204
    )


def test_a_limited_key_is_refused_past_its_limit_with_402(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    api.model("m")
    limited = _key(api, alice, alice_h, limit_ucr=2 * CHARGE + 1, limit_period="day")
    for k in range(2):
        r = _use(api, alice, limited["key"], f"u{k}")
        assert r.status_code == 201, r.text
        assert r.json()["charge_ucr"] == CHARGE
    body = api.rejects(
        "POST",
        f"{V1}/usage",
        402,
        "key_limit_reached",
        json={"user_id": alice, "model": "m", "input_tokens": 1_000, "output_tokens": 1_000},
        headers={**bearer(limited["key"]), "Idempotency-Key": "u2"},
    )
    assert (body["left_ucr"], body["needed_ucr"], body["limit_ucr"]) == (1, CHARGE, 2 * CHARGE + 1)
    assert body["key_id"] == limited["id"] and body["resets_at"]
    # A retry of a charged event replays (no new charge, nothing counted again).
    again = _use(api, alice, limited["key"], "u1")
    assert again.status_code == 201 and again.headers["Idempotency-Hit"] == "true"
    (state,) = [k["limit"] for k in _listed(api, alice, alice_h) if k["id"] == limited["id"]]
    assert (state["spent_ucr"], state["reserved_ucr"], state["left_ucr"]) == (2 * CHARGE, 0, 1)
    # The same user's unlimited key (and the operator's service key) still charge.
    assert _use(api, alice, alice_h["Authorization"][7:], "free").status_code == 201
    wallet = api.client.get(f"{V1}/users/{alice}/wallet", headers=alice_h).json()
    assert wallet["balance_ucr"] == 10 * CREDIT - 3 * CHARGE


def test_a_limited_keys_holds_count_until_captured_or_voided(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    api.model("m")
    limited = _key(api, alice, alice_h, limit_ucr=10_000)
    h = {**bearer(limited["key"])}

    def hold(idem: str, amount: int) -> Any:
        return api.client.post(
            f"{V1}/users/{alice}/holds",
            json={"amount_ucr": amount, "timeout_s": 600, "model": "m"},
            headers={**h, "Idempotency-Key": idem},
        )

    first = hold("h1", 8_000)
    assert first.status_code == 201, first.text
    problem(hold("h2", 3_000), 402, "key_limit_reached")
    # Captured by the operator's service key: it counts on the key the hold was placed with.
    r = api.client.post(
        f"{V1}/holds/{first.json()['id']}/capture",
        json={"amount_ucr": 5_000},
        headers={**api.service, "Idempotency-Key": "cap"},
    )
    assert r.status_code == 200, r.text
    (state,) = [k["limit"] for k in _listed(api, alice, alice_h) if k["id"] == limited["id"]]
    assert (state["spent_ucr"], state["reserved_ucr"], state["left_ucr"]) == (5_000, 0, 5_000)
    second = hold("h3", 5_000)
    assert second.status_code == 201
    r = api.client.post(
        f"{V1}/holds/{second.json()['id']}/void", headers={**h, "Idempotency-Key": "v"}
    )
    assert r.status_code == 200, r.text
    (state,) = [k["limit"] for k in _listed(api, alice, alice_h) if k["id"] == limited["id"]]
    assert (state["reserved_ucr"], state["left_ucr"]) == (0, 5_000)


def test_a_limited_key_cannot_manage_keys(api: Api) -> None:
    alice, alice_h = api.user("alice")
    limited = _key(api, alice, alice_h, limit_ucr=1)
    lh = bearer(limited["key"])
    problem(api.client.post(f"{V1}/users/{alice}/keys", json={}, headers=lh), 403, "forbidden")
    other = _key(api, alice, alice_h)
    r = api.client.delete(f"{V1}/users/{alice}/keys/{other['id']}", headers=lh)
    problem(r, 403, "forbidden")
    # It may read the listing (its own limit included).
    assert limited["id"] in [k["id"] for k in _listed(api, alice, lh)]


def test_keys_are_per_user(api: Api) -> None:
    alice, alice_h = api.user("alice")
    bob, bob_h = api.user("bob")
    alices = _key(api, alice, alice_h, name="a")
    # Bob cannot reach Alice's keys through her path (404: not revealed) ...
    problem(api.client.get(f"{V1}/users/{alice}/keys", headers=bob_h), 404, "user_not_found")
    problem(
        api.client.post(f"{V1}/users/{alice}/keys", json={}, headers=bob_h), 404, "user_not_found"
    )
    problem(
        api.client.delete(f"{V1}/users/{alice}/keys/{alices['id']}", headers=bob_h),
        404,
        "user_not_found",
    )
    # ... nor through his own: another user's key id does not exist for him.
    r = api.client.delete(f"{V1}/users/{bob}/keys/{alices['id']}", headers=bob_h)
    problem(r, 404, "api_key_not_found")
    assert (
        api.client.get(f"{V1}/users/{alice}/wallet", headers=bearer(alices["key"])).status_code
        == 200
    )
    # Admin and service keys manage any user's keys.
    assert _key(api, bob, api.service)["user_id"] == bob
    assert _key(api, bob, api.admin)["user_id"] == bob


def test_bad_limits_are_422(api: Api) -> None:
    alice, alice_h = api.user("alice")
    for body in (
        {"limit_period": "day"},
        {"limit_ucr": -1},
        {"limit_ucr": 5, "limit_period": "year"},
        {"limit_ucr": 5, "spent_ucr": 0},
    ):
        api.rejects(
            "POST", f"{V1}/users/{alice}/keys", 422, "validation_error", json=body, headers=alice_h
        )


def test_a_limited_key_cannot_spend_the_wallet_outside_its_limit(api: Api) -> None:
    """Buying premium access or a stake listing spends the wallet without a usage charge: a
    key with a spend limit is refused (403), else an app handed a 1 µcr key could drain the
    wallet into a colluding creator's model or listing. Ledger unchanged."""
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    creator, creator_h = api.user("creator")
    limited = bearer(_key(api, alice, alice_h, limit_ucr=1, limit_period="day")["key"])
    gold = api.model("gold", is_premium=True, access_price_ucr=5 * CREDIT, creator_id=creator)
    api.rejects(
        "POST",
        f"{V1}/models/{gold['id']}/purchase",
        403,
        "forbidden",
        json={},
        headers={**limited, "Idempotency-Key": "buy-access"},
    )
    base = f"{V1}/models/{gold['id']}/stakes"
    r = api.client.post(
        f"{base}/listings", json={"share_bps": 100, "price_ucr": 9 * CREDIT}, headers=creator_h
    )
    assert r.status_code == 201, r.text
    api.rejects(
        "POST",
        f"{base}/listings/{r.json()['id']}/buy",
        403,
        "forbidden",
        headers={**limited, "Idempotency-Key": "buy-stake"},
    )
    wallet = api.client.get(f"{V1}/users/{alice}/wallet", headers=alice_h).json()
    assert wallet["balance_ucr"] == 10 * CREDIT
    # The same user's key without a limit may.
    r = api.client.post(
        f"{V1}/models/{gold['id']}/purchase",
        json={},
        headers={**alice_h, "Idempotency-Key": "buy-access"},
    )
    assert r.status_code == 201, r.text


def test_a_limited_key_cannot_capture_or_void_holds_placed_by_other_keys(api: Api) -> None:
    """A hold placed with the user's unlimited key is not counted on the limited key: letting
    the limited key capture it would charge the wallet past the limit (or void another app's
    reservation). 403, ledger unchanged; its own holds it may capture."""
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    api.model("m")
    limited = bearer(_key(api, alice, alice_h, limit_ucr=1_000)["key"])
    r = api.client.post(
        f"{V1}/users/{alice}/holds",
        json={"amount_ucr": 5 * CREDIT, "timeout_s": 600, "model": "m"},
        headers={**alice_h, "Idempotency-Key": "big"},
    )
    assert r.status_code == 201, r.text
    big = r.json()["id"]
    api.rejects(
        "POST",
        f"{V1}/holds/{big}/capture",
        403,
        "forbidden",
        json={"amount_ucr": 5 * CREDIT},
        headers={**limited, "Idempotency-Key": "steal"},
    )
    api.rejects(
        "POST",
        f"{V1}/holds/{big}/void",
        403,
        "forbidden",
        headers={**limited, "Idempotency-Key": "v"},
    )
    r = api.client.post(
        f"{V1}/users/{alice}/holds",
        json={"amount_ucr": 1_000, "timeout_s": 600, "model": "m"},
        headers={**limited, "Idempotency-Key": "own"},
    )
    assert r.status_code == 201, r.text
    r = api.client.post(
        f"{V1}/holds/{r.json()['id']}/capture",
        json={"amount_ucr": 600},
        headers={**limited, "Idempotency-Key": "own-cap"},
    )
    assert r.status_code == 200, r.text


def test_a_limited_key_cannot_buy_on_the_marketplace(api: Api) -> None:
    """A marketplace order moves its price from the wallet into escrow, outside usage: a key
    with a spend limit is refused (403), ledger unchanged."""
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    creator, creator_h = api.user("creator")
    limited = bearer(_key(api, alice, alice_h, limit_ucr=1)["key"])
    model = api.model("shared", creator_id=creator)
    r = api.client.post(
        f"{V1}/marketplace/listings",
        json={"kind": "stake", "model_id": model["id"], "quantity": 100, "unit_price_ucr": 50_000},
        headers=creator_h,
    )
    assert r.status_code == 201, r.text
    api.rejects(
        "POST",
        f"{V1}/marketplace/listings/{r.json()['id']}/buy",
        403,
        "forbidden",
        json={"quantity": 100},
        headers={**limited, "Idempotency-Key": "buy"},
    )


def _patch(api: Api, user: int, key_id: int, headers: dict[str, str], **body: Any) -> Any:
    return api.client.patch(f"{V1}/users/{user}/keys/{key_id}", json=body, headers=headers)


def test_an_owner_edits_a_keys_limit(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=10 * CREDIT)
    api.model("m")
    made = _key(api, alice, alice_h, limit_ucr=3 * CHARGE, limit_period="day")
    for k in range(2):
        assert _use(api, alice, made["key"], f"u{k}").status_code == 201
    # Raise it: what was spent stays spent.
    r = _patch(api, alice, made["id"], alice_h, limit_ucr=5 * CHARGE)
    assert r.status_code == 200, r.text
    limit = r.json()["limit"]
    assert (limit["limit_ucr"], limit["period"]) == (5 * CHARGE, "day")
    assert (limit["spent_ucr"], limit["left_ucr"]) == (2 * CHARGE, 3 * CHARGE)
    # Change the period only: the spend carries into the new period's counter.
    r = _patch(api, alice, made["id"], alice_h, limit_period="month")
    assert r.status_code == 200, r.text
    limit = r.json()["limit"]
    assert (limit["limit_ucr"], limit["period"], limit["spent_ucr"]) == (
        5 * CHARGE,
        "month",
        2 * CHARGE,
    )
    # Lower it below what was spent: allowed, nothing left, the next charge is refused.
    r = _patch(api, alice, made["id"], alice_h, limit_ucr=CHARGE)
    assert r.status_code == 200, r.text
    assert (r.json()["limit"]["spent_ucr"], r.json()["limit"]["left_ucr"]) == (2 * CHARGE, 0)
    problem(_use(api, alice, made["key"], "u2"), 402, "key_limit_reached")
    (listed,) = [k for k in _listed(api, alice, alice_h) if k["id"] == made["id"]]
    assert listed["limit"] == r.json()["limit"]
    # Remove it: the key charges freely.
    r = _patch(api, alice, made["id"], alice_h, limit_ucr=None)
    assert r.status_code == 200, r.text and r.json()["limit"] is None
    assert r.json()["limit"] is None
    assert _use(api, alice, made["key"], "u3").status_code == 201
    # A key without a limit gets one: it starts at 0 spent and applies at once.
    free = _key(api, alice, alice_h)
    assert _use(api, alice, free["key"], "f0").status_code == 201
    r = _patch(api, alice, free["id"], alice_h, limit_ucr=CHARGE, limit_period="week")
    assert r.status_code == 200, r.text
    assert (r.json()["limit"]["spent_ucr"], r.json()["limit"]["left_ucr"]) == (0, CHARGE)
    assert _use(api, alice, free["key"], "f1").status_code == 201
    problem(_use(api, alice, free["key"], "f2"), 402, "key_limit_reached")
    wallet = api.client.get(f"{V1}/users/{alice}/wallet", headers=alice_h).json()
    assert wallet["balance_ucr"] == 10 * CREDIT - 5 * CHARGE
    # Each edit is audited like the key's creation.
    r = api.client.get(
        f"{V1}/admin/audit", params={"action": "key.limit", "limit": 50}, headers=api.admin
    )
    assert r.status_code == 200, r.text
    edits = [e for e in r.json()["items"] if e["target_id"] == str(made["id"])]
    assert sorted((e["before"]["limit_ucr"], e["after"]["limit_ucr"]) for e in edits) == sorted(
        [(3 * CHARGE, 5 * CHARGE), (5 * CHARGE, 5 * CHARGE), (5 * CHARGE, CHARGE), (CHARGE, None)]
    )


def test_editing_a_limit_is_scoped_and_validated(api: Api) -> None:
    alice, alice_h = api.user("alice")
    bob, bob_h = api.user("bob")
    made = _key(api, alice, alice_h, limit_ucr=1_000)
    unlimited = _key(api, alice, alice_h)
    # A limited key may not edit keys (itself included): 403, like minting one.
    lh = bearer(made["key"])
    problem(_patch(api, alice, made["id"], lh, limit_ucr=10**9), 403, "forbidden")
    # Another user's key: 404 through either path.
    problem(_patch(api, alice, made["id"], bob_h, limit_ucr=5), 404, "user_not_found")
    problem(_patch(api, bob, made["id"], bob_h, limit_ucr=5), 404, "api_key_not_found")
    # Same validation as creation; a period alone needs a key that has a limit.
    for body in (
        {},
        {"limit_ucr": -1},
        {"limit_ucr": 5, "limit_period": "year"},
        {"limit_ucr": None, "limit_period": "day"},
        {"limit_ucr": 5, "spent_ucr": 0},
    ):
        api.rejects(
            "PATCH",
            f"{V1}/users/{alice}/keys/{made['id']}",
            422,
            "validation_error",
            json=body,
            headers=alice_h,
        )
    problem(_patch(api, alice, unlimited["id"], alice_h, limit_period="day"), 422)
    # A revoked key cannot be edited.
    assert api.client.delete(f"{V1}/users/{alice}/keys/{made['id']}", headers=alice_h).status_code
    problem(_patch(api, alice, made["id"], alice_h, limit_ucr=5), 404, "api_key_not_found")
    # Admin and service keys edit any user's keys.
    r = _patch(api, alice, unlimited["id"], api.service, limit_ucr=7)
    assert r.status_code == 200 and r.json()["limit"]["limit_ucr"] == 7
    r = _patch(api, alice, unlimited["id"], api.admin, limit_period="day")
    assert r.status_code == 200 and r.json()["limit"]["period"] == "day"
    (state,) = [k["limit"] for k in _listed(api, alice, alice_h) if k["id"] == unlimited["id"]]
    assert (state["limit_ucr"], state["period"]) == (7, "day")


def test_a_limited_key_cannot_request_payouts_or_list_stakes(api: Api) -> None:
    """A payout withdraws earnings and a stake listing offers the owner's stake for credits:
    both move value out outside usage, so a key with a spend limit gets 403 (as for buys)
    and nothing changes; the same user's unlimited key may."""
    creator, creator_h = api.user("creator")
    payer, _ = api.user("payer", credits_ucr=200 * CREDIT)
    model = api.model(
        "earning",
        creator_id=creator,
        price={"per_request_ucr": 100 * CREDIT},
        earnings_rule={"share_bps": 10_000, "popularity_tiers": [], "type_multipliers": {"*": 1}},
    )
    assert api.charge(payer, "earning", key="use", units=1).status_code == 201
    limited = bearer(_key(api, creator, creator_h, limit_ucr=1)["key"])
    payout = {"amount_ucr": 100 * CREDIT}
    api.rejects(
        "POST",
        f"{V1}/users/{creator}/payouts",
        403,
        "forbidden",
        json=payout,
        headers={**limited, "Idempotency-Key": "cash-out"},
    )
    summary = api.client.get(f"{V1}/users/{creator}/payouts", headers=creator_h).json()
    assert summary["available_ucr"] == 100 * CREDIT and not summary["items"]
    stake_listing = {"share_bps": 100, "price_ucr": 1}
    api.rejects(
        "POST",
        f"{V1}/models/{model['id']}/stakes/listings",
        403,
        "forbidden",
        json=stake_listing,
        headers=limited,
    )
    market_listing = {"kind": "stake", "model_id": model["id"], "quantity": 100}
    market_listing["unit_price_ucr"] = 1
    api.rejects(
        "POST", f"{V1}/marketplace/listings", 403, "forbidden", json=market_listing, headers=limited
    )
    listings = api.client.get(f"{V1}/models/{model['id']}/stakes/listings", headers=creator_h)
    assert listings.json()["items"] == []
    # The unlimited key may do each; a limited key may not re-price the listing either.
    r = api.client.post(
        f"{V1}/marketplace/listings",
        json={**market_listing, "unit_price_ucr": CREDIT},
        headers=creator_h,
    )
    assert r.status_code == 201, r.text
    listing_id = r.json()["id"]
    api.rejects(
        "PATCH",
        f"{V1}/marketplace/listings/{listing_id}",
        403,
        "forbidden",
        json={"unit_price_ucr": 1},
        headers=limited,
    )
    r = api.client.get(f"{V1}/marketplace/listings/{listing_id}", headers=creator_h)
    assert r.json()["unit_price_ucr"] == CREDIT
    r = api.client.post(
        f"{V1}/models/{model['id']}/stakes/listings", json=stake_listing, headers=creator_h
    )
    assert r.status_code == 201, r.text
    r = api.client.post(
        f"{V1}/users/{creator}/payouts",
        json=payout,
        headers={**creator_h, "Idempotency-Key": "cash-out"},
    )
    assert r.status_code == 201, r.text
