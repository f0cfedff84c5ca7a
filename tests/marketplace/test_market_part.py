"""Moving quota from a key's pool part to its market part (DESIGN §10): the deposit credit of
the moved quota is reversed (deposit grant first), only while the wallet holds it; the moved
quota can then be listed; a later withdrawal claws back only the smaller pool part's
unconsumed credit. The ``db`` fixture checks the pool and marketplace invariants after each
test (``pool_clawback_ledger`` tells moves from clawbacks)."""

from __future__ import annotations

import pytest

from modelbank.marketplace import service as market
from modelbank.pool import service as pool
from modelbank.pool.errors import DepositCreditSpent, InvalidResource, ResourceNotFound
from tests import factories
from tests.conftest import Db
from tests.marketplace.helpers import CREDITS, balance
from tests.pool.helpers import deposit


def test_move_reverses_the_credit_then_lists_and_withdraws_exactly(db: Db) -> None:
    with db.tx() as s:
        seller = factories.user(s, "seller")
        model = factories.model(s, "gpt-4o")
        # $10 quota, all pool: credited 90 % of 1,000 credits = 900 credits
        info = deposit(s, seller, model, quota_uusd=10_000_000)
        assert info.deposit_credit_ucr == 900 * CREDITS
        pool.book_consumption(s, info.id, 2_000_000)  # $2 of the pool part used
    with db.tx() as s, pytest.raises(InvalidResource):  # only the unconsumed $8 can move
        market.move_to_market(s, info.id, 8_000_001, owner_id=seller)
    with db.tx() as s, pytest.raises(ResourceNotFound):
        market.move_to_market(s, info.id, 1, owner_id=factories.user(s, "intruder"))
    with db.tx() as s:
        moved = market.move_to_market(s, info.id, 3_000_000, owner_id=seller)
        # 900 credits × $3 / $10 = 270 credits reversed from the wallet
        assert (moved.market_quota_uusd, moved.moved_credit_ucr) == (3_000_000, 270 * CREDITS)
        assert balance(s, seller) == 630 * CREDITS
        listing = market.create_listing(
            s,
            seller,
            kind="quota",
            resource_id=info.id,
            quantity=3_000_000,
            unit_price_ucr=80 * CREDITS,
        )
        assert listing.available == 3_000_000
    with db.tx() as s:
        ended = pool.withdraw(s, info.id)
        # pool part $7, $2 consumed: 630 × 5 / 7 = 450 credits clawed back
        assert ended.clawed_back_ucr == 450 * CREDITS
        assert balance(s, seller) == 180 * CREDITS
        assert market.get_listing(s, listing.id).status == "closed"


def test_move_only_while_the_wallet_holds_the_credit(db: Db) -> None:
    with db.tx() as s:
        seller = factories.user(s, "seller")
        other = factories.user(s, "other")
        model = factories.model(s, "gpt-4o")
        info = deposit(s, seller, model, quota_uusd=10_000_000)
        theirs = deposit(
            s,
            other,
            model,
            api_key="sk-other-0000000000000000",
            quota_uusd=20_000_000,
            market_quota_uusd=10_000_000,
        )
        listing = market.create_listing(
            s,
            other,
            kind="quota",
            resource_id=theirs.id,
            quantity=10_000_000,
            unit_price_ucr=80 * CREDITS,
        )
        # the seller spends 800 of their 900 deposit credits on the other's quota
        market.buy(s, listing.id, seller, 10_000_000, idempotency_key="spend")
        assert balance(s, seller) == 100 * CREDITS
    with db.tx() as s, pytest.raises(DepositCreditSpent):
        market.move_to_market(s, info.id, 2_000_000, owner_id=seller)  # needs 180 credits
    with db.tx() as s:
        moved = market.move_to_market(s, info.id, 1_000_000, owner_id=seller)  # 90 credits
        assert moved.moved_credit_ucr == 90 * CREDITS
        assert balance(s, seller) == 10 * CREDITS
