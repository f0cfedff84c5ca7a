"""Payouts over HTTP (DESIGN §7, issue "Creator economy"), on SQLite and PostgreSQL: the
payout lifecycle with every status, refunds before payouts, idempotency, scoping and the
``payout.*`` webhooks. The ``db`` fixture checks the ledger invariants after each test.

The creator's model charges 300 credits per request and pays its creator 100 % of it
(share 10,000 bps, multiplier 1, no popularity tiers), so every use earns exactly 300
credits.
"""

from __future__ import annotations

import itertools
from typing import Any

from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from tests.api.conftest import Api, problem

CREDIT = 1_000_000
PER_USE = 300 * CREDIT

_keys = itertools.count(1)


def _key() -> str:
    return f"k-{next(_keys)}"


def _creator_and_payer(api: Api) -> tuple[int, dict[str, str], int, dict[str, str], str]:
    creator, creator_h = api.user(f"creator-{next(_keys)}")
    payer, payer_h = api.user(f"payer-{next(_keys)}", credits_ucr=5_000 * CREDIT)
    slug = f"creators-{next(_keys)}"
    api.model(
        slug,
        creator_id=creator,
        price={"per_request_ucr": PER_USE},
        earnings_rule={"share_bps": 10_000, "popularity_tiers": [], "type_multipliers": {"*": 1}},
    )
    return creator, creator_h, payer, payer_h, slug


def _use(api: Api, payer: int, slug: str) -> int:
    r = api.charge(payer, slug, key=_key(), units=1)
    assert r.status_code == 201, r.text
    assert [e["amount_ucr"] for e in r.json()["earnings"]] == [PER_USE], r.json()
    return int(r.json()["usage_id"])


