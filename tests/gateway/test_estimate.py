"""The gateway's hold bound and usage reading (DESIGN §9): the hold is never below the
charge of any usage within the bounds it was computed from, the output limit the gateway
chooses is the largest the balance covers, and streamed usage is read exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from modelbank.gateway import estimate, usage
from modelbank.pricing.formulas import Rates
from modelbank.pricing.ratecard import RateCard, rate_card
from modelbank.pricing.service import PriceInfo

rates = st.decimals(min_value=0, max_value=10**8, places=3, allow_nan=False, allow_infinity=False)


@st.composite
def cards(draw: st.DrawFn) -> RateCard:
    price = Rates(
        input_per_mtok=draw(rates),
        output_per_mtok=draw(rates),
        cache_read_per_mtok=draw(st.none() | rates),
        per_request=draw(st.decimals(min_value=0, max_value=10**5, places=2)),
        per_unit=draw(st.decimals(min_value=0, max_value=10**7, places=2)),
    )
    return rate_card(
        PriceInfo(
            id=1,
            model_id=1,
            version=1,
            effective_from=datetime(2026, 1, 1, tzinfo=UTC),
            price_ucr=price,
            cost_uusd=Rates(),
            tier="SMALL",
            tier_markup=Decimal(1),
            demand_markup=Decimal(1),
            credits_per_usd=Decimal(100),
            source="test",
        )
    )


def chat_body(text: str, **extra: object) -> tuple[dict[str, object], int]:
    body: dict[str, object] = {"model": "m", "messages": [{"role": "user", "content": text}]}
    body.update(extra)
    return body, len(json.dumps(body).encode())


@settings(max_examples=300)
@given(
    card=cards(),
    text=st.text(max_size=200),
    max_tokens=st.integers(min_value=1, max_value=100_000),
    n=st.integers(min_value=1, max_value=4),
    data=st.data(),
)
def test_hold_covers_every_usage_within_its_bounds(
    card: RateCard, text: str, max_tokens: int, n: int, data: st.DataObject
) -> None:
    body, size = chat_body(text, max_tokens=max_tokens, n=n)
    bound = estimate.chat_bound(card, body, size, available_ucr=0, output_cap=4096)
    assert bound.max_tokens is None  # the caller's limit stands
    assert bound.output_tokens == max_tokens * n
    assert bound.input_tokens >= len(text.encode())  # a token covers at least one byte
    used_in = data.draw(st.integers(min_value=0, max_value=bound.input_tokens))
    cached = data.draw(st.integers(min_value=0, max_value=used_in))
    used_out = data.draw(st.integers(min_value=0, max_value=bound.output_tokens))
    fresh = used_in - cached
    charge = card.charge_ucr(fresh, cached, used_out, 0)
    assert charge <= bound.hold_ucr


@settings(max_examples=300)
@given(
    card=cards(),
    prompt=st.integers(min_value=0, max_value=50_000),
    available=st.integers(min_value=0, max_value=10**10),
    cap=st.integers(min_value=1, max_value=200_000),
)
def test_affordable_output_is_the_largest_that_fits(
    card: RateCard, prompt: int, available: int, cap: int
) -> None:
    k = estimate.affordable_output(card, prompt, available, cap)
    assert 0 <= k <= cap
    if k > 0:
        assert card.charge_ucr(prompt, 0, k, 0) <= available
    if k < cap and card.charge_ucr(prompt, 0, 0, 0) <= available:
        assert card.charge_ucr(prompt, 0, k + 1, 0) > available


def test_image_parts_add_their_token_bound() -> None:
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    {"type": "image_url", "image_url": {"url": "https://x/z.png"}},
                ],
            }
        ],
    }
    assert estimate.prompt_bound(100, body) == 100 + 2 * estimate.IMAGE_PART_TOKENS


def test_images_hold_is_the_per_image_price_times_n() -> None:
    card = rate_card(
        PriceInfo(
            id=2,
            model_id=2,
            version=1,
            effective_from=datetime(2026, 1, 1, tzinfo=UTC),
            price_ucr=Rates(per_unit=Decimal(10_000_000)),
            cost_uusd=Rates(per_unit=Decimal(40_000)),
            tier="IMAGE",
            tier_markup=Decimal(2),
            demand_markup=Decimal(1),
            credits_per_usd=Decimal(100),
            source="test",
        )
    )
    bound = estimate.images_bound(card, {"model": "m", "prompt": "a cat", "n": 3})
    assert (bound.units, bound.hold_ucr) == (3, 30_000_000)


def sse(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def test_stream_tally_reads_text_usage_and_done_across_split_chunks() -> None:
    stream = (
        sse({"choices": [{"index": 0, "delta": {"content": "Héllo"}}]})
        + sse({"choices": [{"index": 0, "delta": {"content": " world"}}]})
        + sse(
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": 2,
                    "prompt_tokens_details": {"cached_tokens": 5},
                },
            }
        )
        + b"data: [DONE]\n\n"
    )
    tally = usage.StreamTally()
    relayed: list[tuple[bytes, bool]] = []
    for i in range(0, len(stream), 7):  # chunks that cut events anywhere
        relayed += tally.feed(stream[i : i + 7])
    assert tally.rest() == b""
    assert b"".join(event for event, _ in relayed) == stream
    assert [usage_only for _, usage_only in relayed] == [False, False, True, False]
    assert tally.done
    assert tally.text_bytes == len("Héllo world".encode())
    assert tally.usage == usage.Usage(input_tokens=12, output_tokens=2, cached_input_tokens=5)


def test_estimate_of_a_cut_stream() -> None:
    assert usage.estimate(401, 0) == usage.Usage(estimated=True)
    assert usage.estimate(401, 9) == usage.Usage(input_tokens=101, output_tokens=3, estimated=True)


def test_reported_usage_is_sanitised() -> None:
    assert usage.from_report(None) is None
    assert usage.from_report(
        {"prompt_tokens": 3, "completion_tokens": -4, "prompt_tokens_details": {"cached_tokens": 9}}
    ) == usage.Usage(input_tokens=3, output_tokens=0, cached_input_tokens=3)
    assert usage.of_images({"data": [{"b64_json": "x"}, {"b64_json": "y"}]}).units == 2
