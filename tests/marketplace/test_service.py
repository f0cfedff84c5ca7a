"""Marketplace service flows on both backends (DESIGN §10): listing quota and stakes, buying
into escrow, stake fills released 85/15 at once, allocations released in proportion to
consumption, returns on withdrawal, failure and expiry, disputes, idempotent buys, and the
invariants (the ``db`` fixture checks them, marketplace included, after every test)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from modelbank.db.base import utcnow
from modelbank.earnings import stakes
from modelbank.earnings.errors import StakeUnavailable
from modelbank.errors import IdempotencyConflict, InvalidInput
from modelbank.ledger.errors import InsufficientFunds
from modelbank.marketplace import allocations
from modelbank.marketplace import service as market
from modelbank.marketplace.errors import (
    AllocationState,
    InvalidFill,
    InvalidListing,
    MarketListingNotFound,
    MarketListingState,
    OwnMarketListing,
    QuotaUnavailable,
    ResourceNotListable,
)
from modelbank.marketplace.models import uses_table
from modelbank.platform import service as platform_settings
from modelbank.pool import service as pool
from modelbank.pool.errors import ResourceNotFound
from modelbank.pool.models import resource_health_table
from tests import factories
from tests.conftest import Db
from tests.marketplace.helpers import (
    CREDITS,
    MARKET_UUSD,
    World,
    balance,
    escrow,
    events,
    fees,
    world,
)
from tests.pool.helpers import deposit

PRICE = 80 * CREDITS
"""µcr per USD of provider spend: 80 credits (the platform's own price would be 150)."""


def _setup(db: Db) -> World:
    with db.tx() as s:
        return world(s)


def _list(db: Db, w: World, quantity: int = 2_000_000, **kw: object) -> int:
    with db.tx() as s:
        return market.create_listing(
            s,
            w.seller,
            kind="quota",
            resource_id=w.resource,
            quantity=quantity,
            unit_price_ucr=PRICE,
            **kw,  # type: ignore[arg-type]
        ).id


def _consume(db: Db, allocation_id: int, request: str, cost: int) -> None:
    with db.tx() as s:
        assert allocations.reserve(s, allocation_id, request, 1, cost, timeout_s=60)
        allocations.settle(s, request, cost)


def test_quota_buy_escrow_consume_and_return_on_withdrawal(db: Db) -> None:
    w = _setup(db)
    listing = _list(db, w)
    with db.tx() as s:
        fees_before = fees(s)
        seller_before = balance(s, w.seller)
        done = market.buy(s, listing, w.buyer, 1_000_000, idempotency_key="k1")
    order = done.order
    assert order.paid_ucr == 80 * CREDITS  # $1 of spend at 80 credits per USD
    assert order.commission_bps == 1_500 and order.status == "open"
    [alloc] = done.allocations
    assert (alloc.quantity_uusd, alloc.paid_ucr, alloc.status) == (
        1_000_000,
        order.paid_ucr,
        "active",
    )
    with db.tx() as s:
        assert balance(s, w.buyer) == 1_000 * CREDITS - order.paid_ucr
        assert escrow(s) == order.paid_ucr
        assert market.get_listing(s, listing).filled == 1_000_000
    # A model id other than the resource's models is not served from the allocation.
    with db.tx() as s:
        assert allocations.find(s, w.buyer, w.model) is not None
        assert allocations.find(s, w.seller, w.model) is None
    # Consume 30 % in two calls: 100,000 + 200,000 µUSD.
    db_model = w.model
    with db.tx() as s:
        assert allocations.reserve(s, alloc.id, "r1", db_model, 150_000, timeout_s=60)
        first = allocations.settle(s, "r1", 100_000)
    assert first is not None and first.cost_uusd == 100_000
    assert first.released_ucr == 8 * CREDITS
    _consume(db, alloc.id, "r2", 200_000)
    with db.tx() as s:
        a = market.get_allocation(s, alloc.id)
        assert (a.consumed_uusd, a.held_uusd) == (300_000, 0)
        assert a.released_ucr == 24 * CREDITS
        assert a.commission_ucr == 3_600_000 and a.seller_ucr == 20_400_000  # 15 % / 85 %
        assert balance(s, w.seller) == seller_before + 20_400_000
        assert fees(s) == fees_before + 3_600_000
        assert escrow(s) == 56 * CREDITS
        # a repeat settlement of the same request changes nothing
        assert allocations.settle(s, "r2", 200_000) is None
    # The seller withdraws the key: the unconsumed 70 % returns to the buyer.
    with db.tx() as s:
        buyer_before = balance(s, w.buyer)
        pool.withdraw(s, w.resource)
    with db.tx() as s:
        a = market.get_allocation(s, alloc.id)
        assert (a.status, a.returned_ucr) == ("returned", 56 * CREDITS)
        assert balance(s, w.buyer) == buyer_before + 56 * CREDITS
        assert escrow(s) == 0
        o = market.get_order(s, order.id)
        assert o.status == "closed" and o.in_escrow_ucr == 0
        assert o.seller_ucr + o.commission_ucr + o.returned_ucr == o.paid_ucr
        assert market.get_listing(s, listing).status == "closed"
        assert [e["returned_ucr"] for e in events(s, "marketplace.escrow.returned")] == [
            56 * CREDITS
        ]
        assert [e["order_id"] for e in events(s, "marketplace.order.filled")] == [order.id]


def test_exhaustion_releases_everything_and_emits(db: Db) -> None:
    w = _setup(db)
    listing = _list(db, w, quantity=1_000_000)
    with db.tx() as s:
        done = market.buy(s, listing, w.buyer, 1_000_000, idempotency_key="k")
        assert market.get_listing(s, listing).status == "filled"
    alloc = done.allocations[0].id
    _consume(db, alloc, "r1", 333_333)
    with db.tx() as s:
        # a call costing more than is left books only what is left
        assert allocations.reserve(s, alloc, "r2", w.model, 666_667, timeout_s=60)
        result = allocations.settle(s, "r2", 900_000)
        assert result is not None and result.exhausted and result.cost_uusd == 666_667
        a = market.get_allocation(s, alloc)
        assert a.status == "exhausted" and a.released_ucr == a.paid_ucr == 80 * CREDITS
        assert a.commission_ucr == 12 * CREDITS
        assert market.get_order(s, done.order.id).status == "closed"
        assert len(events(s, "marketplace.allocation.exhausted")) == 1
        assert allocations.find(s, w.buyer, w.model) is None
        assert escrow(s) == 0


def test_resource_failure_returns_and_allocation_hold_rules(db: Db) -> None:
    w = _setup(db)
    listing = _list(db, w)
    with db.tx() as s:
        alloc = market.buy(s, listing, w.buyer, 500_000, idempotency_key="k").allocations[0]
    with db.tx() as s:
        assert not allocations.reserve(s, alloc.id, "too-much", w.model, 500_001, timeout_s=60)
        assert allocations.reserve(s, alloc.id, "in-flight", w.model, 400_000, timeout_s=60)
        assert not allocations.reserve(s, alloc.id, "second", w.model, 100_001, timeout_s=60)
    _consume(db, alloc.id, "r1", 50_000)
    with db.tx() as s:
        pool.fail(s, w.resource, "key refused (auth)")
        a = market.get_allocation(s, alloc.id)
        assert a.status == "returned"
        assert a.returned_ucr == a.paid_ucr - a.released_ucr == 36 * CREDITS
        # the call that was in flight settles on a closed allocation: nothing moves
        late = allocations.settle(s, "in-flight", 100_000)
        assert late is not None and late.cost_uusd == 0
        assert escrow(s) == 0


def test_allocation_expiry_and_listing_expiry_jobs(db: Db) -> None:
    w = _setup(db)
    now = utcnow()
    listing = _list(db, w, allocation_days=1, expires_at=now + timedelta(hours=2))
    with db.tx() as s:
        alloc = market.buy(s, listing, w.buyer, 1_000_000, idempotency_key="k").allocations[0]
        assert allocations.reserve(s, alloc.id, "abandoned", w.model, 10_000, timeout_s=60)
    _consume(db, alloc.id, "r1", 250_000)
    with db.tx() as s:
        assert market.expire_due(s, now=now + timedelta(seconds=30)) == 0
        # the abandoned call's hold (60 s) expires; listing and allocation not yet
        assert market.expire_due(s, now=now + timedelta(hours=1)) == 1
        assert market.get_allocation(s, alloc.id).held_uusd == 0
        assert market.expire_due(s, now=now + timedelta(hours=3)) == 1  # the listing
        assert market.get_listing(s, listing).status == "expired"
        buyer_before = balance(s, w.buyer)
        assert market.expire_due(s, now=now + timedelta(days=2)) == 1  # the allocation
        a = market.get_allocation(s, alloc.id)
        assert (a.status, a.returned_ucr) == ("expired", 60 * CREDITS)
        assert balance(s, w.buyer) == buyer_before + 60 * CREDITS
        assert s.execute(select(uses_table.c.status).order_by(uses_table.c.id)).scalars().all() == [
            "voided",
            "settled",
        ]
    with db.tx() as s, pytest.raises(MarketListingState):
        market.buy(s, listing, w.other, 1_000, idempotency_key="late")


def test_listing_rules(db: Db) -> None:
    w = _setup(db)
    with db.tx() as s, pytest.raises(QuotaUnavailable):
        market.create_listing(
            s,
            w.seller,
            kind="quota",
            resource_id=w.resource,
            quantity=MARKET_UUSD + 1,
            unit_price_ucr=PRICE,
        )
    listing = _list(db, w, quantity=3_000_000, min_fill=500_000)
    with db.tx() as s, pytest.raises(QuotaUnavailable):  # 3 of 5 listed: 2.5 more is too much
        market.create_listing(
            s,
            w.seller,
            kind="quota",
            resource_id=w.resource,
            quantity=2_500_000,
            unit_price_ucr=PRICE,
        )
    with db.tx() as s, pytest.raises(ResourceNotFound):  # not the buyer's resource
        market.create_listing(
            s, w.buyer, kind="quota", resource_id=w.resource, quantity=1, unit_price_ucr=1
        )
    with db.tx() as s, pytest.raises(InvalidListing):
        market.create_listing(
            s, w.seller, kind="quota", resource_id=w.resource, quantity=0, unit_price_ucr=1
        )
    with db.tx() as s, pytest.raises(InvalidListing):
        market.create_listing(s, w.seller, kind="swap", quantity=1, unit_price_ucr=1)
    with db.tx() as s, pytest.raises(OwnMarketListing):
        market.buy(s, listing, w.seller, 500_000, idempotency_key="own")
    with db.tx() as s, pytest.raises(InvalidFill):
        market.buy(s, listing, w.buyer, 499_999, idempotency_key="small")
    with db.tx() as s, pytest.raises(InvalidFill):
        market.buy(s, listing, w.buyer, 3_000_001, idempotency_key="big")
    # the seller re-prices the unfilled part, then cancels it; another user cannot
    with db.tx() as s, pytest.raises(MarketListingNotFound):
        market.update_price(s, listing, 1, seller_id=w.buyer)
    with db.tx() as s:
        assert (
            market.update_price(s, listing, 90 * CREDITS, seller_id=w.seller).unit_price_ucr
            == 90 * CREDITS
        )
        order = market.buy(s, listing, w.buyer, 2_500_000, idempotency_key="b").order
        assert order.paid_ucr == 225 * CREDITS
        left = market.get_listing(s, listing)
        assert left.available == 500_000
        cancelled = market.cancel_listing(s, listing, seller_id=w.seller)
        assert cancelled.status == "cancelled" and cancelled.available == 0
    with db.tx() as s, pytest.raises(MarketListingState):
        market.cancel_listing(s, listing, seller_id=w.seller)
    # the cancelled remainder can be listed again (2.5 of 5 sold)
    _list(db, w, quantity=2_500_000)


def test_unhealthy_or_pending_resource_cannot_be_listed(db: Db) -> None:
    w = _setup(db)
    with db.tx() as s:
        pending = deposit(
            s,
            w.seller,
            w.model,
            api_key="sk-pending-000000000000",
            market_quota_uusd=1_000,
            activate=False,
        )
        s.execute(
            resource_health_table.insert().values(
                resource_id=w.resource, breaker="open", opened_at=utcnow(), updated_at=utcnow()
            )
        )
    for resource_id in (pending.id, w.resource):
        with db.tx() as s, pytest.raises(ResourceNotListable):
            market.create_listing(
                s, w.seller, kind="quota", resource_id=resource_id, quantity=1, unit_price_ucr=1
            )


def test_idempotent_buy_and_insufficient_funds(db: Db) -> None:
    w = _setup(db)
    listing = _list(db, w)
    with db.tx() as s:
        first = market.buy(s, listing, w.buyer, 1_000_000, idempotency_key="same")
    with db.tx() as s:
        again = market.buy(s, listing, w.buyer, 1_000_000, idempotency_key="same")
        assert again.replayed and again.order == first.order
        assert balance(s, w.buyer) == 1_000 * CREDITS - first.order.paid_ucr
    with db.tx() as s, pytest.raises(IdempotencyConflict):
        market.buy(s, listing, w.buyer, 999_999, idempotency_key="same")
    with db.tx() as s, pytest.raises(InvalidInput):
        market.buy(s, listing, w.buyer, 1_000, idempotency_key="")
    with db.tx() as s:
        poor = factories.user(s, "poor", credits_ucr=CREDITS)
    with db.tx() as s, pytest.raises(InsufficientFunds):
        market.buy(s, listing, poor, 1_000_000, idempotency_key="p")
    with db.tx() as s:
        assert market.get_listing(s, listing).filled == 1_000_000
        assert balance(s, poor) == CREDITS


def test_stake_fill_releases_85_15_and_moves_the_stake(db: Db) -> None:
    with db.tx() as s:
        creator = factories.user(s, "creator")
        buyer = factories.user(s, "buyer", credits_ucr=500 * CREDITS)
        model = factories.model(s, "anime-xl", creator_id=creator)
        platform_settings.put(s, "marketplace.commission_bps", 1_000)  # the setting is read
        listing = market.create_listing(
            s,
            creator,
            kind="stake",
            model_id=model,
            quantity=2_500,
            unit_price_ucr=40_000,
            min_fill=500,
        ).id
    with db.tx() as s, pytest.raises(StakeUnavailable):
        market.create_listing(
            s, creator, kind="stake", model_id=model, quantity=7_501, unit_price_ucr=1
        )
    with db.tx() as s:
        fees_before = fees(s)
        done = market.buy(s, listing, buyer, 1_000, idempotency_key="s")
    order = done.order
    assert done.allocations == []
    assert (order.paid_ucr, order.commission_bps, order.status) == (40 * CREDITS, 1_000, "closed")
    assert (order.seller_ucr, order.commission_ucr, order.in_escrow_ucr) == (
        36 * CREDITS,
        4 * CREDITS,
        0,
    )
    with db.tx() as s:
        assert dict(stakes.get_stakes(s, model)) == {creator: 9_000, buyer: 1_000}
        assert balance(s, creator) == 36 * CREDITS
        assert fees(s) == fees_before + 4 * CREDITS
        assert escrow(s) == 0
        # the frozen commission: a later change does not touch this order
        platform_settings.put(s, "marketplace.commission_bps", 1_500)
        assert market.get_order(s, order.id, user_id=creator).commission_bps == 1_000
        assert market.list_orders(s, buyer, role="buyer")[0].id == order.id
        assert market.list_orders(s, factories.user(s, "x")) == []


def test_bundle_all_or_nothing(db: Db) -> None:
    w = _setup(db)
    with db.tx() as s:
        second = deposit(
            s, w.seller, w.model, api_key="sk-second-00000000000000", market_quota_uusd=3_000_000
        )
        bundle = market.create_listing(
            s,
            w.seller,
            kind="bundle",
            quantity=0,
            unit_price_ucr=PRICE,
            items=[(w.resource, 1_000_000), (second.id, 2_000_000)],
        )
        assert bundle.quantity == bundle.min_fill == 3_000_000
        assert {i.resource_id for i in bundle.items} == {w.resource, second.id}
    with db.tx() as s, pytest.raises(InvalidFill):
        market.buy(s, bundle.id, w.buyer, 1_000_000, idempotency_key="part")
    with db.tx() as s:
        done = market.buy(s, bundle.id, w.buyer, 3_000_000, idempotency_key="all")
        assert done.order.paid_ucr == 240 * CREDITS
        assert [(a.resource_id, a.paid_ucr) for a in done.allocations] == sorted(
            [(w.resource, 80 * CREDITS), (second.id, 160 * CREDITS)]
        )
    # one resource withdrawn: its allocation returns; the order stays open for the other
    with db.tx() as s:
        pool.withdraw(s, second.id)
        order = market.get_order(s, done.order.id)
        assert order.status == "open" and order.returned_ucr == 160 * CREDITS


def test_disputes(db: Db) -> None:
    w = _setup(db)
    listing = _list(db, w)
    with db.tx() as s:
        admin = factories.user(s, "admin")
        a1 = market.buy(s, listing, w.buyer, 1_000_000, idempotency_key="1").allocations[0]
        a2 = market.buy(s, listing, w.buyer, 1_000_000, idempotency_key="2").allocations[0]
    _consume(db, a1.id, "r1", 100_000)
    with db.tx() as s, pytest.raises(AllocationState):
        market.open_dispute(s, a1.id, w.seller, "the seller cannot dispute")
    with db.tx() as s:
        d1 = market.open_dispute(s, a1.id, w.buyer, "timeouts all day")
        d2 = market.open_dispute(s, a2.id, w.buyer, "never answered")
        assert [d.id for d in market.list_disputes(s, status="open")] == [d1.id, d2.id]
        assert market.admin_summary(s).disputes_open == 2
        before = balance(s, w.buyer)
        refunded = market.resolve_dispute(s, d1.id, admin, action="refund", reason="outage seen")
        assert (refunded.status, refunded.amount_ucr) == ("refunded", 72 * CREDITS)
        assert balance(s, w.buyer) == before + 72 * CREDITS
        released = market.resolve_dispute(s, d2.id, admin, action="release", reason="served ok")
        assert (released.status, released.amount_ucr) == ("released", 80 * CREDITS)
        assert market.get_allocation(s, a2.id).seller_ucr == 68 * CREDITS
        summary = market.admin_summary(s)
        assert summary.open_escrow_ucr == 0 and summary.orders == 2
        assert summary.volume_ucr == 160 * CREDITS
        assert summary.commission_ucr == 1_200_000 + 12 * CREDITS


def test_price_suggestion_and_reputation(db: Db) -> None:
    w = _setup(db)
    with db.tx() as s:
        suggestion = market.suggest_price(s, w.resource, owner_id=w.seller)
        # gpt-4o MEDIUM: 1.5 × 100 credits per USD of cost = 150 credits; less 20 % = 120
        assert suggestion.platform_ucr == 150 * CREDITS
        assert suggestion.unit_price_ucr == 120 * CREDITS
        # the floor: 100 credits / 0.85, rounded up
        assert suggestion.floor_ucr == 117_647_059
        platform_settings.put(s, "marketplace.undercut_bps", 5_000)
        assert market.suggest_price(s, w.resource).unit_price_ucr == suggestion.floor_ucr
    listing = _list(db, w)
    with db.tx() as s:
        market.buy(s, listing, w.buyer, 1_000_000, idempotency_key="k")
        view = market.get_listing(s, listing)
        [rep] = view.reputation
        assert (rep.fills, rep.success_rate, rep.allocations_returned) == (1, 1.0, 0)
        assert view.models == (w.model,)
        assert view.price_ucr_per_mtok == 12_500_000 * PRICE // 1_000_000
        page = market.browse_listings(s, model_id=w.model)
        assert [v.id for v in page.items] == [listing]
        assert market.browse_listings(s, max_price_ucr_per_mtok=1).items == []
        assert market.browse_listings(s, model_id=factories.model(s, "other")).items == []


def test_jobs_return_expired_allocations(db: Db) -> None:
    from modelbank import jobs
    from tests.pool.helpers import BOX

    w = _setup(db)
    listing = _list(db, w, allocation_days=2)
    with db.tx() as s:
        alloc = market.buy(s, listing, w.buyer, 1_000_000, idempotency_key="k").allocations[0]
    report = jobs.run_once(db.factory, box=BOX, deliver=False, now=utcnow() + timedelta(days=3))
    assert report.marketplace_expired == 1
    with db.tx() as s:
        assert market.get_allocation(s, alloc.id).status == "expired"
        assert balance(s, w.buyer) == 1_000 * CREDITS
        assert escrow(s) == 0


def test_an_open_breaker_sends_calls_the_normal_way(db: Db) -> None:
    w = _setup(db)
    listing = _list(db, w)
    with db.tx() as s:
        market.buy(s, listing, w.buyer, 1_000_000, idempotency_key="k")
        assert allocations.find(s, w.buyer, w.model) is not None
        s.execute(
            resource_health_table.insert().values(
                resource_id=w.resource, breaker="open", opened_at=utcnow(), updated_at=utcnow()
            )
        )
        assert allocations.find(s, w.buyer, w.model) is None
