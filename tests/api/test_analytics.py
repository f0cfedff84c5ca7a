"""Analytics over HTTP (DESIGN §8, §11): the creator dashboard, the user's model analytics and
the admin view, on SQLite and PostgreSQL.

Expected figures are computed independently of the rollups: from the earnings, usage and
refund rows and the ledger's balances. Charges are posted on several past UTC days through
the service (a price in force since long ago), refunds through the API, payouts as ledger
holds with a payouts row (pending; completed = the hold posted to ``world_payouts``).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from modelbank.analytics import rebuild
from modelbank.db.base import utcnow
from modelbank.earnings import service as earnings
from modelbank.earnings.models import earnings_table, payouts_table
from modelbank.earnings.rules import EarningsRule
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.metering import service as metering
from modelbank.metering.models import usage_events_table as usage
from modelbank.metering.service import UsageEvent
from modelbank.users import service as users
from modelbank.wallets.models import refunds_table
from tests.analytics.test_rollups import priced_model
from tests.api.conftest import Api, problem

V1 = "/api/v1"
CREDIT = 1_000_000
_keys = itertools.count(1)

DAYS_AGO = (0, 0, 3, 10, 40, 200)
"""When the world's charges were posted (UTC days before today)."""


def cr(ucr: int) -> str:
    """The display string of ``ucr`` (as the API formats it), computed independently."""
    whole, frac = divmod(ucr, CREDIT)
    return f"{whole:,}.{frac:06d} cr"


def _today() -> date:
    return utcnow().date()


def _noon(days_ago: int) -> datetime:
    return datetime.combine(_today() - timedelta(days=days_ago), datetime.min.time(), UTC) + (
        timedelta(hours=12)
    )


