"""Concurrent buyers on one listing (16 threads; on PostgreSQL the listing's row lock, on
SQLite the single writer lock): it is never overfilled, every refusal is a typed domain error
(never a crash), and a buy retried concurrently with one idempotency key makes one order."""

from __future__ import annotations

import threading
from collections import Counter

from modelbank.errors import DomainError
from modelbank.marketplace import service as market
from tests import factories
from tests.conftest import Db
from tests.marketplace.helpers import balance, escrow, world

THREADS = 16


def _race(db: Db, jobs: list[tuple[int, str]], listing: int, quantity: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(len(jobs))

    def run(buyer: int, key: str) -> None:
        barrier.wait()
        try:
            with db.factory() as s, s.begin():
                done = market.buy(s, listing, buyer, quantity, idempotency_key=key)
            result = "replayed" if done.replayed else "filled"
        except DomainError as exc:
            result = exc.code
        with lock:
            outcomes[result] += 1

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def test_sixteen_buyers_never_overfill(db: Db) -> None:
    with db.tx() as s:
        w = world(s)
        buyers = [factories.user(s, f"racer{i}", credits_ucr=500_000_000) for i in range(THREADS)]
        listing = market.create_listing(
            s,
            w.seller,
            kind="quota",
            resource_id=w.resource,
            quantity=5_000_000,
            unit_price_ucr=80_000_000,
        ).id
    outcomes = _race(db, [(b, f"k{b}") for b in buyers], listing, 1_000_000)
    assert outcomes == Counter({"filled": 5, "market_listing_state": 11})
    with db.tx() as s:
        view = market.get_listing(s, listing)
        assert (view.filled, view.status) == (5_000_000, "filled")
        assert escrow(s) == 5 * 80_000_000
        assert sum(balance(s, b) for b in buyers) == THREADS * 500_000_000 - 5 * 80_000_000


def test_one_key_retried_concurrently_makes_one_order(db: Db) -> None:
    with db.tx() as s:
        w = world(s)
        listing = market.create_listing(
            s,
            w.seller,
            kind="quota",
            resource_id=w.resource,
            quantity=5_000_000,
            unit_price_ucr=80_000_000,
        ).id
    outcomes = _race(db, [(w.buyer, "same")] * 8, listing, 1_000_000)
    assert outcomes == Counter({"filled": 1, "replayed": 7})
    with db.tx() as s:
        assert len(market.list_orders(s, w.buyer)) == 1
        assert market.get_listing(s, listing).filled == 1_000_000
