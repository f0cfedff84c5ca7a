"""The admin audit log (issue 16 part 3): each listed admin and service action writes exactly
one record, by its actor, with the state before and after and the request id; admins read
it with filters and pages and as CSV; nobody else can; the records are hash-chained."""

from __future__ import annotations

import csv
import io
import itertools
import json
from typing import Any

from modelbank import chain
from tests.api.conftest import Api, problem

CREDIT = 1_000_000
PER_USE = 300 * CREDIT
_keys = itertools.count(1)


def _idem(api: Api, request_id: str) -> dict[str, str]:
    return {**api.admin, "Idempotency-Key": f"k-{next(_keys)}", "X-Request-Id": request_id}


def _records(api: Api, **params: Any) -> list[dict[str, Any]]:
    r = api.client.get("/api/v1/admin/audit", params={"limit": 200, **params}, headers=api.admin)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


class Log:
    """Checks that each step wrote exactly one record of its action, and nothing else."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.seen = {r["id"] for r in _records(api)}

    def new(self) -> list[dict[str, Any]]:
        """The records written since the last look."""
        new = [r for r in _records(self.api) if r["id"] not in self.seen]
        self.seen |= {r["id"] for r in new}
        return new

    def one(self, action: str, request_id: str | None = None) -> dict[str, Any]:
        new = self.new()
        mine = [r for r in new if r["action"] == action]
        assert len(mine) == 1, (action, new)
        record = mine[0]
        if request_id is not None:
            assert record["request_id"] == request_id
            assert record["actor_kind"] == "admin"
            assert record["actor_key_id"] is not None
        return record


def test_each_admin_action_writes_one_record_with_before_and_after(api: Api) -> None:
    c = api.client
    creator, creator_h = api.user("creator")
    payer, _ = api.user("payer", credits_ucr=5_000 * CREDIT)
    model = api.model(
        "creators-model",
        creator_id=creator,
        price={"per_request_ucr": PER_USE},
        earnings_rule={"share_bps": 10_000, "popularity_tiers": [], "type_multipliers": {"*": 1}},
    )
    log = Log(api)

    # prices: a new explicit price version
    r = c.patch(
        f"/api/v1/models/{model['id']}",
        json={"price": {"per_request_ucr": 2 * PER_USE}},
        headers={**api.admin, "X-Request-Id": "req-price"},
    )
    assert r.status_code == 200, r.text
    price = log.one("price.set", "req-price")
    assert price["target_id"] == str(model["id"])
    # rates are exact decimals, written as strings
    assert price["before"]["per_request_ucr"] == str(PER_USE) and price["before"]["version"] == 1
    assert price["after"]["per_request_ucr"] == str(2 * PER_USE)
    assert price["after"]["version"] == 2
    r = c.patch(
        f"/api/v1/models/{model['id']}",
        json={"price": {"per_request_ucr": PER_USE}, "name": "Renamed"},
        headers=api.admin,
    )
    assert r.status_code == 200, r.text
    update = log.one("model.update")
    assert (update["before"], update["after"]) == ({"name": "creators-model"}, {"name": "Renamed"})

    # earnings rules
    r = c.put(
        f"/api/v1/models/{model['id']}/earnings-rule",
        json={"per_use_ucr": 7, "share_bps": 0, "popularity_tiers": [], "type_multipliers": {}},
        headers={**api.admin, "X-Request-Id": "req-rule"},
    )
    assert r.status_code == 200, r.text
    rule = log.one("earnings_rule.set", "req-rule")
    assert (rule["before"]["share_bps"], rule["after"]["share_bps"]) == (10_000, 0)
    assert (rule["before"]["version"], rule["after"]["per_use_ucr"]) == (1, 7)

    # grants
    api.grant(payer, 3 * CREDIT, key="audit-grant", source="bonus")
    grant = log.one("grant.create")
    assert grant["before"] is None and grant["target_id"] == str(payer)
    assert (grant["after"]["amount_ucr"], grant["after"]["source"]) == (3 * CREDIT, "bonus")

    # purchases confirmed, then refunded
    r = c.post(
        f"/api/v1/users/{payer}/purchases",
        json={"package_id": 1, "provider": "manual"},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    purchase_id = r.json()["id"]
    r = c.post(f"/api/v1/admin/purchases/{purchase_id}/confirm", headers=_idem(api, "req-conf"))
    assert r.status_code == 200, r.text
    confirmed = log.one("purchase.confirm", "req-conf")
    assert (confirmed["before"]["status"], confirmed["after"]["status"]) == (
        "pending",
        "completed",
    )
    r = c.post(
        f"/api/v1/purchases/{purchase_id}/refund", json={}, headers=_idem(api, "req-prefund")
    )
    assert r.status_code == 200, r.text
    refund = log.one("purchase.refund", "req-prefund")
    assert refund["before"]["refunded_ucr"] == 0 and refund["after"]["refunded_ucr"] > 0

    # a usage refund
    r = api.charge(payer, model["slug"], key="use-1", units=1)
    assert r.status_code == 201, r.text
    usage_id = r.json()["usage_id"]
    r = c.post(
        f"/api/v1/usage/{usage_id}/refund",
        json={"amount_ucr": 100},
        headers=_idem(api, "req-urefund"),
    )
    assert r.status_code == 201, r.text
    urefund = log.one("usage.refund", "req-urefund")
    assert urefund["before"]["refunded_ucr"] == 0 and urefund["after"]["amount_ucr"] == 100

    # payouts: requested (by the creator's own key), completed; another failed
    r = c.put(
        f"/api/v1/models/{model['id']}/earnings-rule",
        json={"share_bps": 10_000, "popularity_tiers": [], "type_multipliers": {"*": 1}},
        headers=api.admin,
    )
    log.one("earnings_rule.set")
    for n in range(2):
        assert api.charge(payer, model["slug"], key=f"earn-{n}", units=1).status_code == 201
    payouts = []
    for n in range(2):
        r = c.post(
            f"/api/v1/users/{creator}/payouts",
            json={"amount_ucr": 120 * CREDIT},
            headers={**creator_h, "Idempotency-Key": f"po-{n}"},
        )
        assert r.status_code == 201, r.text
        payouts.append(r.json()["id"])
        requested = log.one("payout.request")
        assert (requested["actor_kind"], requested["actor_user_id"]) == ("user", creator)
    r = c.post(
        f"/api/v1/admin/payouts/{payouts[0]}/complete",
        json={"external_reference": "wire-1"},
        headers=_idem(api, "req-pay"),
    )
    assert r.status_code == 200, r.text
    paid = log.one("payout.complete", "req-pay")
    assert (paid["before"]["status"], paid["after"]["status"]) == ("pending", "completed")
    r = c.post(
        f"/api/v1/admin/payouts/{payouts[1]}/fail",
        json={"reason": "bank refused"},
        headers=_idem(api, "req-fail"),
    )
    assert r.status_code == 200, r.text
    failed = log.one("payout.fail", "req-fail")
    assert failed["after"]["failure_reason"] == "bank refused"

    # keys
    r = c.post("/api/v1/admin/keys", json={"role": "service"}, headers=api.admin)
    assert r.status_code == 201, r.text
    key_id = r.json()["id"]
    made = log.one("key.create")
    assert made["target_id"] == str(key_id) and made["after"]["role"] == "service"
    assert "key" not in json.dumps(made["after"]).replace('"role"', "")  # never the secret
    assert r.json()["key"] not in json.dumps(made)
    assert c.delete(f"/api/v1/admin/keys/{key_id}", headers=api.admin).status_code == 204
    revoked = log.one("key.revoke")
    assert revoked["before"] == {"revoked_at": None} and revoked["after"]["revoked_at"]

    # settings
    r = c.put("/api/v1/admin/payout-minimum", json={"minimum_ucr": 5 * CREDIT}, headers=api.admin)
    assert r.status_code == 200, r.text
    setting = log.one("setting.set")
    assert (setting["target_id"], setting["before"], setting["after"]) == (
        "payout_minimum_ucr",
        None,
        5 * CREDIT,
    )
    r = c.put("/api/v1/admin/monetisation", json={"enabled": False}, headers=api.admin)
    assert r.status_code == 200, r.text
    assert log.one("setting.set")["after"] == 0
    r = c.put(
        f"/api/v1/models/{model['id']}/monetisation", json={"enabled": False}, headers=api.admin
    )
    assert r.status_code == 200, r.text
    switched = log.one("model.monetisation")
    assert (switched["before"], switched["after"]) == ({"monetised": True}, {"monetised": False})

    # webhooks
    r = c.post(
        "/api/v1/admin/webhooks",
        json={"url": "https://example.invalid/hook", "events": ["payout.*"]},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    hook = r.json()
    created = log.one("webhook.create")
    assert created["after"]["url"] == "https://example.invalid/hook"
    assert hook["secret"] not in json.dumps(created)
    assert c.delete(f"/api/v1/admin/webhooks/{hook['id']}", headers=api.admin).status_code == 204
    disabled = log.one("webhook.disable")
    assert (disabled["before"]["is_active"], disabled["after"]["is_active"]) == (True, False)

    # credit packages and stakes
    r = c.post(
        "/api/v1/admin/packages",
        json={"slug": "mini", "name": "Mini", "credits_ucr": 1, "price_uusd": 10_000},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    package = r.json()
    assert log.one("package.create")["after"]["price_uusd"] == 10_000
    r = c.patch(
        f"/api/v1/admin/packages/{package['id']}", json={"price_uusd": 20_000}, headers=api.admin
    )
    assert r.status_code == 200, r.text
    changed = log.one("package.update")
    assert (changed["before"], changed["after"]) == ({"price_uusd": 10_000}, {"price_uusd": 20_000})
    r = c.post(
        f"/api/v1/models/{model['id']}/stakes",
        json={
            "stakes": [
                {"user_id": creator, "share_bps": 6_000},
                {"user_id": payer, "share_bps": 4_000},
            ]
        },
        headers=api.admin,
    )
    assert r.status_code == 200, r.text
    stakes = log.one("stakes.set")
    assert stakes["before"] == [{"user_id": creator, "share_bps": 10_000}]
    assert {s["user_id"]: s["share_bps"] for s in stakes["after"]} == {creator: 6_000, payer: 4_000}

    # the records are chained like transfers
    chain.seal_all(api.db.factory)
    with api.db.tx() as session:
        report = chain.verify(session, chain.AUDIT)
    assert report.ok and report.sealed == len(_records(api)) and report.unsealed == 0


def test_filters_pages_and_csv(api: Api) -> None:
    c = api.client
    for n in range(5):
        r = c.put(
            "/api/v1/admin/payout-minimum",
            json={"minimum_ucr": (n + 1) * CREDIT},
            headers=api.admin,
        )
        assert r.status_code == 200
    r = c.post("/api/v1/admin/keys", json={"role": "service"}, headers=api.admin)
    assert r.status_code == 201
    settings = _records(api, action="setting.set")
    assert [s["after"] for s in settings] == [
        5 * CREDIT,
        4 * CREDIT,
        3 * CREDIT,
        2 * CREDIT,
        CREDIT,
    ]
    assert {r["action"] for r in _records(api, action="key.")} == {"key.create"}
    first = c.get(
        "/api/v1/admin/audit", params={"limit": 2, "action": "setting.set"}, headers=api.admin
    ).json()
    second = c.get(
        "/api/v1/admin/audit",
        params={"limit": 2, "action": "setting.set", "cursor": first["next_cursor"]},
        headers=api.admin,
    ).json()
    assert [s["after"] for s in first["items"] + second["items"]] == [
        5 * CREDIT,
        4 * CREDIT,
        3 * CREDIT,
        2 * CREDIT,
    ]
    newest = settings[0]["occurred_at"]
    assert _records(api, action="setting.set", to=newest) == settings[1:]
    assert _records(api, actor_kind="service") == []
    assert len(_records(api, actor_kind="admin", actor_key_id=1)) >= 6
    problem(
        c.get("/api/v1/admin/audit", params={"from": newest, "to": newest}, headers=api.admin), 422
    )
    r = c.get("/api/v1/admin/audit.csv", params={"action": "setting.set"}, headers=api.admin)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(row["after"]) for row in rows] == [
        CREDIT,
        2 * CREDIT,
        3 * CREDIT,
        4 * CREDIT,
        5 * CREDIT,
    ]
    assert rows[0]["actor_kind"] == "admin" and rows[0]["target_id"] == "payout_minimum_ucr"


def test_only_admins_read_the_log(api: Api) -> None:
    _, user_h = api.user("alice")
    for headers in (user_h, api.service):
        problem(api.client.get("/api/v1/admin/audit", headers=headers), 403)
        problem(api.client.get("/api/v1/admin/audit.csv", headers=headers), 403)
    problem(api.client.get("/api/v1/admin/audit"), 401)
