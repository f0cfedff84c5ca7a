"""Auto top-up service (issue 13): the monthly caps hold for any caps and any number of
crossings (property), a month boundary resets them, and a second top-up is never in flight."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelbank.wallets import autotopup, autotopup_run, packages, purchases
from modelbank.wallets.providers import ManualProvider
from tests import factories
from tests.conftest import Db

STARTER_UUSD = 4_990_000


def _setup(db: Db, cap_count: int, cap_uusd: int) -> int:
    with db.tx() as s:
        user = factories.user(s, f"u-{uuid.uuid4().hex[:8]}")
        starter = next(p for p in packages.list_packages(s) if p.slug == "starter")
        autotopup.configure(
            s,
            user,
            enabled=True,
            threshold_ucr=0,  # never crossed by itself: the test starts each top-up
            package_id=starter.id,
            monthly_cap_count=cap_count,
            monthly_cap_uusd=cap_uusd,
            provider="manual",
        )
    return user


def _round(db: Db, user: int, now: datetime) -> str:
    outcome = autotopup_run.run(db.factory, ManualProvider(), user, now=now)
    if outcome == "started":
        with db.tx() as s:
            [pending] = purchases.list_purchases(s, user_id=user, status=purchases.PENDING)
            purchases.complete(s, pending.id, now=now)
    return outcome


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cap_count=st.integers(0, 4),
    cap_uusd=st.integers(0, 30_000_000),
    rounds=st.integers(1, 6),
)
def test_monthly_caps_hold_for_any_caps(db: Db, cap_count: int, cap_uusd: int, rounds: int) -> None:
    user = _setup(db, cap_count, cap_uusd)
    now = datetime.now(UTC)
    outcomes = [_round(db, user, now) for _ in range(rounds)]
    allowed = min(rounds, cap_count, cap_uusd // STARTER_UUSD)
    assert outcomes == ["started"] * allowed + ["cap_reached"] * (rounds - allowed)
    with db.tx() as s:
        count, spent = autotopup_run.month_usage(s, user, now)
        assert (count, spent) == (allowed, allowed * STARTER_UUSD)
        assert count <= cap_count and spent <= cap_uusd


def test_in_flight_and_month_boundary(db: Db) -> None:
    user = _setup(db, 1, 10_000_000)
    january = datetime(2031, 1, 31, 23, 0, tzinfo=UTC)
    assert autotopup_run.run(db.factory, ManualProvider(), user, now=january) == "started"
    # the first is still pending: nothing else starts, whatever the caps
    assert autotopup_run.run(db.factory, ManualProvider(), user, now=january) == "in_flight"
    with db.tx() as s:
        [pending] = purchases.list_purchases(s, user_id=user, status=purchases.PENDING)
        purchases.complete(s, pending.id, now=january)
    assert _round(db, user, january) == "cap_reached"
    assert autotopup_run.month_start(january) == datetime(2031, 1, 1, tzinfo=UTC)
    february = datetime(2031, 2, 1, 0, 5, tzinfo=UTC)
    assert _round(db, user, february) == "started"
