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