class World:
    """alice creates ``a1`` (per use + per token rule), ``a2`` (default rule) and ``split``
    (alice 70 % / dave 30 %); ``p`` is a platform model. bob, carol and dave (and alice on
    her own model) use them on the :data:`DAYS_AGO` days with every usage type; then one
    full and one partial refund (today), a completed payout and a pending one of alice."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.alice, self.alice_h = api.user("alice", credits_ucr=30 * CREDIT)
        self.bob, self.bob_h = api.user("bob", credits_ucr=30 * CREDIT)
        self.carol, self.carol_h = api.user("carol", credits_ucr=30 * CREDIT)
        self.dave, self.dave_h = api.user("dave", credits_ucr=30 * CREDIT)
        since = _noon(400)
        with api.db.tx() as s:
            rule = EarningsRule(per_use_ucr=2_000, per_token_ucr=Decimal("0.5"))
            self.a1 = priced_model(s, creator=self.alice, since=since, rule=rule)
            self.a2 = priced_model(s, creator=self.alice, since=since)
            self.split = priced_model(s, creator=self.alice, since=since)
            earnings.set_beneficiaries(s, self.split, [(self.alice, 7_000), (self.dave, 3_000)])
            self.p = priced_model(s, creator=None, since=since)
        payers = (self.bob, self.carol, self.dave, self.alice)
        kinds = ("chat", "image_generation", "other")
        self.usage: list[int] = []
        for n, days_ago in enumerate(DAYS_AGO):
            events = [
                UsageEvent(
                    f"w{next(_keys)}",
                    payer,
                    model,
                    usage_type=kinds[(i + n) % 3],
                    input_tokens=1_000 * (i + 1) + n,
                    output_tokens=300 * (n + 1),
                    units=i % 2,
                )
                for i, (payer, model) in enumerate(
                    itertools.product(payers, (self.a1, self.a2, self.split, self.p))
                )
            ]
            with api.db.tx() as s:
                results = metering.charge_batch(
                    s, events, now=_noon(days_ago) + timedelta(minutes=n)
                )
            assert all(r.status == "charged" for r in results), results
            self.usage.extend(r.usage_id for r in results if r.usage_id is not None)
        paid_alice = self.usages(model=self.a1, not_user=self.alice)
        split_use = self.usages(model=self.split, user=self.bob)
        self.refund(paid_alice[0])  # full: alice's earning reversed
        self.refund(split_use[-1], amount_ucr=5_555)  # partial: alice and dave reversed
        self.completed = self.payout(self.alice, 40_000, completed=True)
        self.pending = self.payout(self.alice, 25_000, completed=False)

    def usages(
        self, *, model: int, user: int | None = None, not_user: int | None = None
    ) -> list[int]:
        query = select(usage.c.id).where(usage.c.model_id == model).order_by(usage.c.id)
        if user is not None:
            query = query.where(usage.c.user_id == user)
        if not_user is not None:
            query = query.where(usage.c.user_id != not_user)
        with self.api.db.tx() as s:
            return [int(v) for v in s.execute(query).scalars()]

    def refund(self, usage_id: int, amount_ucr: int | None = None) -> Any:
        r = self.api.client.post(
            f"{V1}/usage/{usage_id}/refund",
            json={} if amount_ucr is None else {"amount_ucr": amount_ucr},
            headers={**self.api.admin, "Idempotency-Key": f"r{next(_keys)}"},
        )
        assert r.status_code == 201, r.text
        return r.json()

    def payout(self, user_id: int, amount: int, *, completed: bool) -> int:
        with self.api.db.tx() as s:
            hold = ledger.create_hold(
                s,
                ledger.NewTransfer(
                    debit_account_id=users.get_user(s, user_id).earnings_account_id,
                    credit_account_id=ledger.platform_account(s, AccountCode.WORLD_PAYOUTS),
                    amount=amount,
                    code=TransferCode.PAYOUT,
                    ref_type="payout",
                    idempotency_key=f"payout-{next(_keys)}",
                ),
                timeout_s=None,
            )
            if completed:
                ledger.post_hold(s, hold)
            now = utcnow()
            return int(
                s.execute(
                    insert(payouts_table).returning(payouts_table.c.id),
                    {
                        "user_id": user_id,
                        "amount_ucr": amount,
                        "status": "completed" if completed else "pending",
                        "hold_id": hold,
                        "adapter": "manual",
                        "amount_uusd": amount // 100 if completed else None,
                        "credits_per_usd": Decimal(100) if completed else None,
                        "created_at": now,
                        "resolved_at": now if completed else None,
                    },
                ).scalar_one()
            )


def earnings_rows(api: Api, user_id: int, since: date) -> dict[int, list[int]]:
    """model → [uses, tokens, µcr] of the user's earnings rows posted since ``since``."""
    found: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    with api.db.tx() as s:
        for r in s.execute(
            select(earnings_table, usage.c.created_at.label("posted"))
            .join(usage, usage.c.id == earnings_table.c.usage_id)
            .where(earnings_table.c.user_id == user_id)
        ):
            if r.posted.date() >= since:
                line = found[int(r.model_id)]
                line[0] += 1
                line[1] += int(r.tokens)
                line[2] += int(r.amount_ucr)
    return dict(found)


def reversed_by_model(api: Api, user_id: int) -> dict[int, int]:
    """What refunds took back from ``user_id``, by model: half-even of earned × refunded so
    far ÷ charge on the running total (computed here with fractions)."""
    out: dict[int, int] = defaultdict(int)
    with api.db.tx() as s:
        done: dict[int, int] = defaultdict(int)
        for r in s.execute(select(refunds_table).order_by(refunds_table.c.id)):
            charge = int(
                s.execute(select(usage.c.charge_ucr).where(usage.c.id == r.usage_id)).scalar_one()
            )
            earned = s.execute(
                select(earnings_table.c.amount_ucr).where(
                    earnings_table.c.usage_id == r.usage_id, earnings_table.c.user_id == user_id
                )
            ).scalar()
            before, done[r.usage_id] = done[r.usage_id], done[r.usage_id] + int(r.amount_ucr)
            if earned:
                out[int(r.model_id)] += round(
                    Fraction(int(earned) * done[r.usage_id], charge)
                ) - round(Fraction(int(earned) * before, charge))
    return dict(out)


@pytest.fixture
def world(api: Api) -> World:
    return World(api)


