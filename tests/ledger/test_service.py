"""Ledger service (DESIGN §3): transfers, idempotency, holds, expiry and reversals.

Every test runs on SQLite and PostgreSQL (the ``db`` fixture), which also checks the ledger
invariants when the test ends. Refusals are checked in the *same* transaction as the failed
call, before any rollback: a refused operation must not have written anything at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.errors import DomainError, IdempotencyConflict, NotFound
from modelbank.ledger import invariants
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode, TransferFlags
from modelbank.ledger.errors import (
    AccountNotFound,
    HoldAmountExceeded,
    HoldExpired,
    HoldNotPending,
    InsufficientFunds,
    InvalidTransfer,
    LedgerError,
    TransferNotFound,
)
from modelbank.ledger.models import accounts_table as accounts
from modelbank.ledger.models import transfers_table as transfers
from tests.conftest import Db

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Accounts:
    alice: int  # wallet, flagged
    bob: int  # wallet, flagged
    bob_earnings: int  # flagged
    revenue: int  # platform, unflagged
    sales: int  # world_sales, unflagged: the source of purchased credits


def _open(db: Db, *, alice_ucr: int = 0) -> Accounts:
    with db.tx() as s:
        platform = ledger.ensure_platform_accounts(s)
        alice = ledger.open_user_accounts(s, 1)
        bob = ledger.open_user_accounts(s, 2)
        accts = Accounts(
            alice=alice[AccountCode.USER_WALLET],
            bob=bob[AccountCode.USER_WALLET],
            bob_earnings=bob[AccountCode.USER_EARNINGS],
            revenue=platform[AccountCode.PLATFORM_REVENUE],
            sales=platform[AccountCode.WORLD_SALES],
        )
        if alice_ucr:
            _fund(s, accts, accts.alice, alice_ucr, "fund:alice")
    return accts


def _fund(s: Session, a: Accounts, account: int, amount: int, key: str) -> int:
    return ledger.transfer(
        s,
        ledger.NewTransfer(
            debit_account_id=a.sales,
            credit_account_id=account,
            amount=amount,
            code=TransferCode.PURCHASE,
            idempotency_key=key,
        ),
        now=T0,
    )


def _spec(debit: int, credit: int, amount: int, key: str | None = None, **kw: Any) -> Any:
    return ledger.NewTransfer(
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        code=kw.pop("code", TransferCode.USAGE_CHARGE),
        idempotency_key=key,
        **kw,
    )


def _snapshot(s: Session) -> tuple[Any, ...]:
    conn = s.connection()
    totals = conn.execute(
        select(
            accounts.c.id,
            accounts.c.debits_posted,
            accounts.c.credits_posted,
            accounts.c.debits_pending,
            accounts.c.credits_pending,
        ).order_by(accounts.c.id)
    ).all()
    count, last = conn.execute(
        select(func.count(), func.coalesce(func.max(transfers.c.id), 0)).select_from(transfers)
    ).one()
    return tuple(tuple(row) for row in totals), int(count), int(last)


def _bal(s: Session, account: int) -> tuple[int, int]:
    """(posted balance, available) in µcr."""
    b = ledger.get_balance(s, account)
    return b.balance, b.available


# ---------------------------------------------------------------- transfers


def test_transfer_moves_exact_amounts(db: Db) -> None:
    a = _open(db, alice_ucr=1_000_000)
    with db.tx() as s:
        tid = ledger.transfer(s, _spec(a.alice, a.revenue, 333_333, "t1"), now=T0)
        alice, revenue = ledger.get_balance(s, a.alice), ledger.get_balance(s, a.revenue)
        assert (alice.credits_posted, alice.debits_posted) == (1_000_000, 333_333)
        assert alice.balance == alice.available == 666_667
        assert (revenue.credits_posted, revenue.debits_posted, revenue.balance) == (
            333_333,
            0,
            333_333,
        )
        assert ledger.get_balance(s, a.sales).balance == -1_000_000
        row = s.connection().execute(select(transfers).where(transfers.c.id == tid)).one()
        assert (row.amount, row.flags, row.code) == (333_333, 0, "usage_charge")


def test_transfer_same_key_same_body_replays(db: Db) -> None:
    a = _open(db, alice_ucr=1_000_000)
    with db.tx() as s:
        first = ledger.transfer(s, _spec(a.alice, a.bob, 400_000, "k"), now=T0)
    with db.tx() as s:
        before = _snapshot(s)
        again = ledger.transfer(s, _spec(a.alice, a.bob, 400_000, "k"), now=T0)
        assert again == first
        assert _snapshot(s) == before
        assert _bal(s, a.alice) == (600_000, 600_000)
        assert _bal(s, a.bob) == (400_000, 400_000)


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 400_001},
        {"credit": "revenue"},
        {"code": TransferCode.REFUND},
    ],
    ids=["amount", "credit_account", "code"],
)
def test_transfer_same_key_different_body_conflicts(db: Db, change: dict[str, Any]) -> None:
    a = _open(db, alice_ucr=1_000_000)
    with db.tx() as s:
        ledger.transfer(s, _spec(a.alice, a.bob, 400_000, "k"), now=T0)
    with db.tx() as s:
        before = _snapshot(s)
        credit = a.revenue if change.get("credit") == "revenue" else a.bob
        spec = _spec(
            a.alice,
            credit,
            change.get("amount", 400_000),
            "k",
            code=change.get("code", TransferCode.USAGE_CHARGE),
        )
        with pytest.raises(IdempotencyConflict) as info:
            ledger.transfer(s, spec, now=T0)
        assert info.value.code == "idempotency_key_reused"
        assert info.value.context["idempotency_key"] == "k"
        assert _snapshot(s) == before


def test_transfer_without_key_is_refused(db: Db) -> None:
    a = _open(db, alice_ucr=10)
    with db.tx() as s:
        before = _snapshot(s)
        with pytest.raises(InvalidTransfer):
            ledger.transfer(s, _spec(a.alice, a.bob, 1), now=T0)
        assert _snapshot(s) == before


def test_insufficient_funds_changes_nothing(db: Db) -> None:
    a = _open(db, alice_ucr=1_000_000)
    with db.tx() as s:
        before = _snapshot(s)
        with pytest.raises(InsufficientFunds) as info:
            ledger.transfer(s, _spec(a.alice, a.bob, 1_000_001, "over"), now=T0)
        assert info.value.code == "insufficient_funds"
        assert info.value.context == {
            "account_id": a.alice,
            "available_ucr": 1_000_000,
            "needed_ucr": 1_000_001,
        }
        assert _snapshot(s) == before
    with db.tx() as s:
        assert _snapshot(s) == before
        # the refused key was not consumed; the exact balance can be spent to zero
        ledger.transfer(s, _spec(a.alice, a.bob, 1_000_000, "over"), now=T0)
        assert _bal(s, a.alice) == (0, 0)
        assert _bal(s, a.bob) == (1_000_000, 1_000_000)


def test_empty_flagged_account_cannot_pay_one_microcredit(db: Db) -> None:
    a = _open(db)
    with db.tx() as s:
        with pytest.raises(InsufficientFunds):
            ledger.transfer(s, _spec(a.bob_earnings, a.revenue, 1, "x"), now=T0)
        # unflagged platform accounts may go negative
        ledger.transfer(s, _spec(a.revenue, a.bob_earnings, 5, "y"), now=T0)
        assert _bal(s, a.revenue) == (-5, -5)
        assert _bal(s, a.bob_earnings) == (5, 5)


@pytest.mark.parametrize("amount", [0, -1, -1_000_000])
def test_non_positive_amount_is_invalid(db: Db, amount: int) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        before = _snapshot(s)
        with pytest.raises(InvalidTransfer) as info:
            ledger.transfer(s, _spec(a.alice, a.bob, amount, "bad"), now=T0)
        assert info.value.code == "invalid_transfer"
        with pytest.raises(InvalidTransfer):
            ledger.post_transfers(s, [_spec(a.alice, a.bob, amount)], now=T0)
        with pytest.raises(InvalidTransfer):
            ledger.create_hold(s, _spec(a.alice, a.bob, amount, "h"), timeout_s=60, now=T0)
        assert _snapshot(s) == before


def test_same_account_is_invalid(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        before = _snapshot(s)
        with pytest.raises(InvalidTransfer):
            ledger.transfer(s, _spec(a.alice, a.alice, 10, "self"), now=T0)
        with pytest.raises(InvalidTransfer):
            ledger.post_transfers(s, [_spec(a.revenue, a.revenue, 10)], now=T0)
        with pytest.raises(InvalidTransfer):
            ledger.create_hold(s, _spec(a.alice, a.alice, 10, "hs"), timeout_s=60, now=T0)
        assert _snapshot(s) == before


def test_non_integer_amount_is_invalid(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        with pytest.raises(InvalidTransfer):
            ledger.transfer(s, _spec(a.alice, a.bob, True, "bool"), now=T0)  # type: ignore[arg-type]
        with pytest.raises(InvalidTransfer):
            ledger.transfer(s, _spec(a.alice, a.bob, 1.5, "float"), now=T0)  # type: ignore[arg-type]


def test_missing_account_is_not_found(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        before = _snapshot(s)
        with pytest.raises(AccountNotFound) as info:
            ledger.transfer(s, _spec(a.alice, 999_999, 10, "ghost"), now=T0)
        assert isinstance(info.value, NotFound)
        assert _snapshot(s) == before
        with pytest.raises(AccountNotFound):
            ledger.get_balance(s, 999_999)


def test_linked_transfers_are_all_or_none(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        before = _snapshot(s)
        with pytest.raises(InsufficientFunds):
            ledger.post_transfers(
                s,
                [
                    _spec(a.alice, a.revenue, 600),
                    _spec(a.revenue, a.bob_earnings, 100, code=TransferCode.EARNING),
                    _spec(a.alice, a.revenue, 401),  # 1,001 in total from a 1,000 wallet
                ],
                now=T0,
            )
        assert _snapshot(s) == before
        ledger.post_transfers(
            s,
            [
                _spec(a.alice, a.revenue, 600),
                _spec(a.revenue, a.bob_earnings, 100, code=TransferCode.EARNING),
                _spec(a.alice, a.revenue, 400),
            ],
            now=T0,
        )
        assert _bal(s, a.alice) == (0, 0)
        assert _bal(s, a.revenue) == (900, 900)
        assert _bal(s, a.bob_earnings) == (100, 100)
        # the balance check is on each account's net change over the group: credit routed
        # through an account in the same group pays for its debit
        ledger.post_transfers(
            s,
            [_spec(a.revenue, a.bob_earnings, 50), _spec(a.bob_earnings, a.bob, 150)],
            now=T0,
        )
        assert _bal(s, a.bob_earnings) == (0, 0)
        assert _bal(s, a.bob) == (150, 150)


# ---------------------------------------------------------------- holds


def test_hold_reduces_available_not_balance(db: Db) -> None:
    a = _open(db, alice_ucr=1_000_000)
    with db.tx() as s:
        hold = ledger.create_hold(s, _spec(a.alice, a.revenue, 300_000, "h"), timeout_s=60, now=T0)
        alice = ledger.get_balance(s, a.alice)
        assert (alice.balance, alice.available, alice.debits_pending) == (
            1_000_000,
            700_000,
            300_000,
        )
        revenue = ledger.get_balance(s, a.revenue)
        assert (revenue.balance, revenue.credits_pending) == (0, 300_000)
        info = ledger.get_hold(s, hold)
        assert (info.status, info.amount, info.posted_amount) == ("pending", 300_000, 0)
        assert info.expires_at == T0 + timedelta(seconds=60)
        # the reservation counts against later spending
        with pytest.raises(InsufficientFunds) as err:
            ledger.transfer(s, _spec(a.alice, a.bob, 700_001, "t"), now=T0)
        assert err.value.context["available_ucr"] == 700_000
        with pytest.raises(InsufficientFunds):
            ledger.create_hold(s, _spec(a.alice, a.bob, 700_001, "h2"), timeout_s=60, now=T0)


def test_hold_is_idempotent(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        first = ledger.create_hold(s, _spec(a.alice, a.revenue, 600, "h"), timeout_s=60, now=T0)
        before = _snapshot(s)
        again = ledger.create_hold(s, _spec(a.alice, a.revenue, 600, "h"), timeout_s=60, now=T0)
        assert again == first
        assert _snapshot(s) == before
        with pytest.raises(IdempotencyConflict):
            ledger.create_hold(s, _spec(a.alice, a.revenue, 601, "h"), timeout_s=60, now=T0)
        assert _bal(s, a.alice) == (1_000, 400)


@pytest.mark.parametrize("timeout_s", [0, -1, ledger.MAX_HOLD_TIMEOUT_S + 1])
def test_hold_timeout_out_of_range(db: Db, timeout_s: int) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        before = _snapshot(s)
        with pytest.raises(InvalidTransfer):
            ledger.create_hold(s, _spec(a.alice, a.revenue, 1, "h"), timeout_s=timeout_s, now=T0)
        assert _snapshot(s) == before


def test_post_less_than_held_releases_the_rest(db: Db) -> None:
    a = _open(db, alice_ucr=1_000_000)
    with db.tx() as s:
        hold = ledger.create_hold(s, _spec(a.alice, a.revenue, 600_000, "h"), timeout_s=60, now=T0)
    with db.tx() as s:
        post_id = ledger.post_hold(s, hold, 450_001, now=T0 + timedelta(seconds=59))
        alice = ledger.get_balance(s, a.alice)
        assert (alice.balance, alice.available, alice.debits_pending, alice.debits_posted) == (
            549_999,
            549_999,
            0,
            450_001,
        )
        revenue = ledger.get_balance(s, a.revenue)
        assert (revenue.balance, revenue.credits_pending) == (450_001, 0)
        info = ledger.get_hold(s, hold)
        assert (info.status, info.posted_amount) == ("posted", 450_001)
        row = s.connection().execute(select(transfers).where(transfers.c.id == post_id)).one()
        assert (row.pending_id, row.amount, row.flags) == (
            hold,
            450_001,
            int(TransferFlags.POST_PENDING),
        )


def test_post_defaults_to_the_whole_hold(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        hold = ledger.create_hold(s, _spec(a.alice, a.bob, 1_000, "h"), timeout_s=60, now=T0)
        ledger.post_hold(s, hold, now=T0)
        assert _bal(s, a.alice) == (0, 0)
        assert _bal(s, a.bob) == (1_000, 1_000)
        assert ledger.get_hold(s, hold).posted_amount == 1_000


def test_post_more_than_held_is_refused(db: Db) -> None:
    a = _open(db, alice_ucr=1_000_000)
    with db.tx() as s:
        hold = ledger.create_hold(s, _spec(a.alice, a.revenue, 500, "h"), timeout_s=60, now=T0)
        before = _snapshot(s)
        with pytest.raises(HoldAmountExceeded) as info:
            ledger.post_hold(s, hold, 501, now=T0)
        assert info.value.code == "hold_amount_exceeded"
        assert info.value.context == {"held_ucr": 500, "amount_ucr": 501}
        assert _snapshot(s) == before
        assert ledger.get_hold(s, hold).status == "pending"


@pytest.mark.parametrize("amount", [0, -5])
def test_post_non_positive_is_invalid(db: Db, amount: int) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        hold = ledger.create_hold(s, _spec(a.alice, a.revenue, 500, "h"), timeout_s=60, now=T0)
        before = _snapshot(s)
        with pytest.raises(InvalidTransfer):
            ledger.post_hold(s, hold, amount, now=T0)
        assert _snapshot(s) == before


def test_post_twice_is_refused(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        hold = ledger.create_hold(s, _spec(a.alice, a.revenue, 500, "h"), timeout_s=60, now=T0)
        ledger.post_hold(s, hold, 200, now=T0)
    with db.tx() as s:
        before = _snapshot(s)
        with pytest.raises(HoldNotPending) as info:
            ledger.post_hold(s, hold, 100, now=T0)
        assert info.value.code == "hold_not_pending"
        assert info.value.context["status"] == "posted"
        with pytest.raises(HoldNotPending):
            ledger.void_hold(s, hold, now=T0)
        assert _snapshot(s) == before
        assert _bal(s, a.alice) == (800, 800)


def test_void_releases_everything(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        hold = ledger.create_hold(s, _spec(a.alice, a.revenue, 700, "h"), timeout_s=60, now=T0)
        void_id = ledger.void_hold(s, hold, now=T0)
        alice = ledger.get_balance(s, a.alice)
        assert (alice.balance, alice.available, alice.debits_pending, alice.debits_posted) == (
            1_000,
            1_000,
            0,
            0,
        )
        revenue = ledger.get_balance(s, a.revenue)
        assert (revenue.credits_pending, revenue.credits_posted) == (0, 0)
        info = ledger.get_hold(s, hold)
        assert (info.status, info.posted_amount) == ("voided", 0)
        row = s.connection().execute(select(transfers).where(transfers.c.id == void_id)).one()
        assert (row.pending_id, row.flags) == (hold, int(TransferFlags.VOID_PENDING))
        before = _snapshot(s)
        with pytest.raises(HoldNotPending):
            ledger.void_hold(s, hold, now=T0)
        with pytest.raises(HoldNotPending):
            ledger.post_hold(s, hold, 1, now=T0)
        assert _snapshot(s) == before


def test_expire_holds_voids_only_expired_and_is_idempotent(db: Db) -> None:
    a = _open(db, alice_ucr=10_000)
    with db.tx() as s:
        short = ledger.create_hold(s, _spec(a.alice, a.revenue, 1_000, "s"), timeout_s=10, now=T0)
        edge = ledger.create_hold(s, _spec(a.alice, a.revenue, 2_000, "e"), timeout_s=30, now=T0)
        long = ledger.create_hold(s, _spec(a.alice, a.revenue, 3_000, "l"), timeout_s=3_600, now=T0)
        posted = ledger.create_hold(s, _spec(a.alice, a.bob, 500, "p"), timeout_s=5, now=T0)
        ledger.post_hold(s, posted, 400, now=T0)
    with db.tx() as s:
        assert ledger.expire_holds(s, now=T0 + timedelta(seconds=9)) == 0
    with db.tx() as s:
        # expires_at ≤ now is expired: the 30 s hold expires exactly at T0 + 30 s
        assert ledger.expire_holds(s, now=T0 + timedelta(seconds=30)) == 2
    with db.tx() as s:
        assert ledger.expire_holds(s, now=T0 + timedelta(seconds=30)) == 0
        assert ledger.expire_holds(s, now=T0 + timedelta(seconds=60)) == 0
        statuses = [ledger.get_hold(s, h).status for h in (short, edge, long, posted)]
        assert statuses == ["voided", "voided", "pending", "posted"]
        alice = ledger.get_balance(s, a.alice)
        assert (alice.balance, alice.debits_pending, alice.available) == (9_600, 3_000, 6_600)
        reasons = (
            s.connection()
            .execute(select(transfers.c.metadata).where(transfers.c.pending_id.in_([short, edge])))
            .scalars()
            .all()
        )
        assert reasons == [{"reason": "expired"}, {"reason": "expired"}]


def test_expire_holds_is_bounded(db: Db) -> None:
    a = _open(db, alice_ucr=10_000)
    with db.tx() as s:
        for i in range(5):
            ledger.create_hold(s, _spec(a.alice, a.revenue, 100, f"h{i}"), timeout_s=1, now=T0)
    later = T0 + timedelta(seconds=2)
    with db.tx() as s:
        assert ledger.expire_holds(s, now=later, limit=2) == 2
        assert ledger.expire_holds(s, now=later, limit=2) == 2
        assert ledger.expire_holds(s, now=later, limit=2) == 1
        assert ledger.expire_holds(s, now=later, limit=2) == 0
        assert _bal(s, a.alice) == (10_000, 10_000)


def test_post_after_expiry_is_refused(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        hold = ledger.create_hold(s, _spec(a.alice, a.revenue, 500, "h"), timeout_s=10, now=T0)
    with db.tx() as s:
        before = _snapshot(s)
        with pytest.raises(HoldExpired) as info:
            ledger.post_hold(s, hold, 100, now=T0 + timedelta(seconds=10))
        assert info.value.code == "hold_expired"
        assert _snapshot(s) == before
        assert ledger.get_hold(s, hold).status == "pending"
    with db.tx() as s:
        assert ledger.expire_holds(s, now=T0 + timedelta(seconds=11)) == 1
    with db.tx() as s:
        with pytest.raises(HoldNotPending):
            ledger.post_hold(s, hold, 100, now=T0 + timedelta(seconds=12))
        assert _bal(s, a.alice) == (1_000, 1_000)


def test_unknown_hold_is_not_found(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        plain = ledger.transfer(s, _spec(a.alice, a.bob, 10, "plain"), now=T0)
        for call in (
            lambda: ledger.get_hold(s, 999_999),
            lambda: ledger.post_hold(s, 999_999, now=T0),
            lambda: ledger.void_hold(s, 999_999, now=T0),
            lambda: ledger.post_hold(s, plain, now=T0),  # a plain transfer is no hold
        ):
            with pytest.raises(TransferNotFound) as info:
                call()
            assert info.value.code == "transfer_not_found"


# ---------------------------------------------------------------- reversals


def test_reverse_in_full(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        original = ledger.transfer(s, _spec(a.alice, a.revenue, 700, "t"), now=T0)
        rev = ledger.reverse(s, original, idempotency_key="rev", now=T0)
        assert _bal(s, a.alice) == (1_000, 1_000)
        assert _bal(s, a.revenue) == (0, 0)
        row = s.connection().execute(select(transfers).where(transfers.c.id == rev)).one()
        assert (row.reverses_id, row.amount, row.debit_account_id, row.credit_account_id) == (
            original,
            700,
            a.revenue,
            a.alice,
        )
        assert row.code == "usage_charge"
        before = _snapshot(s)
        with pytest.raises(InvalidTransfer):
            ledger.reverse(s, original, idempotency_key="rev2", now=T0)
        with pytest.raises(InvalidTransfer):
            ledger.reverse(s, original, amount=1, idempotency_key="rev3", now=T0)
        assert _snapshot(s) == before


def test_reverse_partially_then_the_rest(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        original = ledger.transfer(s, _spec(a.alice, a.revenue, 700, "t"), now=T0)
        ledger.reverse(s, original, amount=250, idempotency_key="r1", now=T0)
        assert _bal(s, a.alice) == (550, 550)
        before = _snapshot(s)
        with pytest.raises(InvalidTransfer):
            ledger.reverse(s, original, amount=451, idempotency_key="r2", now=T0)
        assert _snapshot(s) == before
        ledger.reverse(s, original, idempotency_key="r3", now=T0)  # the remaining 450
        assert _bal(s, a.alice) == (1_000, 1_000)
        assert _bal(s, a.revenue) == (0, 0)


@pytest.mark.parametrize("amount", [701, 0, -1])
def test_reverse_bad_amount_is_invalid(db: Db, amount: int) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        original = ledger.transfer(s, _spec(a.alice, a.revenue, 700, "t"), now=T0)
        before = _snapshot(s)
        with pytest.raises(InvalidTransfer):
            ledger.reverse(s, original, amount=amount, idempotency_key="r", now=T0)
        assert _snapshot(s) == before


def test_reverse_of_hold_or_void_is_invalid(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        pending = ledger.create_hold(s, _spec(a.alice, a.revenue, 300, "h1"), timeout_s=60, now=T0)
        voided = ledger.create_hold(s, _spec(a.alice, a.revenue, 200, "h2"), timeout_s=60, now=T0)
        void_id = ledger.void_hold(s, voided, now=T0)
        before = _snapshot(s)
        for target in (pending, voided, void_id):
            with pytest.raises(InvalidTransfer):
                ledger.reverse(s, target, idempotency_key=f"r{target}", now=T0)
        assert _snapshot(s) == before
        with pytest.raises(TransferNotFound):
            ledger.reverse(s, 999_999, idempotency_key="r-missing", now=T0)


def test_reverse_of_a_posted_hold(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        hold = ledger.create_hold(s, _spec(a.alice, a.revenue, 600, "h"), timeout_s=60, now=T0)
        post_id = ledger.post_hold(s, hold, 500, now=T0)
        ledger.reverse(s, post_id, amount=200, idempotency_key="r", now=T0)
        assert _bal(s, a.alice) == (700, 700)
        assert _bal(s, a.revenue) == (300, 300)
        with pytest.raises(InvalidTransfer):
            ledger.reverse(s, post_id, amount=301, idempotency_key="r2", now=T0)


def test_reverse_refused_when_credited_wallet_spent_it(db: Db) -> None:
    a = _open(db)
    with db.tx() as s:
        grant = _fund(s, a, a.alice, 1_000, "g")
        ledger.transfer(s, _spec(a.alice, a.revenue, 800, "spend"), now=T0)
        before = _snapshot(s)
        with pytest.raises(InsufficientFunds) as info:
            ledger.reverse(s, grant, idempotency_key="claw", now=T0)
        assert info.value.context["available_ucr"] == 200
        assert info.value.context["needed_ucr"] == 1_000
        assert _snapshot(s) == before
        ledger.reverse(s, grant, amount=200, idempotency_key="claw2", now=T0)
        assert _bal(s, a.alice) == (0, 0)


def test_reverse_replay_with_explicit_amount(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        original = ledger.transfer(s, _spec(a.alice, a.revenue, 700, "t"), now=T0)
        first = ledger.reverse(s, original, amount=300, idempotency_key="r", now=T0)
        before = _snapshot(s)
        assert ledger.reverse(s, original, amount=300, idempotency_key="r", now=T0) == first
        assert _snapshot(s) == before
        with pytest.raises(IdempotencyConflict):
            ledger.reverse(s, original, amount=301, idempotency_key="r", now=T0)
        assert _bal(s, a.alice) == (600, 600)


def test_reverse_replay_of_a_full_reversal(db: Db) -> None:
    """A retried full reversal (no amount, same key) must return the first reversal.

    DESIGN §3: the same key with the same body returns the first result; retries never
    fail or double-refund.
    """
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        original = ledger.transfer(s, _spec(a.alice, a.revenue, 700, "t"), now=T0)
        first = ledger.reverse(s, original, idempotency_key="refund:t", now=T0)
    with db.tx() as s:
        before = _snapshot(s)
        assert ledger.reverse(s, original, idempotency_key="refund:t", now=T0) == first
        assert _snapshot(s) == before


def test_all_ledger_errors_are_domain_errors_with_stable_codes() -> None:
    codes = {
        cls: cls.code
        for cls in (
            InsufficientFunds,
            InvalidTransfer,
            HoldNotPending,
            HoldExpired,
            HoldAmountExceeded,
        )
    }
    assert all(issubclass(cls, LedgerError) for cls in codes)
    assert all(issubclass(cls, DomainError) for cls in (TransferNotFound, AccountNotFound))
    assert list(codes.values()) == [
        "insufficient_funds",
        "invalid_transfer",
        "hold_not_pending",
        "hold_expired",
        "hold_amount_exceeded",
    ]


def test_activity_leaves_invariants_sound(db: Db) -> None:
    a = _open(db, alice_ucr=5_000)
    with db.tx() as s:
        t = ledger.transfer(s, _spec(a.alice, a.bob, 1_000, "t"), now=T0)
        h1 = ledger.create_hold(s, _spec(a.alice, a.revenue, 700, "h1"), timeout_s=5, now=T0)
        h2 = ledger.create_hold(s, _spec(a.bob, a.revenue, 300, "h2"), timeout_s=5, now=T0)
        ledger.create_hold(s, _spec(a.alice, a.revenue, 100, "h3"), timeout_s=500, now=T0)
        ledger.post_hold(s, h1, 650, now=T0)
        ledger.void_hold(s, h2, now=T0)
        ledger.reverse(s, t, amount=10, idempotency_key="r", now=T0)
        ledger.expire_holds(s, now=T0 + timedelta(seconds=10))
        assert invariants.check(s) == []
        assert _bal(s, a.alice) == (5_000 - 1_000 - 650 + 10, 5_000 - 1_000 - 650 + 10 - 100)


def test_reverse_replay_of_the_remaining_part(db: Db) -> None:
    """Same bug family: "reverse what is left" retried with its key must replay, not 409."""
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        original = ledger.transfer(s, _spec(a.alice, a.revenue, 700, "t"), now=T0)
        ledger.reverse(s, original, amount=300, idempotency_key="r1", now=T0)
        rest = ledger.reverse(s, original, idempotency_key="r2", now=T0)
        assert ledger.reverse(s, original, idempotency_key="r2", now=T0) == rest
        assert _bal(s, a.alice) == (1_000, 1_000)


def test_reversal_key_reused_for_another_transfer_conflicts(db: Db) -> None:
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        t1 = ledger.transfer(s, _spec(a.alice, a.revenue, 100, "t1"), now=T0)
        t2 = ledger.transfer(s, _spec(a.alice, a.revenue, 100, "t2"), now=T0)
        ledger.reverse(s, t1, idempotency_key="refund", now=T0)
        before = _snapshot(s)
        # same accounts and amount, but it undoes a different transfer: not a replay
        with pytest.raises(IdempotencyConflict):
            ledger.reverse(s, t2, idempotency_key="refund", now=T0)
        assert _snapshot(s) == before


def test_transfer_with_a_hold_key_conflicts(db: Db) -> None:
    """A hold only reserves credits (and expires): replaying its key as a posted transfer
    must not report the hold's id as if the credits had moved."""
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        ledger.create_hold(s, _spec(a.alice, a.revenue, 400, "k"), timeout_s=60, now=T0)
        with pytest.raises(IdempotencyConflict):
            ledger.transfer(s, _spec(a.alice, a.revenue, 400, "k"), now=T0)
        assert _bal(s, a.alice) == (1_000, 600)


def test_transfer_same_key_different_ref_conflicts(db: Db) -> None:
    """DESIGN §3: the same key with a different body is a conflict; ``ref`` (what the
    transfer belongs to) is part of the body."""
    a = _open(db, alice_ucr=1_000)
    with db.tx() as s:
        ledger.transfer(s, _spec(a.alice, a.revenue, 100, "k", ref_type="usage", ref_id=1), now=T0)
        with pytest.raises(IdempotencyConflict):
            ledger.transfer(
                s, _spec(a.alice, a.revenue, 100, "k", ref_type="usage", ref_id=2), now=T0
            )
