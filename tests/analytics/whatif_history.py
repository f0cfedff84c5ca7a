"""A realistic charged history for the what-if tests: models priced from a LiteLLM-format
sheet (cached-token rates, a per-request fee, a per-image model), a premium model with an
explicit price, creators with popularity tiers and stakes, self-usage, a high-demand model,
a user whose wallet is just large enough, events charged before and inside the period."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from modelbank.analytics.whatif.proposal import cost_rates
from modelbank.catalog import manage
from modelbank.catalog import service as catalog
from modelbank.catalog.costs import CostImport, Mode
from modelbank.catalog.pricesheet import load_litellm_sheet
from modelbank.catalog.tiers import Tier
from modelbank.db.base import utcnow
from modelbank.earnings import service as earnings
from modelbank.earnings import stakes
from modelbank.earnings.rules import EarningsRule
from modelbank.metering import service as metering
from modelbank.metering.service import UsageEvent
from modelbank.pricing import service as pricing
from modelbank.pricing.formulas import Rates
from modelbank.wallets import service as wallets
from modelbank.wallets.access import purchase_access
from tests import factories
from tests.conftest import Db

CREDIT = 1_000_000

SHEET = {
    "gpt-4o": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-06,
    },
    "gpt-4o-mini": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 1.5e-07,
        "output_cost_per_token": 6e-07,
        "input_cost_per_request": 0.0001,
    },
    "llama-3.1-405b": {
        "litellm_provider": "together_ai",
        "mode": "chat",
        "input_cost_per_token": 3.5e-06,
        "output_cost_per_token": 3.5e-06,
    },
    "dall-e-3": {
        "litellm_provider": "openai",
        "mode": "image_generation",
        "output_cost_per_image": 0.04,
    },
}
"""Four models in LiteLLM's format (USD per token / request / image)."""

MODELS = {
    # slug: (tier, demand, mode)
    "gpt-4o": (Tier.MEDIUM, "medium", Mode.CHAT),
    "gpt-4o-mini": (Tier.SMALL, "high", Mode.CHAT),
    "llama-3.1-405b": (Tier.LARGE, "low", Mode.CHAT),
    "dall-e-3": (Tier.IMAGE, "medium", Mode.IMAGE_GENERATION),
}
POPULAR = EarningsRule(
    per_use_ucr=1_000,
    share_bps=2_500,
    popularity_tiers=((2, Decimal("1.5")), (5, Decimal("2.0")), (9, Decimal("2.5"))),
)
"""gpt-4o's rule: popularity tiers that the history crosses."""


@dataclass
class History:
    """Ids of what was made, the sheet file and the period of the second part of the
    history (``start``…``end``)."""

    sheet: Path
    costs: CostImport
    users: dict[str, int]
    models: dict[str, int]
    start: datetime
    end: datetime


def write_sheet(folder: Path) -> Path:
    path = folder / "prices.json"
    path.write_text(json.dumps(SHEET))
    return path


