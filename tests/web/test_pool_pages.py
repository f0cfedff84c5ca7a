"""The resource pool pages (DESIGN §9, issue 14 item 6) over HTTP, on SQLite and PostgreSQL:
the depositor's page and a resource's requests with exact figures, another user's 404s, the
deposit form end to end against a real fake upstream (uvicorn in a thread) and through an
``httpx.MockTransport``, bad input shown with nothing written, withdrawal, and the admin
panel's Overview / Resources (suspend, resume) / Logs tabs. The provider key never appears
in any page."""

from __future__ import annotations

import itertools
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from modelbank.errors import InvalidInput
from modelbank.gateway.fake_upstream import FakeUpstreamConfig
from modelbank.gateway.fake_upstream import create_app as create_fake
from modelbank.metering.models import usage_events_table
from modelbank.pool import routelog, suspension
from modelbank.pool import service as pool
from modelbank.pool.breaker import Outcome
from modelbank.pool.errors import ResourceState
from modelbank.pool.health import health_store
from modelbank.pool.models import resources_table
from modelbank.web import pool_admin
from modelbank.web.views import credits
from tests.api.conftest import Api
from tests.gateway.conftest import serving
from tests.web.conftest import csrf_of, form_key_of, signed_in

KEY = "sk-live-pool-page-key-0123456789-7f3a"
"""The deposited provider key: it must never come back out in a page."""
CREDIT = 1_000_000
_ids = itertools.count(1)


def _people(api: Api) -> tuple[int, TestClient, int, TestClient]:
    """A depositor and another user, each signed in; the catalog has gpt-4o."""
    n = next(_ids)
    api.model("gpt-4o")
    a, a_headers = api.user(f"depositor-{n}")
    b, b_headers = api.user(f"other-{n}")
    return a, signed_in(api, a_headers), b, signed_in(api, b_headers)


def _box(api: Api) -> Any:
    return api.client.app.state.secret_box  # type: ignore[attr-defined]


def _resource(api: Api, owner: int | None, key: str = KEY, **fields: Any) -> pool.ResourceInfo:
    """A resource registered and activated through the pool service ($10 quota, $2 of it
    the market part unless given): its deposit is credited."""
    spec: dict[str, Any] = {
        "provider": "openai",
        "base_url": "https://api.openai.example/v1",
        "api_key": key,
        "models": [("gpt-4o", "gpt-4o-2024-08-06")],
        "quota_uusd": 10_000_000,
        "market_quota_uusd": 2_000_000,
        **fields,
    }
    with api.db.tx() as s:
        info = pool.register(s, owner, box=_box(api), **spec)
        return pool.activate(s, info.id)


def _row(html: str, resource_id: int) -> str:
    found = re.search(rf'<tr data-resource-id="{resource_id}".*?</tr>', html, re.S)
    assert found, f"no row for resource {resource_id}"
    return found.group(0)


def _field(html: str, name: str) -> str:
    found = re.search(rf'data-field="{name}">([^<]*)<', html)
    assert found, name
    return found.group(1).strip()


def _flash(html: str) -> tuple[str, str]:
    found = re.search(r'class="flash flash-(ok|error)"[^>]*>\s*([^<]+?)\s*</div>', html)
    assert found, "no flash message on the page"
    return found.group(1), found.group(2).replace("&#39;", "'").replace("&#34;", '"')


def _form(client: TestClient, page: str, **data: Any) -> dict[str, Any]:
    html = client.get(page).text
    return {"csrf_token": csrf_of(html), "form_key": form_key_of(html), **data}


def _post(client: TestClient, url: str, page: str, data: dict[str, Any]) -> str:
    r = client.post(url, data=data, headers={"Referer": f"http://testserver{page}"})
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return r.text


def _deposit_data(base_url: str, **fields: Any) -> dict[str, Any]:
    return {
        "provider": "fake",
        "base_url": base_url,
        "api_key": KEY,
        "quota_usd": "10.50",
        "market_usd": "2.25",
        "model": ["gpt-4o", "", ""],
        "upstream_model": ["gpt-4o-mini", "", ""],
        **fields,
    }


def _wallet(api: Api, user_id: int) -> int:
    r = api.client.get(f"/api/v1/users/{user_id}/wallet", headers=api.admin)
    return int(r.json()["balance_ucr"])


def _resources(api: Api) -> int:
    with api.db.tx() as s:
        return int(s.execute(select(func.count()).select_from(resources_table)).scalar_one())


