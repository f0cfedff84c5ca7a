"""Forms that move credits are submitted once: the same form posted twice (a double click,
a replayed POST) with its one-time ``form_key`` repeats nothing and lands on the same page
with the same message; another key is another request; no key is refused and changes
nothing. Payout requests, buying credits, premium access and the admin's payout and
purchase actions. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from modelbank.earnings import payouts
from modelbank.earnings.models import payouts_table
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.ledger.models import transfers_table
from modelbank.users import service as users
from modelbank.wallets import purchases
from modelbank.wallets.models import purchases_table
from tests.api.conftest import Api
from tests.web.conftest import csrf_of, form_key_of, signed_in

CREDIT = 1_000_000
PER_USE = 300 * CREDIT


def _count(api: Api, table: Any) -> int:
    with api.db.tx() as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar())


def _creator(api: Api) -> tuple[int, dict[str, str]]:
    """A creator whose model earned 600 credits (two uses by another user): id, headers."""
    creator, headers = api.user("creator")
    payer, _ = api.user("payer", credits_ucr=5_000 * CREDIT)
    model = api.model(
        "art",
        creator_id=creator,
        price={"per_request_ucr": PER_USE},
        earnings_rule={"share_bps": 10_000, "popularity_tiers": [], "type_multipliers": {"*": 1}},
    )
    for i in range(2):
        assert api.charge(payer, model["slug"], key=f"use-{i}", units=1).status_code == 201
    return creator, headers


def _submit(client: TestClient, url: str, page: str, data: dict[str, str]) -> tuple[str, str]:
    """Post ``data`` as if from ``page`` and follow the redirect: the flash shown."""
    r = client.post(url, data=data, headers={"Referer": f"http://testserver{page}"})
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    found = re.search(r'class="flash flash-(ok|error)"[^>]*>\s*([^<]+?)\s*</div>', r.text)
    assert found, "no flash message on the page"
    return found.group(1), found.group(2).replace("&#39;", "'")


def _form(client: TestClient, page: str) -> dict[str, str]:
    """The CSRF token and the fresh form key of ``page``'s forms."""
    html = client.get(page).text
    return {"csrf_token": csrf_of(html), "form_key": form_key_of(html)}


def _held(api: Api, user_id: int) -> tuple[int, int]:
    """(µcr held on the user's earnings account, µcr posted to ``world_payouts``)."""
    with api.db.tx() as s:
        account = users.get_user(s, user_id).earnings_account_id
        world = ledger.platform_account(s, AccountCode.WORLD_PAYOUTS)
        return (
            ledger.get_balance(s, account).debits_pending,
            ledger.get_balance(s, world).credits_posted,
        )


def test_a_payout_form_posted_twice_requests_one_payout(api: Api) -> None:
    creator, headers = _creator(api)
    client = signed_in(api, headers)
    page = f"/app/users/{creator}/earnings"
    url = f"/app/users/{creator}/payouts"
    form = _form(client, page) | {"amount": "150", "back": page}
    payouts_before, transfers_before = _count(api, payouts_table), _count(api, transfers_table)

    first = _submit(client, url, page, form)
    assert first[0] == "ok" and "Payout #" in first[1] and "150.00 credits" in first[1]
    again = _submit(client, url, page, form)  # the double click
    assert again == first
    assert _count(api, payouts_table) == payouts_before + 1
    assert _count(api, transfers_table) == transfers_before + 1  # one hold
    assert _held(api, creator) == (150 * CREDIT, 0)
    with api.db.tx() as s:
        summary = payouts.summary(s, creator)
    assert (summary.pending_ucr, summary.available_ucr) == (150 * CREDIT, 450 * CREDIT)

    # The same key with other fields is refused; nothing more is held.
    changed = _submit(client, url, page, form | {"amount": "100"})
    assert changed[0] == "error" and "already submitted with other values" in changed[1]
    assert _count(api, payouts_table) == payouts_before + 1

    # A new form (another key) is another request.
    second = _submit(client, url, page, _form(client, page) | {"amount": "100", "back": page})
    assert second[0] == "ok" and second != first
    assert _count(api, payouts_table) == payouts_before + 2
    assert _held(api, creator) == (250 * CREDIT, 0)

    # No key: refused with the form's message, nothing written.
    before = api.ledger_state()
    no_key = {"csrf_token": form["csrf_token"], "amount": "100", "back": page}
    kind, text = _submit(client, url, page, no_key)
    assert kind == "error" and "reload the page" in text
    assert api.ledger_state() == before and _count(api, payouts_table) == payouts_before + 2


