"""POST /api/v1/admin/pricing/what-if: admins get the exact figures of recorded usage priced
again, read-only; others are refused; bad overrides are 422 problems."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from modelbank.analytics.whatif import Proposal, parse_markups, recorded_what_if
from modelbank.pricing.markups import Demand
from tests.analytics import whatif_history
from tests.api.conftest import Api, problem


def _body(h: whatif_history.History, **extra: object) -> dict[str, object]:
    return {"from": h.start.isoformat(), "to": h.end.isoformat(), **extra}


def test_admin_gets_exact_figures_and_nothing_is_written(api: Api, tmp_path: Path) -> None:
    h = whatif_history.seed(api.db, tmp_path)
    before = api.ledger_state()
    r = api.client.post(
        "/api/v1/admin/pricing/what-if",
        json=_body(h, markups={"medium": "1.65"}, demand={"gpt-4o-mini": "low"}),
        headers=api.admin,
    )
    assert r.status_code == 200, r.text
    assert api.ledger_state() == before
    body = r.json()
    with api.db.tx() as s:
        expected = recorded_what_if(
            s,
            h.start,
            h.end,
            Proposal(
                tiers=parse_markups(["MEDIUM=1.65"]),
                demand={"gpt-4o-mini": Demand.LOW},
            ),
        )
    assert datetime.fromisoformat(body["from"]) == h.start
    assert datetime.fromisoformat(body["to"]) == h.end
    assert body["now"]["revenue_ucr"] == expected.now.revenue_ucr
    assert body["proposed"]["revenue_ucr"] == expected.proposed.revenue_ucr
    assert body["recorded"]["revenue_ucr"] == body["now"]["revenue_ucr"]
    assert body["difference"]["revenue_ucr"] == (
        expected.proposed.revenue_ucr - expected.now.revenue_ucr
    )
    assert body["users"] == 4 and body["users_dry_now"] == 0 and body["users_dry_proposed"] == 1
    changed = {m["model"]: m["difference"]["revenue_ucr"] for m in body["models"] if m["changed"]}
    assert set(changed) == {"gpt-4o", "gpt-4o-mini"}
    assert changed["gpt-4o"] > 0 > changed["gpt-4o-mini"]  # medium +10 %, high → low demand
    for m in body["models"]:
        if not m["changed"]:
            assert m["now"] == m["proposed"] == m["recorded"], m["model"]
    assert body["proposal"] == {
        "price_sheet": None,
        "markups": {"medium": "1.65"},
        "demand": {"gpt-4o-mini": "low"},
    }


def test_price_sheet_in_the_body_reprices_to_the_recorded_charges(api: Api, tmp_path: Path) -> None:
    h = whatif_history.seed(api.db, tmp_path)
    r = api.client.post(
        "/api/v1/admin/pricing/what-if",
        json=_body(h, price_sheet=whatif_history.SHEET),
        headers=api.admin,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["difference"].values()) == {0}
    assert body["proposed"] == body["now"]
    for field in ("revenue_ucr", "cost_uusd", "earnings_ucr", "margin_ucr", "events"):
        assert body["now"][field] == body["recorded"][field]


def test_non_admins_are_refused(api: Api, tmp_path: Path) -> None:
    h = whatif_history.seed(api.db, tmp_path)
    _, user = api.user("eve")
    for headers in (user, api.service):
        api.rejects(
            "POST",
            "/api/v1/admin/pricing/what-if",
            403,
            "forbidden",
            json=_body(h),
            headers=headers,
        )
    api.rejects("POST", "/api/v1/admin/pricing/what-if", 401, json=_body(h))


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"markups": {"huge": "2"}}, "invalid_what_if"),
        ({"markups": {"large": "-1"}}, "invalid_what_if"),
        ({"markups": {"large": "many"}}, "invalid_what_if"),
        ({"demand": {"gpt-4o": "extreme"}}, "invalid_what_if"),
        ({"demand": {"no-such-model": "high"}}, "invalid_what_if"),
        ({"surprise": 1}, "validation_error"),
        ({"price_sheet": [1, 2]}, "validation_error"),
    ],
)
def test_bad_overrides_are_422_problems(
    api: Api, tmp_path: Path, extra: dict[str, object], code: str
) -> None:
    h = whatif_history.seed(api.db, tmp_path)
    api.rejects(
        "POST",
        "/api/v1/admin/pricing/what-if",
        422,
        code,
        json=_body(h, **extra),
        headers=api.admin,
    )


def test_period_errors(api: Api, tmp_path: Path) -> None:
    h = whatif_history.seed(api.db, tmp_path)
    url = "/api/v1/admin/pricing/what-if"
    reversed_ = {"from": h.end.isoformat(), "to": h.start.isoformat()}
    problem(api.client.post(url, json=reversed_, headers=api.admin), 422, "invalid_what_if")
    years = {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    problem(api.client.post(url, json=years, headers=api.admin), 422, "invalid_what_if")
    naive = {"from": "2026-01-01T00:00:00", "to": "2026-02-01T00:00:00Z"}
    problem(api.client.post(url, json=naive, headers=api.admin), 422, "validation_error")


def test_too_many_events_is_a_clear_422(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = whatif_history.seed(api.db, tmp_path)
    from modelbank.analytics.whatif import recorded

    monkeypatch.setattr(recorded, "MAX_EVENTS", 10)
    monkeypatch.setattr(
        recorded.recorded_what_if, "__kwdefaults__", {"now": None, "max_events": 10}
    )
    body = problem(
        api.client.post("/api/v1/admin/pricing/what-if", json=_body(h), headers=api.admin),
        422,
        "what_if_too_large",
    )
    assert body["events"] == 15 and body["limit"] == 10
