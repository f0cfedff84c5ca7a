"""The creator-economy pages over HTTP (no browser): a creator's earnings and payouts, the
admin payout queue and platform overview. Scoping (another user's earnings → 404, admin
pages → 403), payout form errors shown on the page with nothing written, and the payout
life cycle through the forms. On SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import re

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from modelbank.earnings import payouts
from modelbank.earnings.models import payouts_table
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from tests.api.conftest import Api
from tests.web.conftest import csrf_of, form_key_of, signed_in

CREDIT = 1_000_000
PER_USE = 300 * CREDIT
"""Every use of the creator's model earns its creator exactly this (100 % of the price)."""

_keys = itertools.count(1)


def _creator(api: Api, uses: int = 1) -> tuple[int, dict[str, str], int, str]:
    """A creator whose model has been used ``uses`` times by another user: (creator id,
    headers, model id, slug)."""
    n = next(_keys)
    creator, headers = api.user(f"creator-{n}")
    payer, _ = api.user(f"payer-{n}", credits_ucr=5_000 * CREDIT)
    model = api.model(
        f"art-{n}",
        creator_id=creator,
        price={"per_request_ucr": PER_USE},
        earnings_rule={"share_bps": 10_000, "popularity_tiers": [], "type_multipliers": {"*": 1}},
    )
    for i in range(uses):
        r = api.charge(payer, model["slug"], key=f"use-{n}-{i}", units=1)
        assert r.status_code == 201, r.text
    return creator, headers, int(model["id"]), str(model["slug"])


def _payouts(api: Api) -> int:
    with api.db.tx() as session:
        return int(session.execute(select(func.count()).select_from(payouts_table)).scalar())


def _world_payouts(api: Api) -> int:
    with api.db.tx() as s:
        account = ledger.platform_account(s, AccountCode.WORLD_PAYOUTS)
        return ledger.get_balance(s, account).credits_posted


def _figure(html: str, name: str) -> str:
    found = re.search(rf'id="payout-{name}">([^<]+)<', html)
    assert found, name
    return found.group(1)


def _post(client: TestClient, url: str, page: str, **data: str) -> str:
    """Submit a form of ``page`` (its CSRF token and a fresh form key, Referer) and follow
    the redirect back; return the page shown (its flash message included)."""
    html = client.get(page).text
    r = client.post(
        url,
        data={"csrf_token": csrf_of(html), "form_key": form_key_of(html), **data},
        headers={"Referer": f"http://testserver{page}"},
    )
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return r.text


def _flash(html: str) -> tuple[str, str]:
    found = re.search(r'class="flash flash-(ok|error)"[^>]*>\s*([^<]+?)\s*</div>', html)
    assert found, "no flash message on the page"
    return found.group(1), found.group(2).replace("&#39;", "'")


def test_earnings_pages_are_scoped_and_admin_pages_refused(api: Api) -> None:
    creator, headers, model_id, _ = _creator(api)
    other, other_headers = api.user("other")
    mine = signed_in(api, headers)
    page = mine.get(f"/app/users/{creator}/earnings")
    assert page.status_code == 200 and 'aria-current="page">Earnings<' in page.text
    assert _figure(page.text, "available") == "300.00"
    assert mine.get(f"/app/users/{creator}/earnings?period=7d&model={model_id}").status_code == 200
    assert mine.get(f"/app/users/{creator}/earnings?period=week").status_code == 422
    assert mine.get(f"/app/users/{creator}/earnings?model=999999").status_code == 404

    stranger = signed_in(api, other_headers)
    assert stranger.get(f"/app/users/{other}/earnings").status_code == 200  # nothing earned
    r = stranger.get(f"/app/users/{creator}/earnings")
    assert r.status_code == 404 and "creator-" not in r.text
    assert mine.get(f"/app/users/{other}/earnings").status_code == 404
    for path in ("/app/admin/payouts", "/app/admin/platform"):
        assert mine.get(path).status_code == 403, path

    token = csrf_of(stranger.get(f"/app/users/{other}/earnings").text)
    before = api.ledger_state()
    r = stranger.post(
        f"/app/users/{creator}/payouts",
        data={"csrf_token": token, "form_key": "k-1", "amount": "150"},
        follow_redirects=False,
    )
    assert r.status_code == 404
    with api.db.tx() as s:
        pending = payouts.request(s, creator, 150 * CREDIT)
    before = api.ledger_state()
    for n, (url, status) in enumerate(
        (
            (f"/app/users/{creator}/payouts/{pending.id}/cancel", 404),
            (f"/app/users/{other}/payouts/{pending.id}/cancel", 404),  # not the other's payout
            (f"/app/admin/payouts/{pending.id}/complete", 403),
            (f"/app/admin/payouts/{pending.id}/fail", 403),
        )
    ):
        r = stranger.post(
            url,
            data={
                "csrf_token": token,
                "form_key": f"k{n}",
                "external_reference": "x",
                "reason": "x",
            },
            follow_redirects=False,
        )
        assert r.status_code == status, url
    assert api.ledger_state() == before

    admin = signed_in(api, api.admin)
    assert admin.get("/app/", follow_redirects=False).headers["location"] == "/app/admin/platform"
    assert admin.get(f"/app/users/{creator}/earnings").status_code == 200
    assert admin.get("/app/admin/platform?period=7d").status_code == 200
    queue = admin.get("/app/admin/payouts")
    assert queue.status_code == 200 and f'data-payout-id="{pending.id}"' in queue.text


