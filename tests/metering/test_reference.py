"""The reference data charging caches per process (metering/reference.py) is never stale:
every change to the catalog, prices, rules, stakes or settings moves the reference epoch by
trigger, and what is in force at a moment is picked from the versions in memory. Each test
charges through one engine (one cache), changes something between charges, and checks the
next charge used the change."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import text

from modelbank.catalog.tiers import Tier
from modelbank.db import fast
from modelbank.db.base import utcnow
from modelbank.earnings import service as earnings
from modelbank.metering import service as metering
from modelbank.metering.service import UsageEvent
from modelbank.pricing import service as pricing
from modelbank.pricing.formulas import Rates
from tests import factories
from tests.conftest import Db

PRICE = 1_000


def _flat(ucr: int) -> Rates:
    return Rates(per_request=Decimal(ucr))


def test_a_new_price_version_is_charged_at_once(db: Db) -> None:
    with db.tx() as s:
        creator = factories.user(s, "creator")
        payer = factories.user(s, "payer", credits_ucr=10**9)
        model = factories.model(s, "m", creator_id=creator, explicit=_flat(PRICE))
    with db.tx() as s:
        assert metering.charge(s, UsageEvent("a", payer, "m")).charge_ucr == PRICE
    with db.tx() as s:
        pricing.set_price(s, model, tier=Tier.MEDIUM, explicit_ucr=_flat(3 * PRICE))
    with db.tx() as s:
        assert metering.charge(s, UsageEvent("b", payer, "m")).charge_ucr == 3 * PRICE


def test_a_future_price_version_takes_effect_on_time_without_any_write(db: Db) -> None:
    start = utcnow()
    with db.tx() as s:
        payer = factories.user(s, "payer", credits_ucr=10**9)
        model = factories.model(s, "m", explicit=_flat(PRICE))
        pricing.set_price(
            s,
            model,
            tier=Tier.MEDIUM,
            explicit_ucr=_flat(2 * PRICE),
            effective_from=start + timedelta(hours=1),
        )
    with db.tx() as s:
        first = metering.charge(s, UsageEvent("a", payer, "m"), now=start + timedelta(minutes=1))
    with db.tx() as s:
        later = metering.charge(s, UsageEvent("b", payer, "m"), now=start + timedelta(hours=2))
    assert (first.charge_ucr, later.charge_ucr) == (PRICE, 2 * PRICE)


def test_stakes_rules_and_the_monetisation_switch_are_seen_at_once(db: Db) -> None:
    with db.tx() as s:
        creator = factories.user(s, "creator")
        partner = factories.user(s, "partner")
        payer = factories.user(s, "payer", credits_ucr=10**9)
        model = factories.model(s, "m", creator_id=creator, explicit=_flat(PRICE))
    with db.tx() as s:
        assert metering.charge(s, UsageEvent("a", payer, "m")).earnings == ((creator, 160),)
    with db.tx() as s:
        earnings.set_beneficiaries(s, model, [(creator, 5_000), (partner, 5_000)])
    with db.tx() as s:
        got = metering.charge(s, UsageEvent("b", payer, "m")).earnings
    assert sorted(got) == sorted(((creator, 80), (partner, 80)))
    with db.tx() as s:
        earnings.set_platform_monetised(s, False)
    with db.tx() as s:
        assert metering.charge(s, UsageEvent("c", payer, "m")).earnings == ()


def test_a_deactivated_model_is_refused_at_once(db: Db) -> None:
    with db.tx() as s:
        payer = factories.user(s, "payer", credits_ucr=10**9)
        factories.model(s, "m", explicit=_flat(PRICE))
    with db.tx() as s:
        assert metering.charge(s, UsageEvent("a", payer, "m")).status == "charged"
    with db.tx() as s:
        s.connection().execute(text("UPDATE models SET is_active = false WHERE slug = 'm'"))
    with db.tx() as s:
        result = metering.charge_batch(s, [UsageEvent("b", payer, "m")])[0]
    assert (result.status, result.error_code) == ("rejected", "model_not_found")


def test_nothing_read_ahead_outlives_its_batch(db: Db) -> None:
    with db.tx() as s:
        payer = factories.user(s, "payer", credits_ucr=10**9)
        factories.model(s, "m", explicit=_flat(PRICE))
    for key in ("a", "b"):  # the second runs with a warm reference cache
        with db.tx() as s:
            metering.charge(s, UsageEvent(key, payer, "m"))
            assert not fast.connection(s).info.get("modelbank.fast.read_ahead")


def test_reference_data_of_a_rolled_back_transaction_is_never_shared(db: Db) -> None:
    """A transaction that changes a price, charges at it, and rolls back must not leave its
    snapshot behind: the next committed change moves the epoch to the same number."""
    with db.tx() as s:
        payer = factories.user(s, "payer", credits_ucr=10**9)
        model = factories.model(s, "m", explicit=_flat(PRICE))
        factories.model(s, "other", explicit=_flat(PRICE))
    with db.tx() as s:
        assert metering.charge(s, UsageEvent("a", payer, "m")).charge_ucr == PRICE
    with db.factory() as s:
        s.begin()
        pricing.set_price(s, model, tier=Tier.MEDIUM, explicit_ucr=_flat(50 * PRICE))
        assert metering.charge(s, UsageEvent("b", payer, "m")).charge_ucr == 50 * PRICE
        s.rollback()
    with db.tx() as s:  # an unrelated committed change: the epoch moves by one again
        s.connection().execute(text("UPDATE models SET name = 'renamed' WHERE slug = 'other'"))
    with db.tx() as s:
        assert metering.charge(s, UsageEvent("c", payer, "m")).charge_ucr == PRICE
