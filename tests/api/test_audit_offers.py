"""The audit log covers the admin actions added with plans, promo codes and the manual
provider's subscription periods (issue 16 part 3: every admin action that changes state):
each writes exactly one record with its state before and after."""

from __future__ import annotations

from tests.api.conftest import Api
from tests.api.test_audit import Log
from tests.api.test_subscriptions import PLAN, V1, confirm, make_plan, subscribe


def test_plans_promo_codes_and_confirmed_periods_are_audited(api: Api) -> None:
    log = Log(api)
    plan = make_plan(api)
    created = log.one("plan.create")
    assert created["before"] is None and created["target_id"] == str(plan["id"])
    assert created["after"]["credits_ucr"] == PLAN["credits_ucr"]

    r = api.client.patch(
        f"{V1}/admin/plans/{plan['id']}", json={"credits_ucr": 7}, headers=api.admin
    )
    assert r.status_code == 200, r.text
    changed = log.one("plan.update")
    assert (changed["before"]["credits_ucr"], changed["after"]["credits_ucr"]) == (
        PLAN["credits_ucr"],
        7,
    )

    r = api.client.post(
        f"{V1}/admin/promo-codes", json={"code": "WELCOME", "bonus_ucr": 5}, headers=api.admin
    )
    assert r.status_code == 201, r.text
    promo = r.json()
    made = log.one("promo_code.create")
    assert made["after"]["bonus_ucr"] == 5 and made["target_id"] == str(promo["id"])
    r = api.client.post(f"{V1}/admin/promo-codes/{promo['id']}/deactivate", headers=api.admin)
    assert r.status_code == 200, r.text
    off = log.one("promo_code.deactivate")
    assert (off["before"]["is_active"], off["after"]["is_active"]) == (True, False)
    # switching off a code that is already off changes nothing and records nothing
    r = api.client.post(f"{V1}/admin/promo-codes/{promo['id']}/deactivate", headers=api.admin)
    assert r.status_code == 200, r.text
    assert [r for r in log.new() if r["action"].startswith("promo_code.")] == []

    user_id, user = api.user("subscriber")
    r = subscribe(api, user_id, user, plan["id"])
    assert r.status_code == 201, r.text
    sub = r.json()
    r = confirm(api, sub["id"], "audit-period-1")
    assert r.status_code in (200, 201), r.text
    period = log.one("subscription.period.confirm")
    assert period["target_id"] == str(sub["id"]) and period["after"]["credits_ucr"] == 7
