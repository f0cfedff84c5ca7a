"""Payouts at the service level (DESIGN §7, issue "Creator economy"), on SQLite and
PostgreSQL, with exact integer amounts. Every scenario ends with the ledger and grant
invariants checked by the ``db`` fixture.

Creators earn through real charges of another user's usage on a model whose rule pays
100 % of the charge (share 10,000 bps, multiplier 1, no popularity tiers), so an earning
equals its charge and a full usage refund reverses exactly that earning.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbank.earnings import payouts
from modelbank.earnings.errors import (
    PayoutAdapterUnavailable,
    PayoutBelowMinimum,
    PayoutBlockedByDebt,
    PayoutExceedsAvailable,
    PayoutNotFound,
    PayoutStateConflict,
)
from modelbank.earnings.models import payouts_table
from modelbank.earnings.payout_adapters import (
    AdapterResult,
    ManualAdapter,
    StripeConnectAdapter,
    adapter_for,
)
from modelbank.earnings.payouts import PayoutInfo, PayoutStatus
from modelbank.earnings.rules import EarningsRule
from modelbank.errors import InvalidInput
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferFlags
from modelbank.ledger.models import transfers_table as transfers
from modelbank.metering import refunds as usage_refunds
from modelbank.metering import service as metering
from modelbank.metering.service import UsageEvent
from modelbank.pricing.formulas import Rates
from modelbank.users import service as users
from modelbank.wallets import refunds
from modelbank.webhooks.models import outbox_events_table as outbox
from tests import factories
from tests.conftest import Db

CREDIT = 1_000_000
RATE = Decimal(100)
FULL = EarningsRule(
    share_bps=10_000, popularity_tiers=(), type_multipliers={}, other_multiplier=Decimal(1)
)
"""Creators earn exactly the charge."""

_seq = itertools.count(1)


def _setup(db: Db) -> tuple[int, int, str]:
    """A creator, a payer with 10,000 credits, and the creator's model (slug)."""
    with db.tx() as s:
        creator = factories.user(s, f"creator-{next(_seq)}")
        payer = factories.user(s, f"payer-{next(_seq)}", credits_ucr=10_000 * CREDIT)
        slug = f"m-{next(_seq)}"
        factories.model(
            s, slug, creator_id=creator, explicit=Rates(per_request=Decimal(1)), rule=FULL
        )
    return creator, payer, slug


def _use(db: Db, payer: int, slug: str, charge_ucr: int) -> int:
    """The payer uses the model for ``charge_ucr``; return the usage id."""
    with db.tx() as s:
        result = metering.charge(
            s, UsageEvent(f"use-{next(_seq)}", payer, slug, charge_ucr=charge_ucr)
        )
    assert result.status == "charged" and result.usage_id is not None, result
    return result.usage_id


def _earnings(s: Session, user_id: int) -> ledger.AccountBalance:
    return ledger.get_balance(s, users.get_user(s, user_id).earnings_account_id)


def _world_payouts(s: Session) -> ledger.AccountBalance:
    return ledger.get_balance(s, ledger.platform_account(s, AccountCode.WORLD_PAYOUTS))


def _events(s: Session) -> list[tuple[str, int, str]]:
    """Outbox payout events: (type, payout id, status in the payload)."""
    rows = s.connection().execute(
        select(outbox.c.event_type, outbox.c.payload)
        .where(outbox.c.event_type.like("payout.%"))
        .order_by(outbox.c.id)
    )
    return [(t, int(p["payout_id"]), p["status"]) for t, p in rows]


def _resolution(s: Session, hold_id: int) -> tuple[int, str | None, int | None]:
    row = (
        s.connection()
        .execute(
            select(transfers.c.flags, transfers.c.ref_type, transfers.c.ref_id).where(
                transfers.c.pending_id == hold_id
            )
        )
        .one()
    )
    return int(row.flags), row.ref_type, row.ref_id


# ---------------------------------------------------------------- the story


