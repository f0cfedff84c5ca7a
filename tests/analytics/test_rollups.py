"""The daily rollups: maintained in the charge's transaction, they equal a recomputation
from the usage, earnings and refund rows (DESIGN §8, §16), on SQLite and PostgreSQL.

Scenario: several payers charge creators' models, a model split between its creator and an
investor, and a platform model, in batches on different UTC days and with every usage type;
creators use their own models; refunds (full, partial, on later days, one leaving an owed
debt after a payout). Then ``verify_rollups`` must find nothing, and ``rebuild`` must
reproduce the incremental tables row for row.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from modelbank.analytics import rebuild as rollups
from modelbank.catalog import service as catalog
from modelbank.catalog.costs import Mode
from modelbank.catalog.tiers import Tier
from modelbank.cli import app
from modelbank.db.base import utcnow
from modelbank.earnings import service as earnings
from modelbank.earnings.rules import EarningsRule
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.metering import refunds as usage_refunds
from modelbank.metering import service as metering
from modelbank.metering.rollups import creator_day_table, model_day_table, user_day_table
from modelbank.metering.service import UsageEvent
from modelbank.pricing import service as pricing
from modelbank.pricing.formulas import Rates
from modelbank.users import service as users
from modelbank.wallets import refunds
from tests import factories
from tests.conftest import Db

CREDIT = 1_000_000
TABLES = (model_day_table, user_day_table, creator_day_table)
TYPES = ("chat", "image_generation", "other")
_seq = itertools.count(1)


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_seq)}"


def _today() -> datetime:
    return utcnow().replace(hour=12, minute=0, second=0, microsecond=0)


def snapshot(s: Session) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the three rollup tables, in key order."""
    conn = s.connection()
    return {
        t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
        for t in TABLES
    }


def priced_model(
    s: Session,
    *,
    creator: int | None,
    since: datetime,
    rule: EarningsRule | None = None,
    mode: Mode = Mode.CHAT,
) -> int:
    """A model priced (and ruled) from ``since``: 2 cr/1M input, 6 cr/1M output, 0.01 cr per
    request and 0.5 cr per unit; provider cost half of that in µUSD × 100."""
    slug = _name("model")
    info = catalog.create_model(
        s,
        catalog.NewModel(
            slug=slug,
            name=slug,
            provider="openai",
            mode=mode,
            tier=Tier.MEDIUM,
            creator_id=creator,
            category="Anime" if creator else "Realistic",
        ),
    )
    pricing.set_price(
        s,
        info.id,
        tier=Tier.MEDIUM,
        explicit_ucr=Rates(
            input_per_mtok=Decimal(2_000_000),
            output_per_mtok=Decimal(6_000_000),
            per_request=Decimal(10_000),
            per_unit=Decimal(500_000),
        ),
        cost_uusd=Rates(
            input_per_mtok=Decimal(10_000),
            output_per_mtok=Decimal(30_000),
            per_request=Decimal(50),
            per_unit=Decimal(2_500),
        ),
        effective_from=since,
    )
    if rule is not None:
        earnings.set_rule(s, info.id, rule, effective_from=since)
    return info.id


def cash_out(s: Session, user_id: int, *, now: datetime) -> int:
    """Move the user's whole earnings balance out (as a payout would); return it."""
    account = users.get_user(s, user_id).earnings_account_id
    amount = ledger.get_balance(s, account).balance
    if amount > 0:
        ledger.transfer(
            s,
            ledger.NewTransfer(
                debit_account_id=account,
                credit_account_id=ledger.platform_account(s, AccountCode.WORLD_PAYOUTS),
                amount=amount,
                code=TransferCode.PAYOUT,
                ref_type="payout",
                ref_id=next(_seq),
                idempotency_key=_name("cash-out"),
            ),
            now=now,
        )
    return amount


def event(user_id: int, model_id: int, usage_type: str, n: int) -> UsageEvent:
    return UsageEvent(
        _name("use"),
        user_id,
        model_id,
        usage_type=usage_type,
        input_tokens=100 * n + 7,
        output_tokens=30 * n,
        units=n % 3 if usage_type == "image_generation" else 0,
    )


