"""Pure earnings math (DESIGN §7).

``earnings = (per_use + tokens × per_token + share_bps × charge / 10000)
× popularity_multiplier × type_multiplier``, exact in µcr; each beneficiary's part is
``earnings × share_bps / 10000`` rounded half-even once, when posted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from modelbank.money import mul, round_ucr

BPS = 10_000
"""Basis points in a whole."""

DEFAULT_POPULARITY_TIERS: tuple[tuple[int, Decimal], ...] = (
    (10_000, Decimal("2.5")),
    (5_000, Decimal("2.0")),
    (1_000, Decimal("1.5")),
    (100, Decimal("1.2")),
)
"""DESIGN §7: (minimum prior uses, multiplier); below the lowest, 1.0."""

DEFAULT_TYPE_MULTIPLIERS: Mapping[str, Decimal] = {
    "image_generation": Decimal("1.0"),
    "chat": Decimal("0.8"),
}
"""DESIGN §7 usage-type multipliers; any other type uses :data:`DEFAULT_OTHER_MULTIPLIER`."""

DEFAULT_OTHER_MULTIPLIER = Decimal("0.6")
"""DESIGN §7: the multiplier of usage types not listed (``other``)."""

DEFAULT_SHARE_BPS = 2_000
"""Default rule: creators earn 20% of the charge. DESIGN §7's example of a flat 0.01 credit
per token is *not* the default: at 10,000 µcr per token it pays creators more than the
charge itself on every model cheaper than $100 per 1M tokens (nearly all of them)."""


@dataclass(frozen=True, slots=True)
class EarningsRule:
    """One version of a model's earnings rule.

    ``per_use_ucr`` µcr per use; ``per_token_ucr`` µcr per token (input + output);
    ``share_bps`` basis points of the charge; ``popularity_tiers`` (min prior uses,
    multiplier), any order; ``type_multipliers`` by usage type, ``other_multiplier`` for the
    rest. An empty tiers tuple means multiplier 1.
    """

    per_use_ucr: int = 0
    per_token_ucr: Decimal = Decimal(0)
    share_bps: int = DEFAULT_SHARE_BPS
    popularity_tiers: tuple[tuple[int, Decimal], ...] = DEFAULT_POPULARITY_TIERS
    type_multipliers: Mapping[str, Decimal] = field(
        default_factory=lambda: dict(DEFAULT_TYPE_MULTIPLIERS)
    )
    other_multiplier: Decimal = DEFAULT_OTHER_MULTIPLIER
    version: int = 0

    def __post_init__(self) -> None:
        if self.per_use_ucr < 0 or self.per_token_ucr < 0:
            raise ValueError("per_use_ucr and per_token_ucr must be ≥ 0")
        if not 0 <= self.share_bps <= BPS:
            raise ValueError("share_bps must be between 0 and 10000")
        for min_uses, multiplier in self.popularity_tiers:
            if min_uses < 0 or multiplier < 0:
                raise ValueError("popularity tiers need min_uses ≥ 0 and multiplier ≥ 0")
        if any(m < 0 for m in self.type_multipliers.values()) or self.other_multiplier < 0:
            raise ValueError("type multipliers must be ≥ 0")


def popularity_multiplier(rule: EarningsRule, prior_uses: int) -> Decimal:
    """The multiplier of the highest tier whose minimum ≤ ``prior_uses`` (uses of the model
    before this event); 1 when none applies."""
    best: tuple[int, Decimal] | None = None
    for min_uses, multiplier in rule.popularity_tiers:
        if prior_uses >= min_uses and (best is None or min_uses > best[0]):
            best = (min_uses, multiplier)
    return Decimal(1) if best is None else best[1]


def type_multiplier(rule: EarningsRule, usage_type: str) -> Decimal:
    """The rule's multiplier for ``usage_type`` (``other_multiplier`` when unlisted)."""
    return rule.type_multipliers.get(usage_type, rule.other_multiplier)


def earnings_exact(
    rule: EarningsRule, *, tokens: int, charge_ucr: int, prior_uses: int, usage_type: str
) -> Decimal:
    """DESIGN §7 earnings of one event in µcr, exact (unrounded). ``tokens`` = input + output."""
    base = (
        Decimal(rule.per_use_ucr)
        + mul(tokens, rule.per_token_ucr)
        + mul(rule.share_bps, charge_ucr) / BPS
    )
    return mul(base, popularity_multiplier(rule, prior_uses), type_multiplier(rule, usage_type))


def split(
    total_ucr: Decimal, beneficiaries: Sequence[tuple[int, int]], *, payer_id: int
) -> list[tuple[int, int]]:
    """Split exact earnings among ``beneficiaries`` ((user id, stake bps), summing to
    ≤ 10,000); return (user id, µcr) with amounts > 0.

    The pool is rounded half-even once (:func:`~modelbank.money.round_ucr`); each stake gets
    ``⌊pool × bps / 10000⌋``, so the parts never add up to more than the pool. The payer's own
    stake (no self-earnings), any unassigned share and the rounding remainder stay with the
    platform: nothing is lost or created (DESIGN §7).
    """
    pool = round_ucr(total_ucr)
    result: list[tuple[int, int]] = []
    for user_id, share_bps in beneficiaries:
        if user_id == payer_id or share_bps <= 0:
            continue
        amount = pool * share_bps // BPS
        if amount > 0:
            result.append((user_id, amount))
    return result
