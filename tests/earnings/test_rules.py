"""Pure earnings math (DESIGN §7): multipliers, the exact formula and the split."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelbank.earnings.rules import (
    DEFAULT_SHARE_BPS,
    EarningsRule,
    earnings_exact,
    popularity_multiplier,
    split,
    type_multiplier,
)
from modelbank.money import round_half_even

DEFAULT = EarningsRule()

# ---------------------------------------------------------------- popularity


@pytest.mark.parametrize(
    ("prior_uses", "expected"),
    [
        (0, "1"),
        (99, "1"),
        (100, "1.2"),
        (999, "1.2"),
        (1_000, "1.5"),
        (4_999, "1.5"),
        (5_000, "2.0"),
        (9_999, "2.0"),
        (10_000, "2.5"),
        (10**12, "2.5"),
    ],
)
def test_popularity_multiplier_boundaries(prior_uses: int, expected: str) -> None:
    assert popularity_multiplier(DEFAULT, prior_uses) == Decimal(expected)


def test_popularity_tiers_in_any_order() -> None:
    shuffled = EarningsRule(
        popularity_tiers=(
            (100, Decimal("1.2")),
            (10_000, Decimal("2.5")),
            (1_000, Decimal("1.5")),
            (5_000, Decimal("2.0")),
        )
    )
    for uses in (0, 99, 100, 999, 1_000, 5_000, 9_999, 10_000, 50_000):
        assert popularity_multiplier(shuffled, uses) == popularity_multiplier(DEFAULT, uses)


def test_empty_tiers_mean_multiplier_one() -> None:
    rule = EarningsRule(popularity_tiers=())
    for uses in (0, 100, 10_000, 10**9):
        assert popularity_multiplier(rule, uses) == 1


def test_custom_tiers_including_zero() -> None:
    rule = EarningsRule(popularity_tiers=((0, Decimal("0.5")), (10, Decimal(3))))
    assert popularity_multiplier(rule, 0) == Decimal("0.5")
    assert popularity_multiplier(rule, 9) == Decimal("0.5")
    assert popularity_multiplier(rule, 10) == 3


# ---------------------------------------------------------------- usage type


@pytest.mark.parametrize(
    ("usage_type", "expected"),
    [
        ("chat", "0.8"),
        ("image_generation", "1.0"),
        ("other", "0.6"),
        ("embedding", "0.6"),
        ("video", "0.6"),
    ],
)
def test_type_multipliers(usage_type: str, expected: str) -> None:
    assert type_multiplier(DEFAULT, usage_type) == Decimal(expected)


def test_custom_type_multipliers() -> None:
    rule = EarningsRule(type_multipliers={"video": Decimal(2)}, other_multiplier=Decimal("0.1"))
    assert type_multiplier(rule, "video") == 2
    assert type_multiplier(rule, "chat") == Decimal("0.1")


def test_rules_do_not_share_their_multiplier_tables() -> None:
    first, second = EarningsRule(), EarningsRule()
    assert first.type_multipliers is not second.type_multipliers


# ---------------------------------------------------------------- the formula


def test_default_rule_is_a_fifth_of_the_charge() -> None:
    assert DEFAULT_SHARE_BPS == 2_000
    # 20% × chat 0.8 × popularity 1.0 of 1,125,000 µcr (the charging scenario)
    assert earnings_exact(
        DEFAULT, tokens=1_500, charge_ucr=1_125_000, prior_uses=0, usage_type="chat"
    ) == Decimal(180_000)


def test_earnings_exact_by_hand() -> None:
    rule = EarningsRule(per_use_ucr=1_000, per_token_ucr=Decimal("0.5"), share_bps=2_000)
    # (1,000 + 300 × 0.5 + 2,000 × 1,000,001 / 10,000) × 1.2 × 0.8
    # = (1,000 + 150 + 200,000.2) × 0.96 = 201,150.2 × 0.96 = 193,104.192
    result = earnings_exact(
        rule, tokens=300, charge_ucr=1_000_001, prior_uses=150, usage_type="chat"
    )
    assert result == Decimal("193104.192")
    # image generation at 10,000 prior uses: 201,150.2 × 2.5 × 1.0
    result = earnings_exact(
        rule, tokens=300, charge_ucr=1_000_001, prior_uses=10_000, usage_type="image_generation"
    )
    assert result == Decimal("502875.5")


def test_flat_per_token_rule() -> None:
    # DESIGN §7: 0.01 credit per token = 10,000 µcr per token, nothing else
    rule = EarningsRule(per_token_ucr=Decimal(10_000), share_bps=0)
    assert earnings_exact(
        rule, tokens=10, charge_ucr=999, prior_uses=0, usage_type="other"
    ) == Decimal(60_000)  # × other 0.6
    assert earnings_exact(
        rule, tokens=10, charge_ucr=999, prior_uses=1_000, usage_type="chat"
    ) == Decimal(120_000)  # × 1.5 × 0.8


def test_zero_rule_earns_nothing() -> None:
    rule = EarningsRule(share_bps=0)
    assert (
        earnings_exact(rule, tokens=10**6, charge_ucr=10**9, prior_uses=0, usage_type="chat") == 0
    )


@given(
    per_use=st.integers(0, 10**7),
    per_token=st.decimals(0, 10_000, places=4, allow_nan=False, allow_infinity=False),
    share=st.integers(0, 10_000),
    tokens=st.integers(0, 10**8),
    charge=st.integers(0, 10**12),
    prior=st.integers(0, 20_000),
    usage_type=st.sampled_from(["chat", "image_generation", "other", "audio"]),
)
def test_earnings_exact_matches_the_formula(
    per_use: int,
    per_token: Decimal,
    share: int,
    tokens: int,
    charge: int,
    prior: int,
    usage_type: str,
) -> None:
    rule = EarningsRule(per_use_ucr=per_use, per_token_ucr=per_token, share_bps=share)
    popularity = next(
        (
            Decimal(m)
            for n, m in ((10_000, "2.5"), (5_000, "2.0"), (1_000, "1.5"), (100, "1.2"))
            if prior >= n
        ),
        Decimal(1),
    )
    kind = {"chat": Decimal("0.8"), "image_generation": Decimal(1)}.get(usage_type, Decimal("0.6"))
    # exact: the share part has at most 4 decimals, the product at most 4 + 1 + 1
    expected = (per_use + tokens * per_token + Decimal(share * charge) / 10_000) * popularity * kind
    assert (
        earnings_exact(
            rule, tokens=tokens, charge_ucr=charge, prior_uses=prior, usage_type=usage_type
        )
        == expected
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"per_use_ucr": -1},
        {"per_token_ucr": Decimal("-0.1")},
        {"share_bps": -1},
        {"share_bps": 10_001},
        {"popularity_tiers": ((-1, Decimal(1)),)},
        {"popularity_tiers": ((10, Decimal(-1)),)},
        {"type_multipliers": {"chat": Decimal(-1)}},
        {"other_multiplier": Decimal("-0.6")},
    ],
)
def test_rule_refuses_negative_terms(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        EarningsRule(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- split


def test_payer_gets_nothing() -> None:
    result = split(Decimal(1_000), [(1, 5_000), (2, 5_000)], payer_id=1)
    assert result == [(2, 500)]


def test_creator_alone_gets_everything_rounded_once() -> None:
    assert split(Decimal("180000.4"), [(7, 10_000)], payer_id=1) == [(7, 180_000)]
    assert split(Decimal("180000.5"), [(7, 10_000)], payer_id=1) == [(7, 180_000)]
    assert split(Decimal("180001.5"), [(7, 10_000)], payer_id=1) == [(7, 180_002)]


def test_stakes_take_their_floor_of_the_rounded_pool() -> None:
    # 5 µcr in halves: 2.5 each → 2 and 2 (1 µcr stays with the platform)
    assert split(Decimal(5), [(1, 5_000), (2, 5_000)], payer_id=9) == [(1, 2), (2, 2)]
    # 7 µcr in halves: 3.5 each → 3 and 3, never 4 + 4 = 8 > 7 (1 µcr to the platform)
    assert split(Decimal(7), [(1, 5_000), (2, 5_000)], payer_id=9) == [(1, 3), (2, 3)]
    # the pool is rounded once first: 6.5 → 6 (half-even), halves of 6 → 3 and 3
    assert split(Decimal("6.5"), [(1, 5_000), (2, 5_000)], payer_id=9) == [(1, 3), (2, 3)]
    # thirds of 100: 33.33 each → 33
    thirds = [(1, 3_333), (2, 3_333), (3, 3_334)]
    assert split(Decimal(100), thirds, payer_id=9) == [(1, 33), (2, 33), (3, 33)]


def test_zero_amounts_and_zero_shares_are_dropped() -> None:
    assert split(Decimal("0.4"), [(1, 10_000)], payer_id=9) == []
    assert split(Decimal(1_000), [(1, 0), (2, 10_000)], payer_id=9) == [(2, 1_000)]
    assert split(Decimal(0), [(1, 10_000)], payer_id=9) == []
    assert split(Decimal(1_000), [], payer_id=9) == []


def test_unassigned_share_stays_with_the_platform() -> None:
    assert split(Decimal(1_000), [(1, 2_500)], payer_id=9) == [(1, 250)]


@st.composite
def shares(draw: st.DrawFn) -> list[tuple[int, int]]:
    users = draw(st.lists(st.integers(1, 50), unique=True, max_size=8))
    left = 10_000
    result = []
    for user in users:
        bps = draw(st.integers(0, left))
        left -= bps
        result.append((user, bps))
    return result


@given(
    total=st.decimals(0, 10**12, places=6, allow_nan=False, allow_infinity=False),
    beneficiaries=shares(),
    payer=st.integers(1, 60),
)
def test_split_properties(total: Decimal, beneficiaries: list[tuple[int, int]], payer: int) -> None:
    result = split(total, beneficiaries, payer_id=payer)
    paid = dict(result)
    assert payer not in paid
    assert len(paid) == len(result)  # one line per beneficiary
    assert all(isinstance(a, int) and a > 0 for a in paid.values())
    pool = round_half_even(total)  # rounded once, then split
    for user, bps in beneficiaries:
        expected = pool * bps // 10_000 if user != payer else 0
        assert paid.get(user, 0) == expected
    # The parts, the payer's own stake and the unassigned share never exceed the pool; what
    # is left besides the unassigned share is rounding only: less than 1 µcr per stake.
    n = len(beneficiaries)
    assigned = sum(bps for _, bps in beneficiaries)
    own = sum(pool * bps // 10_000 for user, bps in beneficiaries if user == payer)
    unassigned = pool * (10_000 - assigned) // 10_000
    remainder = pool - sum(paid.values()) - own - unassigned
    assert 0 <= remainder <= n
