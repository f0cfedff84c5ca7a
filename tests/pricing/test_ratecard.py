"""The rate card (the charge path's integer pricing) equals the Decimal formulas of
``pricing.formulas`` over random cards and usages (DESIGN §2, §13)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from modelbank.money import div_half_even, round_ucr, round_uusd, uusd_to_ucr
from modelbank.pricing.formulas import Quantities, Rates, amount, margin_bps
from modelbank.pricing.ratecard import Card, RateCard, rate_card
from modelbank.pricing.ratecard import margin_bps as card_margin_bps
from modelbank.pricing.service import PriceInfo

rates_decimal = st.decimals(
    min_value=0, max_value=10**9, places=4, allow_nan=False, allow_infinity=False
)
tokens = st.integers(min_value=0, max_value=2_000_000)


@st.composite
def rate_cards(draw: st.DrawFn) -> Rates:
    return Rates(
        input_per_mtok=draw(rates_decimal),
        output_per_mtok=draw(rates_decimal),
        cache_read_per_mtok=draw(st.none() | rates_decimal),
        per_request=draw(st.decimals(min_value=0, max_value=10**6, places=3)),
        per_unit=draw(st.decimals(min_value=0, max_value=10**6, places=3)),
    )


@settings(max_examples=300)
@given(
    rates=rate_cards(),
    input_tokens=tokens,
    output_tokens=tokens,
    cached_share=st.fractions(min_value=0, max_value=1),
    units=st.integers(min_value=0, max_value=1000),
    credits_per_usd=st.sampled_from([Decimal(100), Decimal("100.5"), Decimal("1.25")]),
)
def test_card_matches_amount(
    rates: Rates,
    input_tokens: int,
    output_tokens: int,
    cached_share: object,
    units: int,
    credits_per_usd: Decimal,
) -> None:
    cached = int(input_tokens * cached_share)  # type: ignore[operator]
    q = Quantities(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        units=units,
    )
    card = Card.of(rates)
    numerator = (
        (input_tokens - cached) * card.fresh
        + cached * card.cached
        + output_tokens * card.output
        + card.request
        + units * card.unit
    )
    exact = amount(rates, q)
    assert div_half_even(numerator, card.den) == round_ucr(exact) == round_uusd(exact)
    cpu_num, cpu_den = credits_per_usd.as_integer_ratio()
    assert div_half_even(numerator * cpu_num, card.den * cpu_den) == round_ucr(
        uusd_to_ucr(exact, credits_per_usd)
    )


@settings(max_examples=300)
@given(
    price=rate_cards(),
    cost=rate_cards(),
    input_tokens=tokens,
    output_tokens=tokens,
    cached_share=st.fractions(min_value=0, max_value=1),
    units=st.integers(min_value=0, max_value=1000),
    credits_per_usd=st.sampled_from([Decimal(100), Decimal("100.5"), Decimal("1.25")]),
    earnings_ucr=st.integers(min_value=0, max_value=10**9),
)
def test_quote_matches_the_decimal_oracle(
    price: Rates,
    cost: Rates,
    input_tokens: int,
    output_tokens: int,
    cached_share: object,
    units: int,
    credits_per_usd: Decimal,
    earnings_ucr: int,
) -> None:
    cached = int(input_tokens * cached_share)  # type: ignore[operator]
    q = Quantities(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        units=units,
    )
    card = rate_card(_info(price, cost, credits_per_usd))
    quote = card.quote(q)
    assert quote.charge_ucr == round_ucr(amount(price, q))
    assert quote.cost_uusd == round_uusd(amount(cost, q))
    cost_ucr = round_ucr(uusd_to_ucr(amount(cost, q), credits_per_usd))
    assert quote.cost_ucr == cost_ucr
    assert quote.margin_ucr(earnings_ucr) == quote.charge_ucr - cost_ucr - earnings_ucr
    # A fixed charge (a captured hold) keeps the card's cost.
    fixed = card.quote(q, fixed_charge_ucr=7)
    assert (fixed.charge_ucr, fixed.cost_uusd) == (7, quote.cost_uusd)
    assert card_margin_bps(quote.charge_ucr, quote.gross_margin_ucr) == margin_bps(
        quote.charge_ucr, cost_ucr
    )


def test_rate_card_is_built_once_per_version() -> None:
    info = _info(Rates(input_per_mtok=Decimal("1.5")), Rates(), Decimal(100))
    first: RateCard = rate_card(info)
    assert rate_card(info) is first
    assert first.version_id == info.id


def _info(price: Rates, cost: Rates, credits_per_usd: Decimal) -> PriceInfo:
    return PriceInfo(
        id=1,
        model_id=1,
        version=1,
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        price_ucr=price,
        cost_uusd=cost,
        tier="SMALL",
        tier_markup=Decimal("1.6"),
        demand_markup=Decimal(1),
        credits_per_usd=credits_per_usd,
        source="test",
    )
