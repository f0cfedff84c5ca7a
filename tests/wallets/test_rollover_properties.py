"""Subscription credits with rollover, as a property (issue 13): for any plan (credits, price,
rollover fraction, first-period bonus) and any spending over a few periods,

- credits in (the periods' grants) + rolled in = burned + expired + rolled out + balance, to
  the µcr, and what rolls in is exactly what rolls out;
- each rollover is ⌊left × bps / 10,000⌋ of what the period's grant had left at its end;
- the cash basis is conserved exactly: the basis paid = the basis carried by burned and
  expired credits + the basis still held by open grants (rolled grants carry theirs).

Each example uses a fresh user in the one ``db`` of the test (the fixture checks the ledger and
grant invariants at the end)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.users import service as users
from modelbank.wallets import grants, plans, subscription_periods, subscriptions
from modelbank.wallets.billing import ManualBilling
from modelbank.wallets.grants import basis_of
from modelbank.wallets.models import burns_table as burns
from modelbank.wallets.models import grants_table as grants_t
from tests.conftest import Db

START = datetime(2030, 1, 31, 12, 0, tzinfo=UTC)
COUNTER = itertools.count()

PROPERTY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def spend(db: Db, user_id: int, amount: int, at: datetime) -> None:
    """Debit ``amount`` µcr from the wallet at ``at``, burning grants (as a charge does)."""
    with db.tx() as session:
        wallet_id = users.get_user(session, user_id).wallet_account_id
        locked = ledger.lock_accounts(session, [wallet_id])
        book = grants.GrantBook.load(session, {user_id: locked[wallet_id]}, now=at)
        ledger.transfer(
            session,
            ledger.NewTransfer(
                debit_account_id=wallet_id,
                credit_account_id=ledger.platform_account(session, AccountCode.PLATFORM_REVENUE),
                amount=amount,
                code=TransferCode.ACCESS_PURCHASE,
                ref_type="test",
                ref_id=user_id,
                idempotency_key=f"spend:{user_id}:{next(COUNTER)}",
            ),
            now=at,
        )
        book.burn(user_id, amount, "access", None, now=at)
        book.flush(session, now=at)


@PROPERTY
@given(
    credits=st.integers(min_value=1, max_value=10**9),
    price_cents=st.integers(min_value=1, max_value=100_000),
    rollover_bps=st.integers(min_value=0, max_value=10_000),
    bonus=st.integers(min_value=0, max_value=10**8),
    spends=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=4),
)
def test_credits_in_equal_burned_expired_rolled_and_balance(
    db: Db,
    credits: int,
    price_cents: int,
    rollover_bps: int,
    bonus: int,
    spends: list[int],
) -> None:
    n = next(COUNTER)
    with db.tx() as session:
        user_id = users.create_user(session, f"prop-{n}").id
        plan = plans.create_plan(
            session,
            slug=f"p{n}",
            name="P",
            price_uusd=price_cents * 10_000,
            credits_ucr=credits,
            rollover_bps=rollover_bps,
            first_period_bonus_ucr=bonus,
        )
    sub = subscriptions.start(
        db.tx,
        ManualBilling(),
        user_id,
        plan.id,
        success_url="https://example.com/ok",
        cancel_url="https://example.com/no",
    )
    start = START
    for index, share in enumerate(spends):
        end = subscriptions.add_month(start)
        with db.tx() as session:
            period, _ = subscription_periods.record_period(
                session, sub.id, f"inv-{index}", period_start=start, period_end=end, now=start
            )
        with db.tx() as session:
            wallet = ledger.get_balance(session, users.get_user(session, user_id).wallet_account_id)
        # spend a share (basis points) of the balance
        amount = wallet.balance * share // 10_000
        if amount > 0:
            spend(db, user_id, amount, start + timedelta(days=1))
        assert period.grant_id is not None
        with db.tx() as session:
            left = grants.get_grant(session, period.grant_id)
            assert left is not None
            remaining = left.remaining_ucr
            grants.sweep_expired_page(session, now=end, limit=10, after_user=user_id - 1)
            rolled = session.execute(
                select(func.coalesce(func.sum(burns.c.amount_ucr), 0)).where(
                    burns.c.grant_id == period.grant_id, burns.c.ref_type == "rollover"
                )
            ).scalar()
        assert rolled == remaining * rollover_bps // 10_000
        start = end

    with db.tx() as session:
        rows = session.execute(
            select(
                grants_t.c.amount_ucr,
                grants_t.c.remaining_ucr,
                grants_t.c.cost_basis_uusd,
                grants_t.c.transfer_id,
            ).where(grants_t.c.user_id == user_id)
        ).all()
        by_type = dict(
            session.execute(
                select(burns.c.ref_type, func.sum(burns.c.amount_ucr))
                .where(burns.c.user_id == user_id)
                .group_by(burns.c.ref_type)
            ).all()
        )
        burn_basis = dict(
            session.execute(
                select(burns.c.ref_type, func.sum(burns.c.basis_uusd))
                .where(burns.c.user_id == user_id)
                .group_by(burns.c.ref_type)
            ).all()
        )
        balance = ledger.get_balance(
            session, users.get_user(session, user_id).wallet_account_id
        ).balance
    credits_in = sum(int(r.amount_ucr) for r in rows if r.transfer_id is not None)
    rolled_in = sum(int(r.amount_ucr) for r in rows if r.transfer_id is None)
    burned = int(by_type.get("access", 0))
    expired = int(by_type.get("expiry", 0))
    rolled_out = int(by_type.get("rollover", 0))
    assert credits_in == len(spends) * credits + bonus
    assert rolled_in == rolled_out
    assert credits_in + rolled_in == burned + expired + rolled_out + balance
    assert credits_in == burned + expired + balance

    paid = sum(int(r.cost_basis_uusd) for r in rows if r.transfer_id is not None)
    assert paid == len(spends) * price_cents * 10_000
    still_held = sum(
        int(r.cost_basis_uusd)
        - basis_of(
            int(r.amount_ucr) - int(r.remaining_ucr), int(r.amount_ucr), int(r.cost_basis_uusd)
        )
        for r in rows
    )
    assert paid == int(burn_basis.get("access", 0)) + int(burn_basis.get("expiry", 0)) + still_held
    assert int(burn_basis.get("rollover", 0)) == sum(
        int(r.cost_basis_uusd) for r in rows if r.transfer_id is None
    )


def test_a_spend_after_the_period_rolls_over_first_and_may_use_the_rolled_credits(db: Db) -> None:
    """No job ran: the first spend after the period's end sweeps lazily (as every charge
    does), the rollover included, and the same transaction can spend the rolled credits."""
    with db.tx() as session:
        user_id = users.create_user(session, "lazy").id
        plan = plans.create_plan(
            session, slug="lazy", name="L", price_uusd=30_000, credits_ucr=1_000, rollover_bps=5_000
        )
    sub = subscriptions.start(
        db.tx, ManualBilling(), user_id, plan.id, success_url="https://e/", cancel_url="https://e/"
    )
    end = subscriptions.add_month(START)
    with db.tx() as session:
        period, _ = subscription_periods.record_period(
            session, sub.id, "inv", period_start=START, period_end=end, now=START
        )
    spend(db, user_id, 400, START + timedelta(days=1))  # 600 left: 300 roll over
    spend(db, user_id, 300, end + timedelta(seconds=1))  # all of the rolled credits
    with db.tx() as session:
        wallet = ledger.get_balance(session, users.get_user(session, user_id).wallet_account_id)
        rows = session.execute(
            select(grants_t.c.amount_ucr, grants_t.c.remaining_ucr, grants_t.c.cost_basis_uusd)
            .where(grants_t.c.user_id == user_id)
            .order_by(grants_t.c.id)
        ).all()
    assert wallet.balance == 0
    # 1,000 µcr for 30,000 µUSD: 400 burned carry 12,000, the 300 rolled carry 9,000
    assert [tuple(r) for r in rows] == [(1_000, 0, 30_000), (300, 0, 9_000)]
    assert period.grant_id is not None
