"""Markup tiers and their detection from a model's name and mode (DESIGN §4).

The tier picks the markup multiplier (MICRO 1.8 … IMAGE 2.0, see ``pricing``). It is a guess
from public signals; operators override it per model. :func:`detect_tier` applies these rules
in order, on the lower-cased name (provider prefixes such as ``groq/`` are harmless); the first
that matches wins:

====  =============================================================  ===========================
step  signal                                                         tier
====  =============================================================  ===========================
1     mode image_generation, image_edit or video                     IMAGE
2     mode audio                                                     AUDIO
3     parameter count in the name: ``8b``, ``1.5b``, ``70b``,        ≤ 3B MICRO, ≤ 15B SMALL,
      ``8x7b`` (= 56B), ``405b``, ``e4b``, ``350m``; the first one     ≤ 80B MEDIUM, else LARGE
      wins (``qwen3-235b-a22b`` is 235B: the active ``a22b`` is not
      a size)
4     ``vision`` in the name (``gpt-4-vision-preview``)              VISION
5     ``nano``, ``flash-lite``, ``flash-8b``, ``tiny``               MICRO
6     ``mini`` (not gemini/minimax), ``haiku``, ``flash``,           SMALL
      ``small``, ``instant``, ``gpt-3.5``
7     ``gpt-4o``, ``gpt-4.1``, ``sonnet``, ``gemini-pro`` /           MEDIUM
      ``gemini-2.5-pro``, ``medium``
8     ``gpt-4`` (``-turbo``, ``-32k``, ``4.5``), ``gpt-5``, ``opus``,   LARGE
      ``o1``, ``o3``, ``o4``, ``large``, ``ultra``, ``max``
9     ``supports_vision`` and nothing above                          VISION
10    anything else                                                  MEDIUM
====  =============================================================  ===========================

Order matters: the ``-mini``/``-nano`` steps come before the family steps, so ``gpt-4o-mini``,
``o3-mini`` and ``gpt-5-nano`` never reach the ``gpt-4o``/``o3``/``gpt-5`` rules.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Final

from modelbank.catalog.costs import IMAGE_MODES, Mode
from modelbank.errors import InvalidInput


class Tier(StrEnum):
    """Markup class of a model; each has one default multiplier (DESIGN §4)."""

    MICRO = "micro"
    """≤ 3B parameters or a ``nano``/``flash-lite`` class model: cheapest, highest markup."""
    SMALL = "small"
    """≤ 15B parameters or a ``mini``/``haiku``/``flash`` class model."""
    MEDIUM = "medium"
    """≤ 80B parameters, ``gpt-4o``/``sonnet``/``gemini-pro`` class, or unknown."""
    LARGE = "large"
    """> 80B parameters or a frontier model (``gpt-4``, ``gpt-5``, ``opus``, ``o1``/``o3``)."""
    VISION = "vision"
    """A vision model with no other size signal."""
    AUDIO = "audio"
    """Speech-to-text or text-to-speech (mode audio)."""
    IMAGE = "image"
    """Image generation/editing and video (image and video modes)."""


# Size thresholds, in billions of parameters (inclusive upper bounds).
MICRO_MAX_BILLIONS: Final = Decimal(3)
SMALL_MAX_BILLIONS: Final = Decimal(15)
MEDIUM_MAX_BILLIONS: Final = Decimal(80)

# "8b", "1.5b", "8x7b", "e4b" (effective), "350m"; not "a22b" (active params) nor "v3p1".
_PARAMETER_COUNT: Final = re.compile(
    r"(?<![a-z0-9.])e?(?:(?P<experts>\d+)x)?(?P<count>\d+(?:\.\d+)?)(?P<unit>b|m)(?![a-z0-9])"
)
_MILLIONS_PER_BILLION: Final = 1000

# Steps 4-8 of the table: (pattern, tier), first match wins.
_NAME_RULES: Final[tuple[tuple[re.Pattern[str], Tier], ...]] = (
    (re.compile(r"vision"), Tier.VISION),
    (re.compile(r"nano|flash-lite|flash-8b|(?<![a-z])tiny(?![a-z])"), Tier.MICRO),
    (
        re.compile(
            r"(?<![a-z])mini(?![a-z])|haiku|flash|(?<![a-z])small(?![a-z])|instant"
            r"|gpt-3\.5|gpt-35"
        ),
        Tier.SMALL,
    ),
    (
        re.compile(r"gpt-4o|gpt-4\.1|sonnet|gemini(?:-[\d.]+)?-pro|(?<![a-z])medium(?![a-z])"),
        Tier.MEDIUM,
    ),
    (
        re.compile(
            r"gpt-4|gpt-5|opus|(?<![a-z0-9])o[134](?![0-9a-z])"
            r"|(?<![a-z])(?:large|ultra|max)(?![a-z])"
        ),
        Tier.LARGE,
    ),
)


def detect_tier(name: str, mode: Mode | str, *, supports_vision: bool = False) -> Tier:
    """Guess a model's markup tier from its name and mode (rules: the module table).

    ``name`` is any model name or key (``"groq/llama-3.1-8b-instant"``,
    ``"claude-3-5-haiku-20241022"``); ``mode`` a :class:`Mode` or its value (``"chat"``);
    ``supports_vision`` the source's vision flag, used only when nothing else decides.
    Returns a :class:`Tier`; never fails for an unknown name (default MEDIUM).

    Raises :class:`~modelbank.errors.InvalidInput` when ``mode`` is not a :class:`Mode` value.
    """
    try:
        model_mode = Mode(mode)
    except ValueError as exc:
        raise InvalidInput(f"unknown model mode: {mode!r}", mode=str(mode)) from exc
    if model_mode in IMAGE_MODES or model_mode is Mode.VIDEO:
        return Tier.IMAGE
    if model_mode is Mode.AUDIO:
        return Tier.AUDIO
    lowered = name.lower()
    billions = parameter_billions(lowered)
    if billions is not None:
        return _tier_for_size(billions)
    for pattern, tier in _NAME_RULES:
        if pattern.search(lowered):
            return tier
    return Tier.VISION if supports_vision else Tier.MEDIUM


def parameter_billions(name: str) -> Decimal | None:
    """The first parameter count written in ``name``, in billions; ``None`` when there is none.

    ``"llama-3.1-8b"`` → 8, ``"mixtral-8x7b"`` → 56, ``"qwen2.5-1.5b"`` → 1.5,
    ``"embed-350m"`` → 0.35. Case-insensitive.
    """
    match = _PARAMETER_COUNT.search(name.lower())
    if match is None:
        return None
    count = Decimal(match["count"]) * int(match["experts"] or 1)
    return count if match["unit"] == "b" else count / _MILLIONS_PER_BILLION


def _tier_for_size(billions: Decimal) -> Tier:
    if billions <= MICRO_MAX_BILLIONS:
        return Tier.MICRO
    if billions <= SMALL_MAX_BILLIONS:
        return Tier.SMALL
    if billions <= MEDIUM_MAX_BILLIONS:
        return Tier.MEDIUM
    return Tier.LARGE
