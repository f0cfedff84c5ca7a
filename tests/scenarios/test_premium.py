"""Premium models: usable by their creator and by users who bought access (DESIGN §4)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from modelbank.catalog import access, manage
from modelbank.catalog.errors import AccessRequired, NotPremium
from modelbank.ledger.errors import InsufficientFunds
from modelbank.metering import service as metering
from modelbank.metering.service import UsageEvent
from modelbank.pricing.formulas import Rates
from modelbank.wallets import service as wallets
from modelbank.wallets.access import purchase_access
from tests import factories
from tests.conftest import Db

CREDIT = 1_000_000
PRICE = Rates(input_per_mtok=Decimal(1_000_000), output_per_mtok=Decimal(2_000_000))


def _premium(db: Db, creator: int, access_price_ucr: int) -> int:
    with db.tx() as s:
        model_id = factories.model(s, "studio-pro", creator_id=creator, explicit=PRICE)
        manage.update_model(
            s,
            model_id,
            manage.ModelChanges(is_premium=True, access_price_ucr=access_price_ucr),
        )
    return model_id


def test_premium_model_needs_access_and_purchase_debits_once(db: Db) -> None:
    with db.tx() as s:
        creator = factories.user(s, "creator", credits_ucr=10 * CREDIT)
        buyer = factories.user(s, "buyer", credits_ucr=10 * CREDIT)
    model_id = _premium(db, creator, 3 * CREDIT)
    event = UsageEvent("p1", buyer, model_id, input_tokens=1000, output_tokens=500)

    with pytest.raises(AccessRequired), db.tx() as s:
        metering.charge(s, event)
    with db.tx() as s:
        assert wallets.balance(s, buyer).balance_ucr == 10 * CREDIT
        # the creator uses their own premium model without buying it
        own = metering.charge(s, UsageEvent("c1", creator, model_id, input_tokens=1000))
        assert own.status == "charged"

    with db.tx() as s:
        bought = purchase_access(s, buyer, model_id)
        assert bought.new and bought.price_ucr == 3 * CREDIT
    with db.tx() as s:
        again = purchase_access(s, buyer, model_id)
        assert not again.new and again.transfer_id == bought.transfer_id
        assert wallets.balance(s, buyer).balance_ucr == 7 * CREDIT
        result = metering.charge(s, event)
    assert result.charge_ucr == 1000 * 1 + 500 * 2
    with db.tx() as s:
        assert wallets.balance(s, buyer).balance_ucr == 7 * CREDIT - 2000


def test_batch_rejects_only_events_without_access(db: Db) -> None:
    with db.tx() as s:
        creator = factories.user(s, "creator")
        has = factories.user(s, "has", credits_ucr=10 * CREDIT)
        lacks = factories.user(s, "lacks", credits_ucr=10 * CREDIT)
    model_id = _premium(db, creator, CREDIT)
    with db.tx() as s:
        purchase_access(s, has, model_id)
    with db.tx() as s:
        results = metering.charge_batch(
            s,
            [
                UsageEvent("b1", has, model_id, input_tokens=100),
                UsageEvent("b2", lacks, model_id, input_tokens=100),
                UsageEvent("b3", has, "studio-pro", output_tokens=100),
            ],
        )
    assert [r.status for r in results] == ["charged", "rejected", "charged"]
    assert results[1].error_code == "model_access_required"
    with db.tx() as s:
        assert wallets.balance(s, lacks).balance_ucr == 10 * CREDIT
        assert wallets.balance(s, has).balance_ucr == 9 * CREDIT - 100 - 200


def test_purchase_refusals_write_nothing(db: Db) -> None:
    with db.tx() as s:
        creator = factories.user(s, "creator")
        poor = factories.user(s, "poor", credits_ucr=CREDIT // 2)
        free_model = factories.model(s, "free-model", explicit=PRICE)
    model_id = _premium(db, creator, CREDIT)
    with pytest.raises(InsufficientFunds), db.tx() as s:
        purchase_access(s, poor, model_id)
    with pytest.raises(NotPremium), db.tx() as s:
        purchase_access(s, poor, free_model)
    with db.tx() as s:
        assert wallets.balance(s, poor).balance_ucr == CREDIT // 2
        assert access.accessible(s, poor, [model_id, free_model]) == set()
