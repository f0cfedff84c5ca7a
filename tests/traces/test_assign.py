"""Deterministic Zipf assignment of users and models to trace requests."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from modelbank.errors import InvalidInput
from modelbank.traces.assign import Assigner
from modelbank.traces.readers import TraceRequest

USERS = [f"user-{rank}" for rank in range(1, 51)]
MODELS = ["gpt-4o", "claude-sonnet", "llama-3-70b"]
BARE = TraceRequest(datetime(2024, 1, 1, tzinfo=UTC), input_tokens=100, output_tokens=10)


def _assignments(
    seed: int, count: int = 1_000, zipf_s: Decimal | float = 1.1
) -> list[tuple[str, str]]:
    assigner = Assigner(USERS, MODELS, seed=seed, zipf_s=zipf_s)
    return [assigner.assign(index, BARE) for index in range(count)]


def test_same_seed_same_assignment() -> None:
    assert _assignments(42) == _assignments(42)


def test_different_seed_different_assignment() -> None:
    assert _assignments(42) != _assignments(43)


def test_decimal_and_float_exponent_agree() -> None:
    assert _assignments(5, 200, Decimal("1.1")) == _assignments(5, 200, 1.1)


def test_index_order_not_call_order_decides() -> None:
    in_order = _assignments(9, 50)
    assigner = Assigner(USERS, MODELS, seed=9)
    backwards = [assigner.assign(index, BARE) for index in reversed(range(50))]
    assert backwards[::-1] == in_order
    assert assigner.assign(7, BARE) == in_order[7]  # asking again gives the same answer


def test_documented_rule_two_draws_per_request() -> None:
    """The docstring's recipe, re-implemented: draws 2i and 2i+1 of Random(seed).random()."""
    weights = [1 / rank**1.1 for rank in range(1, len(MODELS) + 1)]
    rng = random.Random(11)
    expected = []
    for _ in range(200):
        rng.random()  # the user draw
        u, cumulative = rng.random(), 0.0
        for rank, weight in enumerate(weights):
            cumulative += weight / sum(weights)
            if u < cumulative or rank == len(weights) - 1:
                expected.append(MODELS[rank])
                break
    assert [model for _, model in _assignments(11, 200)] == expected


def test_keeps_user_and_model_named_by_the_trace() -> None:
    assigner = Assigner(USERS, MODELS, seed=1)
    reference = _assignments(1, 3)
    named_user = TraceRequest(BARE.occurred_at, 1, 1, user="zoe")
    named_both = TraceRequest(BARE.occurred_at, 1, 1, user="zoe", model="custom")
    assert assigner.assign(0, BARE) == reference[0]
    assert assigner.assign(1, named_user) == ("zoe", reference[1][1])
    assert assigner.assign(2, named_both) == ("zoe", "custom")


def test_rank_one_gets_the_largest_share() -> None:
    pairs = _assignments(3, 10_000)
    user_counts = Counter(user for user, _ in pairs)
    model_counts = Counter(model for _, model in pairs)
    assert user_counts.most_common(1)[0][0] == USERS[0]
    assert model_counts.most_common(1)[0][0] == MODELS[0]
    assert user_counts[USERS[0]] > user_counts[USERS[1]] > user_counts[USERS[9]]


def test_model_shares_follow_zipf_pmf() -> None:
    draws = 10_000
    counts = Counter(model for _, model in _assignments(2024, draws))
    weights = [1 / rank**1.1 for rank in range(1, 4)]
    pmf = [weight / sum(weights) for weight in weights]  # ≈ 0.567, 0.264, 0.169
    for model, probability in zip(MODELS, pmf, strict=True):
        # 4 standard deviations of a binomial share at n = 10,000 is at most 0.02
        assert counts[model] / draws == pytest.approx(probability, abs=0.02)


def test_exponent_zero_is_uniform() -> None:
    counts = Counter(model for _, model in _assignments(8, 9_000, 0))
    assert all(abs(counts[model] / 9_000 - 1 / 3) < 0.02 for model in MODELS)


@pytest.mark.parametrize(
    ("users", "models", "zipf_s", "fragment"),
    [
        ([], MODELS, 1.1, "at least one user"),
        (USERS, [], 1.1, "at least one model"),
        (["a", "a"], MODELS, 1.1, "duplicate user"),
        (USERS, MODELS, -0.5, "zipf_s"),
        (USERS, MODELS, float("nan"), "zipf_s"),
        (USERS, MODELS, Decimal("Infinity"), "zipf_s"),
    ],
)
def test_rejects_bad_configuration(
    users: list[str], models: list[str], zipf_s: Decimal | float, fragment: str
) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        Assigner(users, models, seed=0, zipf_s=zipf_s)


def test_rejects_negative_index() -> None:
    with pytest.raises(InvalidInput, match="index"):
        Assigner(USERS, MODELS, seed=0).assign(-1, BARE)