def test_a_purchase_form_posted_twice_starts_one_purchase(api: Api) -> None:
    uid, headers = api.user("alice")
    client = signed_in(api, headers)
    package_id = api.client.get("/api/v1/packages", headers=headers).json()["items"][0]["id"]
    page = f"/app/users/{uid}/wallet"
    url = f"/app/users/{uid}/purchases"
    form = _form(client, page) | {"package_id": str(package_id)}

    first = _submit(client, url, page, form)
    assert first[0] == "ok" and "started" in first[1]
    assert _submit(client, url, page, form) == first
    assert _count(api, purchases_table) == 1

    second = _submit(client, url, page, _form(client, page) | {"package_id": str(package_id)})
    assert second[0] == "ok" and second != first
    assert _count(api, purchases_table) == 2

    kind, text = _submit(
        client, url, page, {"csrf_token": form["csrf_token"]} | {"package_id": str(package_id)}
    )
    assert kind == "error" and "reload the page" in text
    assert _count(api, purchases_table) == 2


def test_admin_actions_posted_twice_happen_once(api: Api) -> None:
    creator, _ = _creator(api)
    uid, headers = api.user("buyer")
    package_id = api.client.get("/api/v1/packages", headers=headers).json()["items"][0]["id"]
    with api.db.tx() as s:
        pending = payouts.request(s, creator, 200 * CREDIT)
    buyer = signed_in(api, headers)
    _submit(
        buyer,
        f"/app/users/{uid}/purchases",
        f"/app/users/{uid}/wallet",
        _form(buyer, f"/app/users/{uid}/wallet") | {"package_id": str(package_id)},
    )
    admin = signed_in(api, api.admin)

    page = "/app/admin/payouts"
    url = f"/app/admin/payouts/{pending.id}/complete"
    form = _form(admin, page) | {"external_reference": "SEPA-1", "back": page}
    transfers_before = _count(api, transfers_table)
    first = _submit(admin, url, page, form)
    assert first[0] == "ok" and "completed" in first[1]
    assert _submit(admin, url, page, form) == first  # not "is completed" as an error
    assert _count(api, transfers_table) == transfers_before + 1  # the hold posted once
    assert _held(api, creator) == (0, 200 * CREDIT)
    # A second, separate submission is refused by the payout's state, as before.
    kind, text = _submit(admin, url, page, _form(admin, page) | {"external_reference": "SEPA-2"})
    assert kind == "error" and "is completed" in text
    assert _held(api, creator) == (0, 200 * CREDIT)

    with api.db.tx() as s:
        (bought,) = purchases.list_purchases(s, user_id=uid)
    page = "/app/admin/purchases"
    url = f"/app/admin/purchases/{bought.id}/confirm"
    form = _form(admin, page)
    balance_before = api.ledger_state()
    first = _submit(admin, url, page, form)
    assert first[0] == "ok" and "confirmed" in first[1]
    granted = api.ledger_state()
    assert granted != balance_before
    assert _submit(admin, url, page, form) == first
    assert api.ledger_state() == granted
    with api.db.tx() as s:
        assert purchases.get_purchase(s, bought.id).status == "completed"

    # No key: nothing happens, the message says why.
    with api.db.tx() as s:
        again = payouts.request(s, creator, 100 * CREDIT)
    before = api.ledger_state()
    kind, text = _submit(
        admin,
        f"/app/admin/payouts/{again.id}/fail",
        "/app/admin/payouts",
        {"csrf_token": form["csrf_token"], "reason": "late"},
    )
    assert kind == "error" and "reload the page" in text
    assert api.ledger_state() == before


def test_premium_access_and_cancel_forms_carry_a_key_and_replay(api: Api) -> None:
    creator, _ = _creator(api)
    uid, headers = api.user("alice", credits_ucr=10 * CREDIT)
    gold = api.model("gold", is_premium=True, access_price_ucr=2 * CREDIT)
    client = signed_in(api, headers)
    page = f"/app/users/{uid}/models"
    url = f"/app/users/{uid}/models/{gold['id']}/access"
    form = _form(client, page)
    first = _submit(client, url, page, form)
    assert first[0] == "ok" and "bought" in first[1]
    after = api.ledger_state()
    assert _submit(client, url, page, form) == first
    assert api.ledger_state() == after

    with api.db.tx() as s:
        pending = payouts.request(s, creator, 100 * CREDIT)
    admin = signed_in(api, api.admin)
    page = f"/app/users/{creator}/earnings"
    url = f"/app/users/{creator}/payouts/{pending.id}/cancel"
    form = _form(admin, page) | {"back": page}
    first = _submit(admin, url, page, form)
    assert first[0] == "ok" and "cancelled" in first[1]
    assert _submit(admin, url, page, form) == first  # not "is cancelled" as an error