def seed(db: Db, folder: Path) -> History:
    sheet = write_sheet(folder)
    costs = load_litellm_sheet(sheet)
    with db.tx() as s:
        users = {
            name: factories.user(s, name, credits_ucr=amount * CREDIT)
            for name, amount in (("alice", 50), ("bob", 80), ("dave", 40))
        }
        models: dict[str, int] = {}
        for slug, (tier, demand, mode) in MODELS.items():
            info = catalog.create_model(
                s,
                catalog.NewModel(
                    slug=slug,
                    name=slug,
                    provider="openai",
                    mode=mode,
                    tier=tier,
                    demand=demand,
                    creator_id={"gpt-4o": users["alice"], "llama-3.1-405b": users["bob"]}.get(slug),
                ),
            )
            pricing.set_price(
                s, info.id, tier=tier, demand=demand, cost_uusd=cost_rates(costs.costs[slug])
            )
            models[slug] = info.id
        earnings.set_rule(s, models["gpt-4o"], POPULAR)
        # llama: bob keeps 60 %, dave holds 40 % (dave's own use earns dave nothing)
        stakes.set_stakes(
            s, models["llama-3.1-405b"], [(users["bob"], 6_000), (users["dave"], 4_000)]
        )
        premium = factories.model(
            s,
            "studio-pro",
            creator_id=users["alice"],
            explicit=Rates(input_per_mtok=Decimal(3_000_000), output_per_mtok=Decimal(9_000_000)),
        )
        manage.update_model(
            s, premium, manage.ModelChanges(is_premium=True, access_price_ucr=2 * CREDIT)
        )
        models["studio-pro"] = premium
    with db.tx() as s:
        purchase_access(s, users["bob"], premium)
    _charge(db, users, models, part=0)
    start = utcnow()
    # carol joins inside the period with just enough for her events at today's prices
    with db.tx() as s:
        users["carol"] = factories.user(s, "carol")
    carol_events = _carol(users["carol"], models)
    with db.tx() as s:
        needed = _price_now(s, carol_events)
        wallets.grant(s, users["carol"], needed, idempotency_key="seed:carol")
        assert needed > 0
    with db.tx() as s:
        results = metering.charge_batch(s, carol_events)
        assert all(r.status == "charged" for r in results), results
    _charge(db, users, models, part=1)
    return History(sheet, costs, users, models, start, utcnow() + timedelta(seconds=1))


def _events(users: dict[str, int], models: dict[str, int], part: int) -> list[UsageEvent]:
    a, b, d = users["alice"], users["bob"], users["dave"]
    g, m, ll, im, sp = (
        models["gpt-4o"],
        models["gpt-4o-mini"],
        models["llama-3.1-405b"],
        models["dall-e-3"],
        models["studio-pro"],
    )
    plan: list[tuple[int, int, int, int, int, int, str]] = [
        # user, model, input, cached, output, units, type
        (b, g, 12_345, 4_000, 2_345, 0, "chat"),
        (d, g, 3_333, 0, 777, 0, "chat"),
        (a, g, 5_000, 1_000, 1_000, 0, "chat"),  # self-usage
        (b, m, 20_001, 0, 5_003, 0, "chat"),
        (d, m, 7, 0, 3, 0, "chat"),
        (d, ll, 8_000, 0, 1_999, 0, "chat"),  # dave holds a stake: only bob earns
        (a, ll, 4_321, 0, 1_234, 0, "other"),
        (b, im, 0, 0, 0, 1, "image_generation"),
        (a, im, 0, 0, 0, 2, "image_generation"),
        (b, sp, 1_500, 0, 700, 0, "chat"),  # premium, bought access
        (a, sp, 900, 0, 100, 0, "chat"),  # premium, own model
        (d, g, 9_999, 9_000, 1, 0, "chat"),
    ]
    return [
        UsageEvent(
            f"hist:{part}:{i}",
            user,
            model,
            usage_type=kind,
            input_tokens=tokens,
            cached_input_tokens=cached,
            output_tokens=out,
            units=units,
        )
        for i, (user, model, tokens, cached, out, units, kind) in enumerate(plan)
    ]


def _carol(carol: int, models: dict[str, int]) -> list[UsageEvent]:
    return [
        UsageEvent(
            f"carol:{i}", carol, models["gpt-4o"], input_tokens=30_000 + i, output_tokens=8_000
        )
        for i in range(3)
    ]


def _price_now(session: object, events: list[UsageEvent]) -> int:
    from modelbank.pricing.ratecard import rate_card

    total = 0
    for e in events:
        price = pricing.current_price(session, int(e.model))  # type: ignore[arg-type]
        total += (
            rate_card(price)
            .quote(
                input_tokens=e.input_tokens,
                output_tokens=e.output_tokens,
                cached_input_tokens=e.cached_input_tokens,
                units=e.units,
            )
            .charge_ucr
        )
    return total


def _charge(db: Db, users: dict[str, int], models: dict[str, int], *, part: int) -> None:
    events = _events(users, models, part)
    with db.tx() as s:
        results = metering.charge_batch(s, events[:7])
    with db.tx() as s:
        results += [metering.charge(s, e) for e in events[7:]]
    assert all(r.status == "charged" for r in results), results
