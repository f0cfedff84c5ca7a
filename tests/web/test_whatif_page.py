"""The admin's price what-if page: a form of proposed markups and demand levels, a chart of
revenue and margin per model today vs proposed, the exact figures; read-only; admins only."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape
from pathlib import Path

from modelbank.analytics.whatif import Proposal, parse_demand, parse_markups, recorded_what_if
from modelbank.web import views
from modelbank.web.whatif import DEFAULT_DAYS
from tests.analytics import whatif_history
from tests.web.conftest import Api, signed_in

URL = "/app/admin/pricing/what-if"


def _chart(html: str) -> dict[str, object]:
    found = re.search(r'id="what-if-chart"[^>]*data-plotly=\'([^\']+)\'', html)
    assert found, "no chart on the page"
    return dict(json.loads(unescape(found.group(1))))


def test_admin_page_shows_the_form_then_the_chart_and_exact_figures(
    api: Api, tmp_path: Path
) -> None:
    h = whatif_history.seed(api.db, tmp_path)
    client = signed_in(api, api.admin)
    page = client.get(URL)
    assert page.status_code == 200
    assert 'name="markup_medium"' in page.text and 'name="demand"' in page.text
    assert "what-if-chart" not in page.text  # nothing is computed before the form is sent
    assert client.get("/app/admin/pricing").text.count(URL) == 1  # linked from the panel

    before = api.ledger_state()
    day = h.start.date().isoformat()
    params = {
        "run": "1",
        "from": day,
        "to": day,
        "markup_medium": "1.65",
        "demand": "gpt-4o-mini=low, llama-3.1-405b=high",
    }
    r = client.get(URL, params=params)
    assert r.status_code == 200, r.text[:500]
    assert api.ledger_state() == before
    with api.db.tx() as s:
        start = h.start.replace(hour=0, minute=0, second=0, microsecond=0)
        expected = recorded_what_if(
            s,
            start,
            start + timedelta(days=1),
            Proposal(
                tiers=parse_markups(["medium=1.65"]),
                demand=parse_demand(["gpt-4o-mini=low", "llama-3.1-405b=high"]),
            ),
        )
    spec = _chart(r.text)
    names = [trace["name"] for trace in spec["data"]]  # type: ignore[index, union-attr]
    assert names == ["revenue today", "revenue proposed", "margin today", "margin proposed"]
    x = spec["data"][0]["x"]  # type: ignore[index]
    assert x == [line.model.slug for line in expected.lines]
    proposed = spec["data"][1]["y"]  # type: ignore[index]
    assert proposed == [line.proposed.revenue_ucr / 1_000_000 for line in expected.lines]
    for line in expected.lines:
        row = re.search(rf'<tr data-slug="{re.escape(line.model.slug)}".*?</tr>', r.text, re.S)
        assert row, line.model.slug
        cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(0))
        assert cells[3] == views.credits(line.difference["revenue_ucr"])
        assert cells[-1] == views.credits(line.difference["margin_ucr"])
        assert ("changed" in row.group(0)) == (
            line.model.slug in {"gpt-4o", "gpt-4o-mini", "llama-3.1-405b"}
        )
    assert views.credits(expected.proposed.revenue_ucr) in r.text


def test_bad_overrides_show_the_error_and_write_nothing(api: Api, tmp_path: Path) -> None:
    whatif_history.seed(api.db, tmp_path)
    client = signed_in(api, api.admin)
    before = api.ledger_state()
    for params, message in (
        ({"markup_large": "lots"}, "X must be a number"),
        ({"demand": "gpt-4o=extreme"}, "bad demand"),
        ({"demand": "nobody=high"}, "unknown model"),
    ):
        r = client.get(URL, params={"run": "1", **params})
        assert r.status_code == 422 and message in unescape(r.text), r.text[:300]
        assert 'id="what-if-error"' in r.text and "what-if-chart" not in r.text
    r = client.get(URL, params={"run": "1", "from": "yesterday"})
    assert r.status_code == 422
    assert api.ledger_state() == before
    assert DEFAULT_DAYS == 30


def test_non_admins_are_refused(api: Api, tmp_path: Path) -> None:
    whatif_history.seed(api.db, tmp_path)
    _, headers = api.user("eve")
    client = signed_in(api, headers)
    assert client.get(URL).status_code == 403
    assert client.get(URL, params={"run": "1"}).status_code == 403
