"""Per-key spend limits (issue 13, :mod:`modelbank.auth.limits`): charges and holds made with
a limited key count against it in the charge's own transaction, the period rolls over at
UTC calendar boundaries, and concurrent charges never pass the limit (PostgreSQL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from modelbank.auth import limits
from modelbank.auth import service as auth
from modelbank.auth.errors import KeyLimitReached
from modelbank.auth.models import api_keys_table as keys
from modelbank.ledger.errors import InsufficientFunds
from modelbank.metering import service as metering
from modelbank.metering.capture import capture
from modelbank.metering.group import GroupCommitter
from modelbank.wallets import holds
from modelbank.wallets import service as wallets
from tests import factories
from tests.conftest import Db

CREDIT = 1_000_000
CHARGE = 375_000  # 1,000 input tokens of the gpt-4o-priced model (tests/metering)
MONDAY = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def _setup(
    db: Db, *, limit_ucr: int, period: str = "never", credits_ucr: int = 100 * CREDIT
) -> tuple[int, int]:
    with db.tx() as s:
        user = factories.user(s, "alice", credits_ucr=credits_ucr)
        factories.model(s, "m")
        key = auth.create_key(
            s, auth.Role.USER, user_id=user, limit_ucr=limit_ucr, limit_period=period
        )
    return user, key.id


def _event(key: str, user: int, key_id: int | None, **kw: object) -> metering.UsageEvent:
    return metering.UsageEvent(
        idempotency_key=key, user_id=user, model="m", input_tokens=1_000, limited_key_id=key_id
    )


def _usage(db: Db, user: int, now: datetime) -> limits.KeyUsage:
    with db.tx() as s:
        (info,) = auth.list_user_keys(s, user, now=now)
    assert info.usage is not None
    return info.usage


def _balance(db: Db, user: int) -> int:
    with db.tx() as s:
        return wallets.balance(s, user).balance_ucr


# -- periods ----------------------------------------------------------------------------------


@settings(max_examples=50)
@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from(["day", "week", "month"]),
)
def test_period_contains_now_and_starts_on_a_boundary(now: datetime, period: str) -> None:
    start = limits.period_start(period, now)
    reset = limits.next_reset(period, now)
    assert reset is not None
    assert start <= now < reset
    assert (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0)
    assert limits.period_start(period, reset) == reset  # the next period starts at the reset
    if period == "week":
        assert start.weekday() == 0 and reset - start == timedelta(days=7)
    if period == "month":
        assert start.day == 1 and reset.day == 1
    if period == "day":
        assert reset - start == timedelta(days=1)


def test_never_has_no_reset() -> None:
    assert limits.next_reset("never", MONDAY) is None
    assert limits.period_start("never", MONDAY) == limits.NEVER_START


# -- charges ----------------------------------------------------------------------------------


def test_charges_count_until_the_limit_then_are_refused_writing_nothing(db: Db) -> None:
    user, key_id = _setup(db, limit_ucr=2 * CHARGE + 1)
    for k in range(2):
        with db.tx() as s:
            assert metering.charge(s, _event(f"e{k}", user, key_id)).charge_ucr == CHARGE
    with pytest.raises(KeyLimitReached) as refused, db.tx() as s:
        metering.charge(s, _event("e2", user, key_id))
    assert refused.value.context["left_ucr"] == 1
    assert refused.value.context["needed_ucr"] == CHARGE
    assert _balance(db, user) == 100 * CREDIT - 2 * CHARGE
    state = _usage(db, user, MONDAY)
    assert (state.spent_ucr, state.reserved_ucr, state.left_ucr) == (2 * CHARGE, 0, 1)
    # The same user's other keys (and calls without a key limit) are not limited.
    with db.tx() as s:
        assert metering.charge(s, _event("free", user, None)).status == "charged"
    # A replay of a charged event counts nothing again.
    with db.tx() as s:
        assert metering.charge(s, _event("e1", user, key_id)).status == "replayed"
    assert _usage(db, user, MONDAY).spent_ucr == 2 * CHARGE


def test_batch_rejects_only_the_events_past_the_limit(db: Db) -> None:
    user, key_id = _setup(db, limit_ucr=3 * CHARGE)
    with db.tx() as s:
        results = metering.charge_batch(s, [_event(f"b{k}", user, key_id) for k in range(5)])
    assert [r.status for r in results] == ["charged"] * 3 + ["rejected"] * 2
    assert {r.error_code for r in results[3:]} == {"key_limit_reached"}
    assert _balance(db, user) == 100 * CREDIT - 3 * CHARGE
    assert _usage(db, user, MONDAY).left_ucr == 0


def test_insufficient_funds_is_checked_before_the_key_and_counts_nothing(db: Db) -> None:
    user, key_id = _setup(db, limit_ucr=10 * CHARGE, credits_ucr=CHARGE // 2)
    with pytest.raises(InsufficientFunds), db.tx() as s:
        metering.charge(s, _event("poor", user, key_id))
    assert _usage(db, user, MONDAY).spent_ucr == 0


def test_the_period_resets_at_the_utc_boundary(db: Db) -> None:
    user, key_id = _setup(db, limit_ucr=CHARGE, period="day")
    sunday_late = MONDAY - timedelta(hours=10, seconds=1)  # Sunday 23:59:59
    with db.tx() as s:
        metering.charge(s, _event("sun", user, key_id), now=sunday_late)
    with pytest.raises(KeyLimitReached) as refused, db.tx() as s:
        metering.charge(s, _event("sun2", user, key_id), now=sunday_late)
    assert refused.value.context["resets_at"] == "2026-12-07T00:00:00+00:00"
    state = _usage(db, user, sunday_late)
    assert (state.spent_ucr, state.left_ucr) == (CHARGE, 0)
    assert state.resets_at == datetime(2026, 12, 7, tzinfo=UTC)
    # Monday: a new day, the counter starts from zero (decided by the UPDATE itself).
    assert _usage(db, user, MONDAY).spent_ucr == 0
    with db.tx() as s:
        metering.charge(s, _event("mon", user, key_id), now=MONDAY)
    with db.tx() as s:
        row = s.execute(select(keys).where(keys.c.id == key_id)).one()
    assert row.spent_ucr == CHARGE
    assert row.period_start == datetime(2026, 12, 7, tzinfo=UTC)
    assert _balance(db, user) == 100 * CREDIT - 2 * CHARGE


def test_weekly_and_monthly_periods(db: Db) -> None:
    with db.tx() as s:
        user = factories.user(s, "bob", credits_ucr=100 * CREDIT)
        factories.model(s, "m")
        week = auth.create_key(s, "user", user_id=user, limit_ucr=CHARGE, limit_period="week")
        month = auth.create_key(s, "user", user_id=user, limit_ucr=CHARGE, limit_period="month")
    saturday = datetime(2026, 12, 12, 12, tzinfo=UTC)
    next_monday = datetime(2026, 12, 14, 0, 0, 1, tzinfo=UTC)
    january = datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)
    for key, at, ok in [
        (week.id, MONDAY, True),
        (week.id, saturday, False),
        (week.id, next_monday, True),
        (month.id, MONDAY, True),
        (month.id, next_monday, False),
        (month.id, january, True),
    ]:
        try:
            with db.tx() as s:
                metering.charge(s, _event(f"{key}-{at}", user, key), now=at)
            assert ok, (key, at)
        except KeyLimitReached:
            assert not ok, (key, at)


# -- holds ------------------------------------------------------------------------------------


def test_holds_reserve_on_the_key_and_settle_or_release(db: Db) -> None:
    user, key_id = _setup(db, limit_ucr=3 * CHARGE - 1, period="day")
    with db.tx() as s:
        first = holds.place(
            s,
            user,
            2 * CHARGE,
            timeout_s=60,
            idempotency_key="h1",
            model="m",
            limited_key_id=key_id,
            now=MONDAY,
        )
    assert first.api_key_id == key_id
    state = _usage(db, user, MONDAY)
    assert (state.reserved_ucr, state.left_ucr) == (2 * CHARGE, CHARGE - 1)
    with pytest.raises(KeyLimitReached), db.tx() as s:
        holds.place(
            s,
            user,
            2 * CHARGE,
            timeout_s=60,
            idempotency_key="h2",
            model="m",
            limited_key_id=key_id,
            now=MONDAY,
        )
    # A replay of the first placement reserves nothing again.
    with db.tx() as s:
        holds.place(
            s,
            user,
            2 * CHARGE,
            timeout_s=60,
            idempotency_key="h1",
            model="m",
            limited_key_id=key_id,
            now=MONDAY,
        )
    assert _usage(db, user, MONDAY).reserved_ucr == 2 * CHARGE
    # A plain charge cannot use what the hold reserved.
    with pytest.raises(KeyLimitReached), db.tx() as s:
        metering.charge(s, _event("c", user, key_id), now=MONDAY)
    # Capture 300,000 of it: the reservation goes, the charge is spent.
    with db.tx() as s:
        capture(s, first.id, 300_000, now=MONDAY)
    state = _usage(db, user, MONDAY)
    assert (state.spent_ucr, state.reserved_ucr) == (300_000, 0)
    # Void releases; expiry releases.
    with db.tx() as s:
        second = holds.place(
            s, user, CHARGE, timeout_s=60, idempotency_key="h3", limited_key_id=key_id, now=MONDAY
        )
        third = holds.place(
            s, user, CHARGE, timeout_s=1, idempotency_key="h4", limited_key_id=key_id, now=MONDAY
        )
    assert _usage(db, user, MONDAY).reserved_ucr == 2 * CHARGE
    with db.tx() as s:
        holds.void(s, second.id, now=MONDAY)
    assert _usage(db, user, MONDAY).reserved_ucr == CHARGE
    with db.tx() as s:
        assert holds.expire_due(s, now=MONDAY + timedelta(seconds=5)) == 1
    assert third.id
    state = _usage(db, user, MONDAY)
    assert (state.spent_ucr, state.reserved_ucr) == (300_000, 0)
    assert _balance(db, user) == 100 * CREDIT - 300_000


def test_a_capture_after_the_period_rolled_counts_in_the_new_period(db: Db) -> None:
    user, key_id = _setup(db, limit_ucr=CHARGE, period="day")
    sunday = MONDAY - timedelta(hours=11)  # Sunday 23:00
    after_midnight = MONDAY - timedelta(hours=9, minutes=30)
    with db.tx() as s:
        hold = holds.place(
            s,
            user,
            CHARGE,
            timeout_s=7_200,
            idempotency_key="h",
            model="m",
            limited_key_id=key_id,
            now=sunday,
        )
    with db.tx() as s:
        capture(s, hold.id, 100_000, now=after_midnight)
    state = _usage(db, user, after_midnight)
    assert (state.spent_ucr, state.reserved_ucr, state.left_ucr) == (100_000, 0, CHARGE - 100_000)


# -- concurrency ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["transactions", "group_commit"])
def test_sixteen_concurrent_charges_never_pass_the_limit(db: Db, path: str) -> None:
    if db.backend != "postgres":
        pytest.skip("concurrency is PostgreSQL's (SQLite serialises writers)")
    limit = 5 * CHARGE + CHARGE // 2
    user, key_id = _setup(db, limit_ucr=limit, period="day")

    def alone(k: int) -> int:
        try:
            with db.tx() as s:
                return metering.charge(s, _event(f"c{k}", user, key_id)).charge_ucr
        except KeyLimitReached:
            return 0

    if path == "transactions":
        with ThreadPoolExecutor(16) as pool:
            charged = list(pool.map(alone, range(16)))
    else:
        with GroupCommitter(db.factory, max_wait_s=0.002, max_batch=4) as committer:

            def grouped(k: int) -> int:
                try:
                    return committer.submit(_event(f"c{k}", user, key_id)).charge_ucr
                except KeyLimitReached:
                    return 0

            with ThreadPoolExecutor(16) as pool:
                charged = list(pool.map(grouped, range(16)))
    assert sum(charged) == 5 * CHARGE <= limit
    assert charged.count(CHARGE) == 5
    assert _balance(db, user) == 100 * CREDIT - 5 * CHARGE
    with db.tx() as s:
        spent = s.execute(select(keys.c.spent_ucr).where(keys.c.id == key_id)).scalar_one()
    assert spent == 5 * CHARGE


def test_creating_a_limit_validates(db: Db) -> None:
    from modelbank.errors import InvalidInput

    with db.tx() as s:
        user = factories.user(s, "carol")
    for kwargs in [
        {"limit_period": "day"},
        {"limit_ucr": -1},
        {"limit_ucr": 5, "limit_period": "year"},
    ]:
        with pytest.raises(InvalidInput), db.tx() as s:
            auth.create_key(s, "user", user_id=user, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput), db.tx() as s:
        auth.create_key(s, "service", limit_ucr=5)
    with db.tx() as s:
        new = auth.create_key(s, "user", user_id=user, limit_ucr=5)
    assert new.limit_period is limits.LimitPeriod.NEVER
    with db.tx() as s:
        assert auth.authenticate(s, new.secret).limited_key_id == new.id


def test_the_cli_creates_a_limited_key(db: Db) -> None:
    from typer.testing import CliRunner

    from modelbank.cli import app

    with db.tx() as s:
        user = factories.user(s, "dave")
    args = ["keys", "create", "--role", "user", "--user", str(user), "--db", db.url]
    result = CliRunner().invoke(app, [*args, "--limit-ucr", "5000", "--limit-period", "week"])
    assert result.exit_code == 0, result.stderr
    secret = result.stdout.strip().splitlines()[-1]
    with db.tx() as s:
        who = auth.authenticate(s, secret)
        (info,) = auth.list_user_keys(s, user, now=MONDAY)
    assert who.limited and info.usage is not None
    assert (info.usage.limit_ucr, info.usage.period) == (5_000, limits.LimitPeriod.WEEK)


def test_a_batch_decided_again_takes_back_what_it_counted(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When posting finds keys another transaction took meanwhile, the pipeline decides the
    batch again (:meth:`BatchContext.restart`): the first decision's key counts are undone,
    so each charge counts once."""
    from modelbank.metering import pipeline

    user, key_id = _setup(db, limit_ucr=2 * CHARGE)
    real_post = pipeline.post
    calls = []

    def post_once_interrupted(session: object, ctx: object, lines: list[object]) -> object:
        calls.append(len(lines))
        if len(calls) == 1:
            return list(lines)  # as if their keys had been taken: nothing written
        return real_post(session, ctx, lines)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "post", post_once_interrupted)
    with db.tx() as s:
        results = metering.charge_batch(s, [_event(f"r{k}", user, key_id) for k in range(2)])
    assert calls == [2, 2]
    assert [r.status for r in results] == ["charged", "charged"]
    assert _usage(db, user, MONDAY).spent_ucr == 2 * CHARGE