def _served(api: Api, payer: int, resource_id: int, cost_uusd: int) -> tuple[int, int]:
    """A charged usage row served by ``resource_id`` with that provider cost, its spend
    booked on the resource: (usage id, charge µcr)."""
    used = api.charge(payer, "gpt-4o", key=f"use-{next(_ids)}", input_tokens=1_000_000)
    assert used.status_code == 201, used.text
    usage_id = int(used.json()["usage_id"])
    with api.db.tx() as s:
        s.execute(
            update(usage_events_table)
            .where(usage_events_table.c.id == usage_id)
            .values(resource_id=resource_id, cost_uusd=cost_uusd)
        )
        pool.book_consumption(s, resource_id, cost_uusd)
        charge = s.execute(
            select(usage_events_table.c.charge_ucr).where(usage_events_table.c.id == usage_id)
        ).scalar_one()
    return usage_id, int(charge)


def _log(api: Api, user: int, resource_id: int | None, **fields: Any) -> int:
    with api.db.tx() as s:
        model_id = pool.get_resource(s, resource_id).models[0].model_id if resource_id else None
        entry = routelog.RouteLogEntry(
            request_id=f"req-{next(_ids)}",
            user_id=user,
            model_id=model_id,
            endpoint="chat",
            resource_id=resource_id,
            **{"outcome": "served", **fields},
        )
        return routelog.write(s, entry)


def _health(api: Api) -> Any:
    return health_store(api.client.app.state.db.settings, api.db.engine)  # type: ignore[attr-defined]


def _attempts(api: Api, resource_id: int, successes: int, failures: int) -> None:
    store = _health(api)
    for outcome in [Outcome.SUCCESS] * successes + [Outcome.UPSTREAM_FAILURE] * failures:
        store.finish(store.begin(resource_id), outcome, latency_ms=120.0, ttft_ms=40.0)


# ---------------------------------------------------------------- the depositor's pages


def test_the_owner_sees_each_resource_with_exact_figures(api: Api) -> None:
    a, a_client, _, _ = _people(api)
    payer, _ = api.user(f"payer-{next(_ids)}", credits_ucr=1_000 * CREDIT)
    info = _resource(api, a)
    _, charge = _served(api, payer, info.id, cost_uusd=2_000_000)  # $2 of the $8 pool part
    _attempts(api, info.id, successes=3, failures=1)
    _log(
        api,
        payer,
        info.id,
        attempts=[
            {"resource_id": info.id, "outcome": "upstream_failure", "kind": "http_500"},
            {"resource_id": info.id, "outcome": "success", "kind": "success"},
        ],
        charge_ucr=charge,
        cost_uusd=2_000_000,
        latency_ms=812.4,
    )
    html = a_client.get(f"/app/users/{a}/pool").text
    row = _row(html, info.id)
    assert _field(row, "mask") == "sk-…7f3a" and info.key_fingerprint[:16] in row
    assert (_field(row, "quota"), _field(row, "market")) == ("$10.00", "$2.00")
    assert (_field(row, "consumed"), _field(row, "used")) == ("$2.00", "25.0%")
    assert (_field(row, "requests"), _field(row, "success")) == ("1", "75.0%")
    assert _field(row, "credit") == "720.00"  # 90 % of $8 × 100 credits per USD
    assert 'gpt-4o → <span class="mono">gpt-4o-2024-08-06</span>' in row
    assert 'data-status="active"' in row and "Withdraw" in row
    # the credit a withdrawal now would take back: 720 × 6/8
    assert re.search(r"Not yet consumed</p>\s*<p class=\"card-value\">540.00<", html)
    assert KEY not in html
    detail = a_client.get(f"/app/users/{a}/pool/{info.id}").text
    log_row = re.search(r'<tr data-log-id="\d+">.*?</tr>', detail, re.S)
    assert log_row, detail
    assert _field(log_row.group(0), "outcome") == "served"
    assert _field(log_row.group(0), "attempts") == "2"
    assert _field(log_row.group(0), "latency") == "812 ms"
    assert _field(log_row.group(0), "charge") == credits(charge)
    assert f"user {payer}" not in detail  # a depositor never sees who asked
    assert _field(detail, "success") == "4 · 75.0%" and KEY not in detail


