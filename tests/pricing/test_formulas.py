"""Pure pricing math (DESIGN §4): amounts, price from cost, margin, the single rounding."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelbank.catalog.tiers import Tier
from modelbank.money import round_ucr
from modelbank.pricing.formulas import Quantities, Rates, amount, margin_bps, price_from_cost
from modelbank.pricing.markups import DEMAND_MARKUPS, TIER_MARKUPS, Demand

GPT4O_COST = Rates(
    input_per_mtok=Decimal(2_500_000),
    output_per_mtok=Decimal(10_000_000),
    cache_read_per_mtok=Decimal(1_250_000),
)

rate = st.decimals(
    min_value=0, max_value=Decimal(10**9), places=6, allow_nan=False, allow_infinity=False
)
rates = st.builds(
    Rates,
    input_per_mtok=rate,
    output_per_mtok=rate,
    cache_read_per_mtok=st.none() | rate,
    per_request=rate,
    per_unit=rate,
)
tokens = st.integers(min_value=0, max_value=10**9)


@st.composite
def quantities(draw: st.DrawFn) -> Quantities:
    input_tokens = draw(tokens)
    return Quantities(
        input_tokens=input_tokens,
        output_tokens=draw(tokens),
        cached_input_tokens=draw(st.integers(min_value=0, max_value=input_tokens)),
        units=draw(st.integers(min_value=0, max_value=10_000)),
        requests=draw(st.integers(min_value=0, max_value=3)),
    )


def by_hand(r: Rates, q: Quantities) -> Decimal:
    """DESIGN §4 written again: per-token parts per million, cached input at the cache rate
    (or the input rate without one), plus per request and per unit. 120 digits: exact."""
    with localcontext() as ctx:
        ctx.prec = 120
        cache = r.input_per_mtok if r.cache_read_per_mtok is None else r.cache_read_per_mtok
        tokens_part = (
            (q.input_tokens - q.cached_input_tokens) * r.input_per_mtok
            + q.cached_input_tokens * cache
            + q.output_tokens * r.output_per_mtok
        ) / 1_000_000
        return tokens_part + q.requests * r.per_request + q.units * r.per_unit


# ---------------------------------------------------------------- amount


@given(rates, quantities())
def test_amount_equals_the_hand_computation(r: Rates, q: Quantities) -> None:
    exact = amount(r, q)
    assert exact == by_hand(r, q)


@given(rates, quantities())
def test_rounded_charge_is_within_half_a_microcredit(r: Rates, q: Quantities) -> None:
    exact = amount(r, q)
    charged = round_ucr(exact)
    assert isinstance(charged, int)
    assert abs(Decimal(charged) - exact) <= Decimal("0.5")


def test_amount_examples() -> None:
    # gpt-4o cost: 1,000 in / 500 out → $0.0025 + $0.005 = 7,500 µUSD
    assert amount(GPT4O_COST, Quantities(input_tokens=1_000, output_tokens=500)) == 7_500
    # 400 of the 1,000 input tokens cached at half price: 600×2.5 + 400×1.25 + 500×10
    cached = Quantities(input_tokens=1_000, output_tokens=500, cached_input_tokens=400)
    assert amount(GPT4O_COST, cached) == Decimal(1_500 + 500 + 5_000)
    # without a cache rate, cached input is billed as input
    no_cache = Rates(input_per_mtok=Decimal(2_500_000))
    assert amount(no_cache, cached) == Decimal(2_500)
    # one token at $0.15 per 1M is 0.15 µUSD: kept exact, not rounded
    assert amount(Rates(input_per_mtok=Decimal(150_000)), Quantities(input_tokens=1)) == Decimal(
        "0.15"
    )
    per_op = Rates(per_request=Decimal(10_000_000), per_unit=Decimal(3_000_000))
    assert amount(per_op, Quantities(units=2)) == 16_000_000
    assert amount(per_op, Quantities(units=2, requests=0)) == 6_000_000
    assert amount(Rates(), Quantities(input_tokens=10**9)) == 0


# ---------------------------------------------------------------- price from cost


@given(
    rates,
    st.sampled_from(sorted(TIER_MARKUPS.values())),
    st.sampled_from(sorted(DEMAND_MARKUPS.values())),
    st.sampled_from([Decimal(100), Decimal(90), Decimal("125.5")]),
)
def test_price_from_cost_is_exact(
    cost: Rates, tier: Decimal, demand: Decimal, credits_per_usd: Decimal
) -> None:
    price = price_from_cost(
        cost, tier_markup=tier, demand_markup=demand, credits_per_usd=credits_per_usd
    )
    with localcontext() as ctx:
        ctx.prec = 120
        factor = tier * demand * credits_per_usd
        assert price.input_per_mtok == cost.input_per_mtok * factor
        assert price.output_per_mtok == cost.output_per_mtok * factor
        assert price.per_request == cost.per_request * factor
        assert price.per_unit == cost.per_unit * factor
        if cost.cache_read_per_mtok is None:
            assert price.cache_read_per_mtok is None
        else:
            assert price.cache_read_per_mtok == cost.cache_read_per_mtok * factor


@given(rates, quantities())
def test_price_of_usage_is_cost_of_usage_times_markups(cost: Rates, q: Quantities) -> None:
    factor = Decimal("1.5") * Decimal("1.10") * Decimal(100)
    price = price_from_cost(
        cost,
        tier_markup=Decimal("1.5"),
        demand_markup=Decimal("1.10"),
        credits_per_usd=Decimal(100),
    )
    with localcontext() as ctx:
        ctx.prec = 120
        assert amount(price, q) == amount(cost, q) * factor


def test_price_from_cost_gpt4o_example() -> None:
    price = price_from_cost(
        GPT4O_COST,
        tier_markup=TIER_MARKUPS[Tier.MEDIUM],
        demand_markup=DEMAND_MARKUPS[Demand.MEDIUM],
        credits_per_usd=Decimal(100),
    )
    # $2.50 per 1M input × 1.5 × 100 credits/USD = 375 credits per 1M = 375,000,000 µcr
    assert price.input_per_mtok == 375_000_000
    assert price.output_per_mtok == 1_500_000_000
    assert price.cache_read_per_mtok == 187_500_000
    charge = round_ucr(amount(price, Quantities(input_tokens=1_000, output_tokens=500)))
    assert charge == 1_125_000


def test_default_markups_are_the_specs() -> None:
    assert {tier.name: str(m) for tier, m in TIER_MARKUPS.items()} == {
        "MICRO": "1.8",
        "SMALL": "1.6",
        "MEDIUM": "1.5",
        "LARGE": "1.4",
        "VISION": "1.6",
        "AUDIO": "1.7",
        "IMAGE": "2.0",
    }
    expected_demand = {
        Demand.HIGH: Decimal("1.10"),
        Demand.MEDIUM: Decimal("1.00"),
        Demand.LOW: Decimal("0.90"),
    }
    assert expected_demand == DEMAND_MARKUPS


def test_rounding_happens_once_not_per_part() -> None:
    # 3 parts of 0.4 µcr each: rounded per part would be 0, rounded once is 1
    r = Rates(input_per_mtok=Decimal(400_000), output_per_mtok=Decimal(400_000))
    q = Quantities(input_tokens=2, output_tokens=1)
    assert amount(r, q) == Decimal("1.2")
    assert round_ucr(amount(r, q)) == 1
    # half-even at the posting: 2.5 → 2, 3.5 → 4
    assert round_ucr(amount(Rates(per_request=Decimal("2.5")), Quantities())) == 2
    assert round_ucr(amount(Rates(per_request=Decimal("3.5")), Quantities())) == 4


# ---------------------------------------------------------------- rates validation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_per_mtok": Decimal(-1)},
        {"output_per_mtok": Decimal("NaN")},
        {"per_request": Decimal("Infinity")},
        {"per_unit": 1.5},
        {"input_per_mtok": 2},
        {"cache_read_per_mtok": Decimal("-0.01")},
        {"cache_read_per_mtok": 0.5},
    ],
)
def test_rates_refuse_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Rates(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [Decimal("Infinity"), Decimal("NaN")])
def test_cache_rate_must_be_finite_like_the_others(bad: Decimal) -> None:
    """Every other rate rejects infinity and NaN with ValueError; the cache-read rate must too."""
    with pytest.raises(ValueError):
        Rates(cache_read_per_mtok=bad)


def test_scaled_keeps_a_missing_cache_rate_missing() -> None:
    scaled = Rates(input_per_mtok=Decimal(3)).scaled(Decimal("0.5"))
    assert scaled == Rates(input_per_mtok=Decimal("1.5"))
    assert scaled.cache_read_per_mtok is None


# ---------------------------------------------------------------- margin


@pytest.mark.parametrize(
    ("charge_ucr", "cost_ucr", "expected"),
    [
        (100, 60, 4_000),
        (1_125_000, 750_000, 3_333),  # 33.33…%
        (3, 1, 6_667),  # 66.67%
        (100, 0, 10_000),
        (100, 100, 0),
        (100, 150, -5_000),  # sold at a loss
        (20_000, 1, 10_000),  # 9,999.5 bps → half-even 10,000
        (20_000, 3, 9_998),  # 9,998.5 bps → half-even 9,998
        (1_000_000, Decimal("0.5"), 10_000),  # 9,999.995 → 10,000
        (1_000_000, Decimal("750000.25"), 2_500),
    ],
)
def test_margin_bps(charge_ucr: int, cost_ucr: Decimal | int, expected: int) -> None:
    result = margin_bps(charge_ucr, cost_ucr)
    assert type(result) is int
    assert result == expected


def test_margin_of_a_free_charge_is_undefined() -> None:
    assert margin_bps(0, 0) is None
    assert margin_bps(0, 1_000) is None


@given(st.integers(1, 10**15), st.integers(0, 10**15))
def test_margin_bps_within_half_a_basis_point(charge_ucr: int, cost_ucr: int) -> None:
    result = margin_bps(charge_ucr, cost_ucr)
    assert result is not None
    exact = Decimal(charge_ucr - cost_ucr) * 10_000 / Decimal(charge_ucr)
    assert abs(Decimal(result) - exact) <= Decimal("0.5")