def test_payout_form_errors_come_back_as_messages_and_write_nothing(api: Api) -> None:
    creator, headers, _, _ = _creator(api)
    client = signed_in(api, headers)
    page = f"/app/users/{creator}/earnings"
    before, count = api.ledger_state(), _payouts(api)
    for amount, message in (
        ("50", "A payout must be at least 100.00 credits; you asked for 50.00."),
        ("300.000001", "Only 300.00 credits are available to pay out; you asked for 300.000001."),
        ("", "amount is required"),
        ("0", "amount must be more than 0 credits"),
        ("ten", "'ten' is not a number"),
        ("100.0000001", "amount has more than 6 decimals"),
    ):
        html = _post(client, f"/app/users/{creator}/payouts", page, amount=amount)
        kind, text = _flash(html)
        assert kind == "error" and message in text, (amount, text)
        assert 'role="alert"' in html
    assert api.ledger_state() == before and _payouts(api) == count

    html = _post(client, f"/app/users/{creator}/payouts", page, amount="120.5")
    assert _flash(html) == (
        "ok",
        "Payout #1 of 120.50 credits requested — pending: an admin pays it out.",
    )
    assert (_figure(html, "available"), _figure(html, "pending")) == ("179.50", "120.50")
    assert 'aria-label="Cancel payout 1"' in html
    html = _post(client, f"/app/users/{creator}/payouts/1/cancel", page)
    assert _flash(html)[0] == "ok" and "cancelled" in _flash(html)[1]
    assert (_figure(html, "available"), _figure(html, "pending")) == ("300.00", "0.00")
    html = _post(client, f"/app/users/{creator}/payouts/1/cancel", page)
    assert _flash(html) == (
        "error",
        "payout 1 is cancelled: only a pending payout can be cancelled",
    )


def test_admin_completes_and_fails_payouts_from_the_queue(api: Api) -> None:
    creator, _, _, _ = _creator(api, uses=2)
    with api.db.tx() as s:
        first = payouts.request(s, creator, 200 * CREDIT)
        second = payouts.request(s, creator, 150 * CREDIT)
        payouts.cancel(s, first.id)
        third = payouts.request(s, creator, 100 * CREDIT)
    admin = signed_in(api, api.admin)
    queue = admin.get("/app/admin/payouts").text
    order = [int(i) for i in re.findall(r'data-payout-id="(\d+)"', queue)]
    assert order == [second.id, third.id, first.id]  # pending first, then the rest
    assert "≈ $1.50" in queue  # 150 credits at 100 credits per USD
    page = "/app/admin/payouts"

    before = api.ledger_state()
    html = _post(admin, f"/app/admin/payouts/{second.id}/complete", page, external_reference=" ")
    assert _flash(html) == ("error", "external reference is required")
    assert api.ledger_state() == before

    paid_before = _world_payouts(api)
    html = _post(
        admin, f"/app/admin/payouts/{second.id}/complete", page, external_reference="SEPA-42"
    )
    assert _flash(html) == (
        "ok",
        f"Payout #{second.id} completed: 150.00 credits ($1.50) paid to user {creator},"
        " reference SEPA-42.",
    )
    assert _world_payouts(api) == paid_before + 150 * CREDIT
    html = _post(admin, f"/app/admin/payouts/{second.id}/fail", page, reason="late")
    assert _flash(html)[0] == "error" and "is completed" in _flash(html)[1]

    html = _post(admin, f"/app/admin/payouts/{third.id}/fail", page, reason="account closed")
    assert _flash(html)[0] == "ok"
    with api.db.tx() as s:
        assert payouts.summary(s, creator).available_ucr == 450 * CREDIT
        done = payouts.get_payout(s, third.id)
    assert (done.status, done.failure_reason) == (payouts.PayoutStatus.FAILED, "account closed")
    failed = admin.get("/app/admin/payouts?status=failed").text
    assert re.findall(r'data-payout-id="(\d+)"', failed) == [str(third.id)]
    assert "account closed" in failed