def creator_view(w: World, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = w.api.client.get(f"{V1}/users/{w.alice}/creator-analytics", params=params, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_creator_analytics_match_the_earnings_rows_and_the_ledger(world: World) -> None:
    w, api = world, world.api
    body = creator_view(w, w.alice_h, period="365d")
    rows = earnings_rows(api, w.alice, _today() - timedelta(days=364))
    back = reversed_by_model(api, w.alice)
    assert set(rows) == {w.a1, w.a2, w.split}  # never p, and not her own use of her models
    assert body["earnings_ucr"] == sum(v[2] for v in rows.values())
    assert body["reversed_ucr"] == sum(back.values()) > 0
    assert body["net_earnings_ucr"] == body["earnings_ucr"] - body["reversed_ucr"]
    assert body["uses"] == sum(v[0] for v in rows.values())
    assert body["tokens"] == sum(v[1] for v in rows.values())
    assert body["active_models"] == 3
    assert body["average_per_model_ucr"] == round(Fraction(body["net_earnings_ucr"], 3))
    # the ledger: what alice's earnings account got, minus what left it
    with api.db.tx() as s:
        account = ledger.get_balance(s, users.get_user(s, w.alice).earnings_account_id)
    assert body["earnings_balance_ucr"] == account.balance
    assert body["net_earnings_ucr"] == account.balance + 40_000  # the completed payout
    assert body["owed_ucr"] == 0
    assert body["pending_payouts_ucr"] == 25_000
    assert body["available_ucr"] == account.balance - 25_000
    assert body["available"] == cr(account.balance - 25_000)
    assert [(p["id"], p["status"], p["amount_ucr"]) for p in body["payouts"]] == [
        (w.pending, "pending", 25_000),
        (w.completed, "completed", 40_000),
    ]
    top = {m["model_id"]: m for m in body["top_models"]}
    for model_id, (uses, tokens, earned) in rows.items():
        line = top[model_id]
        assert (line["uses"], line["tokens"], line["earnings_ucr"]) == (uses, tokens, earned)
        assert line["reversed_ucr"] == back.get(model_id, 0)
        assert line["net_ucr"] == earned - back.get(model_id, 0)
    nets = [m["net_ucr"] for m in body["top_models"]]
    assert nets == sorted(nets, reverse=True)
    # the daily series: every day, summing to the totals
    assert len(body["daily"]) == 365
    assert body["daily"][-1]["day"] == _today().isoformat()
    assert body["start"] == (_today() - timedelta(days=364)).isoformat()
    for field in ("uses", "tokens", "earnings_ucr", "reversed_ucr", "net_ucr"):
        assert (
            sum(d[field] for d in body["daily"])
            == body[field.replace("net_ucr", "net_earnings_ucr")]
        )
    busy = {d["day"] for d in body["daily"] if d["uses"]}
    assert busy == {(_today() - timedelta(days=n)).isoformat() for n in DAYS_AGO}


@pytest.mark.parametrize(("period", "days"), [("7d", 7), ("30d", 30), ("90d", 90)])
def test_creator_analytics_period_and_model_filters(world: World, period: str, days: int) -> None:
    w, api = world, world.api
    since = _today() - timedelta(days=days - 1)
    rows = earnings_rows(api, w.alice, since)
    body = creator_view(w, w.alice_h, period=period)
    assert body["period"] == period and len(body["daily"]) == days
    assert body["earnings_ucr"] == sum(v[2] for v in rows.values())
    assert body["uses"] == sum(v[0] for v in rows.values())
    # the refunds were posted today: inside every period
    assert body["reversed_ucr"] == sum(reversed_by_model(api, w.alice).values())
    one = creator_view(w, w.alice_h, period=period, model_id=w.a1)
    assert one["model_id"] == w.a1
    assert one["earnings_ucr"] == rows[w.a1][2] and one["uses"] == rows[w.a1][0]
    assert [m["model_id"] for m in one["top_models"]] == [w.a1]
    assert one["active_models"] == 1
    # a model alice never earned from: zeros, not an error
    none = creator_view(w, w.alice_h, period=period, model_id=w.p)
    assert (none["uses"], none["earnings_ucr"], none["top_models"]) == (0, 0, [])
    # payouts and balances ignore the filters
    assert none["pending_payouts_ucr"] == body["pending_payouts_ucr"] == 25_000


def test_a_creator_sees_only_their_own_analytics(world: World) -> None:
    w, api = world, world.api
    url = f"{V1}/users/{w.alice}/creator-analytics"
    for stranger in (w.bob_h, w.dave_h):
        body = problem(api.client.get(url, headers=stranger), 404, "user_not_found")
        assert str(w.alice) in body["detail"]
        problem(
            api.client.get(f"{V1}/users/{w.alice}/model-analytics", headers=stranger),
            404,
            "user_not_found",
        )
        problem(api.client.get(f"{V1}/admin/analytics", headers=stranger), 403, "forbidden")
    problem(api.client.get(url), 401, "unauthenticated")
    own = creator_view(w, w.alice_h)
    assert creator_view(w, api.admin) == own
    assert creator_view(w, api.service) == own
    # dave sees his own stake's earnings only: the split model, 30 %
    dave = api.client.get(
        f"{V1}/users/{w.dave}/creator-analytics", params={"period": "365d"}, headers=w.dave_h
    )
    assert dave.status_code == 200, dave.text
    assert [m["model_id"] for m in dave.json()["top_models"]] == [w.split]
    assert dave.json()["earnings_ucr"] == sum(
        v[2] for v in earnings_rows(api, w.dave, _today() - timedelta(days=364)).values()
    )
    assert dave.json()["payouts"] == []


def test_creator_analytics_bad_input(world: World) -> None:
    w, api = world, world.api
    url = f"{V1}/users/{w.alice}/creator-analytics"
    for bad in ("1d", "all", "", "30"):
        api.rejects("GET", url, 422, "validation_error", params={"period": bad}, headers=w.alice_h)
    api.rejects("GET", url, 422, "validation_error", params={"model_id": 0}, headers=w.alice_h)
    api.rejects("GET", url, 404, "model_not_found", params={"model_id": 999_999}, headers=w.alice_h)
    api.rejects(
        "GET", f"{V1}/users/999999/creator-analytics", 404, "user_not_found", headers=api.admin
    )


def test_model_analytics_spend_by_model_category_type_and_portfolio(world: World) -> None:
    w, api = world, world.api
    r = api.client.get(
        f"{V1}/users/{w.carol}/model-analytics", params={"period": "30d"}, headers=w.carol_h
    )
    assert r.status_code == 200, r.text
    body = r.json()
    since = _today() - timedelta(days=29)
    by_model: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    all_time = 0
    with api.db.tx() as s:
        for u in s.execute(select(usage).where(usage.c.user_id == w.carol)):
            all_time += int(u.charge_ucr)
            if u.created_at.date() >= since:
                for line in (by_model[int(u.model_id)], by_type[u.usage_type]):
                    line[0] += 1
                    line[1] += int(u.input_tokens) + int(u.output_tokens)
                    line[2] += int(u.charge_ucr)
    assert {
        int(x["key"]): [x["uses"], x["tokens"], x["spent_ucr"]] for x in body["spend_by_model"]
    } == by_model
    assert {
        x["key"]: [x["uses"], x["tokens"], x["spent_ucr"]] for x in body["spend_by_usage_type"]
    } == by_type
    assert body["spent_ucr"] == sum(v[2] for v in by_model.values())
    assert body["refunded_ucr"] == 0 and body["net_spent_ucr"] == body["spent_ucr"]
    categories = {x["key"]: x["spent_ucr"] for x in body["spend_by_category"]}
    assert categories == {
        "Anime": sum(v[2] for m, v in by_model.items() if m != w.p),
        "Realistic": by_model[w.p][2],
    }
    assert (
        len(body["daily"]) == 30 and sum(d["spent_ucr"] for d in body["daily"]) == body["spent_ucr"]
    )
    # the original fields: all time, as before
    assert body["usage_spent_ucr"] == all_time
    assert len(body["activity_30d"]) == 30 and body["models_owned"] == 0

    r = api.client.get(
        f"{V1}/users/{w.alice}/model-analytics", params={"period": "365d"}, headers=w.alice_h
    )
    assert r.status_code == 200, r.text
    alice = r.json()
    creator = creator_view(w, w.alice_h, period="365d")
    stakes = {x["model_id"]: x for x in alice["portfolio"]["stakes"]}
    assert {m: (x["share_bps"], x["implicit"]) for m, x in stakes.items()} == {
        w.a1: (10_000, True),
        w.a2: (10_000, True),
        w.split: (7_000, False),
    }
    nets = {m["model_id"]: m["net_ucr"] for m in creator["top_models"]}
    assert {m: x["earned_total_ucr"] for m, x in stakes.items()} == nets
    assert alice["portfolio"]["earned_total_ucr"] == creator["net_earnings_ucr"]
    assert (
        alice["portfolio"]["paid_out_ucr"] == 40_000 and alice["portfolio"]["paid_out_uusd"] == 400
    )
    assert alice["portfolio"]["pending_payouts_ucr"] == 25_000
    assert alice["models_owned"] == 3
    assert alice["earnings_from_owned_ucr"] == creator["earnings_ucr"]  # all time, gross
    best = max(creator["top_models"], key=lambda m: m["earnings_ucr"])
    assert alice["most_profitable_model"]["model_id"] == best["model_id"]
    assert sum(d["earned_ucr"] for d in alice["daily"]) == creator["net_earnings_ucr"]
    # bob's refunds show as refunded spend
    r = api.client.get(f"{V1}/users/{w.bob}/model-analytics", headers=w.bob_h)
    with api.db.tx() as s:
        refunded = s.execute(
            select(func.sum(refunds_table.c.amount_ucr)).where(refunds_table.c.user_id == w.bob)
        ).scalar_one()
    assert r.json()["refunded_ucr"] == refunded > 0
    dave = api.client.get(f"{V1}/users/{w.dave}/model-analytics", headers=w.dave_h).json()
    assert [(x["model_id"], x["share_bps"]) for x in dave["portfolio"]["stakes"]] == [
        (w.split, 3_000)
    ]


def test_admin_analytics_agree_with_admin_stats(world: World) -> None:
    w, api = world, world.api
    stats = api.client.get(f"{V1}/admin/stats", headers=api.admin).json()
    r = api.client.get(f"{V1}/admin/analytics", params={"period": "365d"}, headers=api.admin)
    assert r.status_code == 200, r.text
    body = r.json()
    t = body["totals"]
    assert t["revenue_ucr"] == stats["usage_revenue_ucr"]
    assert t["cost_uusd"] == stats["provider_cost_uusd"]
    assert t["earnings_ucr"] == stats["creator_earnings_ucr"]
    assert t["uses"] == stats["usage_events"]
    assert t["refunded_ucr"] == stats["usage_refunded_ucr"] > 0
    assert body["earnings_owed_ucr"] == stats["earnings_owed_ucr"]
    assert body["pending_payouts_ucr"] == 25_000
    assert t["margin_ucr"] == (
        t["revenue_ucr"]
        - t["refunded_ucr"]
        - t["cost_uusd"] * 100
        - t["earnings_ucr"]
        + t["reversed_ucr"]
    )
    fields = (
        "uses",
        "tokens",
        "revenue_ucr",
        "refunded_ucr",
        "cost_uusd",
        "earnings_ucr",
        "reversed_ucr",
        "margin_ucr",
    )
    for part in ("models", "categories", "daily"):
        assert {f: sum(x[f] for x in body[part]) for f in fields} == {f: t[f] for f in fields}, part
    revenue = [m["revenue_ucr"] for m in body["models"]]
    assert revenue == sorted(revenue, reverse=True)
    assert {m["model_id"] for m in body["models"]} == {w.a1, w.a2, w.split, w.p}
    assert {c["category"]: c["models"] for c in body["categories"]} == {"Anime": 3, "Realistic": 1}
    creators = [(c["user_id"], c["net_ucr"]) for c in body["top_creators"]]
    alice = creator_view(w, w.alice_h, period="365d")
    assert creators[0] == (w.alice, alice["net_earnings_ucr"])
    assert [c[0] for c in creators] == [w.alice, w.dave]
    assert {(p["status"], p["count"], p["amount_ucr"]) for p in body["payouts"]} == {
        ("completed", 1, 40_000),
        ("pending", 1, 25_000),
    }
    assert len(body["daily"]) == 365
    # a shorter period: only the charges posted inside it
    month = api.client.get(
        f"{V1}/admin/analytics", params={"period": "30d"}, headers=api.admin
    ).json()
    since = datetime.combine(_today() - timedelta(days=29), datetime.min.time(), UTC)
    with api.db.tx() as s:
        count, revenue_30 = s.execute(
            select(func.count(), func.sum(usage.c.charge_ucr)).where(usage.c.created_at >= since)
        ).one()
    assert (month["totals"]["uses"], month["totals"]["revenue_ucr"]) == (count, revenue_30)
    problem(
        api.client.get(f"{V1}/admin/analytics", params={"period": "all"}, headers=api.admin), 422
    )
    # and the rollups these came from equal a recomputation
    with api.db.tx() as s:
        assert rebuild.verify_rollups(s) == []
