"""Router scoring (DESIGN §9; pool/scoring.py): each term measured against the candidate set,
improving a term never lowers a score, ``rank`` is a permutation whose head is one of the
best ``top_k`` and whose tail is sorted by score."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelbank.pool.scoring import TERMS, Candidate, Weights, rank, score

latencies = st.none() | st.floats(min_value=0, max_value=60_000, allow_nan=False)


@st.composite
def candidate_sets(draw: st.DrawFn, min_size: int = 1) -> list[Candidate]:
    size = draw(st.integers(min_value=min_size, max_value=8))
    return [
        Candidate(
            resource_id=i + 1,
            cost_uusd_per_mtok=draw(st.integers(min_value=0, max_value=100_000_000)),
            latency_ms=draw(latencies),
            ttft_ms=draw(latencies),
            success_rate=draw(st.floats(min_value=0, max_value=1)),
            in_flight=draw(st.integers(min_value=0, max_value=10_000)),
            quota_left=draw(st.floats(min_value=0, max_value=1)),
        )
        for i in range(size)
    ]


weights_st = st.builds(
    Weights,
    cost=st.floats(min_value=0, max_value=10),
    latency=st.floats(min_value=0, max_value=10),
    ttft=st.floats(min_value=0, max_value=10),
    success=st.floats(min_value=0.01, max_value=10),
    load=st.floats(min_value=0, max_value=10),
    quota=st.floats(min_value=0, max_value=10),
)


def _improve(c: Candidate, term: str, fraction: float) -> Candidate:
    """``c`` with one term made better by ``fraction`` of its room for improvement."""
    if term == "cost":
        return replace(c, cost_uusd_per_mtok=int(c.cost_uusd_per_mtok * (1 - fraction)))
    if term == "latency":
        base = 1_000.0 if c.latency_ms is None else c.latency_ms
        return replace(c, latency_ms=base * (1 - fraction))
    if term == "ttft":
        base = 1_000.0 if c.ttft_ms is None else c.ttft_ms
        return replace(c, ttft_ms=base * (1 - fraction))
    if term == "success":
        return replace(c, success_rate=c.success_rate + (1 - c.success_rate) * fraction)
    if term == "load":
        return replace(c, in_flight=int(c.in_flight * (1 - fraction)))
    return replace(c, quota_left=c.quota_left + (1 - c.quota_left) * fraction)


@settings(max_examples=400)
@given(
    candidates=candidate_sets(),
    weights=weights_st,
    data=st.data(),
    term=st.sampled_from(TERMS),
    fraction=st.floats(min_value=0, max_value=1),
)
def test_improving_one_term_never_lowers_the_score(
    candidates: list[Candidate], weights: Weights, data: st.DataObject, term: str, fraction: float
) -> None:
    i = data.draw(st.integers(min_value=0, max_value=len(candidates) - 1))
    if term in ("latency", "ttft") and getattr(candidates[i], f"{term}_ms") is None:
        # an unmeasured term is the set's mean; give it a measurement first, then improve it
        candidates[i] = replace(candidates[i], **{f"{term}_ms": 1_000.0})
    before = score(candidates, weights)[i]
    better = [*candidates]
    better[i] = _improve(candidates[i], term, fraction)
    after = score(better, weights)[i]
    assert after >= before - 1e-12


@settings(max_examples=300)
@given(candidates=candidate_sets(), weights=weights_st)
def test_scores_are_within_0_and_1(candidates: list[Candidate], weights: Weights) -> None:
    assert all(0.0 <= s <= 1.0 for s in score(candidates, weights))


@settings(max_examples=300)
@given(
    candidates=candidate_sets(),
    weights=weights_st,
    seed=st.integers(),
    top_k=st.integers(min_value=1, max_value=10),
)
def test_rank_is_a_permutation_led_by_one_of_the_best(
    candidates: list[Candidate], weights: Weights, seed: int, top_k: int
) -> None:
    order = rank(candidates, weights, random.Random(seed), top_k)
    assert sorted(s.resource_id for s in order) == [c.resource_id for c in candidates]
    scores = dict(zip([c.resource_id for c in candidates], score(candidates, weights), strict=True))
    assert all(s.score == scores[s.resource_id] for s in order)
    by_score = sorted(scores.values(), reverse=True)
    # the head is among the best top_k: its score is at least the k-th best score
    assert order[0].score >= by_score[min(top_k, len(by_score)) - 1]
    # the tail is in score order, best first
    tail = [s.score for s in order[1:]]
    assert tail == sorted(tail, reverse=True)


@settings(max_examples=300)
@given(candidates=candidate_sets(), weights=weights_st, seed=st.integers())
def test_top_k_1_always_leads_with_the_best(
    candidates: list[Candidate], weights: Weights, seed: int
) -> None:
    order = rank(candidates, weights, random.Random(seed), 1)
    assert order[0].score == max(score(candidates, weights))
    assert [s.score for s in order] == sorted((s.score for s in order), reverse=True)


def test_each_term_prefers_the_better_resource() -> None:
    base = Candidate(1, cost_uusd_per_mtok=1_000, latency_ms=500, ttft_ms=200, in_flight=4)
    rivals = {
        "cost": replace(base, resource_id=2, cost_uusd_per_mtok=500),
        "latency": replace(base, resource_id=2, latency_ms=100),
        "ttft": replace(base, resource_id=2, ttft_ms=50),
        "success": replace(base, resource_id=2, success_rate=1.0),
        "load": replace(base, resource_id=2, in_flight=0),
        "quota": replace(base, resource_id=2, quota_left=1.0),
    }
    worse = replace(base, success_rate=0.5, quota_left=0.2)
    for term, rival in rivals.items():
        only = Weights(**{t: (1.0 if t == term else 0.0) for t in TERMS})
        mine, theirs = score([worse, rival], only)
        assert theirs > mine, term


def test_an_unmeasured_resource_counts_as_the_mean() -> None:
    known = [Candidate(1, latency_ms=100), Candidate(2, latency_ms=300)]
    newcomer = Candidate(3)
    only_latency = Weights(cost=0, latency=1, ttft=0, success=0, load=0, quota=0)
    scores = score([*known, newcomer], only_latency)
    assert scores[2] == pytest.approx(101 / 201)  # as if 200 ms
    assert score([newcomer], only_latency) == [1.0]


def test_the_pick_spreads_over_the_best_k_by_score() -> None:
    equal = [Candidate(i, latency_ms=100) for i in range(1, 4)]
    firsts = Counter(
        rank(equal, Weights(), random.Random(seed), top_k=2)[0].resource_id for seed in range(2_000)
    )
    assert set(firsts) == {1, 2}  # the third is never first with top_k=2
    assert 800 < firsts[1] < 1_200


def test_weights_reject_unknown_terms_and_all_zero() -> None:
    assert Weights.from_mapping({"latency": 3}).latency == 3.0
    with pytest.raises(ValueError, match="unknown router weight"):
        Weights.from_mapping({"speed": 1})
    with pytest.raises(ValueError, match="at least one"):
        Weights(cost=0, latency=0, ttft=0, success=0, load=0, quota=0)
    with pytest.raises(ValueError, match="finite"):
        Weights(cost=-1)
    with pytest.raises(ValueError, match="top_k"):
        rank([Candidate(1)], Weights(), random.Random(1), top_k=0)
    assert rank([], Weights(), random.Random(1)) == []
