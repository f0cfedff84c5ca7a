"""Group commit (DESIGN §16): single events from many threads, charged in shared transactions,
each caller seeing what ``charge`` would have given it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from sqlalchemy.orm import Session

from modelbank.catalog.errors import ModelNotFound
from modelbank.errors import IdempotencyConflict
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.ledger.errors import InsufficientFunds
from modelbank.metering.errors import InvalidUsage
from modelbank.metering.group import CommitterClosed, GroupCommitter
from modelbank.metering.service import ChargeResult, UsageEvent
from modelbank.users.errors import UserNotFound
from modelbank.wallets import service as wallets
from tests import factories
from tests.conftest import Db

CREDIT = 1_000_000
CHARGE = 375_000  # 1,000 input tokens of the gpt-4o-priced model (see test_charging)
EARNED = 60_000  # 16% of it (default rule: 20% share × chat 0.8)


def _event(key: str, user_id: int, model: int | str = "m", **kw: object) -> UsageEvent:
    kw.setdefault("input_tokens", 1_000)
    return UsageEvent(idempotency_key=key, user_id=user_id, model=model, **kw)  # type: ignore[arg-type]


def _setup(db: Db, *, users: int, credits_ucr: int) -> tuple[int, list[int]]:
    with db.tx() as s:
        creator = factories.user(s, "creator")
        ids = [factories.user(s, f"user{i}", credits_ucr=credits_ucr) for i in range(users)]
        factories.model(s, "m", creator_id=creator)
    return creator, ids


def _balance(db: Db, user_id: int) -> int:
    with db.tx() as s:
        return wallets.balance(s, user_id).balance_ucr


def _earnings(db: Db, user_id: int) -> int:
    with db.tx() as s:
        account = ledger.user_account_ids(s, [user_id], AccountCode.USER_EARNINGS)[user_id]
        return ledger.get_balance(s, account).balance


def test_many_threads_exact_balances(db: Db) -> None:
    creator, users = _setup(db, users=8, credits_ucr=100 * CREDIT)
    per_user = 25
    with GroupCommitter(db.factory, max_wait_s=0.005) as committer:

        def work(user_id: int) -> list[ChargeResult]:
            return [committer.submit(_event(f"{user_id}-{k}", user_id)) for k in range(per_user)]

        with ThreadPoolExecutor(len(users)) as pool:
            results = [r for batch in pool.map(work, users) for r in batch]
        batches = committer.batches
    total = per_user * len(users)
    assert len(results) == total
    assert all(r.status == "charged" and r.charge_ucr == CHARGE for r in results)
    assert len({r.usage_id for r in results}) == total
    assert batches < total  # events shared transactions
    for user_id in users:
        assert _balance(db, user_id) == 100 * CREDIT - per_user * CHARGE
        # each caller's balance_ucr is its wallet right after its own charge
        own = sorted(
            r.balance_ucr or 0 for r in results if r.idempotency_key.startswith(f"{user_id}-")
        )
        assert own == [100 * CREDIT - k * CHARGE for k in range(per_user, 0, -1)]
    # From the 101st use the popularity multiplier (×1.2) applies: exactly 100 uses at each.
    assert sorted({r.earnings_ucr for r in results}) == [EARNED, EARNED * 12 // 10]
    assert _earnings(db, creator) == sum(r.earnings_ucr for r in results)
    assert _earnings(db, creator) == 100 * EARNED + 100 * EARNED * 12 // 10


def test_rejected_events_raise_the_typed_error(db: Db) -> None:
    _, (alice, bob) = _setup(db, users=2, credits_ucr=2 * CHARGE)
    with GroupCommitter(db.factory, max_wait_s=0.05) as committer:
        # Submitted together: they share one batch, in this order.
        futures = [
            committer.submit_future(_event("a1", alice)),
            committer.submit_future(_event("a2", alice)),
            committer.submit_future(_event("a3", alice)),  # the wallet is empty by now
            committer.submit_future(_event("b1", bob, model="no-such-model")),
            committer.submit_future(_event("b2", bob, input_tokens=-1)),
            committer.submit_future(_event("b3", 999_999)),
            committer.submit_future(_event("b4", bob)),
        ]
        assert futures[0].result().status == "charged"
        assert futures[1].result().status == "charged"
        with pytest.raises(InsufficientFunds) as insufficient:
            futures[2].result()
        assert insufficient.value.context["needed_ucr"] == CHARGE
        assert insufficient.value.context["available_ucr"] == 0
        with pytest.raises(ModelNotFound):
            futures[3].result()
        with pytest.raises(InvalidUsage):
            futures[4].result()
        with pytest.raises(UserNotFound):
            futures[5].result()
        assert futures[6].result().status == "charged"
        # A rejected event wrote nothing: its key is free for a corrected retry.
        with pytest.raises(InsufficientFunds):
            committer.submit(_event("a3", alice))
        assert committer.submit(_event("b1", bob)).status == "charged"
    assert _balance(db, alice) == 0
    assert _balance(db, bob) == 0


def test_concurrent_spending_never_overdraws(db: Db) -> None:
    _, (alice,) = _setup(db, users=1, credits_ucr=3 * CHARGE)
    with GroupCommitter(db.factory, max_wait_s=0.002) as committer:

        def one(k: int) -> str:
            try:
                return committer.submit(_event(f"k{k}", alice)).status
            except InsufficientFunds:
                return "insufficient"

        with ThreadPoolExecutor(10) as pool:
            outcomes = list(pool.map(one, range(10)))
    assert sorted(outcomes) == ["charged"] * 3 + ["insufficient"] * 7
    assert _balance(db, alice) == 0


def test_idempotent_replay(db: Db) -> None:
    creator, (alice,) = _setup(db, users=1, credits_ucr=100 * CREDIT)
    event = _event("same", alice)
    with GroupCommitter(db.factory, max_wait_s=0.002) as committer:
        first = committer.submit(event)
        again = committer.submit(event)
        assert first.status == "charged"
        assert again.status == "replayed"
        assert (again.usage_id, again.charge_ucr, again.earnings, again.balance_ucr) == (
            first.usage_id,
            first.charge_ucr,
            first.earnings,
            first.balance_ucr,
        )
        with pytest.raises(IdempotencyConflict):
            committer.submit(_event("same", alice, input_tokens=7))
        # The same new key from many threads at once: charged once, the others replay it.
        barrier = threading.Barrier(6)

        def racer(_: int) -> ChargeResult:
            barrier.wait()
            return committer.submit(_event("race", alice))

        with ThreadPoolExecutor(6) as pool:
            raced = list(pool.map(racer, range(6)))
    assert sorted(r.status for r in raced) == ["charged"] + ["replayed"] * 5
    assert len({r.usage_id for r in raced}) == 1
    assert _balance(db, alice) == 100 * CREDIT - 2 * CHARGE
    assert _earnings(db, creator) == 2 * EARNED


def test_close_drains_the_queue(db: Db) -> None:
    _, (alice,) = _setup(db, users=1, credits_ucr=100 * CREDIT)
    committer = GroupCommitter(db.factory, max_wait_s=30.0, max_batch=1_000)
    futures = [committer.submit_future(_event(f"d{k}", alice)) for k in range(20)]
    committer.close()  # does not wait the 30 s: closing charges what is queued now
    assert all(f.result(timeout=0).status == "charged" for f in futures)
    assert _balance(db, alice) == 100 * CREDIT - 20 * CHARGE
    with pytest.raises(CommitterClosed):
        committer.submit(_event("late", alice))
    committer.close()  # idempotent


def test_max_batch_splits_transactions(db: Db) -> None:
    _, (alice,) = _setup(db, users=1, credits_ucr=100 * CREDIT)
    committer = GroupCommitter(db.factory, max_wait_s=30.0, max_batch=4)
    futures = [committer.submit_future(_event(f"s{k}", alice)) for k in range(10)]
    # Full batches go at once; the last 2 events wait for close().
    assert all(f.result(timeout=30).status == "charged" for f in futures[:8])
    committer.close()
    assert all(f.result(timeout=0).status == "charged" for f in futures)
    assert committer.batches == 3
    assert [f.result().balance_ucr for f in futures] == [
        100 * CREDIT - k * CHARGE for k in range(1, 11)
    ]


def test_submit_async(db: Db) -> None:
    _, users = _setup(db, users=4, credits_ucr=100 * CREDIT)

    async def main(committer: GroupCommitter) -> list[ChargeResult]:
        return await asyncio.gather(
            *(committer.submit_async(_event(f"async-{u}-{k}", u)) for u in users for k in range(5))
        )

    with GroupCommitter(db.factory, max_wait_s=0.002) as committer:
        results = asyncio.run(main(committer))
        with pytest.raises(InsufficientFunds):
            asyncio.run(committer.submit_async(_event("big", users[0], input_tokens=10**9)))
    assert [r.status for r in results] == ["charged"] * 20
    for user_id in users:
        assert _balance(db, user_id) == 100 * CREDIT - 5 * CHARGE


def test_cancelled_before_its_batch_is_not_charged(db: Db) -> None:
    _, (alice,) = _setup(db, users=1, credits_ucr=100 * CREDIT)
    committer = GroupCommitter(db.factory, max_wait_s=30.0)
    kept = committer.submit_future(_event("kept", alice))
    dropped = committer.submit_future(_event("dropped", alice))
    assert dropped.cancel()
    committer.close()
    assert kept.result(timeout=0).status == "charged"
    assert _balance(db, alice) == 100 * CREDIT - CHARGE


def test_failed_transaction_fails_every_event_of_the_batch(db: Db) -> None:
    _, (alice,) = _setup(db, users=1, credits_ucr=100 * CREDIT)
    fail = threading.Event()
    fail.set()

    def factory() -> Session:
        if fail.is_set():
            raise ConnectionError("database unreachable")
        return db.factory()

    flaky: Callable[[], Session] = factory
    committer = GroupCommitter(flaky, max_wait_s=0.05)
    futures: list[Future[ChargeResult]] = [
        committer.submit_future(_event(f"f{k}", alice)) for k in range(5)
    ]
    for future in futures:
        with pytest.raises(ConnectionError):
            future.result(timeout=30)
    fail.clear()  # the database is back: the same events are charged on retry, once
    assert all(committer.submit(_event(f"f{k}", alice)).status == "charged" for k in range(5))
    committer.close()
    assert _balance(db, alice) == 100 * CREDIT - 5 * CHARGE


def test_settings_are_checked(db: Db) -> None:
    with pytest.raises(ValueError):
        GroupCommitter(db.factory, max_batch=0)
    with pytest.raises(ValueError):
        GroupCommitter(db.factory, max_batch=1_001)
    with pytest.raises(ValueError):
        GroupCommitter(db.factory, max_wait_s=-1)


def test_a_failed_shared_transaction_charges_each_event_alone(db: Db) -> None:
    """A database error fails the shared transaction (nothing of it is charged); the
    committer then charges each event in its own transaction, so that one event's trouble
    never fails the other callers (the probe's two-server finding)."""
    _, (alice, bob) = _setup(db, users=2, credits_ucr=100 * CREDIT)
    calls = []

    def factory() -> Session:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("the shared transaction's connection dropped")
        return db.factory()

    committer = GroupCommitter(factory, max_wait_s=0.2)
    futures = [committer.submit_future(_event(f"g{k}", (alice, bob)[k % 2])) for k in range(4)]
    results = [future.result(timeout=30) for future in futures]
    committer.close()
    assert [r.status for r in results] == ["charged"] * 4
    assert committer.batches == 1 + 4 and len(calls) == 5
    assert _balance(db, alice) == _balance(db, bob) == 100 * CREDIT - 2 * CHARGE


def test_captures_are_group_committed_with_charges(db: Db) -> None:
    """A capture is a usage event naming its hold: the committer charges it in a shared
    transaction with ordinary events; the hold is posted for the charge, the rest released,
    and the wallet hold names the usage event that captured it."""
    from modelbank.wallets import holds

    _, (alice, bob) = _setup(db, users=2, credits_ucr=100 * CREDIT)
    with db.tx() as s:
        held = holds.place(s, alice, 5 * CHARGE, timeout_s=600, idempotency_key="h", model="m")
    committer = GroupCommitter(db.factory, max_wait_s=0.2)
    futures = [
        committer.submit_future(_event("plain", bob)),
        committer.submit_future(
            UsageEvent("hold:capture", alice, "m", charge_ucr=2 * CHARGE, hold_id=held.id)
        ),
    ]
    results = [f.result(timeout=30) for f in futures]
    committer.close()
    assert [r.status for r in results] == ["charged", "charged"]
    assert committer.batches == 1
    with db.tx() as s:
        after = holds.get_hold(s, held.id)
        assert (after.status, after.captured_ucr, after.usage_id) == (
            "posted",
            2 * CHARGE,
            results[1].usage_id,
        )
    assert _balance(db, alice) == 100 * CREDIT - 2 * CHARGE
    assert _balance(db, bob) == 100 * CREDIT - CHARGE
