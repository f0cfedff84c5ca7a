"""The charge path's integer arithmetic equals the Decimal formulas it replaces (DESIGN §2)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Context, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from modelbank.earnings.rules import (
    EarningsRule,
    earnings_exact,
    popularity_multiplier,
    split,
    type_multiplier,
)
from modelbank.earnings.service import Terms
from modelbank.metering.service import (
    UsageEvent,
    _canonical_body,
    _Card,
    _Payer,
    request_hash,
)
from modelbank.money import div_half_even, round_half_even, round_ucr, round_uusd, uusd_to_ucr
from modelbank.pricing.formulas import Quantities, Rates, amount

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


@given(
    numerator=st.integers(min_value=-(10**30), max_value=10**30),
    denominator=st.integers(min_value=1, max_value=10**12),
)
def test_div_half_even_is_half_even(numerator: int, denominator: int) -> None:
    exact = Context(prec=80).divide(Decimal(numerator), Decimal(denominator))
    assert div_half_even(numerator, denominator) == round_half_even(exact)


@given(
    n=st.integers(min_value=0, max_value=10**6).map(lambda k: 2 * k + 1),
    scale=st.integers(min_value=1, max_value=10**6),
)
def test_div_half_even_ties_go_to_even(n: int, scale: int) -> None:
    # n/2 is a tie: the result is the even neighbour.
    result = div_half_even(n * scale, 2 * scale)
    assert result % 2 == 0 and abs(result * 2 - n) == 1


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
    card = _Card.of(rates)
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
    per_use=st.integers(min_value=0, max_value=10**6),
    per_token=st.decimals(min_value=0, max_value=1000, places=3),
    share_bps=st.integers(min_value=0, max_value=10_000),
    token_count=tokens,
    charge_ucr=st.integers(min_value=0, max_value=10**12),
    prior_uses=st.integers(min_value=0, max_value=20_000),
    usage_type=st.sampled_from(["chat", "image_generation", "other"]),
    shares=st.sampled_from([((7, 10_000),), ((7, 3_333), (8, 6_667)), ((1, 5_000), (7, 5_000))]),
)
def test_payer_matches_earnings_rules(
    per_use: int,
    per_token: Decimal,
    share_bps: int,
    token_count: int,
    charge_ucr: int,
    prior_uses: int,
    usage_type: str,
    shares: tuple[tuple[int, int], ...],
) -> None:
    rule = EarningsRule(per_use_ucr=per_use, per_token_ucr=per_token, share_bps=share_bps)
    payer = _Payer(Terms(model_id=1, rule=rule, beneficiaries=shares, use_count=0))
    got, factors = payer.pay(
        tokens=token_count,
        charge_ucr=charge_ucr,
        prior_uses=prior_uses,
        usage_type=usage_type,
        payer_id=1,
    )
    exact = earnings_exact(
        rule,
        tokens=token_count,
        charge_ucr=charge_ucr,
        prior_uses=prior_uses,
        usage_type=usage_type,
    )
    assert list(got) == split(exact, shares, payer_id=1)
    assert factors == (
        str(popularity_multiplier(rule, prior_uses)),
        str(type_multiplier(rule, usage_type)),
    )


@settings(max_examples=300)
@given(
    user_id=st.integers(min_value=-(10**12), max_value=10**12),
    model=st.integers(min_value=0, max_value=10**9) | st.text(max_size=40),
    usage_type=st.text(min_size=1, max_size=32),
    counts=st.tuples(*(st.integers(min_value=0, max_value=10**9) for _ in range(4))),
    occurred_at=st.none() | st.datetimes(timezones=st.just(UTC)),
    metadata=st.none()
    | st.just({})
    | st.dictionaries(st.text(max_size=10), st.text(max_size=120) | st.integers(), max_size=3),
)
def test_request_hash_fast_path_matches_the_canonical_json(
    user_id: int,
    model: int | str,
    usage_type: str,
    counts: tuple[int, int, int, int],
    occurred_at: datetime | None,
    metadata: dict[str, object] | None,
) -> None:
    event = UsageEvent(
        idempotency_key="k",
        user_id=user_id,
        model=model,
        usage_type=usage_type,
        input_tokens=counts[0],
        output_tokens=counts[1],
        cached_input_tokens=counts[2],
        units=counts[3],
        occurred_at=occurred_at,
        metadata=metadata,
    )
    expected = hashlib.sha256(_canonical_body(event).encode()).hexdigest()
    assert request_hash(event) == expected
