"""HTTP: /api/v1/admin/webhooks (admin only; the secret shown once; the delivery log)."""

from __future__ import annotations

import httpx
from sqlalchemy import text

from modelbank.secrets import SecretBox
from modelbank.webhooks import service as webhooks
from modelbank.webhooks.delivery import deliver_due
from tests.api.conftest import Api, problem
from tests.webhooks.conftest import KEY, Receiver

BASE = "/api/v1/admin/webhooks"


def _create(api: Api, **body: object) -> dict[str, object]:
    r = api.client.post(
        BASE, json={"url": "https://example.com/hook", "events": ["*"], **body}, headers=api.admin
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_create_shows_the_secret_once(webhook_api: Api) -> None:
    api = webhook_api
    created = _create(api, events=["wallet.low_balance", "payout.*"], description="ops")
    secret = created["secret"]
    assert isinstance(secret, str) and secret.startswith("whsec_")
    assert created["events"] == ["wallet.low_balance", "payout.*"]
    assert created["is_active"] is True and created["disabled_at"] is None

    one = api.client.get(f"{BASE}/{created['id']}", headers=api.admin)
    listed = api.client.get(BASE, headers=api.admin)
    assert one.status_code == listed.status_code == 200
    assert "secret" not in one.json() and secret not in one.text and secret not in listed.text
    assert [w["id"] for w in listed.json()["items"]] == [created["id"]]
    with api.db.tx() as session:
        stored = session.execute(text("SELECT secret_encrypted FROM webhook_endpoints")).scalar()
    assert secret not in str(stored) and SecretBox(KEY).decrypt(str(stored)) == secret


def test_user_and_service_keys_are_refused(webhook_api: Api) -> None:
    api = webhook_api
    created = _create(api)
    _, user = api.user("alice")
    for headers in (user, api.service):
        problem(api.client.get(BASE, headers=headers), 403, "forbidden")
        problem(
            api.client.post(
                BASE, json={"url": "https://x.example", "events": ["*"]}, headers=headers
            ),
            403,
            "forbidden",
        )
        problem(api.client.delete(f"{BASE}/{created['id']}", headers=headers), 403, "forbidden")
    problem(api.client.get(BASE), 401, "unauthenticated")


def test_bad_url_and_events_are_422_problems(webhook_api: Api) -> None:
    api = webhook_api
    cases = [
        ({"url": "ftp://example.com/x", "events": ["*"]}, "invalid_input"),
        ({"url": "https://u:p@example.com/x", "events": ["*"]}, "invalid_input"),
        ({"url": "https://example.com/x", "events": ["payout.exploded"]}, "invalid_input"),
        ({"url": "https://example.com/x", "events": ["nope.*"]}, "invalid_input"),
        ({"url": "https://example.com/x", "events": []}, "validation_error"),
        ({"url": "https://example.com/x"}, "validation_error"),
        ({"url": "https://example.com/x", "events": ["*"], "secret": "mine"}, "validation_error"),
    ]
    for body, code in cases:
        problem(api.client.post(BASE, json=body, headers=api.admin), 422, code)
    assert api.client.get(BASE, headers=api.admin).json()["items"] == []


def test_disable_is_idempotent_and_unknown_ids_are_404(webhook_api: Api) -> None:
    api = webhook_api
    created = _create(api)
    for _ in range(2):
        r = api.client.delete(f"{BASE}/{created['id']}", headers=api.admin)
        assert r.status_code == 204, r.text
    got = api.client.get(f"{BASE}/{created['id']}", headers=api.admin).json()
    assert got["is_active"] is False and got["disabled_at"] is not None
    for method, url in (
        ("GET", f"{BASE}/999"),
        ("DELETE", f"{BASE}/999"),
        ("GET", f"{BASE}/999/deliveries"),
    ):
        problem(
            api.client.request(method, url, headers=api.admin), 404, "webhook_endpoint_not_found"
        )


def test_end_to_end_delivery_and_log(
    webhook_api: Api, receiver: Receiver, client: httpx.Client
) -> None:
    api = webhook_api
    created = _create(api, url=receiver.url, events=["purchase.*"])
    receiver.secret = str(created["secret"])
    receiver.statuses = [500]
    with api.db.tx() as session:
        for i in range(3):
            webhooks.emit(session, "purchase.completed", {"purchase_id": i})
        webhooks.emit(session, "wallet.low_balance", {"user_id": 1})  # not subscribed
    box = SecretBox(KEY)
    first = deliver_due(api.db.factory, client, box)
    assert (first.delivered, first.failed_attempts) == (2, 1)
    assert [r.verified for r in receiver.received] == [True, True, True]

    url = f"{BASE}/{created['id']}/deliveries"
    log = api.client.get(url, headers=api.admin).json()
    assert len(log["items"]) == 3 and log["next_cursor"] is None
    assert [d["id"] for d in log["items"]] == sorted((d["id"] for d in log["items"]), reverse=True)
    failed = [d for d in log["items"] if d["status"] == "pending"]
    assert len(failed) == 1 and failed[0]["last_status_code"] == 500
    assert failed[0]["attempts"] == 1 and failed[0]["next_attempt_at"] is not None

    pending = api.client.get(url, params={"status": "pending"}, headers=api.admin).json()
    assert [d["id"] for d in pending["items"]] == [failed[0]["id"]]
    page = api.client.get(url, params={"limit": 2}, headers=api.admin).json()
    rest = api.client.get(
        url, params={"limit": 2, "cursor": page["next_cursor"]}, headers=api.admin
    ).json()
    assert [d["id"] for d in page["items"] + rest["items"]] == [d["id"] for d in log["items"]]
    problem(api.client.get(url, params={"status": "lost"}, headers=api.admin), 422)
    problem(api.client.get(url, params={"cursor": "%%%"}, headers=api.admin), 422)