def mixed_scenario(db: Db) -> dict[str, int]:
    """The module doc's scenario; returns the ids it made."""
    today = _today()
    start = today - timedelta(days=10)
    with db.tx() as s:
        ids = {
            "c1": factories.user(s, _name("creator"), credits_ucr=20 * CREDIT),
            "c2": factories.user(s, _name("creator")),
            "investor": factories.user(s, _name("investor"), credits_ucr=50 * CREDIT),
            "u1": factories.user(s, _name("payer"), credits_ucr=50 * CREDIT),
            "u2": factories.user(s, _name("payer"), credits_ucr=50 * CREDIT),
        }
        rule = EarningsRule(per_use_ucr=1_000, per_token_ucr=Decimal("0.5"))
        ids["m1"] = priced_model(s, creator=ids["c1"], since=start, rule=rule)
        ids["m2"] = priced_model(s, creator=ids["c2"], since=start)
        earnings.set_beneficiaries(s, ids["m2"], [(ids["c2"], 6_000), (ids["investor"], 4_000)])
        ids["platform"] = priced_model(s, creator=None, since=start)
    usage: list[int] = []
    payers = ("u1", "u2", "investor", "c1")
    for day in range(4, -1, -1):  # four days ago … today
        now = today - timedelta(days=day, hours=day)  # crosses midnight for some
        batch = [
            event(ids[payer], ids[model], TYPES[(n + day) % 3], n + day)
            for n, (payer, model) in enumerate(itertools.product(payers, ("m1", "m2", "platform")))
        ]
        with db.tx() as s:
            results = metering.charge_batch(s, batch, now=now)
        assert all(r.status == "charged" for r in results), results
        usage.extend(r.usage_id for r in results if r.usage_id is not None)
    with db.tx() as s:
        by_id = {u: metering.get_usage(s, u) for u in usage}
    on = {
        key: [u for u in usage if by_id[u].model_id == ids[key] and by_id[u].user_id != ids["c1"]]
        for key in ("m1", "m2", "platform")
    }
    yesterday = today - timedelta(days=1)
    with db.tx() as s:
        usage_refunds.refund_usage(s, on["m2"][0], now=yesterday)  # full, two beneficiaries
        usage_refunds.refund_usage(s, on["platform"][0], amount_ucr=1_234, now=yesterday)
        first = usage_refunds.refund_usage(s, on["m1"][0], amount_ucr=3_333, now=yesterday)
        assert first.earnings_reversed_ucr > 0
    with db.tx() as s:
        usage_refunds.refund_usage(s, on["m1"][0], now=today)  # the rest of it
        usage_refunds.refund_usage(s, on["m2"][1], amount_ucr=7, now=today)
    with db.tx() as s:
        assert cash_out(s, ids["c1"], now=today) > 0
    with db.tx() as s:
        owed = usage_refunds.refund_usage(s, on["m1"][1], now=today)
    assert owed.earnings_owed_ucr > 0
    with db.tx() as s:
        assert refunds.open_debt(s, ids["c1"]) == owed.earnings_owed_ucr
    return ids


def test_incremental_rollups_equal_a_rebuild_from_scratch(db: Db) -> None:
    ids = mixed_scenario(db)
    with db.tx() as s:
        assert rollups.verify_rollups(s) == []
        before = snapshot(s)
    assert all(before.values())
    # self-usage earns its user nothing: c1 never appears as a creator of their own use,
    # and the platform model earns nobody
    creators = {(r[1], r[2]) for r in before[creator_day_table.name]}
    assert (ids["c1"], ids["m1"]) in creators and (ids["investor"], ids["m2"]) in creators
    assert all(model != ids["platform"] for _, model in creators)
    assert len({r[0] for r in before[model_day_table.name]}) == 5  # five UTC days
    progress: list[tuple[int, int]] = []
    with db.tx() as s:
        report = rollups.rebuild(s, chunk_usage_ids=7, on_progress=lambda *p: progress.append(p))
    assert progress[0][0] == 0 and progress[-1][0] == progress[-1][1] > 0
    assert report.refunds == 6
    assert (report.model_days, report.user_days, report.creator_days) == tuple(
        len(before[t.name]) for t in TABLES
    )
    with db.tx() as s:
        assert snapshot(s) == before
        assert rollups.verify_rollups(s) == []