def test_another_user_gets_404_for_foreign_pool_pages_and_actions(api: Api) -> None:
    a, a_client, b, b_client = _people(api)
    info = _resource(api, a)
    for url in (f"/app/users/{a}/pool", f"/app/users/{a}/pool/{info.id}"):
        assert b_client.get(url).status_code == 404
    # a's resource under b's own pages: still not found, and nothing happens
    assert b_client.get(f"/app/users/{b}/pool/{info.id}").status_code == 404
    before = api.ledger_state()
    page = f"/app/users/{b}/pool"
    for action in ("withdraw", "check"):
        r = b_client.post(f"/app/users/{b}/pool/{info.id}/{action}", data=_form(b_client, page))
        assert r.status_code == 404, action
    r = b_client.post(f"/app/users/{a}/pool/{info.id}/withdraw", data=_form(b_client, page))
    assert r.status_code == 404
    assert api.ledger_state() == before
    with api.db.tx() as s:
        assert pool.get_resource(s, info.id).status == "active"
    for url in ("/app/admin/pool", "/app/admin/pool/resources", "/app/admin/pool/logs"):
        assert a_client.get(url).status_code == 403
    assert f"/app/users/{a}/pool" in a_client.get(f"/app/users/{a}/wallet").text  # the nav


def test_deposit_form_end_to_end_against_a_fake_upstream(api: Api) -> None:
    a, a_client, _, _ = _people(api)
    page = f"/app/users/{a}/pool"
    fake = create_fake(FakeUpstreamConfig(api_keys=frozenset({KEY})))
    with serving(fake, lifespan="off") as url:
        data = _form(a_client, page, **_deposit_data(f"{url}/v1"))
        html = _post(a_client, f"/app/users/{a}/pool/deposits", page, data)
        again = _post(a_client, f"/app/users/{a}/pool/deposits", page, data)  # double submit
    kind, text = _flash(html)
    with api.db.tx() as s:
        [info] = pool.list_resources(s, a)
    # pool part $10.50 − $2.25 = $8.25 → 825 credits of value: 90 % to the depositor
    assert (info.quota_uusd, info.market_quota_uusd) == (10_500_000, 2_250_000)
    assert (info.deposit_credit_ucr, info.fee_ucr) == (742_500_000, 82_500_000)
    assert [(m.slug, m.upstream_model) for m in info.models] == [("gpt-4o", "gpt-4o-mini")]
    assert kind == "ok" and text.startswith(f"Resource #{info.id} is active: 742.50 credits")
    assert _flash(again) == (
        "ok",
        f"This deposit was already submitted: resource #{info.id} is active.",
    )
    assert _wallet(api, a) == 742_500_000 and _resources(api) == 1
    assert KEY not in html and KEY not in again
    assert _field(_row(html, info.id), "credit") == "742.50"


@pytest.fixture
def mock_upstream(api: Api) -> dict[str, Any]:
    """The probe's client on an httpx.MockTransport: 200 for KEY, 401 otherwise; ``down``
    makes every call a connect error."""
    state: dict[str, Any] = {"down": False, "calls": 0}

    def answer(request: httpx.Request) -> httpx.Response:
        state["calls"] += 1
        if state["down"]:
            raise httpx.ConnectError("connection refused")
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return httpx.Response(401, json={"error": {"message": "Incorrect API key"}})
        return httpx.Response(200, json={"object": "list", "data": [{"id": "gpt-4o"}]})

    db = api.client.app.state.db  # type: ignore[attr-defined]
    db.pool_http_client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return state


def test_refused_and_unreachable_deposits_then_check_again(
    api: Api, mock_upstream: dict[str, Any]
) -> None:
    a, a_client, _, _ = _people(api)
    page = f"/app/users/{a}/pool"
    base = "https://provider.example/v1"
    refused = _form(a_client, page, **_deposit_data(base, api_key="sk-wrong-key-000000"))
    kind, text = _flash(_post(a_client, f"{page}/deposits", page, refused))
    assert kind == "error" and "failed its check" in text and "Nothing was credited" in text
    mock_upstream["down"] = True
    html = _post(a_client, f"{page}/deposits", page, _form(a_client, page, **_deposit_data(base)))
    kind, text = _flash(html)
    with api.db.tx() as s:
        failed, waiting = pool.list_resources(s, a)
    assert (failed.status, waiting.status) == ("failed", "pending")
    assert kind == "error" and "is pending: probe: network error" in text
    assert _wallet(api, a) == 0 and "Check again" in _row(html, waiting.id)
    mock_upstream["down"] = False
    html = _post(a_client, f"{page}/{waiting.id}/check", page, _form(a_client, page))
    assert _flash(html)[0] == "ok"
    assert 'data-status="active"' in _row(html, waiting.id)
    assert _wallet(api, a) == 742_500_000 and KEY not in html


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"quota_usd": "abc"}, "quota: 'abc' is not a number"),
        ({"quota_usd": "1.0000001"}, "quota has more than 6 decimals"),
        ({"quota_usd": "0"}, "quota must be more than $0"),
        ({"market_usd": "11"}, "the market part cannot be more than the quota"),
        ({"model": ["no-such-model"]}, "no model 'no-such-model' in the catalog"),
        ({"model": ["", ""], "upstream_model": ["x", ""]}, "model row 1: name the catalog"),
        ({"base_url": "ftp://nowhere"}, "base_url must be an http:// or https:// URL"),
        ({"api_key": "has spaces in it"}, "api_key must be printable ASCII without spaces"),
    ],
)
def test_bad_deposit_input_is_shown_and_writes_nothing(
    api: Api, mock_upstream: dict[str, Any], fields: dict[str, Any], message: str
) -> None:
    a, a_client, _, _ = _people(api)
    page = f"/app/users/{a}/pool"
    before = api.ledger_state()
    good = _deposit_data("https://provider.example/v1")
    data = _form(a_client, page, **{**good, **fields})
    html = _post(a_client, f"{page}/deposits", page, data)
    kind, text = _flash(html)
    assert kind == "error" and message in text, text
    assert api.ledger_state() == before and _resources(api) == 0
    assert mock_upstream["calls"] == 0 and KEY not in html
    # the same form key, corrected, goes through (an error stored nothing)
    data.update(good)
    assert _flash(_post(a_client, f"{page}/deposits", page, data))[0] == "ok"


