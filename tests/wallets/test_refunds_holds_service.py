"""Usage refunds, holds and purchases at the service level (DESIGN §3, §5, §7), on SQLite
and PostgreSQL, with exact integer amounts (µcr, µUSD).

Expected amounts are computed independently: earnings of a fixed charge under the default
rule (20 % share × type multiplier: chat 0.8, other 0.6; popularity 1.0 below 100 uses), a
refund's reversed earnings as half-even of ``earned × refunded-so-far / charge`` on the
running total, and a burn's cost basis as half-even of ``basis × consumed / amount``, all
with :class:`fractions.Fraction` (``round`` rounds half to even).
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.ledger.errors import HoldAmountExceeded, HoldExpired, HoldNotPending
from modelbank.ledger.models import transfers_table as transfers
from modelbank.metering import refunds as usage_refunds
from modelbank.metering import service as metering
from modelbank.metering.capture import capture
from modelbank.metering.service import UsageEvent
from modelbank.pricing.formulas import Rates
from modelbank.users import service as users
from modelbank.wallets import grants, holds, packages, purchases, refunds
from modelbank.wallets import service as wallets
from modelbank.wallets.errors import RefundExceedsCharge
from modelbank.wallets.grants import GrantSource
from modelbank.wallets.models import burns_table as burns
from modelbank.wallets.models import debts_table as debts
from modelbank.wallets.providers import ManualProvider, PaymentEvent, PaymentEventKind
from tests import factories
from tests.conftest import Db

CREDIT = 1_000_000
POPULAR_UCR = 200_000_000
POPULAR_UUSD = 17_990_000

_seq = itertools.count(1)


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_seq)}"


def _base() -> datetime:
    return (utcnow() + timedelta(seconds=1)).replace(microsecond=0)


def half_even(value: Fraction) -> int:
    return round(value)


def earned(charge: int, usage_type: str) -> int:
    """Default rule: 2000 bps × type multiplier (chat 0.8, other 0.6), popularity 1.0."""
    multiplier = {"chat": Fraction(8, 10), "other": Fraction(6, 10)}[usage_type]
    return half_even(Fraction(charge * 2_000, 10_000) * multiplier)


def reversed_by(earned_ucr: int, charge: int, before: int, after: int) -> int:
    return half_even(Fraction(earned_ucr * after, charge)) - half_even(
        Fraction(earned_ucr * before, charge)
    )


def burns_of(s: Session, ref_type: str, ref_id: int) -> list[tuple[int, int, int]]:
    rows = s.connection().execute(
        select(burns.c.grant_id, burns.c.amount_ucr, burns.c.basis_uusd)
        .where(burns.c.ref_type == ref_type, burns.c.ref_id == ref_id)
        .order_by(burns.c.id)
    )
    return [(int(g), int(a), int(b)) for g, a, b in rows]


def left(s: Session, *grant_ids: int) -> list[int]:
    found = []
    for grant_id in grant_ids:
        info = grants.get_grant(s, grant_id)
        assert info is not None
        found.append(info.remaining_ucr)
    return found


def earnings_balance(s: Session, user_id: int) -> int:
    return ledger.get_balance(s, users.get_user(s, user_id).earnings_account_id).balance


def revenue_balance(s: Session) -> int:
    return ledger.get_balance(s, ledger.platform_account(s, AccountCode.PLATFORM_REVENUE)).balance


def charge(
    s: Session, user_id: int, model: str, amount: int, usage_type: str = "chat", **kw: object
) -> metering.ChargeResult:
    return metering.charge(
        s,
        UsageEvent(_name("use"), user_id, model, usage_type=usage_type, charge_ucr=amount),
        **kw,
    )


def creator_model(s: Session, creator: int | None) -> str:
    slug = _name("m")
    factories.model(s, slug, creator_id=creator, explicit=Rates(per_request=Decimal(1_000)))
    return slug


# ---------------------------------------------------------------- usage refunds


def test_usage_refund_partial_then_full(db: Db) -> None:
    with db.tx() as s:
        creator = factories.user(s, "creator")
        alice = factories.user(s, "alice")
        bonus = wallets.grant_info(
            s, alice, 1 * CREDIT, source=GrantSource.BONUS, idempotency_key="ab"
        )
        paid = wallets.grant_info(
            s,
            alice,
            10 * CREDIT,
            source=GrantSource.PURCHASED,
            idempotency_key="ap",
            cost_basis_uusd=1_000_000,
        )
        slug = creator_model(s, creator)
        revenue_before = revenue_balance(s)
    total = 3_333_333
    with db.tx() as s:
        usage = charge(s, alice, slug, total)
    earned_ucr = earned(total, "chat")
    assert earned_ucr == 533_333  # 3,333,333 × 0.16 = 533,333.28
    assert usage.earnings == ((creator, earned_ucr),)
    with db.tx() as s:
        assert burns_of(s, "usage", usage.usage_id) == [
            (bonus.id, 1_000_000, 0),
            (paid.id, 2_333_333, 233_333),  # 1,000,000 × 2,333,333 / 10,000,000 = 233,333.3
        ]

    # partial: 1,111,111 back, from the last grant burned (purchased)
    with db.tx() as s:
        first = usage_refunds.refund_usage(
            s, usage.usage_id, amount_ucr=1_111_111, reason="partial"
        )
    back1 = reversed_by(earned_ucr, total, 0, 1_111_111)
    assert back1 == 177_778  # 533,333 / 3 = 177,777.67
    assert (first.amount_ucr, first.earnings_reversed_ucr, first.earnings_owed_ucr) == (
        1_111_111,
        back1,
        0,
    )
    assert (first.refunded_total_ucr, first.charge_ucr, first.reason) == (
        1_111_111,
        total,
        "partial",
    )
    with db.tx() as s:
        assert wallets.balance(s, alice).balance_ucr == 11 * CREDIT - total + 1_111_111
        assert earnings_balance(s, creator) == earned_ucr - back1
        assert left(s, bonus.id, paid.id) == [0, 10 * CREDIT - 2_333_333 + 1_111_111]
        assert burns_of(s, "usage_refund", usage.usage_id) == [(paid.id, -1_111_111, -111_111)]

    # 2,000,000 more: the rest of what the purchased grant gave, then the bonus grant
    with db.tx() as s:
        second = usage_refunds.refund_usage(s, usage.usage_id, amount_ucr=2_000_000)
    back2 = reversed_by(earned_ucr, total, 1_111_111, 3_111_111)
    assert second.earnings_reversed_ucr == back2
    assert second.refunded_total_ucr == 3_111_111
    with db.tx() as s:
        assert left(s, bonus.id, paid.id) == [777_778, 10 * CREDIT]
        assert burns_of(s, "usage_refund", usage.usage_id) == [
            (paid.id, -1_111_111, -111_111),
            (paid.id, -1_222_222, -122_222),
            (bonus.id, -777_778, 0),
        ]

    # more than is left (222,222) is refused, nothing written
    with pytest.raises(RefundExceedsCharge) as info, db.tx() as s:
        usage_refunds.refund_usage(s, usage.usage_id, amount_ucr=222_223)
    assert info.value.context["refundable_ucr"] == 222_222
    with pytest.raises(InvalidInput), db.tx() as s:
        usage_refunds.refund_usage(s, usage.usage_id, amount_ucr=0)

    # the rest (default amount): earnings reversed in total exactly what was earned
    with db.tx() as s:
        last = usage_refunds.refund_usage(s, usage.usage_id)
    assert last.amount_ucr == 222_222 and last.refunded_total_ucr == total
    assert back1 + back2 + last.earnings_reversed_ucr == earned_ucr
    with pytest.raises(RefundExceedsCharge) as info, db.tx() as s:
        usage_refunds.refund_usage(s, usage.usage_id)
    assert info.value.context["refundable_ucr"] == 0
    with db.tx() as s:
        listed = usage_refunds.list_refunds(s, usage.usage_id)
        assert [r.amount_ucr for r in listed] == [1_111_111, 2_000_000, 222_222]
        assert [r.refunded_total_ucr for r in listed] == [1_111_111, 3_111_111, total]
        assert usage_refunds.refunded_so_far(s, usage.usage_id) == total
        assert wallets.balance(s, alice).balance_ucr == 11 * CREDIT
        assert left(s, bonus.id, paid.id) == [1 * CREDIT, 10 * CREDIT]
        assert earnings_balance(s, creator) == 0
        assert revenue_balance(s) == revenue_before
        assert refunds.open_debt(s, creator) == 0


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    total=st.integers(1, 10**9),
    usage_type=st.sampled_from(["chat", "other"]),
    data=st.data(),
)
def test_refunds_reverse_earnings_on_the_running_total(
    db: Db, total: int, usage_type: str, data: st.DataObject
) -> None:
    with db.tx() as s:
        creator = factories.user(s, _name("creator"))
        payer = factories.user(s, _name("payer"))
        wallets.grant_info(
            s, payer, total, source=GrantSource.PURCHASED, idempotency_key=f"fund:{payer}"
        )
        slug = creator_model(s, creator)
    with db.tx() as s:
        usage = charge(s, payer, slug, total, usage_type)
    earned_ucr = earned(total, usage_type)
    assert usage.earnings_ucr == earned_ucr
    done = 0
    reversed_total = 0
    steps = data.draw(st.integers(0, 3), label="partial refunds")
    while done < total:
        # a few partial refunds, then the rest (default amount: all that is left)
        amount = (
            data.draw(st.integers(1, total - done), label="refund") if steps > 0 else total - done
        )
        steps -= 1
        with db.tx() as s:
            info = usage_refunds.refund_usage(s, usage.usage_id, amount_ucr=amount)
        assert info.earnings_reversed_ucr == reversed_by(earned_ucr, total, done, done + amount)
        assert info.earnings_owed_ucr == 0
        done += amount
        reversed_total += info.earnings_reversed_ucr
        with db.tx() as s:
            assert wallets.balance(s, payer).balance_ucr == done
            assert earnings_balance(s, creator) == earned_ucr - reversed_total
    assert reversed_total == earned_ucr
    with pytest.raises(RefundExceedsCharge), db.tx() as s:
        usage_refunds.refund_usage(s, usage.usage_id, amount_ucr=1)


def test_refund_after_payout_leaves_a_debt_that_new_earnings_settle(db: Db) -> None:
    with db.tx() as s:
        creator = factories.user(s, "creator")
        alice = factories.user(s, "alice")
        bob = factories.user(s, "bob")
        for who in (alice, bob):
            wallets.grant_info(
                s, who, 10 * CREDIT, source=GrantSource.BONUS, idempotency_key=f"f{who}"
            )
        slug = creator_model(s, creator)
    with db.tx() as s:
        usage = charge(s, alice, slug, 1 * CREDIT)
    assert usage.earnings == ((creator, 160_000),)
    # the creator cashes out 100,000 of the 160,000 earned
    with db.tx() as s:
        ledger.transfer(
            s,
            ledger.NewTransfer(
                debit_account_id=users.get_user(s, creator).earnings_account_id,
                credit_account_id=ledger.platform_account(s, AccountCode.WORLD_PAYOUTS),
                amount=100_000,
                code=TransferCode.PAYOUT,
                ref_type="payout",
                ref_id=1,
                idempotency_key="payout:1",
            ),
        )
    with db.tx() as s:
        refund = usage_refunds.refund_usage(s, usage.usage_id)
    assert (refund.amount_ucr, refund.earnings_reversed_ucr, refund.earnings_owed_ucr) == (
        1 * CREDIT,
        160_000,
        100_000,
    )
    with db.tx() as s:
        assert earnings_balance(s, creator) == 0
        assert wallets.balance(s, alice).balance_ucr == 10 * CREDIT
        assert refunds.open_debt(s, creator) == 100_000
        rows = s.connection().execute(
            select(debts.c.user_id, debts.c.refund_id, debts.c.amount_ucr, debts.c.remaining_ucr)
        )
        assert [tuple(r) for r in rows] == [(creator, refund.id, 100_000, 100_000)]
        assert refunds.settle_debts(s) == 0  # nothing to collect from yet

    # new earnings (bob uses the model) are collected, oldest debt first
    with db.tx() as s:
        charge(s, bob, slug, 500_000)  # earns 80,000
    with db.tx() as s:
        assert refunds.settle_debts(s) == 80_000
    with db.tx() as s:
        assert refunds.open_debt(s, creator) == 20_000
        assert earnings_balance(s, creator) == 0
        collected = s.connection().execute(
            select(transfers.c.amount, transfers.c.ref_type).where(
                transfers.c.code == TransferCode.ADJUSTMENT.value
            )
        )
        assert [tuple(r) for r in collected] == [(80_000, "earnings_debt")]
    with db.tx() as s:
        charge(s, bob, slug, 1 * CREDIT)  # earns 160,000
    with db.tx() as s:
        assert refunds.settle_debts(s) == 20_000
        assert refunds.settle_debts(s) == 0
    with db.tx() as s:
        assert refunds.open_debt(s, creator) == 0
        assert earnings_balance(s, creator) == 140_000
        remaining = s.connection().execute(select(func.sum(debts.c.remaining_ucr))).scalar_one()
        assert remaining == 0


# ---------------------------------------------------------------- holds


def test_hold_place_capture_void_and_expiry(db: Db) -> None:
    base = _base()
    with db.tx() as s:
        creator = factories.user(s, "creator")
        alice = factories.user(s, "alice")
        bonus = wallets.grant_info(
            s, alice, 2 * CREDIT, source=GrantSource.BONUS, idempotency_key="hb", now=base
        )
        paid = wallets.grant_info(
            s,
            alice,
            8 * CREDIT,
            source=GrantSource.PURCHASED,
            idempotency_key="hp",
            cost_basis_uusd=800_000,
            now=base,
        )
        slug = creator_model(s, creator)
    with db.tx() as s:
        hold = holds.place(
            s, alice, 5 * CREDIT, timeout_s=60, idempotency_key="h1", model=slug, now=base
        )
        again = holds.place(
            s, alice, 5 * CREDIT, timeout_s=60, idempotency_key="h1", model=slug, now=base
        )
    assert again.id == hold.id
    assert (hold.status, hold.amount_ucr, hold.captured_ucr) == ("pending", 5 * CREDIT, 0)
    with db.tx() as s:
        balance = wallets.balance(s, alice)
    assert (balance.balance_ucr, balance.pending_ucr, balance.available_ucr) == (
        10 * CREDIT,
        5 * CREDIT,
        5 * CREDIT,
    )

    # capture 3 of the 5 held credits: charged through the pipeline, the rest released
    with db.tx() as s:
        captured, result = capture(s, hold.id, 3 * CREDIT, now=base + timedelta(seconds=5))
    assert (result.status, result.charge_ucr) == ("charged", 3 * CREDIT)
    assert result.earnings == ((creator, 360_000),)  # 3,000,000 × 0.2 × 0.6 ("other")
    assert (captured.status, captured.captured_ucr, captured.usage_id) == (
        "posted",
        3 * CREDIT,
        result.usage_id,
    )
    with db.tx() as s:
        record = metering.get_usage(s, result.usage_id)
        assert (record.user_id, record.charge_ucr, record.earnings_ucr) == (
            alice,
            3 * CREDIT,
            360_000,
        )
        assert record.idempotency_key == f"hold:{hold.id}"
        assert earnings_balance(s, creator) == 360_000
        assert burns_of(s, "usage", result.usage_id) == [
            (bonus.id, 2 * CREDIT, 0),
            (paid.id, 1 * CREDIT, 100_000),
        ]
        balance = wallets.balance(s, alice)
        assert (balance.balance_ucr, balance.pending_ucr, balance.available_ucr) == (
            7 * CREDIT,
            0,
            7 * CREDIT,
        )
    with pytest.raises(HoldNotPending), db.tx() as s:
        capture(s, hold.id, 1 * CREDIT, now=base + timedelta(seconds=6))

    # capture more than held: refused; void releases everything
    with db.tx() as s:
        second = holds.place(
            s, alice, 2 * CREDIT, timeout_s=60, idempotency_key="h2", model=slug, now=base
        )
    with pytest.raises(HoldAmountExceeded), db.tx() as s:
        capture(s, second.id, 2 * CREDIT + 1, now=base + timedelta(seconds=7))
    with db.tx() as s:
        assert wallets.balance(s, alice).available_ucr == 5 * CREDIT
        voided = holds.void(s, second.id, now=base + timedelta(seconds=8))
    assert (voided.status, voided.reason, voided.captured_ucr) == ("voided", "voided", 0)
    with db.tx() as s:
        balance = wallets.balance(s, alice)
        assert (balance.balance_ucr, balance.available_ucr) == (7 * CREDIT, 7 * CREDIT)
    with pytest.raises(HoldNotPending), db.tx() as s:
        holds.void(s, second.id)

    # capture of 0: the hold is voided, a zero usage row written, nothing burned
    with db.tx() as s:
        zero = holds.place(s, alice, 1 * CREDIT, timeout_s=60, idempotency_key="h0", now=base)
        info, nothing = capture(s, zero.id, 0, model=slug, now=base + timedelta(seconds=9))
    assert (info.status, info.reason, nothing.charge_ucr) == ("voided", "captured_zero", 0)
    with db.tx() as s:
        assert burns_of(s, "usage", nothing.usage_id) == []
        assert wallets.balance(s, alice).available_ucr == 7 * CREDIT

    # expiry: past its timeout a hold cannot be captured; the job voids it and frees the credits
    with db.tx() as s:
        third = holds.place(
            s, alice, 4 * CREDIT, timeout_s=60, idempotency_key="h3", model=slug, now=base
        )
        assert wallets.balance(s, alice).available_ucr == 3 * CREDIT
    later = base + timedelta(seconds=60)
    with pytest.raises(HoldExpired), db.tx() as s:
        capture(s, third.id, 1 * CREDIT, now=later)
    with db.tx() as s:
        assert ledger.expire_holds(s, now=base + timedelta(seconds=59)) == 0
        assert ledger.expire_holds(s, now=later) == 1
        assert ledger.expire_holds(s, now=later) == 0
    with db.tx() as s:
        expired = holds.get_hold(s, third.id)
        assert (expired.status, expired.reason) == ("voided", "expired")
        balance = wallets.balance(s, alice)
        assert (balance.balance_ucr, balance.pending_ucr, balance.available_ucr) == (
            7 * CREDIT,
            0,
            7 * CREDIT,
        )
        assert left(s, bonus.id, paid.id) == [0, 7 * CREDIT]
    # once the job has voided it, a capture finds it no longer pending
    with pytest.raises(HoldNotPending) as voided_info, db.tx() as s:
        capture(s, third.id, 1 * CREDIT, now=later + timedelta(seconds=1))
    assert voided_info.value.context["status"] == "voided"
    with db.tx() as s:
        assert [h.status for h in holds.list_holds(s, alice).items] == [
            "posted",
            "voided",
            "voided",
            "voided",
        ]


# ---------------------------------------------------------------- purchases


def _popular(s: Session) -> packages.PackageInfo:
    [found] = [p for p in packages.list_packages(s) if p.slug == "popular"]
    assert (found.credits_ucr, found.price_uusd, found.price_cents) == (
        POPULAR_UCR,
        POPULAR_UUSD,
        1_799,
    )
    return found


def _start(db: Db, user_id: int) -> purchases.PurchaseInfo:
    with db.tx() as s:
        package_id = _popular(s).id
    return purchases.start(
        db.tx,
        ManualProvider(),
        user_id,
        package_id,
        success_url="https://app.example/paid",
        cancel_url="https://app.example/cancelled",
    )


def _event(
    purchase: purchases.PurchaseInfo, event_id: str, kind: PaymentEventKind, **kw: object
) -> PaymentEvent:
    values: dict[str, object] = {
        "provider": "manual",
        "event_id": event_id,
        "kind": kind,
        "external_id": None,
        "purchase_id": purchase.id,
        "payment_reference": None,
        "amount_cents": None,
        "created": None,
        **kw,
    }
    return PaymentEvent(**values)  # type: ignore[arg-type]


def _purchase_transfers(s: Session, purchase_id: int) -> list[tuple[str, int]]:
    rows = s.connection().execute(
        select(transfers.c.code, transfers.c.amount)
        .where(transfers.c.ref_type == "purchase", transfers.c.ref_id == purchase_id)
        .order_by(transfers.c.id)
    )
    return [(code, int(amount)) for code, amount in rows]


def test_purchase_complete_once_then_refund_the_unspent_part(db: Db) -> None:
    with db.tx() as s:
        buyer = factories.user(s, "buyer")
        bonus = wallets.grant_info(
            s, buyer, 10 * CREDIT, source=GrantSource.BONUS, idempotency_key="welcome"
        )
        slug = creator_model(s, None)
    started = _start(db, buyer)
    assert (started.status, started.provider, started.checkout_url) == ("pending", "manual", None)
    assert started.external_id == f"manual_{started.id}"
    assert (started.credits_ucr, started.price_uusd) == (POPULAR_UCR, POPULAR_UUSD)

    with db.tx() as s:
        done, new = purchases.complete(s, started.id, payment_reference="wire-1")
    with db.tx() as s:
        again, new_again = purchases.complete(s, started.id)
    assert (new, new_again) == (True, False)
    assert done.status == again.status == "completed"
    assert done.grant_id is not None and again.grant_id == done.grant_id
    with db.tx() as s:
        grant = grants.get_grant(s, done.grant_id)
        assert grant is not None
        assert (grant.source, grant.amount_ucr, grant.cost_basis_uusd, grant.purchase_id) == (
            "purchased",
            POPULAR_UCR,
            POPULAR_UUSD,
            started.id,
        )
        assert len(grants.list_grants(s, buyer)) == 2
        assert wallets.balance(s, buyer).balance_ucr == POPULAR_UCR + 10 * CREDIT
        assert _purchase_transfers(s, started.id) == [("purchase", POPULAR_UCR)]

    # spend 50 credits: 10 from the bonus grant (burned first), 40 from the purchase
    with db.tx() as s:
        spent = charge(s, buyer, slug, 50 * CREDIT)
    with db.tx() as s:
        assert burns_of(s, "usage", spent.usage_id) == [
            (bonus.id, 10 * CREDIT, 0),
            (grant.id, 40 * CREDIT, 3_598_000),  # 17,990,000 × 40 / 200
        ]

    with pytest.raises(InvalidInput), db.tx() as s:
        purchases.refund(s, started.id, amount_ucr=160 * CREDIT + 1)
    with db.tx() as s:
        refunded, reversed_ucr = purchases.refund(s, started.id)
    assert reversed_ucr == 160 * CREDIT
    assert (refunded.status, refunded.refunded_ucr, refunded.refunded_uusd) == (
        "refunded",
        160 * CREDIT,
        POPULAR_UUSD - 3_598_000,
    )
    with db.tx() as s:
        assert wallets.balance(s, buyer).balance_ucr == 0
        assert left(s, grant.id, bonus.id) == [0, 0]
        assert burns_of(s, "purchase_refund", started.id) == [(grant.id, 160 * CREDIT, 14_392_000)]
        assert _purchase_transfers(s, started.id) == [
            ("purchase", POPULAR_UCR),
            ("refund", 160 * CREDIT),
        ]
        # nothing is left to reverse
        same, more = purchases.refund(s, started.id)
        assert more == 0 and same.refunded_ucr == 160 * CREDIT
        # the spent part of the purchase is what revenue is recognised on
        recognised = grants.recognition(s)
        assert (recognised.purchased_ucr, recognised.purchased_basis_uusd) == (
            40 * CREDIT,
            3_598_000,
        )
        assert recognised.bonus_ucr == 10 * CREDIT


def test_partial_purchase_refund_by_amount_keeps_the_rest(db: Db) -> None:
    with db.tx() as s:
        buyer = factories.user(s, "buyer")
    started = _start(db, buyer)
    with db.tx() as s:
        done, _ = purchases.complete(s, started.id)
        partial, amount = purchases.refund(s, started.id, amount_ucr=3_333_333)
    assert amount == 3_333_333
    # 17,990,000 × 3,333,333 / 200,000,000 = 299,833.3 µUSD
    assert (partial.status, partial.refunded_ucr, partial.refunded_uusd) == (
        "completed",
        3_333_333,
        299_833,
    )
    with db.tx() as s:
        assert wallets.balance(s, buyer).balance_ucr == POPULAR_UCR - 3_333_333
        assert left(s, done.grant_id) == [POPULAR_UCR - 3_333_333]
        rest, amount = purchases.refund(s, started.id)
    assert amount == POPULAR_UCR - 3_333_333
    assert (rest.status, rest.refunded_ucr, rest.refunded_uusd) == (
        "refunded",
        POPULAR_UCR,
        POPULAR_UUSD,
    )


def test_payment_events_are_applied_once_and_in_any_order(db: Db) -> None:
    with db.tx() as s:
        buyer = factories.user(s, "buyer")
    first = _start(db, buyer)
    with db.tx() as s:
        assert purchases.apply_event(s, _event(first, "evt_c1", PaymentEventKind.COMPLETED)) == (
            "completed"
        )
    with db.tx() as s:
        assert purchases.apply_event(s, _event(first, "evt_c1", PaymentEventKind.COMPLETED)) == (
            "duplicate"
        )
        # another delivery of the news, under a new event id, matched by the checkout id
        other = _event(
            first,
            "evt_c2",
            PaymentEventKind.COMPLETED,
            purchase_id=None,
            external_id=first.external_id,
        )
        assert purchases.apply_event(s, other) == "already_completed"
        # a late "expired" keeps the completion
        assert purchases.apply_event(s, _event(first, "evt_x1", PaymentEventKind.EXPIRED)) == (
            "already_completed"
        )
        assert purchases.get_purchase(s, first.id).status == "completed"
        assert wallets.balance(s, buyer).balance_ucr == POPULAR_UCR
        assert _purchase_transfers(s, first.id) == [("purchase", POPULAR_UCR)]

    # a refund that arrives before its completion completes the purchase, then refunds it
    second = _start(db, buyer)
    with db.tx() as s:
        assert purchases.apply_event(s, _event(second, "evt_r1", PaymentEventKind.REFUNDED)) == (
            "refunded"
        )
    with db.tx() as s:
        info = purchases.get_purchase(s, second.id)
        assert (info.status, info.refunded_ucr, info.refunded_uusd) == (
            "refunded",
            POPULAR_UCR,
            POPULAR_UUSD,
        )
        assert purchases.apply_event(s, _event(second, "evt_c3", PaymentEventKind.COMPLETED)) == (
            "already_completed"
        )
        assert _purchase_transfers(s, second.id) == [
            ("purchase", POPULAR_UCR),
            ("refund", POPULAR_UCR),
        ]
        assert wallets.balance(s, buyer).balance_ucr == POPULAR_UCR

    # cumulative partial refunds: $9.00 of $17.99, told twice, then the rest
    third = _start(db, buyer)
    target = POPULAR_UCR * 900 // 1_799
    assert target == 100_055_586
    with db.tx() as s:
        purchases.apply_event(s, _event(third, "evt_c4", PaymentEventKind.COMPLETED))
        assert (
            purchases.apply_event(
                s, _event(third, "evt_r2", PaymentEventKind.REFUNDED, amount_cents=900)
            )
            == "refunded"
        )
        purchases.apply_event(
            s, _event(third, "evt_r3", PaymentEventKind.REFUNDED, amount_cents=900)
        )
    with db.tx() as s:
        info = purchases.get_purchase(s, third.id)
        # basis carried: 17,990,000 × 100,055,586 / 200,000,000 = 8,999,999.96 → 9,000,000
        assert (info.status, info.refunded_ucr, info.refunded_uusd) == (
            "completed",
            target,
            9_000_000,
        )
        purchases.apply_event(
            s, _event(third, "evt_r4", PaymentEventKind.REFUNDED, amount_cents=1_799)
        )
        info = purchases.get_purchase(s, third.id)
        assert (info.status, info.refunded_ucr, info.refunded_uusd) == (
            "refunded",
            POPULAR_UCR,
            POPULAR_UUSD,
        )
        assert wallets.balance(s, buyer).balance_ucr == POPULAR_UCR

    # an expired checkout can still be completed when the money arrives after all
    fourth = _start(db, buyer)
    with db.tx() as s:
        assert purchases.apply_event(s, _event(fourth, "evt_x2", PaymentEventKind.EXPIRED)) == (
            "expired"
        )
        assert purchases.get_purchase(s, fourth.id).status == "expired"
        assert purchases.apply_event(s, _event(fourth, "evt_c5", PaymentEventKind.COMPLETED)) == (
            "completed"
        )
        assert purchases.get_purchase(s, fourth.id).status == "completed"
        assert wallets.balance(s, buyer).balance_ucr == 2 * POPULAR_UCR