def test_payout_lifecycle_with_every_status(db: Db) -> None:
    creator, payer, slug = _setup(db)
    _use(db, payer, slug, 300 * CREDIT)
    with db.tx() as s:
        state = payouts.summary(s, creator)
        assert (state.balance_ucr, state.pending_ucr, state.owed_ucr) == (300 * CREDIT, 0, 0)
        assert state.available_ucr == 300 * CREDIT
        assert state.minimum_ucr == payouts.DEFAULT_MINIMUM_UCR == 100 * CREDIT
        paid_out_before = _world_payouts(s).credits_posted

    # below the minimum, above what is available: refused, nothing written
    with pytest.raises(PayoutBelowMinimum) as low, db.tx() as s:
        payouts.request(s, creator, 100 * CREDIT - 1)
    assert low.value.code == "payout_below_minimum"
    assert low.value.context["minimum_ucr"] == 100 * CREDIT
    with pytest.raises(PayoutExceedsAvailable) as high, db.tx() as s:
        payouts.request(s, creator, 300 * CREDIT + 1)
    assert high.value.context == {
        "amount_ucr": 300 * CREDIT + 1,
        "available_ucr": 300 * CREDIT,
        "owed_ucr": 0,
    }
    with db.tx() as s:
        assert payouts.list_payouts(s).items == []
        assert _earnings(s, creator).debits_pending == 0

    # pending: available drops, the balance does not, the ledger holds the amount
    with db.tx() as s:
        first = payouts.request(s, creator, 120 * CREDIT)
    assert first.status is PayoutStatus.PENDING and first.adapter == "manual"
    with db.tx() as s:
        account = _earnings(s, creator)
        assert (account.balance, account.debits_pending) == (300 * CREDIT, 120 * CREDIT)
        assert payouts.summary(s, creator).available_ucr == 180 * CREDIT
        hold = ledger.get_hold(s, first.hold_id)
        assert (hold.status, hold.amount, hold.expires_at) == ("pending", 120 * CREDIT, None)
        assert (hold.ref_type, hold.ref_id) == ("payout", first.id)
        assert hold.debit_account_id == account.id
        assert hold.credit_account_id == ledger.platform_account(s, AccountCode.WORLD_PAYOUTS)

    # cancelled: the hold is voided, everything is available again
    with db.tx() as s:
        cancelled = payouts.cancel(s, first.id, user_id=creator)
    assert cancelled.status is PayoutStatus.CANCELLED and cancelled.resolved_at is not None
    with db.tx() as s:
        assert payouts.summary(s, creator).available_ucr == 300 * CREDIT
        assert ledger.get_hold(s, first.hold_id).status == "voided"
        assert _resolution(s, first.hold_id) == (
            int(TransferFlags.VOID_PENDING),
            "payout",
            first.id,
        )

    # completed: world_payouts gets exactly the amount; µUSD at the rate; balance down
    with db.tx() as s:
        second = payouts.request(s, creator, 150 * CREDIT)
    with db.tx() as s:
        done = payouts.complete(s, second.id, "  bank-2026-001 ", credits_per_usd=RATE)
    assert done.status is PayoutStatus.COMPLETED
    assert done.external_reference == "bank-2026-001"
    assert done.amount_uusd == 1_500_000  # 150 credits at 100 credits/USD = $1.50
    assert done.credits_per_usd == RATE
    with db.tx() as s:
        assert _world_payouts(s).credits_posted - paid_out_before == 150 * CREDIT
        account = _earnings(s, creator)
        assert (account.balance, account.debits_pending) == (150 * CREDIT, 0)
        assert _resolution(s, second.hold_id) == (
            int(TransferFlags.POST_PENDING),
            "payout",
            second.id,
        )

    # failed: the hold is voided, the credits are back
    with db.tx() as s:
        third = payouts.request(s, creator, 100 * CREDIT)
        assert payouts.summary(s, creator).available_ucr == 50 * CREDIT
    with db.tx() as s:
        failed = payouts.fail(s, third.id, "IBAN rejected by the bank")
    assert failed.status is PayoutStatus.FAILED
    assert failed.failure_reason == "IBAN rejected by the bank"
    with db.tx() as s:
        assert payouts.summary(s, creator).available_ucr == 150 * CREDIT
        assert _earnings(s, creator).balance == 150 * CREDIT
        assert _world_payouts(s).credits_posted - paid_out_before == 150 * CREDIT

    # only pending payouts change
    for action in (
        lambda s: payouts.cancel(s, second.id, user_id=creator),
        lambda s: payouts.complete(s, third.id, "x", credits_per_usd=RATE),
        lambda s: payouts.fail(s, first.id, "late"),
        lambda s: payouts.complete(s, second.id, "again", credits_per_usd=RATE),
    ):
        with pytest.raises(PayoutStateConflict) as conflict, db.tx() as s:
            action(s)
        assert conflict.value.code == "payout_state_conflict"

    with db.tx() as s:
        assert _events(s) == [
            ("payout.requested", first.id, "pending"),
            ("payout.cancelled", first.id, "cancelled"),
            ("payout.requested", second.id, "pending"),
            ("payout.completed", second.id, "completed"),
            ("payout.requested", third.id, "pending"),
            ("payout.failed", third.id, "failed"),
        ]
        payload = s.connection().execute(
            select(outbox.c.payload).where(outbox.c.event_type == "payout.completed")
        )
        assert payload.scalar_one() == {
            "payout_id": second.id,
            "user_id": creator,
            "status": "completed",
            "amount_ucr": 150 * CREDIT,
            "adapter": "manual",
            "external_reference": "bank-2026-001",
            "amount_uusd": 1_500_000,
            "credits_per_usd": "100",
            "failure_reason": None,
        }


