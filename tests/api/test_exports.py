"""CSV exports over HTTP (DESIGN §8, §11): a user key exports only its own rows, a service key
one named user's, an admin anyone's or everything; refusals are problem+json; the body is the
exporter's CSV with attachment headers. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from modelbank.analytics import exports
from modelbank.analytics.exports import ExportKind
from modelbank.gateway.fake_upstream import FakeUpstreamConfig, prompt_text_for
from modelbank.gateway.fake_upstream import create_app as create_fake
from tests.api.conftest import Api, problem
from tests.gateway.conftest import serving

V1 = "/api/v1"
CR = 1_000_000
RULE = {"share_bps": 2_000, "popularity_tiers": [], "type_multipliers": {"chat": 1}}
"""Creators earn exactly 20 % of a chat charge."""
EXPORT_KEY = "sk-export-upstream-key-0123456789abcdef"
"""The provider key of the pool resource the gateway test deposits."""


@dataclass
class World:
    alice: int
    alice_h: dict[str, str]
    bob: int
    bob_h: dict[str, str]
    carol: int
    carol_h: dict[str, str]


def world(api: Api) -> World:
    """Alice and Bob spend on Carol's model (1 credit per unit; she earns 20 %); Alice's first
    charge is half refunded."""
    alice, alice_h = api.user("alice", credits_ucr=100 * CR)
    bob, bob_h = api.user("bob", credits_ucr=100 * CR)
    carol, carol_h = api.user("carol")
    api.model("meter", creator_id=carol, price={"per_unit_ucr": CR}, earnings_rule=RULE)
    used = []
    for i, (who, units) in enumerate([(alice, 10), (bob, 5), (alice, 3)]):
        r = api.charge(who, "meter", key=f"u{i}", units=units, usage_type="chat")
        assert r.status_code == 201, r.text
        used.append(r.json()["usage_id"])
    r = api.client.post(
        f"{V1}/usage/{used[0]}/refund",
        json={"amount_ucr": 5 * CR},
        headers={**api.admin, "Idempotency-Key": "refund"},
    )
    assert r.status_code == 201, r.text
    return World(alice, alice_h, bob, bob_h, carol, carol_h)


def direct(api: Api, kind: ExportKind | str, **kwargs: Any) -> str:
    """The exporter's own output for the same request."""

    @contextmanager
    def read() -> Iterator[Session]:
        with api.db.tx() as session:
            yield session

    return "".join(exports.export_csv(read, kind, **kwargs))


def rows_of(r: Any) -> list[dict[str, str]]:
    assert r.status_code == 200, r.text
    return list(csv.DictReader(io.StringIO(r.text, newline="")))


def url(kind: str) -> str:
    return f"{V1}/exports/{kind}.csv"


def test_a_user_key_exports_its_own_rows(api: Api) -> None:
    w = world(api)
    for kind in ExportKind:
        mine = api.client.get(url(kind), headers=w.alice_h)
        assert mine.status_code == 200, mine.text
        assert mine.headers["content-type"] == "text/csv; charset=utf-8"
        assert mine.headers["content-disposition"] == (
            f'attachment; filename="{kind.value}-user-{w.alice}.csv"'
        )
        assert mine.text == direct(api, kind, user_id=w.alice)
        assert mine.text.splitlines()[0] == ",".join(exports.columns(kind))
        # naming themselves is the same as naming no one
        named = api.client.get(url(kind), params={"user_id": w.alice}, headers=w.alice_h)
        assert named.text == mine.text

    usage = rows_of(api.client.get(url("usage"), headers=w.alice_h))
    assert [(r["user_id"], r["charge_ucr"], r["model"]) for r in usage] == [
        (str(w.alice), str(10 * CR), "meter"),
        (str(w.alice), str(3 * CR), "meter"),
    ]
    # the creator's earnings: 20 % of each charge by others
    earned = rows_of(api.client.get(url("earnings"), headers=w.carol_h))
    assert [int(r["amount_ucr"]) for r in earned] == [2 * CR, 1 * CR, 600_000]
    assert {r["user_id"] for r in earned} == {str(w.carol)}
    # Alice's transfers: purchase, two charges, the refund; all touching her wallet
    transfers = rows_of(api.client.get(url("transfers"), headers=w.alice_h))
    assert [r["code"] for r in transfers] == ["purchase", "usage_charge", "usage_charge", "refund"]
    assert rows_of(api.client.get(url("payouts"), headers=w.alice_h)) == []


def test_another_users_scope_is_not_found(api: Api) -> None:
    w = world(api)
    for kind in ExportKind:
        for user_id in (w.bob, 999_999):
            body = api.rejects(
                "GET", url(kind), 404, "user_not_found", params={"user_id": user_id},
                headers=w.alice_h,
            )  # fmt: skip
            assert str(user_id) in body["detail"]


