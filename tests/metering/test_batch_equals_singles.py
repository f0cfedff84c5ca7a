"""A batch charged through the pipeline equals the same events charged one by one
(DESIGN §6; the charge engine issue's property): rejections, replays, keys repeated inside
the batch or reused with another body, captured holds and premium models included.

Each example builds two identical worlds in the test's database (a creator, a priced model,
a premium model, three payers with given credits, one hold per payer) and charges the same
events in each: world A in one ``charge_batch``, world B one event per transaction. Every
result (status, error code, charge, earnings, balance after) and every final wallet must
match, to the µcr.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelbank.catalog import manage
from modelbank.earnings.rules import EarningsRule
from modelbank.metering import service as metering
from modelbank.metering.service import ChargeResult, UsageEvent
from modelbank.pricing.formulas import Rates
from modelbank.wallets import holds
from modelbank.wallets import service as wallets
from modelbank.wallets.access import purchase_access
from tests import factories
from tests.conftest import Db

_worlds = itertools.count()
PRICE = Rates(
    input_per_mtok=Decimal(3_000_000),
    output_per_mtok=Decimal(9_000_000),
    per_request=Decimal(1_000),
)
RULE = EarningsRule(
    per_use_ucr=7,
    share_bps=2_500,
    popularity_tiers=((2, Decimal("1.5")), (5, Decimal(2))),
)
HOLD_UCR = 40_000


@dataclass(frozen=True)
class World:
    creator: int
    payers: tuple[int, int, int]
    models: tuple[str, str]
    holds: tuple[int, int, int]


def _world(db: Db, credits: tuple[int, int, int]) -> World:
    n = next(_worlds)
    with db.tx() as s:
        creator = factories.user(s, f"creator-{n}", credits_ucr=10**7)
        payers = tuple(
            factories.user(s, f"payer-{n}-{k}", credits_ucr=credits[k]) for k in range(3)
        )
        plain = f"plain-{n}"
        premium = f"premium-{n}"
        factories.model(s, plain, creator_id=creator, explicit=PRICE, rule=RULE)
        premium_id = factories.model(s, premium, creator_id=creator, explicit=PRICE, rule=RULE)
        manage.update_model(
            s, premium_id, manage.ModelChanges(is_premium=True, access_price_ucr=1_000)
        )
        if credits[0] >= 1_000:  # payer 0 may use it when it can pay, the others not
            purchase_access(s, payers[0], premium_id)
        placed = tuple(
            holds.place(
                s, payer, HOLD_UCR, timeout_s=600, idempotency_key=f"w{n}-h{k}", model=plain
            ).id
            if wallets.balance(s, payer).available_ucr >= HOLD_UCR
            else 0
            for k, payer in enumerate(payers)
        )
    return World(creator, payers, (plain, premium), placed)  # type: ignore[arg-type]


@st.composite
def event_specs(draw: st.DrawFn) -> list[tuple[int, int, int, int, int, bool, int | None]]:
    """(payer, model, input tokens, output tokens, key, other body, fixed charge of a
    capture or None) per event; keys are drawn from a few, so they repeat."""
    count = draw(st.integers(min_value=1, max_value=10))
    specs = []
    for _ in range(count):
        capture = draw(st.none() | st.integers(min_value=0, max_value=HOLD_UCR + 5_000))
        specs.append(
            (
                draw(st.integers(min_value=0, max_value=2)),
                draw(st.integers(min_value=0, max_value=1)),
                draw(st.integers(min_value=0, max_value=4_000)),
                draw(st.integers(min_value=0, max_value=2_000)),
                draw(st.integers(min_value=0, max_value=6)),
                draw(st.booleans()),
                capture,
            )
        )
    return specs


def _events(
    world: World, specs: list[tuple[int, int, int, int, int, bool, int | None]]
) -> list[UsageEvent]:
    events = []
    for payer, model, fresh, output, key, other, capture in specs:
        hold = world.holds[payer] if capture is not None and world.holds[payer] else None
        events.append(
            UsageEvent(
                idempotency_key=f"{world.payers[0]}-k{key}",
                user_id=world.payers[payer],
                model=world.models[model],
                input_tokens=fresh + (1 if other else 0),
                output_tokens=output,
                charge_ucr=capture if hold is not None else None,
                hold_id=hold,
            )
        )
    return events


def _shape(world: World, result: ChargeResult) -> tuple[object, ...]:
    """A result with this world's ids replaced by their role (for comparing worlds)."""
    roles = {world.creator: "creator", **{p: f"payer{k}" for k, p in enumerate(world.payers)}}
    return (
        result.status,
        result.error_code,
        result.charge_ucr,
        result.cost_uusd,
        tuple((roles[user], amount) for user, amount in result.earnings),
        result.balance_ucr,
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    specs=event_specs(),
    credits=st.tuples(*(st.sampled_from([0, 30_000, 90_000, 10**7]) for _ in range(3))),
)
def test_a_batch_equals_its_events_charged_one_by_one(
    db: Db,
    specs: list[tuple[int, int, int, int, int, bool, int | None]],
    credits: tuple[int, int, int],
) -> None:
    batch_world, single_world = _world(db, credits), _world(db, credits)
    with db.tx() as s:
        batched = metering.charge_batch(s, _events(batch_world, specs))
    singles = []
    for event in _events(single_world, specs):
        with db.tx() as s:
            singles.append(metering.charge_batch(s, [event])[0])
    assert [_shape(batch_world, r) for r in batched] == [_shape(single_world, r) for r in singles]
    with db.tx() as s:
        for a, b in zip(batch_world.payers, single_world.payers, strict=True):
            left, right = wallets.balance(s, a), wallets.balance(s, b)
            assert (left.balance_ucr, left.pending_ucr) == (right.balance_ucr, right.pending_ucr)


def test_a_capture_frees_its_hold_for_the_batch_s_later_events(db: Db) -> None:
    """Posting a hold releases all it reserved: a later event of the same wallet in the same
    batch may spend the remainder, as it could one transaction later."""
    with db.tx() as s:
        payer = factories.user(s, "payer", credits_ucr=1_000_000)
        factories.model(s, "m", explicit=Rates(per_request=Decimal(375)))
        held = holds.place(s, payer, 1_000_000, timeout_s=600, idempotency_key="all", model="m")
    with db.tx() as s:
        got = metering.charge_batch(
            s,
            [
                UsageEvent("cap", payer, "m", charge_ucr=500_000, hold_id=held.id),
                UsageEvent("after", payer, "m"),
            ],
        )
    assert [(r.status, r.charge_ucr, r.balance_ucr) for r in got] == [
        ("charged", 500_000, 500_000),
        ("charged", 375, 500_000 - 375),
    ]
    with db.tx() as s:
        wallet = wallets.balance(s, payer)
        assert (wallet.balance_ucr, wallet.available_ucr) == (500_000 - 375, 500_000 - 375)