def test_another_user_cannot_cancel(db: Db) -> None:
    creator, payer, slug = _setup(db)
    _use(db, payer, slug, 200 * CREDIT)
    with db.tx() as s:
        payout = payouts.request(s, creator, 100 * CREDIT)
    with pytest.raises(PayoutNotFound), db.tx() as s:
        payouts.cancel(s, payout.id, user_id=payer)
    with pytest.raises(PayoutNotFound), db.tx() as s:
        payouts.get_payout(s, 999_999)
    with db.tx() as s:
        assert payouts.get_payout(s, payout.id).status is PayoutStatus.PENDING
        assert payouts.cancel(s, payout.id).status is PayoutStatus.CANCELLED  # admin/service


def test_bad_input_is_refused(db: Db) -> None:
    creator, payer, slug = _setup(db)
    _use(db, payer, slug, 200 * CREDIT)
    with db.tx() as s:
        payout = payouts.request(s, creator, 100 * CREDIT)
    for action in (
        lambda s: payouts.request(s, creator, 0),
        lambda s: payouts.request(s, creator, -5),
        lambda s: payouts.complete(s, payout.id, "   ", credits_per_usd=RATE),
        lambda s: payouts.complete(s, payout.id, "x" * 256, credits_per_usd=RATE),
        lambda s: payouts.complete(s, payout.id, "ref", credits_per_usd=Decimal(0)),
        lambda s: payouts.fail(s, payout.id, ""),
        lambda s: payouts.set_minimum(s, 0),
        lambda s: payouts.list_payouts(s, status="paid"),
        lambda s: payouts.list_payouts(s, limit=0),
    ):
        with pytest.raises(InvalidInput), db.tx() as s:
            action(s)
    with db.tx() as s:
        assert payouts.get_payout(s, payout.id).status is PayoutStatus.PENDING


# ---------------------------------------------------------------- refunds come first


