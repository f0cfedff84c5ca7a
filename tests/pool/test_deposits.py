"""Deposits, consumption, clawback and debts of the resource pool (DESIGN §9), on SQLite and
PostgreSQL, to the µcr."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text, update

from modelbank import jobs
from modelbank.ledger.codes import AccountCode
from modelbank.metering import service as metering
from modelbank.metering.events import UsageEvent
from modelbank.money import round_half_even
from modelbank.platform import service as platform_settings
from modelbank.pool import invariants
from modelbank.pool import service as pool
from modelbank.pool.errors import (
    InvalidResource,
    PoolSettingsInvalid,
    ResourceKeyExists,
    ResourceState,
)
from modelbank.pool.models import resources_table
from modelbank.pool.resources import consumed_share, deposit_split, unconsumed_credit
from modelbank.wallets import grants
from modelbank.wallets import service as wallets
from tests import factories
from tests.conftest import Db
from tests.pool.helpers import BOX, KEY, debts, deposit, open_debt_total, platform, wallet


@pytest.fixture
def world(db: Db) -> tuple[int, int]:
    """(depositor id, model id)."""
    with db.tx() as s:
        return factories.user(s, "dora"), factories.model(s, "gpt-4o")


def _pool_violations(db: Db) -> list[object]:
    with db.tx() as s:
        return list(invariants.check(s))


def test_activation_credits_90_percent_of_the_pool_part_and_10_percent_fee(
    db: Db, world: tuple[int, int]
) -> None:
    dora, model = world
    with db.tx() as s:
        pending = deposit(s, dora, model, market_quota_uusd=2_000_000, activate=False)
        assert pending.status == "pending" and pending.deposit_credit_ucr == 0
        assert wallet(s, dora).balance == 0
    with db.tx() as s:
        info = pool.activate(s, pending.id)
    # pool part $8 (the $2 market part is never credited) = 800 credits at 100 cr/USD
    assert info.status == "active" and info.pool_quota_uusd == 8_000_000
    assert (info.deposit_credit_ucr, info.fee_ucr) == (720_000_000, 80_000_000)
    with db.tx() as s:
        assert wallet(s, dora).balance == 720_000_000
        assert platform(s, AccountCode.PLATFORM_FEES) == 80_000_000
        assert platform(s, AccountCode.POOL_DEPOSITS) == -800_000_000
        (grant,) = grants.list_grants(s, dora)
        assert (grant.source, grant.amount_ucr) == ("deposit", 720_000_000)
        again = pool.activate(s, info.id)  # a retried activation changes nothing
        assert again == info and wallet(s, dora).balance == 720_000_000
    assert _pool_violations(db) == []


def test_rates_are_platform_settings_and_checked(db: Db, world: tuple[int, int]) -> None:
    dora, model = world
    with db.tx() as s:
        platform_settings.put(s, "pool.deposit_credit_bps", 8_500)
        platform_settings.put(s, "pool.fee_bps", 500)
        info = deposit(s, dora, model, quota_uusd=1_000_000)
    assert (info.deposit_credit_ucr, info.fee_ucr) == (85_000_000, 5_000_000)
    with db.tx() as s:
        platform_settings.put(s, "pool.fee_bps", 2_000)
        with pytest.raises(PoolSettingsInvalid):
            deposit(s, dora, model, api_key="sk-other-key-00000001")


def test_platform_resource_gets_no_credit(db: Db, world: tuple[int, int]) -> None:
    _, model = world
    with db.tx() as s:
        info = deposit(s, None, model)
        assert info.owner_id is None and info.status == "active"
        assert (info.deposit_credit_ucr, info.fee_ucr) == (0, 0)
        assert platform(s, AccountCode.POOL_DEPOSITS) == 0
        assert platform(s, AccountCode.PLATFORM_FEES) == 0


def test_fractional_exchange_rate_rounds_once_half_even(db: Db, world: tuple[int, int]) -> None:
    dora, model = world
    with db.tx() as s:
        info = deposit(s, dora, model, quota_uusd=7, credits_per_usd=Decimal("133.3333"))
    # value 933.3331 µcr: 90 % = 839.99979 → 840, 10 % = 93.33331 → 93
    assert (info.deposit_credit_ucr, info.fee_ucr) == (840, 93)


@given(
    pool_uusd=st.integers(0, 10**15),
    rate=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(10_000), places=4),
    credit_bps=st.integers(0, 10_000),
    fee_bps=st.integers(0, 10_000),
)
def test_deposit_split_is_the_exact_value_rounded_once(
    pool_uusd: int, rate: Decimal, credit_bps: int, fee_bps: int
) -> None:
    if credit_bps + fee_bps > 10_000:
        with pytest.raises(PoolSettingsInvalid):
            deposit_split(pool_uusd, rate, credit_bps, fee_bps)
        return
    credit, fee = deposit_split(pool_uusd, rate, credit_bps, fee_bps)
    value = Decimal(pool_uusd) * rate
    assert credit == round_half_even(value * credit_bps / 10_000)
    assert fee == round_half_even(value * fee_bps / 10_000)
    assert abs(credit + fee - value * (credit_bps + fee_bps) / 10_000) <= 1


@given(
    deposit=st.integers(0, 10**17),
    pool_uusd=st.integers(0, 10**15),
    consumed=st.integers(0, 2 * 10**15),
)
def test_clawback_and_consumed_share_partition_the_deposit(
    deposit: int, pool_uusd: int, consumed: int
) -> None:
    back = unconsumed_credit(deposit, pool_uusd, consumed)
    assert 0 <= back <= deposit
    assert back + consumed_share(deposit, pool_uusd, consumed) == deposit
    if pool_uusd and consumed >= pool_uusd:
        assert back == 0
    if pool_uusd and deposit and consumed == 0:
        assert back == deposit
    if pool_uusd and consumed < pool_uusd:
        exact = Decimal(deposit) * (pool_uusd - consumed) / pool_uusd
        assert abs(back - exact) <= Decimal("0.5")


def test_one_live_resource_per_key(db: Db, world: tuple[int, int]) -> None:
    dora, model = world
    with db.tx() as s:
        other = factories.user(s, "otto")
        first = deposit(s, dora, model)
    with db.tx() as s, pytest.raises(ResourceKeyExists) as refused:
        deposit(s, other, model, api_key=f"  {KEY} ")  # the same key, padded
    assert "resource_id" not in refused.value.context  # not otto's to know
    with db.tx() as s, pytest.raises(ResourceKeyExists) as mine:
        deposit(s, dora, model)
    assert mine.value.context == {"resource_id": first.id}
    with db.tx() as s:
        pool.withdraw(s, first.id)
        again = deposit(s, other, model)  # withdrawn: the key is free again
    assert again.id != first.id and again.key_fingerprint == first.key_fingerprint


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("base_url", "ftp://example.com"),
        ("base_url", "https://user:pw@example.com/v1"),
        ("base_url", "https://example.com/v1?key=x"),
        ("base_url", "https:///v1"),
        ("api_key", "x" * 501),
        ("api_key", "sk-has space"),
        ("quota_uusd", 0),
        ("market_quota_uusd", 10_000_001),
        ("models", []),
        ("models", [("no-such-model", "x")]),
    ],
)
def test_bad_deposits_are_refused_and_write_nothing(
    db: Db, world: tuple[int, int], field: str, value: object
) -> None:
    dora, model = world
    spec: dict[str, object] = {
        "provider": "openai",
        "base_url": "https://api.example.com/v1",
        "api_key": KEY,
        "models": [(model, "gpt-4o")],
        "quota_uusd": 10_000_000,
        "market_quota_uusd": 0,
    }
    spec[field] = value
    with db.tx() as s, pytest.raises(InvalidResource) as refused:
        pool.register(s, dora, box=BOX, **spec)  # type: ignore[arg-type]
    assert KEY not in str(refused.value) and KEY not in str(refused.value.context)
    with db.tx() as s:
        assert pool.list_resources(s, None) == []


def test_failed_pending_resource_gets_nothing(db: Db, world: tuple[int, int]) -> None:
    dora, model = world
    with db.tx() as s:
        info = deposit(s, dora, model, activate=False)
        failed = pool.fail(s, info.id, "probe: the provider refused the key (HTTP 401)")
        assert failed.status == "failed" and failed.deposit_credit_ucr == 0
        assert failed.status_reason == "probe: the provider refused the key (HTTP 401)"
        assert wallet(s, dora).balance == 0
        with pytest.raises(ResourceState):
            pool.activate(s, info.id)
        with pytest.raises(ResourceState):
            pool.withdraw(s, info.id)
        assert pool.fail(s, info.id, "again") == failed


def test_consumption_depletes_at_the_pool_part(db: Db, world: tuple[int, int]) -> None:
    dora, model = world
    with db.tx() as s:
        info = deposit(s, dora, model, quota_uusd=12_000_000, market_quota_uusd=2_000_000)
        pool.book_consumption(s, info.id, 9_999_999)
        assert pool.get_resource(s, info.id).status == "active"
        pool.book_consumption(s, info.id, 0)
        pool.book_consumption(s, info.id, 1)
        assert pool.get_resource(s, info.id).status == "depleted"
        pool.book_consumption(s, info.id, 5)  # a request in flight overran: recorded
        done = pool.get_resource(s, info.id)
        assert (done.status, done.consumed_uusd) == ("depleted", 10_000_005)
        with pytest.raises(Exception, match="non-negative"):
            pool.book_consumption(s, info.id, -1)
        ended = pool.withdraw(s, info.id)
        assert ended.clawed_back_ucr == 0  # all of the pool part was used
        pool.book_consumption(s, info.id, 7)  # after the end: accounting closed
        assert pool.get_resource(s, info.id).consumed_uusd == 10_000_005
        assert wallet(s, dora).balance == 900_000_000
    assert _pool_violations(db) == []


def test_withdrawal_claws_back_the_unconsumed_credit_from_the_deposit_grant_first(
    db: Db, world: tuple[int, int]
) -> None:
    dora, model = world
    with db.tx() as s:
        wallets.grant(s, dora, 500_000_000, source=grants.GrantSource.BONUS, idempotency_key="b")
        info = deposit(s, dora, model)  # 900 credits
        # spend 300 credits: the bonus grant burns first (priority 10 < deposit 30)
        charged = metering.charge(
            s,
            UsageEvent(
                idempotency_key="spend",
                user_id=dora,
                model=model,
                input_tokens=1,
                charge_ucr=300_000_000,
            ),
        )
        assert charged.status == "charged", charged
        pool.book_consumption(s, info.id, 2_500_000)  # a quarter of the pool part
    with db.tx() as s:
        ended = pool.withdraw(s, info.id)
    # 900 credits × 7.5/10 unconsumed = 675 credits, all from the deposit grant
    assert (ended.status, ended.clawed_back_ucr) == ("withdrawn", 675_000_000)
    with db.tx() as s:
        assert wallet(s, dora).balance == 1_400_000_000 - 300_000_000 - 675_000_000
        left = {g.source: g.remaining_ucr for g in grants.list_grants(s, dora)}
        assert left == {"bonus": 200_000_000, "deposit": 225_000_000}
        assert debts(s, dora) == []
        assert platform(s, AccountCode.POOL_DEPOSITS) == -1_000_000_000 + 675_000_000
        assert platform(s, AccountCode.PLATFORM_FEES) == 100_000_000  # the fee stays
        assert pool.withdraw(s, info.id) == ended  # withdrawing again changes nothing
    assert _pool_violations(db) == []


def test_clawback_past_the_wallet_leaves_a_debt_that_the_job_collects(
    db: Db, world: tuple[int, int]
) -> None:
    dora, model = world
    with db.tx() as s:
        info = deposit(s, dora, model)  # 900 credits
        metering.charge(
            s,
            UsageEvent(
                idempotency_key="spend",
                user_id=dora,
                model=model,
                input_tokens=1,
                charge_ucr=800_000_000,
            ),
        )
        pool.book_consumption(s, info.id, 1_000_000)  # 10 % used
    with db.tx() as s:
        ended = pool.fail(s, info.id, "auth errors past the breaker")
    # unconsumed 810 credits: 100 from the wallet, 710 owed
    assert (ended.status, ended.clawed_back_ucr) == ("failed", 810_000_000)
    with db.tx() as s:
        assert wallet(s, dora).balance == 0
        (debt,) = debts(s, dora)
        assert (debt.amount_ucr, debt.remaining_ucr, debt.resource_id) == (
            710_000_000,
            710_000_000,
            info.id,
        )
        assert pool.open_debt(s, dora) == 710_000_000
    assert _pool_violations(db) == []
    # nothing to collect yet: the job leaves the debt
    report = jobs.run_once(db.factory, box=BOX, deliver=False)
    assert report.pool_debts_collected_ucr == 0
    with db.tx() as s:
        wallets.grant(s, dora, 500_000_000, idempotency_key="later")
    report = jobs.run_once(db.factory, box=BOX, deliver=False)
    assert report.pool_debts_collected_ucr == 500_000_000
    with db.tx() as s:
        wallets.grant(s, dora, 1_000_000_000, idempotency_key="later-2")
    assert jobs.run_once(db.factory, box=BOX, deliver=False).pool_debts_collected_ucr == 210_000_000
    assert jobs.run_once(db.factory, box=BOX, deliver=False).pool_debts_collected_ucr == 0
    with db.tx() as s:
        assert wallet(s, dora).balance == 790_000_000
        assert open_debt_total(s) == 0
        assert pool.get_resource(s, info.id).clawed_back_ucr == 810_000_000
        # what pool_deposits paid out (1,000 credits) less what came back (810)
        assert platform(s, AccountCode.POOL_DEPOSITS) == -190_000_000
    assert _pool_violations(db) == []


def test_verify_detects_tampered_columns(db: Db, world: tuple[int, int]) -> None:
    dora, model = world
    with db.tx() as s:
        info = deposit(s, dora, model)
        pool.book_consumption(s, info.id, 5_000_000)
        pool.withdraw(s, info.id)
    assert _pool_violations(db) == []
    column = resources_table.c
    tampers = [
        ({"deposit_credit_ucr": column.deposit_credit_ucr + 1}, "pool_deposit_ledger"),
        ({"fee_ucr": column.fee_ucr - 1}, "pool_deposit_ledger"),
        ({"clawed_back_ucr": column.clawed_back_ucr - 1}, "pool_clawback_ledger"),
        ({"consumed_uusd": column.consumed_uusd + 1_000_000}, "pool_deposit_identity"),
    ]
    for change, name in tampers:
        with db.tx() as s:
            before = s.execute(select(resources_table).where(column.id == info.id)).one()
            s.execute(update(resources_table).where(column.id == info.id).values(change))
        found = {v.name for v in _pool_violations(db)}  # type: ignore[attr-defined]
        assert name in found, (change, found)
        with db.tx() as s:
            restore = {k: getattr(before, k) for k in change}
            s.execute(update(resources_table).where(column.id == info.id).values(restore))
    assert _pool_violations(db) == []


def test_the_key_is_never_stored_in_clear(db: Db, world: tuple[int, int]) -> None:
    dora, model = world
    with db.tx() as s:
        info = deposit(s, dora, model)
        pool.book_consumption(s, info.id, 1)
        pool.withdraw(s, info.id)
    from modelbank.db.models import metadata

    with db.tx() as s:
        for table in metadata.sorted_tables:
            for row in s.execute(select(table)):
                dumped = repr(tuple(row))
                assert KEY not in dumped, table.name
                assert KEY[3:] not in dumped, table.name
        token, key_id = pool.sealed_key(s, info.id)
    assert key_id == BOX.key_id() and BOX.decrypt(token) == KEY
    assert info.key_mask == "sk-…7f3a"


def test_withdrawing_a_pending_resource_frees_the_key(db: Db, world: tuple[int, int]) -> None:
    dora, model = world
    with db.tx() as s:
        info = deposit(s, dora, model, activate=False)
        ended = pool.withdraw(s, info.id, now=datetime.now(UTC) + timedelta(seconds=1))
        assert ended.status == "withdrawn" and ended.clawed_back_ucr == 0
        assert s.execute(text("select count(*) from transfers")).scalar() == 0


def test_racing_deposits_past_the_check_are_refused_by_the_index(
    db: Db, world: tuple[int, int]
) -> None:
    """Two transactions both pass the pre-check: on PostgreSQL the second insert waits on
    the partial unique index and, once the first commits, raises the typed
    :class:`ResourceKeyExists` (not an integrity error). SQLite serialises writers, so the
    second is refused by the check itself."""
    dora, model = world
    with db.tx() as s:
        otto = factories.user(s, "otto")
    if db.backend != "postgres":
        with db.tx() as s:
            deposit(s, dora, model, activate=False)
        with pytest.raises(ResourceKeyExists), db.tx() as s:
            deposit(s, otto, model, activate=False)
        return
    first_inserted, outcome = threading.Event(), []

    def second() -> None:
        first_inserted.wait(5)
        try:
            with db.tx() as s:
                deposit(s, otto, model, activate=False)
            outcome.append("created")
        except ResourceKeyExists as exc:
            outcome.append(exc.code)

    thread = threading.Thread(target=second)
    with db.tx() as s:
        deposit(s, dora, model, activate=False)
        thread.start()
        first_inserted.set()
        thread.join(0.5)  # blocked on the index until this commits
        assert thread.is_alive()
    thread.join(10)
    assert outcome == ["resource_key_exists"]


@pytest.mark.parametrize(
    "base_url",
    [
        "http://localhost:8000/v1",
        "http://api.localhost/v1",
        "http://127.0.0.1:11434/v1",
        "http://10.0.0.7/v1",
        "http://192.168.1.2/v1",
        "http://169.254.169.254/latest",
        "http://[::1]:8000/v1",
        "http://0.0.0.0/v1",
    ],
)
def test_a_users_deposit_must_name_a_public_host(db: Db, base_url: str) -> None:
    """Server-side request forgery: a user's key must not make the gateway call into the
    operator's network; platform resources and an operator's opt-in may."""
    box = BOX
    with db.tx() as session:
        user_id = factories.user(session, "mallory")
        model = factories.model(session, "ssrf-model")
    with db.tx() as session, pytest.raises(InvalidResource, match="public host"):
        pool.register(
            session,
            user_id,
            provider="x",
            base_url=base_url,
            api_key="sk-ssrf-0123456789",
            models=[(model, "up")],
            quota_uusd=1_000_000,
            box=box,
        )
    with db.tx() as session:
        allowed = pool.register(
            session,
            user_id,
            provider="x",
            base_url=base_url,
            api_key="sk-ssrf-0123456789",
            models=[(model, "up")],
            quota_uusd=1_000_000,
            box=box,
            private_hosts=True,
        )
        platform = pool.register(
            session,
            None,
            provider="x",
            base_url=base_url,
            api_key="sk-ssrf-platform-0123456789",
            models=[(model, "up")],
            quota_uusd=1_000_000,
            box=box,
        )
    assert allowed.status == platform.status == "pending"
