"""Price what-ifs over recorded usage (issue 12 item 3): today's prices reproduce the
recorded charges to the µcr, a tier markup changes only that tier's models by the amounts
the Decimal oracle gives, nothing is written, bad proposals are refused."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from modelbank.analytics.whatif import (
    InvalidWhatIf,
    Proposal,
    WhatIfTooLarge,
    parse_demand,
    parse_markups,
    proposed_price,
    recorded_what_if,
)
from modelbank.catalog import service as catalog
from modelbank.catalog.tiers import Tier
from modelbank.ledger.models import accounts_table, transfers_table
from modelbank.metering.models import usage_events_table as usage
from modelbank.money import round_ucr
from modelbank.pricing import service as pricing
from modelbank.pricing.formulas import Quantities, Rates, amount, price_from_cost
from modelbank.pricing.ratecard import rate_card
from tests.analytics import whatif_history
from tests.conftest import Db

FIGURES = ("events", "revenue_ucr", "cost_uusd", "cost_ucr", "earnings_ucr", "margin_ucr")


def _state(db: Db) -> tuple[object, ...]:
    with db.tx() as s:
        return (
            tuple(s.execute(select(accounts_table).order_by(accounts_table.c.id)).all()),
            s.execute(select(func.count()).select_from(transfers_table)).scalar_one(),
            s.execute(select(func.count()).select_from(usage)).scalar_one(),
        )


def _recorded_by_model(db: Db, h: whatif_history.History) -> dict[int, dict[str, int]]:
    with db.tx() as s:
        rows = s.execute(
            select(
                usage.c.model_id,
                func.count(),
                func.sum(usage.c.charge_ucr),
                func.sum(usage.c.cost_uusd),
                func.sum(usage.c.earnings_ucr),
                func.sum(usage.c.margin_ucr),
            )
            .where(usage.c.created_at >= h.start)
            .group_by(usage.c.model_id)
        ).all()
    return {
        int(m): {
            "events": int(n),
            "revenue_ucr": int(c),
            "cost_uusd": int(u),
            "earnings_ucr": int(e),
            "margin_ucr": int(g),
        }
        for m, n, c, u, e, g in rows
    }


def test_current_sheet_reprices_exactly_the_recorded_charges(db: Db, tmp_path: Path) -> None:
    h = whatif_history.seed(db, tmp_path)
    before = _state(db)
    expected = _recorded_by_model(db, h)
    for proposal in (Proposal(), Proposal(costs=h.costs)):
        with db.tx() as s:
            report = recorded_what_if(s, h.start, h.end, proposal)
        assert {line.model.id for line in report.lines} == set(expected) == set(h.models.values())
        for line in report.lines:
            want = expected[line.model.id]
            for figures in (line.now, line.proposed, line.recorded):
                assert figures is not None
                got = figures.as_dict()
                assert {k: got[k] for k in want} == want, line.model.slug
            assert not line.changed
            assert set(line.difference.values()) == {0}
        assert report.recorded is not None
        assert report.now.as_dict() == report.proposed.as_dict()
        assert report.now.revenue_ucr == report.recorded.revenue_ucr > 0
        assert report.now.earnings_ucr == report.recorded.earnings_ucr > 0
        assert report.now.margin_ucr == report.recorded.margin_ucr
        assert report.now.events == 12 + 3 == report.recorded.events  # part 2 and carol
        assert report.users == 4 and report.dry_now == report.dry_proposed == 0
    assert _state(db) == before  # read-only: accounts, transfers and usage rows unchanged


def test_ten_percent_more_on_one_tier_changes_only_its_models_exactly(
    db: Db, tmp_path: Path
) -> None:
    h = whatif_history.seed(db, tmp_path)
    before = _state(db)
    proposal = Proposal(tiers=parse_markups(["MEDIUM=1.65"]))  # 1.5 × 1.10
    with db.tx() as s:
        report = recorded_what_if(s, h.start, h.end, proposal)
        rows = s.execute(
            select(usage).where(usage.c.created_at >= h.start).order_by(usage.c.id)
        ).all()
        price = pricing.current_price(s, h.models["gpt-4o"])
    assert _state(db) == before
    by_slug = {line.model.slug: line for line in report.lines}
    assert {slug for slug, line in by_slug.items() if line.changed} == {"gpt-4o"}
    for slug, line in by_slug.items():
        if slug != "gpt-4o":
            assert line.now.as_dict() == line.proposed.as_dict(), slug
    # the Decimal oracle: price = cost × 1.65 × demand × credits per USD, each event rounded once
    oracle = price_from_cost(
        price.cost_uusd,
        tier_markup=Decimal("1.65"),
        demand_markup=price.demand_markup,
        credits_per_usd=price.credits_per_usd,
    )
    gpt = [r for r in rows if r.model_id == h.models["gpt-4o"]]
    old = sum(r.charge_ucr for r in gpt)
    new = sum(
        round_ucr(
            amount(
                oracle,
                Quantities(
                    input_tokens=r.input_tokens,
                    output_tokens=r.output_tokens,
                    cached_input_tokens=r.cached_input_tokens,
                    units=r.units,
                ),
            )
        )
        for r in gpt
    )
    line = by_slug["gpt-4o"]
    assert line.difference["revenue_ucr"] == new - old > 0
    assert line.difference["cost_uusd"] == line.difference["cost_ucr"] == 0
    assert report.difference["revenue_ucr"] == new - old
    # carol's wallet held exactly her spend at today's prices: she runs dry only at +10 %
    assert report.dry_now == 0 and report.dry_proposed == 1
    assert report.proposed.unfunded_events >= 1


def test_sheet_with_other_costs_changes_cost_and_price_of_its_models(
    db: Db, tmp_path: Path
) -> None:
    h = whatif_history.seed(db, tmp_path)
    sheet = {k: dict(v) for k, v in whatif_history.SHEET.items()}
    sheet["gpt-4o-mini"]["input_cost_per_token"] = 3e-07  # doubled
    from modelbank.catalog.pricesheet import import_litellm_sheet

    proposal = Proposal(costs=import_litellm_sheet(sheet, source="test"))
    with db.tx() as s:
        report = recorded_what_if(s, h.start, h.end, proposal)
    changed = {line.model.slug for line in report.lines if line.changed}
    assert changed == {"gpt-4o-mini"}
    mini = next(line for line in report.lines if line.model.slug == "gpt-4o-mini")
    assert mini.difference["cost_uusd"] > 0 and mini.difference["revenue_ucr"] > 0
    # high demand (1.10) × SMALL (1.6) × 100 credits per USD on the extra cost
    assert mini.difference["margin_ucr"] == (
        mini.difference["revenue_ucr"]
        - mini.difference["cost_ucr"]
        - mini.difference["earnings_ucr"]
    )


def test_demand_override_and_its_errors(db: Db, tmp_path: Path) -> None:
    h = whatif_history.seed(db, tmp_path)
    with db.tx() as s:
        report = recorded_what_if(
            s, h.start, h.end, Proposal(demand=parse_demand(["llama-3.1-405b=high"]))
        )
        assert {line.model.slug for line in report.lines if line.changed} == {"llama-3.1-405b"}
        with pytest.raises(InvalidWhatIf, match="unknown model 'nope'"):
            recorded_what_if(s, h.start, h.end, Proposal(demand=parse_demand(["nope=low"])))
        with pytest.raises(WhatIfTooLarge) as too_large:
            recorded_what_if(s, h.start, h.end, Proposal(), max_events=5)
        assert too_large.value.context == {"events": 15, "limit": 5}
        with pytest.raises(InvalidWhatIf):
            recorded_what_if(s, h.end, h.start, Proposal())


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["HUGE=2"], "TIER one of"),
        (["large"], "X must be a number"),
        (["large=0"], "X must be a number"),
        (["large=abc"], "X must be a number"),
        (["large=1.2", "LARGE=1.3"], "named twice"),
    ],
)
def test_bad_markups_are_refused(items: list[str], message: str) -> None:
    with pytest.raises(InvalidWhatIf, match=message):
        parse_markups(items)


@pytest.mark.parametrize("items", [["gpt-4o"], ["gpt-4o=extreme"], ["=high"]])
def test_bad_demand_is_refused(items: list[str]) -> None:
    with pytest.raises(InvalidWhatIf):
        parse_demand(items)


_RATE = st.decimals(min_value=0, max_value=10**8, places=3, allow_nan=False, allow_infinity=False)
_MARKUP = st.decimals(min_value=Decimal("0.5"), max_value=5, places=2)


@settings(max_examples=200, deadline=None)
@given(
    inp=_RATE,
    out=_RATE,
    cache=st.none() | _RATE,
    req=_RATE,
    unit=_RATE,
    markup=_MARKUP,
    tokens=st.tuples(*(st.integers(0, 10**7) for _ in range(3)), st.integers(0, 50)),
)
def test_proposed_price_charges_what_the_decimal_oracle_gives(
    inp: Decimal,
    out: Decimal,
    cache: Decimal | None,
    req: Decimal,
    unit: Decimal,
    markup: Decimal,
    tokens: tuple[int, int, int, int],
) -> None:
    cost = Rates(inp, out, cache, req, unit)
    info = _version(cost)
    model = _model()
    proposed = proposed_price(info, model, Proposal(tiers={Tier.LARGE: markup}))
    fresh, cached, output, units = tokens
    q = Quantities(
        input_tokens=fresh + cached, cached_input_tokens=cached, output_tokens=output, units=units
    )
    oracle = price_from_cost(
        cost, tier_markup=markup, demand_markup=Decimal("0.9"), credits_per_usd=Decimal(100)
    )
    quote = rate_card(proposed).quote(q)
    assert quote.charge_ucr == round_ucr(amount(oracle, q))
    assert quote.cost_uusd == rate_card(info).quote(q).cost_uusd
    # a proposal that names nothing of this model leaves the version as it is
    assert proposed_price(info, model, Proposal(tiers={Tier.SMALL: markup})) is info


def _version(cost: Rates) -> pricing.PriceInfo:
    from datetime import UTC, datetime

    tier_markup, demand = Decimal("1.4"), Decimal("0.9")
    return pricing.PriceInfo(
        id=1,
        model_id=1,
        version=1,
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        price_ucr=price_from_cost(
            cost, tier_markup=tier_markup, demand_markup=demand, credits_per_usd=Decimal(100)
        ),
        cost_uusd=cost,
        tier="large",
        tier_markup=tier_markup,
        demand_markup=demand,
        credits_per_usd=Decimal(100),
        source="cost",
    )


def _model() -> catalog.ModelInfo:
    from modelbank.catalog.costs import Mode

    return catalog.ModelInfo(
        id=1,
        slug="big",
        name="big",
        provider="x",
        provider_model_ref="big",
        mode=Mode.CHAT,
        category="General",
        tier=Tier.LARGE,
        demand="low",
        creator_id=None,
        is_active=True,
        is_premium=False,
        access_price_ucr=0,
    )


_EVENT = st.tuples(
    st.integers(1, 4),  # user
    st.integers(0, 200_000),  # input tokens
    st.integers(0, 50_000),  # output tokens
    st.sampled_from(["chat", "image_generation", "other"]),
)


@settings(max_examples=100, deadline=None)
@given(
    events=st.lists(_EVENT, max_size=40),
    balances=st.dictionaries(st.integers(1, 4), st.integers(0, 3_000_000)),
    markup=_MARKUP,
)
def test_simulated_wallets_never_overdraw_and_refuse_what_they_cannot_pay(
    events: list[tuple[int, int, int, str]], balances: dict[int, int], markup: Decimal
) -> None:
    from datetime import UTC, datetime

    from modelbank.analytics.whatif.simulate import Use, WhatIf
    from modelbank.earnings.rules import EarningsRule
    from modelbank.metering.reference import ModelReference

    info = _version(Rates(Decimal(2_500_000), Decimal(10_000_000)))
    model = _model()
    rule = EarningsRule(per_use_ucr=10, popularity_tiers=((3, Decimal("1.5")),))
    ref = ModelReference(
        info=model,
        prices=(info,),
        rules=((info.effective_from, rule),),
        beneficiaries=((9, 10_000),),
    )
    run = WhatIf({1: ref}, True, balances, {})
    proposed = proposed_price(info, model, Proposal(tiers={Tier.LARGE: markup}))
    at = datetime(2026, 2, 1, tzinfo=UTC)
    for user, tokens, output, kind in events:
        run.price(Use(user, 1, kind, tokens, 0, output, 0, at), info, proposed)
    for book, price in ((run.now, info), (run.proposed, proposed)):
        assert book.total.events == len(events)
        card = rate_card(price)
        assert book.total.revenue_ucr == sum(
            card.charge_ucr(tokens, 0, output, 0) for _, tokens, output, _ in events
        )
        paid_by: dict[int, int] = {}
        unfunded = 0
        dry: set[int] = set()
        for user, tokens, output, _ in events:
            charge = card.charge_ucr(tokens, 0, output, 0)
            left = balances.get(user, 0) - paid_by.get(user, 0)
            if charge > left:
                unfunded += 1
                dry.add(user)
            else:
                paid_by[user] = paid_by.get(user, 0) + charge
        assert book.total.unfunded_events == unfunded
        for user, left in book.balances.items():
            assert left == balances.get(user, 0) - paid_by.get(user, 0) >= 0
        assert book.dry == dry
    if markup == Decimal("1.4"):
        assert run.now.total.as_dict() == run.proposed.total.as_dict()