# -- refunds ----------------------------------------------------------------------------------


def _captured(db: Db, user: int, key_id: int, key: str, now: datetime) -> int:
    """A hold placed with the limited key and captured for CHARGE at ``now``: the usage id."""
    with db.tx() as s:
        hold = holds.place(
            s,
            user,
            CHARGE,
            timeout_s=600,
            idempotency_key=key,
            model="m",
            limited_key_id=key_id,
            now=now,
        )
    with db.tx() as s:
        capture(s, hold.id, CHARGE, now=now)
        usage_id = holds.get_hold(s, hold.id).usage_id
    assert usage_id is not None
    return usage_id


def test_a_refund_in_the_charges_period_gives_the_allowance_back(db: Db) -> None:
    from modelbank.metering.refunds import refund_usage

    user, key_id = _setup(db, limit_ucr=2 * CHARGE, period="day")
    first = _captured(db, user, key_id, "h1", MONDAY)
    second = _captured(db, user, key_id, "h2", MONDAY)
    assert _usage(db, user, MONDAY).left_ucr == 0
    with db.tx() as s:
        refund_usage(s, first, amount_ucr=100_000, now=MONDAY + timedelta(hours=1))
    state = _usage(db, user, MONDAY)
    assert (state.spent_ucr, state.left_ucr) == (2 * CHARGE - 100_000, 100_000)
    with db.tx() as s:
        refund_usage(s, first, now=MONDAY + timedelta(hours=2))  # the rest of it
        refund_usage(s, second, now=MONDAY + timedelta(hours=2))
    state = _usage(db, user, MONDAY)
    assert (state.spent_ucr, state.left_ucr) == (0, 2 * CHARGE)
    assert _balance(db, user) == 100 * CREDIT
    # The allowance given back is spendable again.
    _captured(db, user, key_id, "h3", MONDAY + timedelta(hours=3))
    assert _usage(db, user, MONDAY).spent_ucr == CHARGE


