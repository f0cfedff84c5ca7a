"""Router scoring: which resource should serve a request (DESIGN §9). Pure: no I/O.

Each candidate gets six terms, each a *goodness* in [0, 1] measured against the candidate
set (1 = as good as the best candidate)::

    cost     g = (min_cost + 1)    / (cost + 1)         cost: µUSD per 1M tokens (in + out)
    latency  g = (min_latency + 1) / (latency + 1)      EWMA latency, ms
    ttft     g = (min_ttft + 1)    / (ttft + 1)         EWMA time to first token, ms
    success  g = success_rate / max_success_rate         EWMA, [0, 1]
    load     g = (min_in_flight + 1) / (in_flight + 1)  requests in flight, every process
    quota    g = quota_left / max_quota_left             pool quota left, fraction [0, 1]

    score = Σ weight_t · g_t / Σ weight_t                ∈ [0, 1]

Ratios to the best rather than min-max scaling: a 100 ms and a 101 ms resource score 1 and
0.99, not 1 and 0. The ``+ 1`` keeps zero costs and idle resources finite. A term the
candidate has no measurement for yet (a new resource: ``None`` latency or TTFT) is given the
mean of the measured candidates, so a newcomer is neither shunned nor flooded. Each ``g`` is
non-increasing in the candidate's own cost, latency, TTFT and load and non-decreasing in its
success rate and quota left, so improving one term never lowers the candidate's score
(property-tested).

:func:`rank` returns the failover order: a random pick among the best ``top_k`` first
(weighted by score, so load spreads over near-equal resources instead of piling on the
single best; uniform when all scores are 0), then every other candidate by score, best first.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

TERMS = ("cost", "latency", "ttft", "success", "load", "quota")
"""The score's terms, in the order of :class:`Weights`' fields."""


@dataclass(frozen=True, slots=True)
class Weights:
    """Non-negative weight of each term (settings ``MODELBANK_ROUTER_WEIGHTS``, a JSON object
    such as ``{"latency": 2, "cost": 0}``; absent terms keep these defaults)."""

    cost: float = 1.0
    latency: float = 1.0
    ttft: float = 0.5
    success: float = 2.0
    load: float = 1.0
    quota: float = 0.5

    def __post_init__(self) -> None:
        values = [getattr(self, f.name) for f in fields(self)]
        if any(not (v >= 0.0) or v == float("inf") for v in values):
            raise ValueError(f"router weights must be finite and ≥ 0, got {values}")
        if sum(values) <= 0:
            raise ValueError("at least one router weight must be > 0")

    @classmethod
    def from_mapping(cls, values: Mapping[str, float]) -> Weights:
        """Weights from ``{"term": weight}``; unknown terms raise ``ValueError``."""
        unknown = set(values) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown router weight terms {sorted(unknown)}; known: {TERMS}")
        return cls(**{k: float(v) for k, v in values.items()})

    def total(self) -> float:
        return self.cost + self.latency + self.ttft + self.success + self.load + self.quota


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the router knows of one resource that could serve the request."""

    resource_id: int
    cost_uusd_per_mtok: int = 0
    """Provider cost of the model through this resource, input + output per 1M tokens."""
    latency_ms: float | None = None
    ttft_ms: float | None = None
    success_rate: float = 1.0
    in_flight: int = 0
    quota_left: float = 1.0
    """Fraction of the pool quota not yet consumed, [0, 1]."""


@dataclass(frozen=True, slots=True)
class Scored:
    """A candidate and its score in [0, 1]."""

    candidate: Candidate
    score: float

    @property
    def resource_id(self) -> int:
        return self.candidate.resource_id


def _mean_or(values: Sequence[float | None], default: float) -> float:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else default


def _lower_is_better(values: Sequence[float]) -> list[float]:
    best = min(values)
    return [(best + 1.0) / (max(v, 0.0) + 1.0) for v in values]


def _higher_is_better(values: Sequence[float]) -> list[float]:
    best = max(values)
    return [1.0 if best <= 0.0 else max(v, 0.0) / best for v in values]


def score(candidates: Sequence[Candidate], weights: Weights) -> list[float]:
    """The score of each candidate, in order, each in [0, 1] (module docstring)."""
    if not candidates:
        return []
    latency = _mean_or([c.latency_ms for c in candidates], 0.0)
    ttft = _mean_or([c.ttft_ms for c in candidates], 0.0)
    terms = (
        (weights.cost, _lower_is_better([float(c.cost_uusd_per_mtok) for c in candidates])),
        (
            weights.latency,
            _lower_is_better(
                [latency if c.latency_ms is None else c.latency_ms for c in candidates]
            ),
        ),
        (
            weights.ttft,
            _lower_is_better([ttft if c.ttft_ms is None else c.ttft_ms for c in candidates]),
        ),
        (weights.success, _higher_is_better([c.success_rate for c in candidates])),
        (weights.load, _lower_is_better([float(c.in_flight) for c in candidates])),
        (weights.quota, _higher_is_better([c.quota_left for c in candidates])),
    )
    total = weights.total()
    return [
        min(1.0, sum(weight * goods[i] for weight, goods in terms) / total)
        for i in range(len(candidates))
    ]


def rank(
    candidates: Sequence[Candidate], weights: Weights, rng: random.Random, top_k: int = 2
) -> list[Scored]:
    """The failover order: one of the best ``top_k`` (≥ 1) picked at random with
    probability proportional to its score, then the rest by score, best first (ties by
    resource id). A permutation of ``candidates``."""
    if top_k < 1:
        raise ValueError("top_k must be ≥ 1")
    scored = sorted(
        (Scored(c, s) for c, s in zip(candidates, score(candidates, weights), strict=True)),
        key=lambda s: (-s.score, s.resource_id),
    )
    best = scored[:top_k]
    if len(best) <= 1:
        return scored
    if sum(s.score for s in best) > 0:
        first = rng.choices(range(len(best)), weights=[s.score for s in best])[0]
    else:
        first = rng.randrange(len(best))
    return [scored[first], *scored[:first], *scored[first + 1 :]]


__all__ = ["TERMS", "Candidate", "Scored", "Weights", "rank", "score"]
