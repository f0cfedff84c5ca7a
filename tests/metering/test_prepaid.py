"""Prepaid usage events (a gateway call served from a marketplace allocation, DESIGN §10):
recorded with their provider cost, charged nothing, earning the creators nothing, counted as
uses; idempotent on their key like any event."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from modelbank.earnings.models import earnings_table
from modelbank.earnings.rules import EarningsRule
from modelbank.errors import IdempotencyConflict
from modelbank.metering import service as metering
from modelbank.metering.errors import InvalidUsage
from modelbank.metering.events import request_hash
from modelbank.metering.models import usage_events_table
from modelbank.metering.rollups import creator_day_table, model_day_table, user_day_table
from modelbank.money import div_half_even
from modelbank.wallets import service as wallets
from tests import factories
from tests.conftest import Db

CREDITS = 5_000_000


def _event(user_id: int, model_id: int, **fields: object) -> metering.UsageEvent:
    base: dict[str, object] = {
        "idempotency_key": "gw:req-1",
        "user_id": user_id,
        "model": model_id,
        "input_tokens": 1_000,
        "output_tokens": 200,
        "cached_input_tokens": 400,
        "prepaid": True,
    }
    return metering.UsageEvent(**{**base, **fields})  # type: ignore[arg-type]


def test_a_prepaid_event_costs_the_wallet_nothing_earns_nothing_and_replays(db: Db) -> None:
    with db.tx() as s:
        creator = factories.user(s, "creator")
        buyer = factories.user(s, "buyer", credits_ucr=CREDITS)
        rule = EarningsRule(per_use_ucr=7_000, per_token_ucr=Decimal(10), share_bps=1_000)
        model_id = factories.model(s, "chat-x", creator_id=creator, rule=rule)
        first = metering.charge(s, _event(buyer, model_id))
        again = metering.charge(s, _event(buyer, model_id))
    # gpt-4o's cost: 600 fresh × 2.5 + 400 cached × 1.25 + 200 output × 10 µUSD per token
    cost = div_half_even(600 * 2_500_000 + 400 * 1_250_000 + 200 * 10_000_000, 1_000_000)
    assert (first.status, first.charge_ucr, first.cost_uusd, first.earnings) == (
        "charged",
        0,
        cost,
        (),
    )
    assert (again.status, again.usage_id) == ("replayed", first.usage_id)
    with db.tx() as s:
        assert wallets.balance(s, buyer).balance_ucr == CREDITS
        row = s.execute(select(usage_events_table)).one()
        assert (row.charge_ucr, row.cost_uusd, row.earnings_ucr, row.earnings_note) == (
            0,
            cost,
            0,
            "prepaid",
        )
        assert s.execute(select(func.count()).select_from(earnings_table)).scalar_one() == 0
        model_day = s.execute(select(model_day_table)).one()
        assert (model_day.uses, model_day.tokens, model_day.revenue_ucr) == (1, 1_200, 0)
        assert (model_day.cost_uusd, model_day.earnings_ucr) == (cost, 0)
        user_day = s.execute(select(user_day_table)).one()
        assert (user_day.uses, user_day.tokens, user_day.spend_ucr) == (1, 1_200, 0)
        assert s.execute(select(func.count()).select_from(creator_day_table)).scalar_one() == 0


def test_a_prepaid_event_is_told_from_a_paid_one(db: Db) -> None:
    with db.tx() as s:
        buyer = factories.user(s, "buyer", credits_ucr=CREDITS)
        model_id = factories.model(s, "chat-x")
        metering.charge(s, _event(buyer, model_id))
        # The same key for the same usage, not prepaid: a different event (a conflict).
        with pytest.raises(IdempotencyConflict):
            metering.charge(s, _event(buyer, model_id, prepaid=False))
    assert request_hash(_event(1, 2)) != request_hash(_event(1, 2, prepaid=False))


@pytest.mark.parametrize("fields", [{"charge_ucr": 5}, {"hold_id": 1}])
def test_a_prepaid_event_takes_no_charge_nor_hold(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidUsage):
        metering.validate(_event(1, 2, **fields))
