"""Concurrent charges against one wallet (DESIGN §3 concurrency), on PostgreSQL.

8 threads each charge 200 usage events, one transaction per event, against a single wallet
that can pay for only 500 of the 1,600. Row locks (``SELECT … FOR UPDATE``) must serialise the
balance checks: exactly ⌊credit / price⌋ charges succeed, the rest are refused with
``insufficient_funds``, the wallet is never negative, and no deadlock or serialization
failure reaches the caller (none is retried here: any would be a bug).

SQLite serialises writers with ``BEGIN IMMEDIATE``; these tests are about row locks, so they
run on PostgreSQL only.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.earnings import service as earnings
from modelbank.earnings.rules import EarningsRule
from modelbank.ledger import invariants
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.ledger.errors import InsufficientFunds
from modelbank.ledger.models import transfers_table as transfers
from modelbank.metering import service as metering
from modelbank.metering.models import usage_events_table as usage
from modelbank.metering.service import ChargeResult, UsageEvent
from modelbank.pricing.formulas import Rates
from modelbank.wallets import service as wallets
from tests import factories
from tests.conftest import Db

pytestmark = pytest.mark.postgres

THREADS = 8
PER_THREAD = 200
PRICE_UCR = 1_000
"""Explicit per-request price: every charge costs exactly this."""
AFFORDABLE = 500
CREDIT_UCR = AFFORDABLE * PRICE_UCR + PRICE_UCR - 1
"""Enough for 500 charges and 999 µcr left over: ⌊credit / price⌋ = 500."""
WATCH_INTERVAL_S = 0.002
"""The watcher reads the wallet every 2 ms: often, without starving the chargers."""


def _postgres_only(db: Db) -> None:
    if db.backend != "postgres":
        pytest.skip("row-lock concurrency is a PostgreSQL test (SQLite serialises writers)")


@dataclass
class Outcome:
    charged: list[ChargeResult] = field(default_factory=list)
    refused: list[InsufficientFunds] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    lowest_seen: list[tuple[int, int]] = field(default_factory=list)


def _hammer(db: Db, payers: list[int], model: str, *, threads: int, per_thread: int) -> Outcome:
    """Run ``threads`` × ``per_thread`` charges, each in its own transaction, all threads
    released at once; thread ``t`` charges ``payers[t % len(payers)]``. A watcher reads the
    first payer's wallet meanwhile."""
    payer = payers[0]
    outcome = Outcome()
    start = threading.Barrier(threads + 1)
    done = threading.Event()

    def worker(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            try:
                with db.tx() as s:
                    event = UsageEvent(f"t{t}-{i}", payers[t % len(payers)], model)
                    result = metering.charge(s, event)
                outcome.charged.append(result)
            except InsufficientFunds as exc:
                outcome.refused.append(exc)
            except Exception as exc:  # deadlocks, serialization failures…: recorded, reported
                outcome.errors.append(exc)

    def watcher() -> None:
        start.wait()
        lowest = (CREDIT_UCR, CREDIT_UCR)
        while not done.wait(WATCH_INTERVAL_S):
            with db.tx() as s:
                b = wallets.balance(s, payer)
            lowest = (min(lowest[0], b.balance_ucr), min(lowest[1], b.available_ucr))
        outcome.lowest_seen.append(lowest)

    with ThreadPoolExecutor(max_workers=threads + 1) as pool:
        watching = pool.submit(watcher)
        futures = [pool.submit(worker, t) for t in range(threads)]
        for future in futures:
            future.result()
        done.set()
        watching.result()
    return outcome


def _warm_up(s: Session, model_id: int) -> None:
    """Charge the model once, from another user, so that its aggregate row exists before
    the threads start (first-use races have their own test below)."""
    warm = factories.user(s, "warm-up", credits_ucr=PRICE_UCR)
    metering.charge(s, UsageEvent("warm-up", warm, model_id))


def _describe(errors: list[BaseException]) -> str:
    kinds = Counter(f"{type(e).__module__}.{type(e).__name__}" for e in errors)
    first = str(errors[0]).splitlines()[0] if errors else ""
    return f"{len(errors)} unexpected errors {dict(kinds)}; first: {first}"


def test_concurrent_charges_never_overdraw_one_wallet(db: Db) -> None:
    _postgres_only(db)
    with db.tx() as s:
        creator = factories.user(s, "creator")
        payer = factories.user(s, "payer", credits_ucr=CREDIT_UCR)
        model_id = factories.model(
            s, "flat", creator_id=creator, explicit=Rates(per_request=Decimal(PRICE_UCR))
        )
        _warm_up(s, model_id)
        warm_earned = earnings.total_earned(s, creator)

    outcome = _hammer(db, [payer], "flat", threads=THREADS, per_thread=PER_THREAD)

    assert outcome.errors == [], _describe(outcome.errors)
    total = THREADS * PER_THREAD
    assert len(outcome.charged) + len(outcome.refused) == total
    assert len(outcome.charged) == CREDIT_UCR // PRICE_UCR == AFFORDABLE
    assert len(outcome.refused) == total - AFFORDABLE
    # every refusal was a real one: less than one price was left when it was decided
    for exc in outcome.refused:
        assert exc.context["needed_ucr"] == PRICE_UCR
        assert 0 <= exc.context["available_ucr"] < PRICE_UCR
    # every charge cost the price and saw a distinct balance: they were serialised
    assert {r.charge_ucr for r in outcome.charged} == {PRICE_UCR}
    assert sorted(r.balance_ucr for r in outcome.charged) == [  # type: ignore[type-var]
        CREDIT_UCR - PRICE_UCR * k for k in range(AFFORDABLE, 0, -1)
    ]
    assert len({r.usage_id for r in outcome.charged}) == AFFORDABLE
    lowest_balance, lowest_available = outcome.lowest_seen[0]
    assert lowest_balance >= 0 and lowest_available >= 0

    spent = AFFORDABLE * PRICE_UCR
    with db.tx() as s:
        wallet = wallets.balance(s, payer)
        assert (wallet.balance_ucr, wallet.available_ucr, wallet.pending_ucr) == (
            CREDIT_UCR - spent,
            CREDIT_UCR - spent,
            0,
        )
        account = ledger.get_balance(
            s, ledger.user_account_ids(s, [payer], AccountCode.USER_WALLET)[payer]
        )
        assert account.debits_posted == spent
        conn = s.connection()
        charges = conn.execute(
            select(func.count(), func.sum(transfers.c.amount)).where(
                transfers.c.debit_account_id == account.id,
                transfers.c.code == TransferCode.USAGE_CHARGE.value,
            )
        ).one()
        assert (charges[0], int(charges[1])) == (AFFORDABLE, spent)
        rows = conn.execute(
            select(func.count(), func.sum(usage.c.charge_ucr)).where(usage.c.user_id == payer)
        ).one()
        assert (rows[0], int(rows[1])) == (AFFORDABLE, spent)
        stats = earnings.model_stats(s, [model_id])[0]
        assert (stats.use_count, stats.revenue_ucr) == (AFFORDABLE + 1, spent + PRICE_UCR)
        paid = sum(r.earnings_ucr for r in outcome.charged) + warm_earned
        assert stats.earnings_ucr == paid
        assert earnings.total_earned(s, creator) == paid
        revenue = ledger.get_balance(s, ledger.platform_account(s, AccountCode.PLATFORM_REVENUE))
        assert revenue.balance == spent + PRICE_UCR - paid
        assert invariants.check(s) == []


def test_concurrent_charges_see_each_prior_use_count_once(db: Db) -> None:
    """DESIGN §7: the popularity multiplier uses the model's use count *before this event*.

    A rule whose multiplier is (prior uses + 1) makes each event's earnings reveal the prior
    count it saw: after one warm-up use, 400 charges of one model by 8 users (one per thread,
    so the wallet locks do not serialise them), however interleaved, must see 1…400 once
    each; two events seeing the same count would both be paid as the same "n-th use".
    """
    _postgres_only(db)
    uses = THREADS * 50
    rule = EarningsRule(
        per_use_ucr=1,
        share_bps=0,
        popularity_tiers=tuple((k, Decimal(k + 1)) for k in range(1, uses + 1)),
        type_multipliers={"chat": Decimal(1)},
    )
    with db.tx() as s:
        creator = factories.user(s, "creator")
        payers = [factories.user(s, f"payer{t}", credits_ucr=10**12) for t in range(THREADS)]
        model_id = factories.model(
            s,
            "flat",
            creator_id=creator,
            explicit=Rates(per_request=Decimal(PRICE_UCR)),
            rule=rule,
        )
        _warm_up(s, model_id)

    outcome = _hammer(db, payers, "flat", threads=THREADS, per_thread=50)

    assert outcome.errors == [], _describe(outcome.errors)
    assert outcome.refused == []
    seen = sorted(r.earnings_ucr - 1 for r in outcome.charged)  # earnings = prior + 1
    repeated = sorted(n for n, c in Counter(seen).items() if c > 1)
    assert seen == list(range(1, uses + 1)), (
        f"{len(repeated)} prior-use counts seen by more than one event, e.g. {repeated[:10]}"
    )
    with db.tx() as s:
        stats = earnings.model_stats(s, [model_id])[0]
        assert stats.use_count == uses + 1


def test_first_charges_of_a_new_model_race_cleanly(db: Db) -> None:
    """Eight users charge a never-used model at the same instant: every charge succeeds.

    The per-model aggregate row is created on first use; concurrent first uses must not
    collide on it (or anything else) and surface as a database error.
    """
    _postgres_only(db)
    rounds = 5
    with db.tx() as s:
        creator = factories.user(s, "creator")
        payers = [factories.user(s, f"payer{t}", credits_ucr=10**9) for t in range(THREADS)]
        for r in range(rounds):
            factories.model(
                s, f"new{r}", creator_id=creator, explicit=Rates(per_request=Decimal(PRICE_UCR))
            )

    errors: list[BaseException] = []
    charged: list[ChargeResult] = []
    start = threading.Barrier(THREADS)

    def worker(t: int) -> None:
        for r in range(rounds):
            start.wait()
            try:
                with db.tx() as s:
                    charged.append(
                        metering.charge(s, UsageEvent(f"first-{r}-{t}", payers[t], f"new{r}"))
                    )
            except Exception as exc:
                errors.append(exc)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for future in [pool.submit(worker, t) for t in range(THREADS)]:
            future.result()

    assert errors == [], _describe(errors)
    assert len(charged) == rounds * THREADS
    with db.tx() as s:
        assert sorted(st.use_count for st in earnings.model_stats(s)) == [THREADS] * rounds


def test_a_key_taken_by_another_tenant_meanwhile_rejects_only_its_own_event(db: Db) -> None:
    """The probe's finding (two servers, one PostgreSQL): one idempotency key sent for two
    users at once, inside batches with other users' events. The two batches share no wallet
    lock, so both look the key up before either commits. The loser's event must be
    answered 409 (``idempotency_key_reused``) and its batch's other events charged, never a
    failed transaction for everyone."""
    _postgres_only(db)
    with db.tx() as s:
        factories.model(s, "flat", explicit=Rates(per_request=Decimal(PRICE_UCR)))
        a, b, c, d = (factories.user(s, f"u{k}", credits_ucr=10**9) for k in range(4))
    first_inserted = threading.Event()
    release_first = threading.Event()
    second: list[list[ChargeResult]] = []

    def first() -> None:
        with db.tx() as s:
            got = metering.charge_batch(
                s, [UsageEvent("shared", a, "flat"), UsageEvent("a-own", a, "flat")]
            )
            assert [r.status for r in got] == ["charged", "charged"]
            first_inserted.set()
            release_first.wait(10)

    def late() -> None:
        first_inserted.wait(10)
        with db.tx() as s:
            second.append(
                metering.charge_batch(
                    s,
                    [
                        UsageEvent("c-own", c, "flat"),
                        UsageEvent("shared", b, "flat"),
                        UsageEvent("d-own", d, "flat"),
                    ],
                )
            )

    with ThreadPoolExecutor(max_workers=2) as pool:
        one = pool.submit(first)
        two = pool.submit(late)
        first_inserted.wait(10)
        # the late batch is now blocked on the first one's uncommitted key; let it commit
        threading.Timer(0.3, release_first.set).start()
        one.result()
        two.result()

    got = second[0]
    assert [(r.idempotency_key, r.status) for r in got] == [
        ("c-own", "charged"),
        ("shared", "rejected"),
        ("d-own", "charged"),
    ]
    assert got[1].error_code == "idempotency_key_reused"
    assert [r.balance_ucr for r in (got[0], got[2])] == [10**9 - PRICE_UCR] * 2
    with db.tx() as s:
        assert wallets.balance(s, b).balance_ucr == 10**9  # the loser paid nothing
        assert wallets.balance(s, a).balance_ucr == 10**9 - 2 * PRICE_UCR
        owners = dict(
            s.connection().execute(select(usage.c.idempotency_key, usage.c.user_id)).all()
        )
        assert owners["shared"] == a
        assert invariants.check(s) == []


def test_racing_resolutions_of_one_hold_answer_one_and_a_typed_conflict(db: Db) -> None:
    """The probe's D1: two voids of one hold, or a capture and a void, at once. Exactly one
    resolves it; the other gets ``HoldNotPending`` (409), never a unique violation or a
    deadlock (500)."""
    _postgres_only(db)
    from modelbank.ledger.errors import HoldNotPending
    from modelbank.metering.capture import capture
    from modelbank.wallets import holds

    rounds = 12
    with db.tx() as s:
        factories.model(s, "flat", explicit=Rates(per_request=Decimal(PRICE_UCR)))
        payer = factories.user(s, "payer", credits_ucr=10**9)
        placed = [
            holds.place(
                s, payer, 5 * PRICE_UCR, timeout_s=600, idempotency_key=f"h{k}", model="flat"
            ).id
            for k in range(2 * rounds)
        ]

    def void(hold_id: int) -> str:
        with db.tx() as s:
            holds.void(s, hold_id)
        return "voided"

    def take(hold_id: int) -> str:
        with db.tx() as s:
            capture(s, hold_id, PRICE_UCR, usage_type="chat")
        return "captured"

    outcomes: list[list[str]] = []
    for k in range(rounds):
        for hold_id, pair in ((placed[2 * k], (void, void)), (placed[2 * k + 1], (take, void))):
            start = threading.Barrier(2)

            def run(
                action: object, hold_id: int = hold_id, start: threading.Barrier = start
            ) -> str:
                start.wait()
                try:
                    return action(hold_id)  # type: ignore[operator]
                except HoldNotPending:
                    return "409"

            with ThreadPoolExecutor(max_workers=2) as pool:
                outcomes.append(sorted(f.result() for f in [pool.submit(run, a) for a in pair]))
    for got in outcomes:
        assert got in (["409", "voided"], ["409", "captured"]), outcomes
    with db.tx() as s:
        assert wallets.balance(s, payer).pending_ucr == 0
        assert invariants.check(s) == []