def test_service_keys_name_a_user_and_admins_see_everything(api: Api) -> None:
    w = world(api)
    problem(api.client.get(url("usage"), headers=api.service), 403, "forbidden")
    r = api.client.get(url("usage"), params={"user_id": w.bob}, headers=api.service)
    assert r.status_code == 200, r.text
    assert r.text == direct(api, "usage", user_id=w.bob)
    assert [x["user_id"] for x in rows_of(r)] == [str(w.bob)]

    for kind in ExportKind:
        everything = api.client.get(url(kind), headers=api.admin)
        assert everything.status_code == 200, everything.text
        assert everything.text == direct(api, kind)
        assert f'filename="{kind.value}-all.csv"' in everything.headers["content-disposition"]
        one = api.client.get(url(kind), params={"user_id": w.carol}, headers=api.admin)
        assert one.text == direct(api, kind, user_id=w.carol)
    usage = rows_of(api.client.get(url("usage"), headers=api.admin))
    assert [x["user_id"] for x in usage] == [str(w.alice), str(w.bob), str(w.alice)]
    api.rejects("GET", url("usage"), 404, "user_not_found", params={"user_id": 999_999},
                headers=api.admin)  # fmt: skip


def test_period_filters_by_created_at(api: Api) -> None:
    w = world(api)
    rows = rows_of(api.client.get(url("usage"), headers=api.admin))
    second, third = rows[1]["created_at"], rows[2]["created_at"]
    window = rows_of(
        api.client.get(url("usage"), params={"from": second, "to": third}, headers=api.admin)
    )
    assert [x["id"] for x in window] == [rows[1]["id"]]
    later = rows_of(api.client.get(url("usage"), params={"from": third}, headers=w.alice_h))
    assert [x["id"] for x in later] == [rows[2]["id"]]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    empty = api.client.get(url("transfers"), params={"from": future}, headers=api.admin)
    assert empty.text == ",".join(exports.columns("transfers")) + "\n"


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        (url("grants"), {}, "validation_error"),
        (url("USAGE"), {}, "validation_error"),
        (url("usage"), {"from": "2025-01-01T00:00:00"}, "validation_error"),  # no time zone
        (url("usage"), {"to": "yesterday"}, "validation_error"),
        (url("usage"), {"user_id": 0}, "validation_error"),
        (
            url("usage"),
            {"from": "2025-01-02T00:00:00Z", "to": "2025-01-01T00:00:00Z"},
            "invalid_period",
        ),
        (
            url("usage"),
            {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"},
            "invalid_period",
        ),
    ],
)
def test_bad_input_is_422(api: Api, path: str, params: dict[str, Any], code: str) -> None:
    _, alice_h = api.user("alice")
    api.rejects("GET", path, 422, code, params=params, headers=alice_h)
    api.rejects("GET", path, 422, code, params=params, headers=api.admin)


def test_keys_are_required(api: Api) -> None:
    problem(api.client.get(url("usage")), 401, "unauthenticated")
    problem(
        api.client.get(url("usage"), headers={"Authorization": "Bearer mb_u_forged"}),
        401,
        "unauthenticated",
    )


def test_export_is_in_the_openapi_schema(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    op = spec["paths"]["/api/v1/exports/{kind}.csv"]["get"]
    assert "text/csv" in op["responses"]["200"]["content"]
    kind = next(p for p in op["parameters"] if p["name"] == "kind")
    assert kind["in"] == "path"
    names = {p["name"] for p in op["parameters"]}
    assert {"kind", "user_id", "from", "to"} <= names


def test_gateway_usage_is_listed_with_the_resource_that_served_it(api: Api) -> None:
    """A chat through the gateway (DESIGN §9) is in usage.csv like any other usage, with the
    pool resource that served it and ``usage_estimated`` false (the upstream reported it);
    usage reported through the API has no resource."""
    w = world(api)
    api.model("pooled")  # 1 µcr per input token, 2 per output token
    with serving(create_fake(FakeUpstreamConfig(api_keys=(EXPORT_KEY,))), lifespan="off") as up:
        r = api.client.post(
            f"{V1}/admin/resources",
            json={
                "provider": "fake",
                "base_url": f"{up}/v1",
                "api_key": EXPORT_KEY,
                "models": [{"model": "pooled", "upstream_model": "fake-chat"}],
                "quota_uusd": 1_000_000,
            },
            headers={**api.admin, "Idempotency-Key": "export-resource"},
        )
        assert r.status_code == 201, r.text
        resource = r.json()["id"]
        chat = api.client.post(
            "/v1/chat/completions",
            json={
                "model": "pooled",
                "messages": [{"role": "user", "content": prompt_text_for(106)}],
                "max_tokens": 7,
            },
            headers=w.bob_h,
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["usage"]["prompt_tokens"] == 106
    rows = rows_of(api.client.get(url("usage"), headers=w.bob_h))
    assert [(x["model"], x["resource_id"], x["usage_estimated"]) for x in rows] == [
        ("meter", "", "false"),
        ("pooled", str(resource), "false"),
    ]
    gateway = rows[1]
    assert (gateway["input_tokens"], gateway["output_tokens"]) == ("106", "7")
    assert gateway["charge_ucr"] == str(106 * 1 + 7 * 2)
    assert gateway["charge"] == "0.000120 cr"
    assert EXPORT_KEY not in api.client.get(url("usage"), headers=api.admin).text
