"""What the creators of a model earn from one charge (DESIGN §7, §13 "creator earnings of a
charge"): the code every charge runs.

A :class:`Payer` holds one model's terms for a batch (rule in force, beneficiaries, lifetime
use count) in integers. :meth:`Payer.pay` gives, for one charge, the parts paid to each
beneficiary, the multipliers used and, when nothing was paid, the reason
(:class:`NoEarnings`). The ``Decimal`` formulas of :mod:`modelbank.earnings.rules` are the
oracle: ``tests/earnings/test_payer.py`` proves ``pay`` equals
``split(earnings_exact(…))`` over random rules and charges.

The pool of an event is ``(per_use + tokens × per_token + share_bps × charge / 10000)
× popularity × type``, rounded half-even once; each beneficiary other than the payer gets
``⌊pool × stake_bps / 10000⌋``. The parts never exceed the pool; what is left (rounding,
the payer's own stake: no self-earnings) stays with the platform.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from modelbank.earnings.rules import BPS, type_multiplier
from modelbank.earnings.service import Terms
from modelbank.money import div_half_even

_ONE = Decimal(1)


class NoEarnings(StrEnum):
    """Why a charge paid a model's creators nothing (stored as the usage row's
    ``earnings_note``)."""

    NO_CREATOR = "no_creator"
    """A platform model: no beneficiaries."""
    MONETISATION_OFF_PLATFORM = "monetisation_off_platform"
    """The platform-wide monetisation switch is off."""
    MONETISATION_OFF = "monetisation_off"
    """The model's own monetisation switch is off."""
    SELF_USAGE = "self_usage"
    """The payer is the model's only paid beneficiary (no self-earnings)."""
    ZERO = "zero"
    """The rule gave less than 1 µcr to every beneficiary."""
    PREPAID = "prepaid"
    """The use was paid for outside the wallet: served from a marketplace allocation
    (DESIGN §10), provider quota the user bought from a seller, who is paid through the
    escrow. Nothing was charged, so nothing is shared with the model's creators."""


@dataclass(frozen=True, slots=True)
class Earned:
    """The earnings of one charge: ``parts`` ((beneficiary user id, µcr > 0), in stake
    order), the multipliers used as decimal strings (None when none were computed), and
    ``note`` when nothing was paid."""

    parts: tuple[tuple[int, int], ...] = ()
    popularity: str | None = None
    usage_type: str | None = None
    note: NoEarnings | None = None

    @property
    def total_ucr(self) -> int:
        """µcr paid to all beneficiaries."""
        return sum(amount for _, amount in self.parts)


class Payer:
    """One model's earnings terms for a batch, in integers (see the module doc).

    ``monetised``: both the platform's and the model's switch are on; otherwise every
    charge pays nothing and says why (``platform_monetised`` False → the platform note).
    """

    __slots__ = (
        "_multipliers",
        "_off",
        "_rule",
        "_tier_mins",
        "_tier_multipliers",
        "_token_den",
        "_token_num",
        "beneficiaries",
        "rule_version",
        "shares",
        "use_count",
    )

    def __init__(
        self, term: Terms, *, platform_monetised: bool = True, model_monetised: bool = True
    ) -> None:
        self._rule = term.rule
        self.rule_version = term.rule.version
        self.beneficiaries = term.beneficiaries
        self.shares = dict(term.beneficiaries)
        self.use_count = term.use_count
        """The model's lifetime uses before this batch."""
        self._token_num, self._token_den = term.rule.per_token_ucr.as_integer_ratio()
        self._multipliers: dict[tuple[Decimal, Decimal], tuple[int, int, str, str]] = {}
        # popularity_multiplier of the rule as a bisect over its tiers: the same answer
        # (the highest tier whose minimum ≤ prior uses; of equal minimums the first listed),
        # without scanning every tier for every charge.
        first_of: dict[int, Decimal] = {}
        for min_uses, multiplier in term.rule.popularity_tiers:
            first_of.setdefault(min_uses, multiplier)
        self._tier_mins = sorted(first_of)
        self._tier_multipliers = [first_of[m] for m in self._tier_mins]
        self._off: NoEarnings | None = None
        if not self.beneficiaries:
            self._off = NoEarnings.NO_CREATOR
        elif not platform_monetised:
            self._off = NoEarnings.MONETISATION_OFF_PLATFORM
        elif not model_monetised:
            self._off = NoEarnings.MONETISATION_OFF

    def _popularity(self, prior_uses: int) -> Decimal:
        index = bisect_right(self._tier_mins, prior_uses)
        return _ONE if index == 0 else self._tier_multipliers[index - 1]

    def pay(
        self,
        *,
        tokens: int,
        charge_ucr: int,
        prior_uses: int,
        usage_type: str,
        payer_id: int,
        prepaid: bool = False,
    ) -> Earned:
        """The earnings of one charge of ``charge_ucr`` µcr for ``tokens`` (input + output)
        by user ``payer_id``, the model having been used ``prior_uses`` times before it.
        ``prepaid``: the use was paid outside the wallet (:attr:`NoEarnings.PREPAID`): it
        earns nothing, whatever the rule."""
        if prepaid:
            return Earned(note=NoEarnings.PREPAID)
        if self._off is not None:
            return Earned(note=self._off)
        rule = self._rule
        factors = (self._popularity(prior_uses), type_multiplier(rule, usage_type))
        multiplier = self._multipliers.get(factors)
        if multiplier is None:
            pop_num, pop_den = factors[0].as_integer_ratio()
            type_num, type_den = factors[1].as_integer_ratio()
            multiplier = self._multipliers[factors] = (
                pop_num * type_num,
                pop_den * type_den,
                str(factors[0]),
                str(factors[1]),
            )
        token_den = self._token_den
        numerator = (
            (rule.per_use_ucr * token_den + tokens * self._token_num) * BPS
            + rule.share_bps * charge_ucr * token_den
        ) * multiplier[0]
        pool = div_half_even(numerator, token_den * BPS * multiplier[1])
        paid: list[tuple[int, int]] = []
        for user_id, share_bps in self.beneficiaries:
            if user_id == payer_id or share_bps <= 0:
                continue
            part = pool * share_bps // BPS
            if part > 0:
                paid.append((user_id, part))
        note: NoEarnings | None = None
        if not paid:
            own = any(user == payer_id for user, _ in self.beneficiaries)
            note = NoEarnings.SELF_USAGE if own else NoEarnings.ZERO
        return Earned(tuple(paid), multiplier[2], multiplier[3], note)


def reversal_ucr(
    earned_ucr: int, charge_ucr: int, refunded_before: int, refunded_after: int
) -> int:
    """µcr a beneficiary gives back when a charge of ``charge_ucr`` they earned
    ``earned_ucr`` from is refunded from ``refunded_before`` to ``refunded_after`` µcr
    (DESIGN §5, §7: "reverses it, earnings included").

    The same fraction of the earning as of the charge, rounded half-even on the running
    total (``earned × refunded / charge``), so partial refunds that add up to the whole
    charge give back exactly what was earned, never a µcr more or less."""
    if charge_ucr <= 0 or earned_ucr <= 0:
        return 0
    return div_half_even(earned_ucr * refunded_after, charge_ucr) - div_half_even(
        earned_ucr * refunded_before, charge_ucr
    )