def test_owed_refund_debt_cannot_be_withdrawn(db: Db) -> None:
    """Earnings already paid out, then the usage is refunded: the part the creator's
    balance cannot give back stays owed, and is not withdrawable."""
    creator, payer, slug = _setup(db)
    refunded = _use(db, payer, slug, 300 * CREDIT)
    with db.tx() as s:
        payout = payouts.request(s, creator, 300 * CREDIT)
        payouts.complete(s, payout.id, "wire-1", credits_per_usd=RATE)
    _use(db, payer, slug, 100 * CREDIT)
    with db.tx() as s:
        info = usage_refunds.refund_usage(s, refunded)
    assert (info.earnings_reversed_ucr, info.earnings_owed_ucr) == (300 * CREDIT, 200 * CREDIT)
    with db.tx() as s:
        state = payouts.summary(s, creator)
        assert (state.balance_ucr, state.owed_ucr, state.available_ucr) == (0, 200 * CREDIT, 0)
    with pytest.raises(PayoutExceedsAvailable) as refused, db.tx() as s:
        payouts.request(s, creator, 100 * CREDIT)
    assert refused.value.context["owed_ucr"] == 200 * CREDIT

    _use(db, payer, slug, 500 * CREDIT)  # new earnings: the debt comes out of them first
    with db.tx() as s:
        state = payouts.summary(s, creator)
        assert (state.balance_ucr, state.available_ucr) == (500 * CREDIT, 300 * CREDIT)
    with pytest.raises(PayoutExceedsAvailable), db.tx() as s:
        payouts.request(s, creator, 300 * CREDIT + 1)
    with db.tx() as s:
        payout = payouts.request(s, creator, 300 * CREDIT)
        payouts.complete(s, payout.id, "wire-2", credits_per_usd=RATE)
    with db.tx() as s:
        assert refunds.settle_debts(s) == 200 * CREDIT
    with db.tx() as s:
        state = payouts.summary(s, creator)
        assert (state.balance_ucr, state.owed_ucr, state.available_ucr) == (0, 0, 0)


def test_refund_while_pending_blocks_completion(db: Db) -> None:
    """A usage refunded while a payout of its earnings is pending: the held credits cannot
    go back, so the debt is owed; completing would pay refunded earnings out, so it is
    refused until the payout fails (its credits return) and the debt is settled."""
    creator, payer, slug = _setup(db)
    refunded = _use(db, payer, slug, 300 * CREDIT)
    _use(db, payer, slug, 200 * CREDIT)
    with db.tx() as s:
        pending = payouts.request(s, creator, 400 * CREDIT)
    with db.tx() as s:
        info = usage_refunds.refund_usage(s, refunded)
    assert info.earnings_owed_ucr == 200 * CREDIT  # 100 taken, 400 held
    with db.tx() as s:
        state = payouts.summary(s, creator)
        assert (state.balance_ucr, state.pending_ucr, state.owed_ucr) == (
            400 * CREDIT,
            400 * CREDIT,
            200 * CREDIT,
        )
        assert state.available_ucr == 0
    with pytest.raises(PayoutBlockedByDebt) as blocked, db.tx() as s:
        payouts.complete(s, pending.id, "wire", credits_per_usd=RATE)
    assert blocked.value.context["shortfall_ucr"] == 200 * CREDIT

    with db.tx() as s:
        payouts.fail(s, pending.id, "a refund left a debt")
        state = payouts.summary(s, creator)
        assert (state.balance_ucr, state.available_ucr) == (400 * CREDIT, 200 * CREDIT)
    with pytest.raises(PayoutExceedsAvailable), db.tx() as s:
        payouts.request(s, creator, 200 * CREDIT + 1)
    with db.tx() as s:
        again = payouts.request(s, creator, 200 * CREDIT)
    with db.tx() as s:
        assert refunds.settle_debts(s) == 200 * CREDIT
    with db.tx() as s:
        done = payouts.complete(s, again.id, "wire-ok", credits_per_usd=RATE)
    assert done.amount_uusd == 2_000_000
    with db.tx() as s:
        state = payouts.summary(s, creator)
        assert (state.balance_ucr, state.owed_ucr, state.available_ucr) == (0, 0, 0)


# ---------------------------------------------------------------- minimum, listing, formula


