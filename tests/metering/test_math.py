"""The charge path's integer division and request hash equal the exact forms they replace
(DESIGN §2). The rate card and the payer have their own property tests in
``tests/pricing/test_ratecard.py`` and ``tests/earnings/test_payer.py``."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Context, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from modelbank.metering.events import UsageEvent, _canonical_body, request_hash
from modelbank.money import div_half_even, round_half_even


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
