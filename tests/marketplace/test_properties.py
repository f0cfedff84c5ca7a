"""Hypothesis properties of the marketplace's money (issue 15 §3): per order, released to the
seller + commission + returned to the buyer = paid, to the µcr, whatever the fills,
consumption, failures, expiries and quota moved from the pool part; nothing stays in escrow
for a closed order; the commission is exactly ``round_half_even(gross × bps / 10,000)`` of
what was released."""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelbank.db.base import utcnow
from modelbank.ledger import invariants as ledger_invariants
from modelbank.marketplace import allocations
from modelbank.marketplace import service as market
from modelbank.marketplace.escrow import released_gross, split
from modelbank.money import div_half_even
from modelbank.platform import service as platform_settings
from modelbank.pool import service as pool
from modelbank.wallets import grants
from tests import factories
from tests.conftest import Db
from tests.pool.helpers import deposit


@given(
    paid=st.integers(0, 10**13),
    quantity=st.integers(1, 10**9),
    bps=st.integers(0, 10_000),
    steps=st.lists(st.integers(0, 10**9), max_size=30),
)
def test_cumulative_release_never_steps_back_and_sums_to_paid(
    paid: int, quantity: int, bps: int, steps: list[int]
) -> None:
    consumed = seller = commission = 0
    for step in steps:
        consumed = min(quantity, consumed + step)
        gross = released_gross(paid, consumed, quantity)
        now_seller, now_fee = split(gross, bps)
        assert now_seller >= seller and now_fee >= commission
        assert now_fee == div_half_even(gross * bps, 10_000)
        seller, commission = now_seller, now_fee
    returned = paid - seller - commission
    assert returned >= 0
    assert seller + commission + returned == paid
    if consumed == quantity:
        assert returned == 0


_names = itertools.count()

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("buy"), st.integers(0, 1), st.integers(1, 3_000_000)),
        st.tuples(st.just("use"), st.integers(0, 5), st.integers(0, 1_500_000)),
        st.tuples(st.just("expire"), st.integers(0, 3), st.just(0)),
        st.tuples(st.just("end"), st.sampled_from(["withdraw", "fail"]), st.just(0)),
        st.tuples(st.just("move"), st.just(0), st.integers(1, 2_500_000)),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS, price=st.integers(0, 500_000_000), bps=st.integers(0, 10_000))
def test_random_fills_consumption_failures_and_expiries_keep_escrow_exact(
    db: Db, ops: list[tuple[str, object, int]], price: int, bps: int
) -> None:
    n = next(_names)
    now = utcnow()
    with db.tx() as s:
        platform_settings.put(s, "marketplace.commission_bps", bps)
        seller = factories.user(s, f"seller{n}")
        buyers = [factories.user(s, f"b{n}-{i}", credits_ucr=10**12) for i in range(2)]
        model = factories.model(s, f"m{n}")
        resource = deposit(
            s, seller, model, api_key=f"sk-prop-{n:06d}-abcdefgh", market_quota_uusd=8_000_000
        ).id
        market.create_listing(
            s,
            seller,
            kind="quota",
            resource_id=resource,
            quantity=8_000_000,
            unit_price_ucr=price,
            allocation_days=1,
        )
    days = 0
    for i, (op, arg, amount) in enumerate(ops):
        with db.tx() as s:
            if op == "buy":
                offered = market.browse_listings(s, seller_id=seller).items
                if offered:
                    pick = offered[-1] if amount % 2 else offered[0]  # the moved quota too
                    market.buy(
                        s,
                        pick.id,
                        buyers[int(arg)],
                        min(amount, pick.available),
                        idempotency_key=f"k{i}",
                        now=now + timedelta(days=days),
                    )
            elif op == "use":
                mine = market.list_allocations(s, buyers[int(arg) % 2], status="active")
                if mine:
                    target = mine[int(arg) % len(mine)]
                    request = f"req-{n}-{i}"
                    free = target.remaining_uusd - target.held_uusd
                    if free > 0 and allocations.reserve(
                        s,
                        target.id,
                        request,
                        model,
                        free,
                        timeout_s=60,
                        now=now + timedelta(days=days),
                    ):
                        allocations.settle(s, request, amount, now=now + timedelta(days=days))
            elif op == "expire":
                days += int(arg)
                market.expire_due(s, now=now + timedelta(days=days))
            elif op == "move" and pool.get_resource(s, resource).status == "active":
                info = pool.get_resource(s, resource)
                amount = min(amount, info.pool_quota_uusd - info.consumed_uusd)
                if amount > 0:
                    market.move_to_market(s, resource, amount, owner_id=seller)
                    market.create_listing(
                        s,
                        seller,
                        kind="quota",
                        resource_id=resource,
                        quantity=amount,
                        unit_price_ucr=price,
                    )
            elif op == "end" and pool.get_resource(s, resource).status == "active":
                at = now + timedelta(days=days)
                if arg == "withdraw":
                    pool.withdraw(s, resource, now=at)
                else:
                    pool.fail(s, resource, "key refused", now=at)
    with db.tx() as s:
        assert market.check(s) == []
        assert ledger_invariants.check(s) == []
        assert grants.check(s) == []
        for buyer in buyers:
            for order in market.list_orders(s, buyer, role="buyer"):
                assert (
                    order.seller_ucr
                    + order.commission_ucr
                    + order.returned_ucr
                    + (order.in_escrow_ucr)
                    == order.paid_ucr
                )
                if order.status == "closed":
                    assert order.in_escrow_ucr == 0
                for alloc in market.list_allocations(s, buyer):
                    if alloc.order_id == order.id and alloc.status != "active":
                        assert alloc.released_ucr + alloc.returned_ucr == alloc.paid_ucr