def test_minimum_is_a_platform_setting(db: Db) -> None:
    creator, payer, slug = _setup(db)
    _use(db, payer, slug, 10 * CREDIT)
    with pytest.raises(PayoutBelowMinimum), db.tx() as s:
        payouts.request(s, creator, 10 * CREDIT)
    with db.tx() as s:
        assert payouts.set_minimum(s, 5 * CREDIT) == 5 * CREDIT
    with db.tx() as s:
        assert payouts.get_minimum(s) == 5 * CREDIT
        assert payouts.summary(s, creator).minimum_ucr == 5 * CREDIT
        assert payouts.request(s, creator, 10 * CREDIT).amount_ucr == 10 * CREDIT


def test_listing_pending_first_and_paged(db: Db) -> None:
    creator, payer, slug = _setup(db)
    other, _, other_slug = _setup(db)
    _use(db, payer, slug, 1_000 * CREDIT)
    _use(db, payer, other_slug, 1_000 * CREDIT)
    made: list[PayoutInfo] = []
    with db.tx() as s:
        for user_id in (creator, other, creator, other, creator):
            made.append(payouts.request(s, user_id, 100 * CREDIT))
        payouts.complete(s, made[0].id, "r0", credits_per_usd=RATE)
        payouts.fail(s, made[1].id, "no")
        payouts.cancel(s, made[3].id)
    ids = [p.id for p in made]
    with db.tx() as s:
        assert [p.id for p in payouts.list_payouts(s).items] == ids
        queue = [p.id for p in payouts.list_payouts(s, pending_first=True).items]
        assert queue == [ids[2], ids[4], ids[0], ids[1], ids[3]]
        seen: list[int] = []
        after = None
        while True:
            page = payouts.list_payouts(s, pending_first=True, after=after, limit=2)
            seen += [p.id for p in page.items]
            if page.next_after is None:
                break
            after = page.next_after
        assert seen == queue
        mine = payouts.list_payouts(s, user_id=creator)
        assert [p.id for p in mine.items] == [ids[0], ids[2], ids[4]]
        assert [p.status for p in mine.items] == ["completed", "pending", "pending"]
        assert [p.id for p in payouts.list_payouts(s, status="failed").items] == [ids[1]]
        assert payouts.list_payouts(s, user_id=other, status="pending").items == []


@pytest.mark.parametrize(
    ("amount_ucr", "rate", "uusd"),
    [
        (100_000_000, Decimal(100), 1_000_000),  # 100 credits at 100/USD = $1
        (150, Decimal(100), 2),  # 1.5 µUSD → 2 (half-even)
        (250, Decimal(100), 2),  # 2.5 µUSD → 2 (half-even)
        (350, Decimal(100), 4),  # 3.5 µUSD → 4
        (100_000_000, Decimal("120.5"), 829_876),  # 829,875.518… µUSD
        (1, Decimal("0.5"), 2),  # cheap credits: 1 µcr = 2 µUSD
    ],
)
def test_uusd_at(amount_ucr: int, rate: Decimal, uusd: int) -> None:
    assert payouts.uusd_at(amount_ucr, rate) == uusd


# ---------------------------------------------------------------- the adapter seam


class _Instant:
    """A fake automatic adapter answering with a fixed result."""

    def __init__(self, result: AdapterResult) -> None:
        self.name = "manual"  # the column accepts any name; a fake reuses the real one
        self.result = result
        self.sent: list[int] = []

    def send(self, payout: PayoutInfo) -> AdapterResult:
        self.sent.append(payout.id)
        return self.result


