"""``invariants.check`` names the invariant a corrupted ledger breaks (DESIGN §3).

Each test builds a sound ledger through the service, then corrupts it with raw SQL inside a
transaction that is rolled back afterwards, so the ``db`` fixture's own invariant check at
teardown still sees a sound ledger. One test corrupts and commits a throw-away SQLite file.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from modelbank.db.engine import make_engine, session_factory
from modelbank.db.migrate import upgrade
from modelbank.ledger import invariants
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode, TransferFlags
from modelbank.ledger.models import transfers_table as transfers
from tests.conftest import Db

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Ledger:
    alice: int
    bob: int
    revenue: int
    sales: int
    hold: int  # alice → revenue, 100 µcr, pending
    charge: int  # alice → revenue, 300 µcr, posted


def _build(session: Session) -> Ledger:
    """alice: bought 1,000, paid 300, holds 100; bob: received 200 from alice."""
    platform = ledger.ensure_platform_accounts(session)
    alice = ledger.open_user_accounts(session, 1)[AccountCode.USER_WALLET]
    bob = ledger.open_user_accounts(session, 2)[AccountCode.USER_WALLET]
    revenue = platform[AccountCode.PLATFORM_REVENUE]
    sales = platform[AccountCode.WORLD_SALES]

    def spec(debit: int, credit: int, amount: int, key: str) -> ledger.NewTransfer:
        return ledger.NewTransfer(debit, credit, amount, TransferCode.USAGE_CHARGE, None, None, key)

    ledger.transfer(session, spec(sales, alice, 1_000, "buy"), now=T0)
    charge = ledger.transfer(session, spec(alice, revenue, 300, "charge"), now=T0)
    ledger.transfer(session, spec(alice, bob, 200, "gift"), now=T0)
    hold = ledger.create_hold(session, spec(alice, revenue, 100, "hold"), timeout_s=60, now=T0)
    done = ledger.create_hold(session, spec(alice, revenue, 50, "done"), timeout_s=60, now=T0)
    ledger.post_hold(session, done, 40, now=T0)
    gone = ledger.create_hold(session, spec(bob, revenue, 20, "gone"), timeout_s=60, now=T0)
    ledger.void_hold(session, gone, now=T0)
    ledger.reverse(session, charge, amount=30, idempotency_key="refund", now=T0)
    return Ledger(alice=alice, bob=bob, revenue=revenue, sales=sales, hold=hold, charge=charge)


@pytest.fixture
def built(db: Db) -> Ledger:
    with db.tx() as s:
        return _build(s)


@contextmanager
def corrupting(db: Db) -> Iterator[Session]:
    """A transaction that is always rolled back: corrupt, check, forget."""
    session = db.factory()
    session.begin()
    try:
        yield session
    finally:
        session.rollback()
        session.close()
    assert db.violations() == [], "the corruption leaked out of its transaction"


def _sql(s: Session, statement: str, **params: Any) -> None:
    s.execute(text(statement), params)


def _names(s: Session, **kw: Any) -> list[str]:
    return sorted(v.name for v in invariants.check(s, **kw))


def _raw_transfer(s: Session, **values: Any) -> int:
    row: dict[str, Any] = {
        "idempotency_key": None,
        "amount": 1,
        "code": TransferCode.ADJUSTMENT.value,
        "flags": 0,
        "pending_id": None,
        "reverses_id": None,
        "expires_at": None,
        "ref_type": None,
        "ref_id": None,
        "created_at": T0,
        "metadata": None,
    }
    row.update(values)
    return int(s.execute(insert(transfers).returning(transfers.c.id), row).scalar_one())


# ---------------------------------------------------------------- sound ledgers


def test_sound_ledger_has_no_violations(db: Db, built: Ledger) -> None:
    with db.tx() as s:
        assert invariants.check(s) == []
        alice = ledger.get_balance(s, built.alice)
        assert (alice.balance, alice.available) == (1_000 - 300 - 200 - 40 + 30, 390)


def test_empty_ledger_has_no_violations(db: Db) -> None:
    assert db.violations() == []


# ---------------------------------------------------------------- balanced / totals


def test_one_sided_credit_breaks_balance_and_totals(db: Db, built: Ledger) -> None:
    with corrupting(db) as s:
        _sql(
            s,
            "UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = :id",
            id=built.alice,
        )
        found = invariants.check(s)
        assert sorted(v.name for v in found) == ["balanced", "totals_match_transfers"]
        totals = [v for v in found if v.name == "totals_match_transfers"]
        assert f"account {built.alice} " in totals[0].detail
        assert str(totals[0]).startswith("totals_match_transfers: ")


def test_one_sided_pending_breaks_balance_and_totals(db: Db, built: Ledger) -> None:
    with corrupting(db) as s:
        _sql(
            s,
            "UPDATE accounts SET debits_pending = debits_pending + 7 WHERE id = :id",
            id=built.bob,
        )
        assert _names(s) == ["balanced", "totals_match_transfers"]


def test_balanced_drift_breaks_only_totals(db: Db, built: Ledger) -> None:
    with corrupting(db) as s:
        # 5 µcr appear in alice's wallet and vanish from revenue: still balanced, still ≥ 0
        _sql(
            s,
            "UPDATE accounts SET credits_posted = credits_posted + 5 WHERE id = :id",
            id=built.alice,
        )
        _sql(
            s,
            "UPDATE accounts SET debits_posted = debits_posted + 5 WHERE id = :id",
            id=built.revenue,
        )
        found = invariants.check(s)
        assert [v.name for v in found] == ["totals_match_transfers"] * 2
        details = " | ".join(v.detail for v in found)
        assert f"account {built.alice} " in details
        assert f"account {built.revenue} " in details


def test_hold_released_without_resolution_breaks_totals(db: Db, built: Ledger) -> None:
    with corrupting(db) as s:
        _sql(s, "UPDATE accounts SET debits_pending = 0 WHERE id = :id", id=built.alice)
        _sql(s, "UPDATE accounts SET credits_pending = 0 WHERE id = :id", id=built.revenue)
        assert _names(s) == ["totals_match_transfers"] * 2


def test_limit_caps_each_invariant(db: Db, built: Ledger) -> None:
    with corrupting(db) as s:
        # +1 on both sides of every account: balanced, balances unchanged, totals all wrong
        _sql(
            s,
            "UPDATE accounts SET debits_posted = debits_posted + 1,"
            " credits_posted = credits_posted + 1",
        )
        assert len(_names(s)) >= 4
        assert _names(s, limit=2) == ["totals_match_transfers"] * 2


# ---------------------------------------------------------------- non_negative


def test_flagging_a_negative_account_breaks_non_negative(db: Db, built: Ledger) -> None:
    with corrupting(db) as s:
        # world_sales is -1,000 by design; flagging it makes it an overdrawn flagged account
        _sql(s, "UPDATE accounts SET flags = 1 WHERE id = :id", id=built.sales)
        found = invariants.check(s)
        assert [v.name for v in found] == ["non_negative"]
        assert f"account {built.sales} " in found[0].detail


def test_overdrawn_wallet_breaks_non_negative(db: Db, built: Ledger) -> None:
    with corrupting(db) as s:
        # a transfer written behind the service's back, totals kept consistent with it
        _raw_transfer(s, debit_account_id=built.bob, credit_account_id=built.revenue, amount=201)
        _sql(
            s,
            "UPDATE accounts SET debits_posted = debits_posted + 201 WHERE id = :id",
            id=built.bob,
        )
        _sql(
            s,
            "UPDATE accounts SET credits_posted = credits_posted + 201 WHERE id = :id",
            id=built.revenue,
        )
        found = invariants.check(s)
        assert [v.name for v in found] == ["non_negative"]
        assert f"account {built.bob} " in found[0].detail


def test_pending_holds_count_against_non_negative(db: Db, built: Ledger) -> None:
    with corrupting(db) as s:
        # an extra 391 µcr hold on alice's 390 available: posted balance stays positive
        _raw_transfer(
            s,
            debit_account_id=built.alice,
            credit_account_id=built.revenue,
            amount=391,
            flags=int(TransferFlags.PENDING),
        )
        _sql(
            s,
            "UPDATE accounts SET debits_pending = debits_pending + 391 WHERE id = :id",
            id=built.alice,
        )
        _sql(
            s,
            "UPDATE accounts SET credits_pending = credits_pending + 391 WHERE id = :id",
            id=built.revenue,
        )
        assert _names(s) == ["non_negative"]


# ---------------------------------------------------------------- holds_resolved_once


def test_post_larger_than_hold_breaks_holds_resolved_once(db: Db, built: Ledger) -> None:
    with corrupting(db) as s:
        post = _raw_transfer(
            s,
            debit_account_id=built.alice,
            credit_account_id=built.revenue,
            amount=150,  # the hold is 100
            flags=int(TransferFlags.POST_PENDING),
            pending_id=built.hold,
        )
        _sql(
            s,
            "UPDATE accounts SET debits_pending = debits_pending - 100,"
            " debits_posted = debits_posted + 150 WHERE id = :id",
            id=built.alice,
        )
        _sql(
            s,
            "UPDATE accounts SET credits_pending = credits_pending - 100,"
            " credits_posted = credits_posted + 150 WHERE id = :id",
            id=built.revenue,
        )
        found = invariants.check(s)
        assert [v.name for v in found] == ["holds_resolved_once"]
        assert f"transfer {post} " in found[0].detail


def test_post_on_other_accounts_breaks_holds_resolved_once(db: Db, built: Ledger) -> None:
    with corrupting(db) as s:
        _raw_transfer(
            s,
            debit_account_id=built.alice,
            credit_account_id=built.bob,  # the hold credits revenue
            amount=50,
            flags=int(TransferFlags.POST_PENDING),
            pending_id=built.hold,
        )
        _sql(
            s,
            "UPDATE accounts SET debits_pending = debits_pending - 100,"
            " debits_posted = debits_posted + 50 WHERE id = :id",
            id=built.alice,
        )
        _sql(
            s,
            "UPDATE accounts SET credits_pending = credits_pending - 100 WHERE id = :id",
            id=built.revenue,
        )
        _sql(
            s,
            "UPDATE accounts SET credits_posted = credits_posted + 50 WHERE id = :id",
            id=built.bob,
        )
        assert _names(s) == ["holds_resolved_once"]


def test_void_of_a_plain_transfer_breaks_holds_resolved_once(db: Db, built: Ledger) -> None:
    with corrupting(db) as s:
        _raw_transfer(
            s,
            debit_account_id=built.alice,
            credit_account_id=built.revenue,
            amount=300,
            flags=int(TransferFlags.VOID_PENDING),
            pending_id=built.charge,  # a posted transfer, not a hold
        )
        assert _names(s) == ["holds_resolved_once"]


# ---------------------------------------------------------------- transfers_well_formed


def test_zero_amount_transfer_breaks_well_formed(db: Db, built: Ledger) -> None:
    with corrupting(db) as s:
        if db.backend == "postgres":
            _sql(s, "ALTER TABLE transfers DROP CONSTRAINT ck_transfers_amount_positive")
        else:
            _sql(s, "PRAGMA ignore_check_constraints = ON")
        try:
            _raw_transfer(s, debit_account_id=built.alice, credit_account_id=built.bob, amount=0)
            assert _names(s) == ["transfers_well_formed"]
        finally:
            if db.backend != "postgres":
                _sql(s, "PRAGMA ignore_check_constraints = OFF")


# ---------------------------------------------------------------- committed corruption


def test_committed_corruption_in_a_separate_database(tmp_path: Path, sqlite_template: Path) -> None:
    """Corrupt a throw-away, freshly migrated file for real and check it from a new session."""
    fresh = tmp_path / "fresh.db"
    engine = make_engine(f"sqlite:///{fresh}")
    upgrade(engine)
    factory = session_factory(engine)
    try:
        with factory() as s, s.begin():
            built = _build(s)
        with factory() as s, s.begin():
            assert invariants.check(s) == []
            _sql(
                s,
                "UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = :id",
                id=built.alice,
            )
            _sql(s, "UPDATE accounts SET flags = 1 WHERE id = :id", id=built.sales)
        with factory() as s, s.begin():
            assert _names(s) == ["balanced", "non_negative", "totals_match_transfers"]
    finally:
        engine.dispose()
    # the shared template the other tests copy is untouched
    copy = tmp_path / "copy.db"
    shutil.copy(sqlite_template, copy)
    engine = make_engine(f"sqlite:///{copy}")
    try:
        with session_factory(engine)() as s, s.begin():
            assert invariants.check(s) == []
    finally:
        engine.dispose()
