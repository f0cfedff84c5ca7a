"""Deterministic user and model assignment for trace requests that name neither (DESIGN §15).

Real traces carry no user or model column, so a replay draws them from Zipf-like popularity:
a few users and models carry most of the traffic. The assignment is a pure function of the
seed, the exponent, the two ordered lists and the request's index; see :class:`Assigner`.
"""

from __future__ import annotations

import bisect
import math
import random
from array import array
from collections.abc import Sequence
from decimal import Decimal
from itertools import accumulate

from modelbank.errors import InvalidInput
from modelbank.traces.readers import TraceRequest

DEFAULT_ZIPF_S = 1.1
"""Zipf exponent: s ≈ 1 is the classic popularity law; 1.1 makes rank 1 a bit more dominant."""


def _zipf_cdf(count: int, exponent: float) -> list[float]:
    """Cumulative Zipf probabilities over ranks 1..count (weight of rank k is 1 / k**s).

    Not money: float is fine. The last entry is pinned to 1.0 so a draw in [0, 1) always
    lands on a rank.
    """
    weights = [1.0 / rank**exponent for rank in range(1, count + 1)]
    total = math.fsum(weights)
    cdf = [partial / total for partial in accumulate(weights)]
    cdf[-1] = 1.0
    return cdf


def _checked_names(names: Sequence[str], kind: str) -> tuple[str, ...]:
    ordered = tuple(names)
    if not ordered:
        raise InvalidInput(f"need at least one {kind} to assign requests to", kind=kind)
    if len(set(ordered)) != len(ordered):
        raise InvalidInput(f"duplicate {kind} names in the assignment list", kind=kind)
    return ordered


class Assigner:
    """Assigns a user and a model to each trace request, deterministically from a seed.

    How: ``users`` and ``models`` are ranked in the order given (position 0 is rank 1, the most
    active user / most popular model). Rank k has Zipf weight 1 / k**s (s = ``zipf_s``,
    default 1.1), so its probability is that weight over the sum of all weights. One
    ``random.Random(seed)`` generator yields two numbers per request in index order: for
    request i (0-based, in trace order) the (2i+1)-th ``random()`` value picks the user and the
    (2i+2)-th picks the model; each picks the first rank whose cumulative probability exceeds
    it. Both draws are made for every request, and a request that already names its user or
    model keeps that name, so request i's assignment depends only on the seed, s, the two
    lists and i: never on call order or on other requests' content. The same seed and trace
    therefore always give the same assignment.

    Draws are cached (8 bytes per index), so indices may be asked for in any order and again.

    Raises :class:`~modelbank.errors.InvalidInput` for an empty or duplicated list, or for
    an exponent that is negative or not finite.
    """

    __slots__ = (
        "_model_cdf",
        "_model_ranks",
        "_models",
        "_rng",
        "_user_cdf",
        "_user_ranks",
        "_users",
    )

    def __init__(
        self,
        users: Sequence[str],
        models: Sequence[str],
        *,
        seed: int,
        zipf_s: Decimal | float = DEFAULT_ZIPF_S,
    ) -> None:
        self._users = _checked_names(users, "user")
        self._models = _checked_names(models, "model")
        exponent = float(zipf_s)
        if not math.isfinite(exponent) or exponent < 0:
            raise InvalidInput(f"zipf_s must be a finite number ≥ 0, got {zipf_s}", zipf_s=zipf_s)
        self._user_cdf = _zipf_cdf(len(self._users), exponent)
        self._model_cdf = _zipf_cdf(len(self._models), exponent)
        self._rng = random.Random(seed)
        self._user_ranks = array("I")  # 0-based rank drawn for each index so far
        self._model_ranks = array("I")

    def assign(self, index: int, request: TraceRequest) -> tuple[str, str]:
        """``(user, model)`` for the request at ``index`` (0-based position in the trace).

        ``request.user`` / ``request.model`` are kept when set. Raises
        :class:`~modelbank.errors.InvalidInput` for a negative index.
        """
        if index < 0:
            raise InvalidInput(f"request index must be ≥ 0, got {index}", index=index)
        draw = self._rng.random
        while len(self._user_ranks) <= index:
            self._user_ranks.append(bisect.bisect_right(self._user_cdf, draw()))
            self._model_ranks.append(bisect.bisect_right(self._model_cdf, draw()))
        user = self._users[self._user_ranks[index]] if request.user is None else request.user
        model = self._models[self._model_ranks[index]] if request.model is None else request.model
        return user, model