def test_a_refund_in_a_later_period_leaves_the_new_allowance_alone(db: Db) -> None:
    from modelbank.metering.refunds import refund_usage

    user, key_id = _setup(db, limit_ucr=2 * CHARGE, period="day")
    sunday = MONDAY - timedelta(hours=11)  # Sunday 23:00
    old = _captured(db, user, key_id, "sun", sunday)
    _captured(db, user, key_id, "mon", MONDAY)
    with db.tx() as s:
        refund_usage(s, old, now=MONDAY)  # Sunday's charge, refunded on Monday
    state = _usage(db, user, MONDAY)
    assert (state.spent_ucr, state.left_ucr) == (CHARGE, CHARGE)
    assert _balance(db, user) == 100 * CREDIT - CHARGE
    # A refund in a later period with no charge since writes nothing either.
    user2_key = _setup_second_key(db, user)
    tuesday = MONDAY + timedelta(days=1)
    monday_usage = _captured(db, user, user2_key, "k2", MONDAY)
    with db.tx() as s:
        refund_usage(s, monday_usage, now=tuesday)
        spent = s.execute(select(keys.c.spent_ucr).where(keys.c.id == user2_key)).scalar_one()
    assert spent == CHARGE  # the stored Monday counter, not raised into Tuesday's


def _setup_second_key(db: Db, user: int) -> int:
    with db.tx() as s:
        return auth.create_key(
            s, auth.Role.USER, user_id=user, limit_ucr=CHARGE, limit_period="day"
        ).id