def test_a_key_already_in_the_pool_is_refused_on_the_form(
    api: Api, mock_upstream: dict[str, Any]
) -> None:
    a, a_client, b, _ = _people(api)
    _resource(api, b)
    page = f"/app/users/{a}/pool"
    html = _post(
        a_client,
        f"{page}/deposits",
        page,
        _form(a_client, page, **_deposit_data("https://provider.example/v1")),
    )
    assert _flash(html) == ("error", "this provider key is already in the pool")
    assert _resources(api) == 1 and KEY not in html


def test_withdraw_claws_back_the_unconsumed_credit(api: Api) -> None:
    a, a_client, _, _ = _people(api)
    payer, _ = api.user(f"payer-{next(_ids)}", credits_ucr=1_000 * CREDIT)
    info = _resource(api, a)
    _served(api, payer, info.id, cost_uusd=2_000_000)
    page = f"/app/users/{a}/pool"
    html = _post(a_client, f"{page}/{info.id}/withdraw", page, _form(a_client, page))
    # 720 × (8 − 2) / 8 = 540 credits taken back; 180 earned by the consumed quota
    assert _flash(html) == (
        "ok",
        f"Resource #{info.id} withdrawn: 540.00 credits of deposit credit for unused quota"
        " were taken back.",
    )
    row = _row(html, info.id)
    assert 'data-status="withdrawn"' in row and _field(row, "clawed") == "540.00"
    assert "Withdraw</button>" not in row
    assert _wallet(api, a) == 180 * CREDIT


# ---------------------------------------------------------------- the admin panel


def test_admin_panel_tabs_show_the_figures_and_suspend_resume(api: Api) -> None:
    a, _, b, _ = _people(api)
    admin = signed_in(api, api.admin)
    payer, _ = api.user(f"payer-{next(_ids)}", credits_ucr=1_000 * CREDIT)
    mine = _resource(api, a)
    platform = _resource(api, None, key="sk-platform-key-00000000", market_quota_uusd=0)
    _, charge = _served(api, payer, mine.id, cost_uusd=2_500_000)
    _attempts(api, mine.id, successes=1, failures=1)
    ticket = _health(api).begin(platform.id)  # one request in flight on the platform key
    assert ticket is not None
    _log(api, payer, mine.id, charge_ucr=charge, latency_ms=50.0)
    _log(api, b, None, outcome="no_route")

    html = admin.get("/app/admin/pool").text
    assert re.search(r'data-status="active">.*?<strong>2</strong>', html)
    assert _field(html, "quota") == "$20.00" and _field(html, "market") == "$2.00"
    assert _field(html, "consumed").startswith("$2.50 (13.9%")  # 2.5 / 18: 1,388 bps
    assert _field(html, "deposit") == "720.00" and _field(html, "debts") == "0.00"
    spread = charge - 250 * CREDIT  # $2.50 at 100 credits per USD
    assert _field(html, "charge") == credits(charge)
    revenue = re.search(r"Revenue</p>\s*<p class=\"card-value\">([^<]+)<", html)
    assert revenue and revenue.group(1) == credits(spread + 80 * CREDIT)

    html = admin.get("/app/admin/pool/resources").text
    row = _row(html, mine.id)
    assert _field(row, "owner") == f"user {a}" and _field(row, "breaker") == "closed"
    assert _field(row, "success") == "50.0%" and _field(row, "spread") == credits(spread)
    assert _field(_row(html, platform.id), "owner") == "platform"
    assert _field(_row(html, platform.id), "in-flight") == "1"
    assert KEY not in html

    page = "/app/admin/pool/resources"
    data = _form(admin, page, reason="abuse report")
    html = _post(admin, f"{page}/{mine.id}/suspend", page, data)
    assert _flash(html) == ("ok", f"Resource #{mine.id} suspended: abuse report.")
    assert 'data-status="suspended"' in _row(html, mine.id)
    html = _post(admin, f"{page}/{mine.id}/resume", page, _form(admin, page))
    assert _flash(html) == ("ok", f"Resource #{mine.id} resumed: active.")
    html = _post(admin, f"{page}/{platform.id}/withdraw", page, _form(admin, page))
    assert _flash(html) == (
        "ok",
        f"Resource #{platform.id} withdrawn: 0.00 credits of deposit credit clawed back.",
    )
    assert 'data-status="withdrawn"' in _row(html, platform.id)

    html = admin.get("/app/admin/pool/logs").text
    rows = re.findall(r'<tr data-log-id="\d+">.*?</tr>', html, re.S)
    assert len(rows) == 2 and f"user {b}" in rows[0] and "no route" in rows[0]
    assert f"user {payer}" in rows[1] and f"#{mine.id}" in rows[1] and "gpt-4o" in rows[1]
    assert _field(rows[1], "charge") == credits(charge)


