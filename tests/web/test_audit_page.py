"""The dashboard's audit log page (issue 16 part 3): an admin sees the records a page of the
dashboard made, filters them and exports them; a user gets 403."""

from __future__ import annotations

import csv
import io

from tests.api.conftest import Api
from tests.web.conftest import csrf_of, form_key_of, signed_in


def test_admin_sees_filters_and_exports_the_audit_log(api: Api) -> None:
    admin = signed_in(api, api.admin)
    api.client.put("/api/v1/admin/payout-minimum", json={"minimum_ucr": 7}, headers=api.admin)
    user_id, _ = api.user("alice")
    page = admin.get("/app/admin/audit")
    assert page.status_code == 200, page.text
    assert "setting.set" in page.text and "key.create" in page.text
    assert 'href="/app/admin/audit"' in page.text  # in the navigation
    only = admin.get("/app/admin/audit", params={"action": "key."})
    assert "key.create" in only.text and "setting.set" not in only.text
    r = admin.get("/app/admin/audit.csv", params={"action": "setting.set"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["action"], row["after"]) for row in rows] == [("setting.set", "7")]
    # an action taken through the dashboard is recorded with the signed-in admin as actor
    r = api.client.post(
        f"/api/v1/users/{user_id}/purchases",
        json={"package_id": 1, "provider": "manual"},
        headers=api.admin,
    )
    purchase_id = r.json()["id"]
    form_page = admin.get("/app/admin/purchases")
    r = admin.post(
        f"/app/admin/purchases/{purchase_id}/confirm",
        data={"csrf_token": csrf_of(form_page.text), "form_key": form_key_of(form_page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    (record,) = api.client.get(
        "/api/v1/admin/audit", params={"action": "purchase.confirm"}, headers=api.admin
    ).json()["items"]
    assert (record["actor_kind"], record["target_id"]) == ("admin", str(purchase_id))
    assert record["actor_key_id"] is not None and record["request_id"]


def test_a_user_cannot_see_the_audit_log(api: Api) -> None:
    _, headers = api.user("bob")
    bob = signed_in(api, headers)
    assert bob.get("/app/admin/audit").status_code == 403
    assert bob.get("/app/admin/audit.csv").status_code == 403
