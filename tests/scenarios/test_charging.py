"""End-to-end charging stories (DESIGN §6–§7) on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from modelbank.earnings import service as earnings
from modelbank.earnings.rules import EarningsRule
from modelbank.errors import IdempotencyConflict
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.ledger.errors import InsufficientFunds
from modelbank.metering import service as metering
from modelbank.metering.service import UsageEvent
from modelbank.pricing.formulas import Rates
from modelbank.wallets import service as wallets
from tests import factories
from tests.conftest import Db

CREDIT = 1_000_000


def _event(key: str, user_id: int, model: int | str, **kw: object) -> UsageEvent:
    return UsageEvent(idempotency_key=key, user_id=user_id, model=model, **kw)  # type: ignore[arg-type]


def test_charge_prices_debits_and_pays_creator(db: Db) -> None:
    with db.tx() as s:
        creator = factories.user(s, "creator")
        alice = factories.user(s, "alice", credits_ucr=100 * CREDIT)
        model = factories.model(s, "anime-chat", creator_id=creator)
    with db.tx() as s:
        result = metering.charge(
            s, _event("e1", alice, "anime-chat", input_tokens=1_000, output_tokens=500)
        )
    # price = cost × 1.5 (MEDIUM) × 1.00 (medium demand) × 100 µcr/µUSD
    # input: 1000 × 2.5e6 × 150 / 1e6 = 375,000 µcr; output: 500 × 10e6 × 150 / 1e6 = 750,000
    assert result.status == "charged"
    assert result.charge_ucr == 1_125_000
    assert result.cost_uusd == 2_500 + 5_000
    # default rule: 20% share × chat 0.8 × popularity 1.0 = 0.16 × 1,125,000
    assert result.earnings == ((creator, 180_000),)
    assert result.balance_ucr == 100 * CREDIT - 1_125_000
    with db.tx() as s:
        assert wallets.balance(s, alice).balance_ucr == 100 * CREDIT - 1_125_000
        creator_acc = ledger.user_account_ids(s, [creator], AccountCode.USER_EARNINGS)[creator]
        assert ledger.get_balance(s, creator_acc).balance == 180_000
        revenue = ledger.get_balance(s, ledger.platform_account(s, AccountCode.PLATFORM_REVENUE))
        assert revenue.balance == 1_125_000 - 180_000
        stats = earnings.model_stats(s, [model])[0]
        assert (stats.use_count, stats.tokens, stats.revenue_ucr, stats.earnings_ucr) == (
            1,
            1_500,
            1_125_000,
            180_000,
        )


def test_self_usage_earns_nothing(db: Db) -> None:
    with db.tx() as s:
        creator = factories.user(s, "creator", credits_ucr=10 * CREDIT)
        factories.model(s, "mine", creator_id=creator)
    with db.tx() as s:
        result = metering.charge(s, _event("self", creator, "mine", input_tokens=10_000))
    assert result.charge_ucr == 3_750_000
    assert result.earnings == ()
    with db.tx() as s:
        account = ledger.user_account_ids(s, [creator], AccountCode.USER_EARNINGS)[creator]
        assert ledger.get_balance(s, account).balance == 0
        revenue = ledger.platform_account(s, AccountCode.PLATFORM_REVENUE)
        assert ledger.get_balance(s, revenue).balance == 3_750_000


def test_popularity_switches_at_the_100th_prior_use(db: Db) -> None:
    rule = EarningsRule(per_use_ucr=1_000, share_bps=0, type_multipliers={"chat": Decimal(1)})
    with db.tx() as s:
        creator = factories.user(s, "creator")
        bob = factories.user(s, "bob", credits_ucr=1_000 * CREDIT)
        factories.model(s, "popular", creator_id=creator, rule=rule)
    events = [_event(f"p{i}", bob, "popular", input_tokens=10) for i in range(101)]
    with db.tx() as s:
        results = metering.charge_batch(s, events[:99])
    with db.tx() as s:
        results += metering.charge_batch(s, events[99:])
    amounts = [r.earnings_ucr for r in results]
    assert amounts[:100] == [1_000] * 100  # prior uses 0…99 → 1.0
    assert amounts[100] == 1_200  # 100 prior uses → 1.2


def test_insufficient_balance_writes_nothing(db: Db) -> None:
    with db.tx() as s:
        creator = factories.user(s, "creator")
        carol = factories.user(s, "carol", credits_ucr=1_000_000)
        factories.model(s, "m", creator_id=creator)
    with pytest.raises(InsufficientFunds) as info, db.tx() as s:
        metering.charge(s, _event("big", carol, "m", input_tokens=10_000))
    assert info.value.context["needed_ucr"] == 3_750_000
    assert info.value.context["available_ucr"] == 1_000_000
    with db.tx() as s:
        assert wallets.balance(s, carol).balance_ucr == 1_000_000
        assert earnings.model_stats(s) == [] or earnings.model_stats(s)[0].use_count == 0
        # the key is free: a smaller event with it later is charged
        ok = metering.charge(s, _event("big", carol, "m", input_tokens=1_000))
    assert ok.status == "charged" and ok.charge_ucr == 375_000


def test_replayed_key_returns_first_result_and_changes_nothing(db: Db) -> None:
    with db.tx() as s:
        creator = factories.user(s, "creator")
        dave = factories.user(s, "dave", credits_ucr=10 * CREDIT)
        factories.model(s, "m", creator_id=creator)
    event = _event("same", dave, "m", input_tokens=2_000, output_tokens=10)
    with db.tx() as s:
        first = metering.charge(s, event)
    with db.tx() as s:
        again = metering.charge(s, event)
        balance = wallets.balance(s, dave).balance_ucr
    assert again.status == "replayed"
    assert (again.usage_id, again.charge_ucr, again.earnings, again.balance_ucr) == (
        first.usage_id,
        first.charge_ucr,
        first.earnings,
        first.balance_ucr,
    )
    assert balance == 10 * CREDIT - first.charge_ucr
    with pytest.raises(IdempotencyConflict), db.tx() as s:
        metering.charge(s, _event("same", dave, "m", input_tokens=2_001, output_tokens=10))
    with db.tx() as s:
        assert wallets.balance(s, dave).balance_ucr == balance


def test_batch_reports_each_event(db: Db) -> None:
    with db.tx() as s:
        erin = factories.user(s, "erin", credits_ucr=1 * CREDIT)
        factories.model(s, "m", explicit=Rates(per_request=Decimal(400_000)))
    events = [
        _event("a", erin, "m"),
        _event("b", erin, "nope"),
        _event("c", erin, "m"),
        _event("a", erin, "m"),
        _event("d", erin, "m"),  # 3 × 0.4 credit > 1 credit: runs dry
        _event("e", erin, "m", input_tokens=-1),
    ]
    with db.tx() as s:
        results = metering.charge_batch(s, events)
    assert [(r.status, r.error_code) for r in results] == [
        ("charged", None),
        ("rejected", "model_not_found"),
        ("charged", None),
        ("replayed", None),
        ("rejected", "insufficient_funds"),
        ("rejected", "invalid_usage"),
    ]
    assert results[3].usage_id == results[0].usage_id
    with db.tx() as s:
        assert wallets.balance(s, erin).balance_ucr == 200_000