def test_rebuild_restores_a_damaged_rollup_and_check_reports_it(db: Db) -> None:
    mixed_scenario(db)
    with db.tx() as s:
        good = snapshot(s)
        first_model = good[model_day_table.name][0]
        first_creator = good[creator_day_table.name][0]
        conn = s.connection()
        conn.execute(
            update(model_day_table)
            .where(
                model_day_table.c.day == first_model[0],
                model_day_table.c.model_id == first_model[1],
            )
            .values(uses=model_day_table.c.uses + 1)
        )
        conn.execute(
            creator_day_table.delete().where(
                creator_day_table.c.day == first_creator[0],
                creator_day_table.c.user_id == first_creator[1],
                creator_day_table.c.model_id == first_creator[2],
            )
        )
        conn.execute(
            user_day_table.insert().values(
                day=first_model[0],
                user_id=999_999,
                model_id=first_model[1],
                usage_type="chat",
                uses=1,
                tokens=0,
                spend_ucr=5,
                refunded_ucr=0,
            )
        )
    with db.tx() as s:
        found = rollups.verify_rollups(s)
    by_table = {d.table: d for d in found}
    assert len(found) == 3, found
    damaged = by_table[model_day_table.name]
    assert damaged.stored is not None and damaged.expected is not None
    assert damaged.stored["uses"] == damaged.expected["uses"] + 1
    assert by_table[creator_day_table.name].stored is None
    assert by_table[creator_day_table.name].expected == dict(
        zip(("uses", "tokens", "earnings_ucr", "reversed_ucr"), first_creator[3:], strict=True)
    )
    assert by_table[user_day_table.name].expected is None
    assert by_table[user_day_table.name].key["user_id"] == 999_999

    runner = CliRunner()
    checked = runner.invoke(app, ["rollups", "rebuild", "--check", "--db", db.url])
    assert checked.exit_code == 1, checked.output
    assert "3 rollup rows differ" in checked.stderr
    with db.tx() as s:
        assert snapshot(s) != good  # --check wrote nothing
    rebuilt = runner.invoke(app, ["rollups", "rebuild", "--db", db.url])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rollups rebuilt" in rebuilt.stdout
    with db.tx() as s:
        assert snapshot(s) == good
    checked = runner.invoke(app, ["rollups", "rebuild", "--check", "--db", db.url])
    assert checked.exit_code == 0, checked.output
    assert "rollups ok" in checked.stdout


def test_rebuild_of_an_empty_database(db: Db) -> None:
    with db.tx() as s:
        report = rollups.rebuild(s)
        assert rollups.verify_rollups(s) == []
    assert report == rollups.RebuildReport(0, 0, 0, 0, 0)


_refund = st.tuples(
    st.integers(0, 10_000),  # which charged event
    st.one_of(st.none(), st.integers(1, 5_000)),  # None: all that is left
    st.integers(0, 3),  # days after the charge's day
    st.booleans(),  # cash the creators out first (the reversal may become a debt)
)
_batch = st.tuples(
    st.integers(0, 6),  # days ago
    st.integers(0, 23),  # hour
    st.lists(
        st.tuples(
            st.integers(0, 3),  # payer (3: the creator, paying for own model or not)
            st.integers(0, 2),  # model: creator's, split, platform
            st.sampled_from(TYPES),
            st.integers(0, 50),  # size
        ),
        min_size=1,
        max_size=12,
    ),
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=st.lists(_batch, min_size=1, max_size=4), refund_plan=st.lists(_refund, max_size=6))
def test_property_incremental_equals_rebuilt(
    db: Db,
    batches: list[tuple[int, int, list[tuple[int, int, str, int]]]],
    refund_plan: list[tuple[int, int | None, int, bool]],
) -> None:
    today = _today()
    with db.tx() as s:
        creator = factories.user(s, _name("creator"), credits_ucr=20 * CREDIT)
        partner = factories.user(s, _name("partner"))
        payers = [factories.user(s, _name("payer"), credits_ucr=20 * CREDIT) for _ in range(3)]
        since = today - timedelta(days=10)
        rule = EarningsRule(per_use_ucr=500, per_token_ucr=Decimal("0.25"), share_bps=1_500)
        own = priced_model(s, creator=creator, since=since, rule=rule)
        split = priced_model(s, creator=creator, since=since)
        earnings.set_beneficiaries(s, split, [(creator, 7_001), (partner, 2_999)])
        platform = priced_model(s, creator=None, since=since)
    who = [*payers, creator]
    model_ids = [own, split, platform]
    charged: list[tuple[int, datetime]] = []
    for days_ago, hour, events in batches:
        now = today.replace(hour=hour) - timedelta(days=days_ago)
        batch = [event(who[p], model_ids[m], usage_type, size) for p, m, usage_type, size in events]
        with db.tx() as s:
            results = metering.charge_batch(s, batch, now=now)
        charged.extend((r.usage_id, now) for r in results if r.usage_id and r.charge_ucr > 0)
    assert charged  # every event is priced > 0 and every wallet can pay for a few
    for pick, amount, later, pay_out_first in refund_plan:
        if not charged:
            break
        usage_id, charged_at = charged[pick % len(charged)]
        with db.tx() as s:
            left = metering.get_usage(s, usage_id).charge_ucr - usage_refunds.refunded_so_far(
                s, usage_id
            )
            if left <= 0:
                continue
            if pay_out_first:
                for user_id in (creator, partner):
                    cash_out(s, user_id, now=charged_at)
            usage_refunds.refund_usage(
                s,
                usage_id,
                amount_ucr=None if amount is None else min(amount, left),
                now=min(charged_at + timedelta(days=later), today),
            )
    with db.tx() as s:
        assert rollups.verify_rollups(s) == []
        before = snapshot(s)
    with db.tx() as s:
        rollups.rebuild(s, chunk_usage_ids=13)
    with db.tx() as s:
        assert snapshot(s) == before
