"""The payer (the charge path's creator earnings) equals the Decimal rules of
``earnings.rules`` over random rules, charges and stakes (DESIGN §7, §13)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from modelbank.earnings.payer import NoEarnings, Payer, reversal_ucr
from modelbank.earnings.rules import (
    EarningsRule,
    earnings_exact,
    popularity_multiplier,
    split,
    type_multiplier,
)
from modelbank.earnings.service import Terms

tokens = st.integers(min_value=0, max_value=2_000_000)


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
    tiers=st.none()
    | st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=20_000),
            st.decimals(min_value=0, max_value=5, places=2),
        ),
        max_size=6,
    ),
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
    tiers: list[tuple[int, Decimal]] | None,
) -> None:
    # Random popularity tiers (any order, repeated minimums) or the DESIGN §7 defaults.
    rule = EarningsRule(
        per_use_ucr=per_use,
        per_token_ucr=per_token,
        share_bps=share_bps,
        **({} if tiers is None else {"popularity_tiers": tuple(tiers)}),  # type: ignore[arg-type]
    )
    payer = Payer(Terms(model_id=1, rule=rule, beneficiaries=shares, use_count=0))
    earned = payer.pay(
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
    assert list(earned.parts) == split(exact, shares, payer_id=1)
    assert (earned.popularity, earned.usage_type) == (
        str(popularity_multiplier(rule, prior_uses)),
        str(type_multiplier(rule, usage_type)),
    )


def test_payer_says_why_nothing_was_earned() -> None:
    rule = EarningsRule(share_bps=2_000)
    own = Payer(Terms(model_id=1, rule=rule, beneficiaries=((7, 10_000),), use_count=0))
    assert (
        own.pay(tokens=10, charge_ucr=1_000, prior_uses=0, usage_type="chat", payer_id=7).note
        is NoEarnings.SELF_USAGE
    )
    none = Payer(Terms(model_id=1, rule=rule, beneficiaries=(), use_count=0))
    assert (
        none.pay(tokens=10, charge_ucr=1_000, prior_uses=0, usage_type="chat", payer_id=7).note
        is NoEarnings.NO_CREATOR
    )
    off = Payer(
        Terms(model_id=1, rule=rule, beneficiaries=((7, 10_000),), use_count=0),
        platform_monetised=False,
    )
    assert (
        off.pay(tokens=10, charge_ucr=1_000, prior_uses=0, usage_type="chat", payer_id=8).note
        is NoEarnings.MONETISATION_OFF_PLATFORM
    )
    model_off = Payer(
        Terms(model_id=1, rule=rule, beneficiaries=((7, 10_000),), use_count=0),
        model_monetised=False,
    )
    assert (
        model_off.pay(tokens=10, charge_ucr=1_000, prior_uses=0, usage_type="chat", payer_id=8).note
        is NoEarnings.MONETISATION_OFF
    )
    tiny = Payer(Terms(model_id=1, rule=rule, beneficiaries=((7, 10_000),), use_count=0))
    earned = tiny.pay(tokens=0, charge_ucr=2, prior_uses=0, usage_type="chat", payer_id=8)
    assert (earned.parts, earned.note) == ((), NoEarnings.ZERO)
    paid = tiny.pay(tokens=0, charge_ucr=1_000_000, prior_uses=0, usage_type="chat", payer_id=8)
    # 20 % of 1 credit × chat 0.8 = 160,000 µcr, all to the creator.
    assert (paid.parts, paid.note, paid.total_ucr) == (((7, 160_000),), None, 160_000)


@settings(max_examples=300)
@given(
    earned=st.integers(min_value=0, max_value=10**12),
    charge=st.integers(min_value=1, max_value=10**12),
    cuts=st.lists(st.integers(min_value=1, max_value=10**12), max_size=8),
)
def test_partial_reversals_add_up_to_exactly_what_was_earned(
    earned: int, charge: int, cuts: list[int]
) -> None:
    # Refund the charge in arbitrary steps, then the rest: every step gives back ≥ 0, the
    # running total never exceeds the exact share, and a full refund reverses it all.
    points = sorted({min(c, charge) for c in cuts} | {charge})
    before, total = 0, 0
    for after in points:
        back = reversal_ucr(earned, charge, before, after)
        assert back >= 0
        total += back
        assert abs(total * charge - earned * after) * 2 <= charge  # within ½ µcr of exact
        before = after
    assert total == earned