def test_a_refund_never_takes_the_counter_below_zero(db: Db) -> None:
    user, key_id = _setup(db, limit_ucr=10 * CHARGE, period="month")
    _captured(db, user, key_id, "h", MONDAY)
    with db.tx() as s:
        reduced = limits.refund_charge(s.connection(), key_id, 3 * CHARGE, MONDAY, MONDAY)
    assert reduced
    assert _usage(db, user, MONDAY).spent_ucr == 0
    next_month = datetime(2027, 1, 2, tzinfo=UTC)
    with db.tx() as s:
        assert not limits.refund_charge(s.connection(), key_id, 1, MONDAY, next_month)


def test_a_refund_of_a_charge_without_a_limited_key_touches_no_key(db: Db) -> None:
    from modelbank.metering.refunds import refund_usage

    user, key_id = _setup(db, limit_ucr=2 * CHARGE, period="never")
    with db.tx() as s:
        metering.charge(s, _event("k", user, key_id), now=MONDAY)
        free = metering.charge(s, _event("free", user, None), now=MONDAY)
    with db.tx() as s:
        refund_usage(s, free.usage_id, now=MONDAY)
    assert _usage(db, user, MONDAY).spent_ucr == CHARGE


def test_a_refund_of_a_direct_charge_gives_its_keys_allowance_back(db: Db) -> None:
    """A charge made with the key itself (``POST /usage``, no hold) records its key on the
    usage row (migration 0017): its refund gives the allowance back too."""
    from modelbank.metering.refunds import refund_usage

    user, key_id = _setup(db, limit_ucr=2 * CHARGE, period="day")
    with db.tx() as s:
        direct = metering.charge(s, _event("direct", user, key_id), now=MONDAY)
        stored = s.execute(
            text("SELECT limited_key_id FROM usage_events WHERE id = :i"), {"i": direct.usage_id}
        ).scalar_one()
    assert stored == key_id
    assert _usage(db, user, MONDAY).spent_ucr == direct.charge_ucr
    with db.tx() as s:
        refund_usage(s, direct.usage_id, now=MONDAY + timedelta(hours=1))
    assert _usage(db, user, MONDAY).spent_ucr == 0
    assert _balance(db, user) == 100 * CREDIT


def test_a_refund_after_a_period_change_gives_back_only_what_the_counter_counted(db: Db) -> None:
    """Day limit: Sunday's charge is counted on Sunday's counter. On Monday the owner switches
    the key to a monthly limit (Sunday's spend is not carried: that day is over), spends
    CHARGE, then Sunday's charge is refunded: the month counter must stay at CHARGE (Monday's
    charge), not drop to 0 and hand the key an allowance it never spent."""
    from modelbank.metering.refunds import refund_usage

    user, key_id = _setup(db, limit_ucr=2 * CHARGE, period="day")
    sunday = MONDAY - timedelta(hours=11)  # Sunday 23:00, same calendar month
    old = _captured(db, user, key_id, "sun", sunday)
    with db.tx() as s:
        auth.edit_key_limit(s, user, key_id, limit_period="month", now=MONDAY)
    assert _usage(db, user, MONDAY).spent_ucr == 0
    _captured(db, user, key_id, "mon", MONDAY)
    with db.tx() as s:
        refund_usage(s, old, now=MONDAY + timedelta(hours=1))
    state = _usage(db, user, MONDAY + timedelta(hours=1))
    assert (state.spent_ucr, state.left_ucr) == (CHARGE, CHARGE)