def _summary(api: Api, user_id: int, headers: dict[str, str]) -> dict[str, Any]:
    r = api.client.get(f"/api/v1/users/{user_id}/payouts", headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _request(api: Api, user_id: int, headers: dict[str, str], amount_ucr: int) -> Any:
    return api.client.post(
        f"/api/v1/users/{user_id}/payouts",
        json={"amount_ucr": amount_ucr},
        headers={**headers, "Idempotency-Key": _key()},
    )


def _post(api: Api, url: str, headers: dict[str, str], body: Any = None) -> Any:
    return api.client.post(url, json=body, headers={**headers, "Idempotency-Key": _key()})


def _world_payouts(api: Api) -> int:
    with api.db.tx() as s:
        return ledger.get_balance(
            s, ledger.platform_account(s, AccountCode.WORLD_PAYOUTS)
        ).credits_posted


def test_payout_lifecycle_with_every_status(api: Api) -> None:
    creator, me, payer, payer_h, slug = _creator_and_payer(api)
    r = api.client.post(
        "/api/v1/admin/webhooks",
        json={"url": "https://example.invalid/payouts", "events": ["payout.*"]},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    webhook_id = r.json()["id"]
    _use(api, payer, slug)
    state = _summary(api, creator, me)
    assert state["items"] == [] and state["next_cursor"] is None
    assert (state["balance_ucr"], state["available_ucr"], state["pending_ucr"]) == (
        PER_USE,
        PER_USE,
        0,
    )
    assert (state["owed_ucr"], state["minimum_ucr"]) == (0, 100 * CREDIT)
    assert state["available"] == "300.000000 cr"
    base = f"/api/v1/users/{creator}/payouts"

    # below the minimum, above what is available: 422, nothing written
    low = api.rejects(
        "POST",
        base,
        422,
        "payout_below_minimum",
        json={"amount_ucr": 100 * CREDIT - 1},
        headers={**me, "Idempotency-Key": _key()},
    )
    assert low["minimum_ucr"] == 100 * CREDIT
    high = api.rejects(
        "POST",
        base,
        422,
        "payout_exceeds_available",
        json={"amount_ucr": PER_USE + 1},
        headers={**me, "Idempotency-Key": _key()},
    )
    assert (high["available_ucr"], high["owed_ucr"]) == (PER_USE, 0)
    api.rejects("POST", base, 422, json={"amount_ucr": 0}, headers={**me, "Idempotency-Key": "z"})

    # pending; the same key and body replays it, another body is a conflict
    key = _key()
    r = api.client.post(
        base, json={"amount_ucr": 120 * CREDIT}, headers={**me, "Idempotency-Key": key}
    )
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["status"], first["amount_ucr"], first["adapter"]) == (
        "pending",
        120 * CREDIT,
        "manual",
    )
    assert r.headers["Idempotency-Hit"] == "false"
    again = api.client.post(
        base, json={"amount_ucr": 120 * CREDIT}, headers={**me, "Idempotency-Key": key}
    )
    assert again.status_code == 201 and again.json() == first
    assert again.headers["Idempotency-Hit"] == "true"
    problem(
        api.client.post(
            base, json={"amount_ucr": 130 * CREDIT}, headers={**me, "Idempotency-Key": key}
        ),
        409,
        "idempotency_key_reused",
    )
    state = _summary(api, creator, me)
    assert (state["balance_ucr"], state["pending_ucr"], state["available_ucr"]) == (
        PER_USE,
        120 * CREDIT,
        180 * CREDIT,
    )
    assert [p["id"] for p in state["items"]] == [first["id"]]

    # the payer (another user) neither sees nor cancels it
    problem(api.client.get(f"/api/v1/payouts/{first['id']}", headers=payer_h), 404)
    api.rejects(
        "POST",
        f"/api/v1/payouts/{first['id']}/cancel",
        404,
        "payout_not_found",
        headers={**payer_h, "Idempotency-Key": _key()},
    )
    problem(api.client.get(f"/api/v1/users/{creator}/payouts", headers=payer_h), 404)

    # cancelled by its creator: available again
    r = _post(api, f"/api/v1/payouts/{first['id']}/cancel", me)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert _summary(api, creator, me)["available_ucr"] == PER_USE

    # completed by an admin: world_payouts credited exactly, µUSD at 100 credits/USD
    paid_before = _world_payouts(api)
    second = _request(api, creator, me, 150 * CREDIT).json()
    url = f"/api/v1/admin/payouts/{second['id']}/complete"
    api.rejects(
        "POST",
        url,
        403,
        "forbidden",
        json={"external_reference": "x"},
        headers={**me, "Idempotency-Key": _key()},
    )
    r = _post(api, url, api.admin, {"external_reference": "wire 2026-001"})
    assert r.status_code == 200, r.text
    done = r.json()
    assert (done["status"], done["external_reference"]) == ("completed", "wire 2026-001")
    assert (done["amount_uusd"], done["amount_usd"], done["credits_per_usd"]) == (
        1_500_000,
        "$1.50",
        "100",
    )
    assert _world_payouts(api) - paid_before == 150 * CREDIT
    state = _summary(api, creator, me)
    assert (state["balance_ucr"], state["pending_ucr"], state["available_ucr"]) == (
        150 * CREDIT,
        0,
        150 * CREDIT,
    )

    # failed by an admin: the credits are back
    third = _request(api, creator, me, 100 * CREDIT).json()
    assert _summary(api, creator, me)["available_ucr"] == 50 * CREDIT
    r = _post(
        api, f"/api/v1/admin/payouts/{third['id']}/fail", api.admin, {"reason": "IBAN rejected"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["failure_reason"]) == ("failed", "IBAN rejected")
    state = _summary(api, creator, me)
    assert (state["balance_ucr"], state["available_ucr"]) == (150 * CREDIT, 150 * CREDIT)
    assert _world_payouts(api) - paid_before == 150 * CREDIT

    # only pending payouts change: 409, nothing written
    for url, body in (
        (f"/api/v1/payouts/{second['id']}/cancel", None),
        (f"/api/v1/admin/payouts/{third['id']}/complete", {"external_reference": "late"}),
        (f"/api/v1/admin/payouts/{first['id']}/fail", {"reason": "late"}),
    ):
        headers = me if url.endswith("cancel") else api.admin
        body_out = api.rejects(
            "POST",
            url,
            409,
            "payout_state_conflict",
            json=body,
            headers={**headers, "Idempotency-Key": _key()},
        )
        assert body_out["status"] == 409 and "pending" in body_out["detail"]

    # the history with every status, and one payout read back
    history = _summary(api, creator, me)["items"]
    assert [(p["id"], p["status"]) for p in history] == [
        (first["id"], "cancelled"),
        (second["id"], "completed"),
        (third["id"], "failed"),
    ]
    r = api.client.get(f"/api/v1/payouts/{second['id']}", headers=me)
    assert r.status_code == 200 and r.json() == done
    r = api.client.get(
        f"/api/v1/users/{creator}/payouts", params={"status": "failed"}, headers=api.service
    )
    assert [p["id"] for p in r.json()["items"]] == [third["id"]]

    # the webhooks, one delivery each, queued in the transactions that made them
    r = api.client.get(f"/api/v1/admin/webhooks/{webhook_id}/deliveries", headers=api.admin)
    assert r.status_code == 200, r.text
    assert sorted(d["event_type"] for d in r.json()["items"]) == sorted(
        [
            "payout.requested",
            "payout.cancelled",
            "payout.requested",
            "payout.completed",
            "payout.requested",
            "payout.failed",
        ]
    )


def test_refunded_usage_reduces_available(api: Api) -> None:
    """Earnings paid out, then their usage partly refunded: what the creator's balance
    cannot give back stays owed, and later earnings pay it before any payout."""
    creator, me, payer, _, slug = _creator_and_payer(api)
    usage_id = _use(api, payer, slug)
    payout = _request(api, creator, me, PER_USE).json()
    r = _post(
        api,
        f"/api/v1/admin/payouts/{payout['id']}/complete",
        api.admin,
        {"external_reference": "w"},
    )
    assert r.status_code == 200, r.text
    r = _post(api, f"/api/v1/usage/{usage_id}/refund", api.admin, {"amount_ucr": 100 * CREDIT})
    assert r.status_code == 201, r.text
    state = _summary(api, creator, me)
    assert (state["balance_ucr"], state["owed_ucr"], state["available_ucr"]) == (
        0,
        100 * CREDIT,
        0,
    )
    api.rejects(
        "POST",
        f"/api/v1/users/{creator}/payouts",
        422,
        "payout_exceeds_available",
        json={"amount_ucr": 100 * CREDIT},
        headers={**me, "Idempotency-Key": _key()},
    )

    _use(api, payer, slug)  # 300 credits more: 100 of them are owed
    state = _summary(api, creator, me)
    assert (state["balance_ucr"], state["owed_ucr"], state["available_ucr"]) == (
        PER_USE,
        100 * CREDIT,
        200 * CREDIT,
    )
    body = api.rejects(
        "POST",
        f"/api/v1/users/{creator}/payouts",
        422,
        "payout_exceeds_available",
        json={"amount_ucr": 200 * CREDIT + 1},
        headers={**me, "Idempotency-Key": _key()},
    )
    assert (body["available_ucr"], body["owed_ucr"]) == (200 * CREDIT, 100 * CREDIT)
    r = _request(api, creator, me, 200 * CREDIT)
    assert r.status_code == 201, r.text
    r = _post(
        api,
        f"/api/v1/admin/payouts/{r.json()['id']}/complete",
        api.admin,
        {"external_reference": "v"},
    )
    assert r.status_code == 200, r.text
    state = _summary(api, creator, me)
    assert (state["balance_ucr"], state["owed_ucr"], state["available_ucr"]) == (
        100 * CREDIT,
        100 * CREDIT,
        0,
    )


def test_admin_queue_minimum_and_pages(api: Api) -> None:
    creator, me, payer, _, slug = _creator_and_payer(api)
    for _ in range(3):
        _use(api, payer, slug)
    api.rejects("PUT", "/api/v1/admin/payout-minimum", 403, json={"minimum_ucr": 1}, headers=me)
    r = api.client.put(
        "/api/v1/admin/payout-minimum", json={"minimum_ucr": 10 * CREDIT}, headers=api.admin
    )
    assert r.status_code == 200 and r.json() == {
        "minimum_ucr": 10 * CREDIT,
        "minimum": "10.000000 cr",
    }
    assert _summary(api, creator, me)["minimum_ucr"] == 10 * CREDIT
    ids = [_request(api, creator, me, 10 * CREDIT).json()["id"] for _ in range(5)]
    assert _post(api, f"/api/v1/admin/payouts/{ids[0]}/fail", api.admin, {"reason": "x"}).is_success
    done = _post(
        api, f"/api/v1/admin/payouts/{ids[2]}/complete", api.admin, {"external_reference": "r"}
    )
    assert done.is_success
    assert _post(api, f"/api/v1/payouts/{ids[4]}/cancel", api.service).is_success

    problem(api.client.get("/api/v1/admin/payouts", headers=me), 403, "forbidden")
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        r = api.client.get("/api/v1/admin/payouts", params=params, headers=api.admin)
        assert r.status_code == 200, r.text
        seen += [p["id"] for p in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [ids[1], ids[3], ids[0], ids[2], ids[4]]  # pending first, then the rest
    r = api.client.get("/api/v1/admin/payouts", params={"status": "pending"}, headers=api.admin)
    assert [p["id"] for p in r.json()["items"]] == [ids[1], ids[3]]
    r = api.client.get(f"/api/v1/users/{creator}/payouts", params={"limit": 3}, headers=me).json()
    assert [p["id"] for p in r["items"]] == ids[:3] and r["next_cursor"]
    r = api.client.get(
        f"/api/v1/users/{creator}/payouts", params={"cursor": r["next_cursor"]}, headers=me
    ).json()
    assert [p["id"] for p in r["items"]] == ids[3:] and r["next_cursor"] is None
    problem(
        api.client.get("/api/v1/admin/payouts", params={"cursor": "bogus"}, headers=api.admin),
        422,
    )
    problem(
        api.client.get("/api/v1/admin/payouts", params={"status": "paid"}, headers=api.admin),
        422,
        "validation_error",
    )
    problem(api.client.get("/api/v1/payouts/999999", headers=api.admin), 404, "payout_not_found")