def test_admin_logs_page_by_cursor(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    a, _, _, _ = _people(api)
    admin = signed_in(api, api.admin)
    info = _resource(api, a)
    ids = [_log(api, a, info.id, latency_ms=float(n)) for n in range(3)]
    monkeypatch.setattr(pool_admin, "LOGS_PAGE", 2)
    first = admin.get("/app/admin/pool/logs").text
    assert re.findall(r'data-log-id="(\d+)"', first) == [str(ids[2]), str(ids[1])]
    older = re.search(r'<a href="(\?before=\d+)">Older requests', first)
    assert older
    second = admin.get(f"/app/admin/pool/logs{older.group(1)}").text
    assert re.findall(r'data-log-id="(\d+)"', second) == [str(ids[0])]
    assert "Older requests" not in second


def test_suspension_rules(api: Api) -> None:
    a, _, _, _ = _people(api)
    info = _resource(api, a)
    with api.db.tx() as s:
        pending = pool.register(
            s,
            a,
            provider="x",
            base_url="https://x.example/v1",
            api_key="sk-pending-key-0000000",
            models=[("gpt-4o", "m")],
            quota_uusd=1_000_000,
            box=_box(api),
        )
        with pytest.raises(ResourceState):
            suspension.suspend(s, pending.id, "no")
        with pytest.raises(InvalidInput):
            suspension.suspend(s, info.id, "   ")
    with api.db.tx() as s:
        assert suspension.suspend(s, info.id, "  maintenance ").status_reason == "maintenance"
        assert suspension.suspend(s, info.id, "again").status_reason == "maintenance"
        pool.book_consumption(s, info.id, 8_000_000)  # in-flight spend still booked
        resumed = suspension.resume(s, info.id)
        assert (resumed.status, resumed.consumed_uusd) == ("depleted", 8_000_000)
        assert suspension.resume(s, info.id).status == "depleted"


def test_two_deposits_of_one_key_at_once_give_one_resource(api: Api) -> None:
    """Two browsers of the same user post the same key at the same moment: one deposit
    is active and credited once, the other is told the key is in the pool (never a 500)."""
    api.model("gpt-4o")
    a, headers = api.user(f"racer-{next(_ids)}")
    a_client, second = signed_in(api, headers), signed_in(api, headers)
    page = f"/app/users/{a}/pool"
    fake = create_fake(FakeUpstreamConfig(api_keys=frozenset({KEY})))
    with serving(fake, lifespan="off") as url:
        forms = [_form(c, page, **_deposit_data(f"{url}/v1")) for c in (a_client, second)]
        barrier = threading.Barrier(2)

        def post(client: TestClient, data: dict[str, Any]) -> str:
            barrier.wait()
            return _post(client, f"{page}/deposits", page, data)

        with ThreadPoolExecutor(2) as pool_:
            pages = list(pool_.map(post, (a_client, second), forms))
    flashes = sorted(_flash(html)[0] for html in pages)
    assert flashes == ["error", "ok"], [_flash(html) for html in pages]
    refused = next(_flash(html)[1] for html in pages if _flash(html)[0] == "error")
    assert refused == "this provider key is already in the pool"
    assert _resources(api) == 1 and _wallet(api, a) == 742_500_000
