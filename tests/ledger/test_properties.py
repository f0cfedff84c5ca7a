"""Property test of the ledger (DESIGN §3) against a model kept in exact Python integers.

Hypothesis draws sequences of grants, wallet-to-wallet transfers, spending, holds, posts,
voids, reversals, idempotent replays, clock ticks and expiry runs over three users. The model
predicts each operation's outcome (success, or *which* domain error); every operation runs in
its own transaction, a refused one must leave the database exactly as it was (checked in the
same transaction, before rollback), and after every operation the four cached totals of every
account must equal the model's. After each sequence the invariants hold, no flagged account
is negative, and each wallet's balance is the model's.

SQLite only (a fresh copy of the migrated template per example), for speed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from modelbank.db.engine import make_engine, session_factory
from modelbank.errors import DomainError, IdempotencyConflict
from modelbank.ledger import invariants
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, AccountFlags, TransferCode
from modelbank.ledger.errors import (
    HoldAmountExceeded,
    HoldExpired,
    HoldNotPending,
    InsufficientFunds,
    InvalidTransfer,
)
from modelbank.ledger.models import accounts_table as accounts
from modelbank.ledger.models import transfers_table as transfers

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
USERS = 3
REVENUE = USERS  # index used in "to" choices for the platform revenue account

# ---------------------------------------------------------------- operations

user = st.integers(0, USERS - 1)
# An amount to pay: ("near", d) is the payer's available balance + d (the InsufficientFunds
# boundary), ("any", n) a plain amount.
amount = st.one_of(
    st.tuples(st.just("near"), st.integers(-2, 2)),
    st.tuples(st.just("any"), st.integers(0, 3_000)),
)
index = st.integers(0, 1_000)  # taken modulo the number of candidates when the op runs

# Timeouts and clock ticks from small sets, so that "now == expires_at" (expired) is common.
timeout = st.sampled_from([1, 5, 10, 30, 60, 120])
tick = st.sampled_from([0, 1, 4, 5, 10, 25, 30, 60])

_hold_op = st.tuples(st.just("hold"), user, st.integers(0, USERS), amount, timeout)
# An amount for a post or reversal: None (all of it), ("near", d): the held (or unreversed)
# amount + d, to hit the boundaries, or ("any", n).
_partial = st.one_of(
    st.none(),
    st.tuples(st.just("near"), st.integers(-2, 2)),
    st.tuples(st.just("any"), st.integers(0, 3_500)),
)
_post_op = st.tuples(st.just("post"), index, _partial)
_reverse_op = st.tuples(st.just("reverse"), index, _partial)

operations = st.one_of(
    st.tuples(st.just("grant"), user, st.integers(1, 5_000)),
    st.tuples(st.just("transfer"), user, user, amount),
    st.tuples(st.just("spend"), user, amount),
    # holds and what becomes of them are drawn more often: they carry most of the rules
    _hold_op,
    _hold_op,
    _post_op,
    _post_op,
    st.tuples(st.just("void"), index),
    _reverse_op,
    _reverse_op,
    st.tuples(st.just("replay"), index, st.booleans()),
    st.tuples(st.just("tick"), tick),
    st.tuples(st.just("expire"), st.integers(1, 3)),
)
"""One operation; ``index`` picks among the holds or transfers that exist when it runs."""

# ---------------------------------------------------------------- the model


@dataclass
class ModelHold:
    id: int
    debit: int
    credit: int
    amount: int
    expires_at: datetime
    status: str = "pending"


@dataclass
class ModelTransfer:
    """A posted transfer that may be reversed (plain, a posting of a hold, a reversal)."""

    id: int
    debit: int
    credit: int
    amount: int
    reversed: int = 0


@dataclass
class Model:
    wallets: list[int]
    revenue: int
    sales: int
    # account id → [debits_posted, credits_posted, debits_pending, credits_pending]
    totals: dict[int, list[int]] = field(default_factory=dict)
    holds: list[ModelHold] = field(default_factory=list)
    posted: list[ModelTransfer] = field(default_factory=list)
    keyed: list[tuple[str, ledger.NewTransfer, int]] = field(default_factory=list)
    now: datetime = T0

    def flagged(self, account: int) -> bool:
        return account in self.wallets

    def available(self, account: int) -> int:
        dp, cp, dn, _ = self.totals[account]
        return cp - dp - dn

    def can_pay(self, account: int, amount: int) -> bool:
        return not self.flagged(account) or self.available(account) >= amount

    def post(self, debit: int, credit: int, amount: int) -> None:
        self.totals[debit][0] += amount
        self.totals[credit][1] += amount

    def reserve(self, debit: int, credit: int, amount: int) -> None:
        self.totals[debit][2] += amount
        self.totals[credit][3] += amount


# ---------------------------------------------------------------- one operation


@dataclass
class Step:
    """What the model predicts for one operation: ``call`` runs it on the database;
    ``expected`` is the domain error it must raise (None: it succeeds, then ``apply`` updates
    the model with the call's result)."""

    call: Callable[[Session], Any]
    expected: type[DomainError] | None = None
    apply: Callable[[Any], None] = lambda _result: None


def _spec(debit: int, credit: int, amount: int, key: str, code: TransferCode) -> Any:
    return ledger.NewTransfer(
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        code=code,
        idempotency_key=key,
    )


def _plain(m: Model, debit: int, credit: int, amt: int, key: str, code: TransferCode) -> Step:
    spec = _spec(debit, credit, amt, key, code)

    def call(s: Session) -> int:
        return ledger.transfer(s, spec, now=m.now)

    def apply(tid: int) -> None:
        m.post(debit, credit, amt)
        m.posted.append(ModelTransfer(tid, debit, credit, amt))
        m.keyed.append((key, spec, tid))

    if amt <= 0 or debit == credit:
        return Step(call, InvalidTransfer)
    if not m.can_pay(debit, amt):
        return Step(call, InsufficientFunds)
    return Step(call, None, apply)


def _hold(m: Model, debit: int, credit: int, amt: int, timeout: int, key: str) -> Step:
    spec = _spec(debit, credit, amt, key, TransferCode.USAGE_CHARGE)
    expires = m.now + timedelta(seconds=timeout)

    def call(s: Session) -> int:
        return ledger.create_hold(s, spec, timeout_s=timeout, now=m.now)

    def apply(hid: int) -> None:
        m.reserve(debit, credit, amt)
        m.holds.append(ModelHold(hid, debit, credit, amt, expires))

    if amt <= 0 or debit == credit:
        return Step(call, InvalidTransfer)
    if not m.can_pay(debit, amt):
        return Step(call, InsufficientFunds)
    return Step(call, None, apply)


def _requested(choice: tuple[str, int] | None, full: int) -> int | None:
    """Resolve an amount choice against ``full`` (held, unreversed or available µcr)."""
    if choice is None:
        return None
    mode, value = choice
    return full + value if mode == "near" else value


def _pay(choice: tuple[str, int], available: int) -> int:
    """Resolve a payment amount choice against the payer's available µcr."""
    mode, value = choice
    return available + value if mode == "near" else value


def _post(m: Model, hold: ModelHold, choice: tuple[str, int] | None) -> Step:
    requested = _requested(choice, hold.amount)
    amt = hold.amount if requested is None else requested

    def call(s: Session) -> int:
        return ledger.post_hold(s, hold.id, requested, now=m.now)

    def apply(pid: int) -> None:
        m.reserve(hold.debit, hold.credit, -hold.amount)
        m.post(hold.debit, hold.credit, amt)
        hold.status = "posted"
        m.posted.append(ModelTransfer(pid, hold.debit, hold.credit, amt))

    if hold.status != "pending":
        return Step(call, HoldNotPending)
    if hold.expires_at <= m.now:
        return Step(call, HoldExpired)
    if amt <= 0:
        return Step(call, InvalidTransfer)
    if amt > hold.amount:
        return Step(call, HoldAmountExceeded)
    return Step(call, None, apply)


def _void(m: Model, hold: ModelHold) -> Step:
    def call(s: Session) -> int:
        return ledger.void_hold(s, hold.id, now=m.now)

    def apply(_vid: int) -> None:
        m.reserve(hold.debit, hold.credit, -hold.amount)
        hold.status = "voided"

    if hold.status != "pending":
        return Step(call, HoldNotPending)
    return Step(call, None, apply)


def _reverse(m: Model, original: ModelTransfer, choice: tuple[str, int] | None, key: str) -> Step:
    left = original.amount - original.reversed
    requested = _requested(choice, left)
    amt = left if requested is None else requested

    def call(s: Session) -> int:
        return ledger.reverse(s, original.id, amount=requested, idempotency_key=key, now=m.now)

    def apply(rid: int) -> None:
        m.post(original.credit, original.debit, amt)
        original.reversed += amt
        m.posted.append(ModelTransfer(rid, original.credit, original.debit, amt))

    if amt <= 0 or amt > left:
        return Step(call, InvalidTransfer)
    if not m.can_pay(original.credit, amt):  # the reversal debits what the original credited
        return Step(call, InsufficientFunds)
    return Step(call, None, apply)


def _replay(m: Model, entry: tuple[str, ledger.NewTransfer, int], change: bool) -> Step:
    key, spec, tid = entry
    if change:
        altered = _spec(
            spec.debit_account_id, spec.credit_account_id, spec.amount + 1, key, spec.code
        )
        return Step(lambda s: ledger.transfer(s, altered, now=m.now), IdempotencyConflict)

    def call(s: Session) -> int:
        return ledger.transfer(s, spec, now=m.now)

    def apply(result: int) -> None:
        assert result == tid  # the first transfer's id; nothing new is written (checked)

    return Step(call, None, apply)


def _expire(m: Model, runs: int) -> Step:
    due = [h for h in m.holds if h.status == "pending" and h.expires_at <= m.now]

    def call(s: Session) -> list[int]:
        return [ledger.expire_holds(s, now=m.now) for _ in range(runs)]

    def apply(counts: list[int]) -> None:
        assert counts == [len(due)] + [0] * (runs - 1)  # idempotent: later runs find nothing
        for hold in due:
            m.reserve(hold.debit, hold.credit, -hold.amount)
            hold.status = "voided"

    return Step(call, None, apply)


def _step(m: Model, op: tuple[Any, ...], key: str) -> Step | None:
    """The model's prediction for ``op`` (None: nothing to do, e.g. no hold to post yet)."""
    kind = op[0]
    w = m.wallets
    if kind == "grant":
        return _plain(m, m.sales, w[op[1]], op[2], key, TransferCode.PURCHASE)
    if kind == "transfer":
        amt = _pay(op[3], m.available(w[op[1]]))
        return _plain(m, w[op[1]], w[op[2]], amt, key, TransferCode.TRADE)
    if kind == "spend":
        amt = _pay(op[2], m.available(w[op[1]]))
        return _plain(m, w[op[1]], m.revenue, amt, key, TransferCode.USAGE_CHARGE)
    if kind == "hold":
        credit = m.revenue if op[2] == REVENUE else w[op[2]]
        amt = _pay(op[3], m.available(w[op[1]]))
        return _hold(m, w[op[1]], credit, amt, op[4], key)
    if kind == "post":
        return _post(m, m.holds[op[1] % len(m.holds)], op[2]) if m.holds else None
    if kind == "void":
        return _void(m, m.holds[op[1] % len(m.holds)]) if m.holds else None
    if kind == "reverse":
        return _reverse(m, m.posted[op[1] % len(m.posted)], op[2], key) if m.posted else None
    if kind == "replay":
        return _replay(m, m.keyed[op[1] % len(m.keyed)], op[2]) if m.keyed else None
    if kind == "tick":
        m.now += timedelta(seconds=op[1])
        return None
    if kind == "expire":
        return _expire(m, op[1])
    raise AssertionError(kind)


# ---------------------------------------------------------------- database helpers


def _db_totals(s: Session) -> dict[int, list[int]]:
    rows = s.connection().execute(
        select(
            accounts.c.id,
            accounts.c.debits_posted,
            accounts.c.credits_posted,
            accounts.c.debits_pending,
            accounts.c.credits_pending,
        )
    )
    return {int(r[0]): [int(r[1]), int(r[2]), int(r[3]), int(r[4])] for r in rows}


def _snapshot(s: Session) -> tuple[Any, ...]:
    count, last = (
        s.connection()
        .execute(
            select(func.count(), func.coalesce(func.max(transfers.c.id), 0)).select_from(transfers)
        )
        .one()
    )
    return _db_totals(s), int(count), int(last)


@contextmanager
def _fresh_database(template: Path) -> Iterator[sessionmaker[Session]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        shutil.copy(template, path)
        engine = make_engine(f"sqlite:///{path}")
        try:
            yield session_factory(engine)
        finally:
            engine.dispose()


def _open_model(s: Session) -> Model:
    platform = ledger.ensure_platform_accounts(s)
    wallets = [
        ledger.open_user_accounts(s, user_id)[AccountCode.USER_WALLET]
        for user_id in range(1, USERS + 1)
    ]
    m = Model(
        wallets=wallets,
        revenue=platform[AccountCode.PLATFORM_REVENUE],
        sales=platform[AccountCode.WORLD_SALES],
    )
    m.totals = _db_totals(s)
    assert all(t == [0, 0, 0, 0] for t in m.totals.values())
    return m


# ---------------------------------------------------------------- the property


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    funding=st.lists(st.integers(0, 20_000), min_size=USERS, max_size=USERS),
    ops=st.lists(operations, min_size=20, max_size=60),
)
def test_ledger_matches_model(
    sqlite_template: Path, funding: list[int], ops: list[tuple[Any, ...]]
) -> None:
    with _fresh_database(sqlite_template) as factory:
        with factory() as s, s.begin():
            m = _open_model(s)
        ops = [("grant", i, amt) for i, amt in enumerate(funding)] + ops
        for number, op in enumerate(ops):
            key = f"op{number}"
            step = _step(m, op, key)
            if step is None:
                continue
            event(f"{op[0]}: {'ok' if step.expected is None else step.expected.__name__}")
            with factory() as s, s.begin():
                before = _snapshot(s)
                if step.expected is None:
                    step.apply(step.call(s))
                    if op[0] == "replay":
                        assert _snapshot(s) == before, "an idempotent replay wrote something"
                else:
                    with pytest.raises(step.expected):
                        step.call(s)
                    assert _snapshot(s) == before, f"refused {op} changed the database"
                assert _db_totals(s) == m.totals, f"after {op}"

        with factory() as s, s.begin():
            assert invariants.check(s) == []
            flagged = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
            negative = s.connection().execute(
                select(accounts.c.id).where(
                    accounts.c.flags.op("&")(flagged) != 0,
                    accounts.c.credits_posted - accounts.c.debits_posted < 0,
                )
            )
            assert negative.all() == []
            for wallet in m.wallets:
                dp, cp, dn, _ = m.totals[wallet]
                account = ledger.get_balance(s, wallet)
                assert account.balance == cp - dp >= 0
                assert account.available == cp - dp - dn >= 0
            # every hold's status in the database is the model's
            for hold in m.holds:
                assert ledger.get_hold(s, hold.id).status == hold.status