def test_adapter_results_are_applied(db: Db) -> None:
    creator, payer, slug = _setup(db)
    _use(db, payer, slug, 1_000 * CREDIT)
    paid = _Instant(AdapterResult("tr_123", "completed"))
    refused = _Instant(AdapterResult(None, "failed", reason="account closed"))
    waiting = _Instant(AdapterResult("po_9", "pending"))
    with db.tx() as s:
        done = payouts.request(s, creator, 200 * CREDIT, adapter=paid, credits_per_usd=RATE)
        failed = payouts.request(s, creator, 100 * CREDIT, adapter=refused)
        pending = payouts.request(s, creator, 100 * CREDIT, adapter=waiting)
    assert (done.status, done.external_reference, done.amount_uusd) == (
        PayoutStatus.COMPLETED,
        "tr_123",
        2_000_000,
    )
    assert (failed.status, failed.failure_reason) == (PayoutStatus.FAILED, "account closed")
    assert (pending.status, pending.external_reference) == (PayoutStatus.PENDING, "po_9")
    assert paid.sent == [done.id] and refused.sent == [failed.id]
    with db.tx() as s:
        assert payouts.summary(s, creator).available_ucr == 700 * CREDIT
        assert [t for t, _, _ in _events(s)] == [
            "payout.requested",
            "payout.completed",
            "payout.requested",
            "payout.failed",
            "payout.requested",
        ]


def test_stripe_connect_is_a_documented_interface_only(db: Db) -> None:
    creator, payer, slug = _setup(db)
    _use(db, payer, slug, 200 * CREDIT)
    assert isinstance(adapter_for("manual"), ManualAdapter)
    stripe = adapter_for("stripe_connect")
    assert isinstance(stripe, StripeConnectAdapter)
    doc = " ".join((StripeConnectAdapter.__doc__ or "").split())
    assert "the documented interface of an automatic adapter, **not an implementation**" in doc
    with pytest.raises(PayoutAdapterUnavailable) as refused, db.tx() as s:
        payouts.request(s, creator, 100 * CREDIT, adapter=stripe)
    assert refused.value.code == "payout_adapter_unavailable"
    assert "stripe.Transfer" in refused.value.message
    with pytest.raises(PayoutAdapterUnavailable):
        adapter_for("paypal")
    with db.tx() as s:  # nothing was written
        assert s.connection().execute(select(payouts_table.c.id)).all() == []
        assert _earnings(s, creator).debits_pending == 0
        assert _events(s) == []


# ---------------------------------------------------------------- concurrency


def test_concurrent_requests_never_overdraw(db: Db) -> None:
    """Eight requests of 100 credits race for 300 available (row lock on the earnings
    account on PostgreSQL, the writer lock on SQLite): exactly three are held; then a
    complete and a cancel race for each of them: each payout ends in exactly one state."""
    from concurrent.futures import ThreadPoolExecutor

    creator, payer, slug = _setup(db)
    _use(db, payer, slug, 300 * CREDIT)

    def ask(_: int) -> int | None:
        try:
            with db.tx() as s:
                return payouts.request(s, creator, 100 * CREDIT).id
        except PayoutExceedsAvailable:
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        asked = list(pool.map(ask, range(8)))
    made = sorted(i for i in asked if i is not None)
    assert len(made) == 3 and asked.count(None) == 5

    def settle(payout_id: int, how: str) -> str:
        try:
            with db.tx() as s:
                if how == "complete":
                    payouts.complete(s, payout_id, "wire", credits_per_usd=RATE)
                else:
                    payouts.cancel(s, payout_id, user_id=creator)
        except PayoutStateConflict:
            return "conflict"
        return how

    with ThreadPoolExecutor(max_workers=6) as pool:
        races = {
            p: [pool.submit(settle, p, "complete"), pool.submit(settle, p, "cancel")] for p in made
        }
        results = {p: sorted(f.result() for f in fs) for p, fs in races.items()}
    with db.tx() as s:
        completed = 0
        for payout_id, outcome in results.items():
            status = payouts.get_payout(s, payout_id).status
            assert outcome in (["complete", "conflict"], ["cancel", "conflict"]), outcome
            assert status == ("completed" if "complete" in outcome else "cancelled")
            completed += status == "completed"
        state = payouts.summary(s, creator)
        assert state.pending_ucr == 0
        assert state.balance_ucr == state.available_ucr == (3 - completed) * 100 * CREDIT
