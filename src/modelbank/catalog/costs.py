"""Provider cost: what one model costs the platform, in exact µUSD rates (DESIGN §2, §4).

A :class:`ProviderCost` is a plain value built by an importer
(:mod:`~modelbank.catalog.genai`, :mod:`~modelbank.catalog.pricesheet`); pricing multiplies it by
markup, demand and the exchange rate. Units are in the field names: ``*_uusd_per_mtok`` is
µUSD per 1,000,000 tokens, ``per_request_uusd`` µUSD per request, ``per_unit_uusd`` µUSD per
image (image modes) or per second (video, audio). 1 USD/token = 10¹² µUSD/Mtok.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from modelbank.errors import InvalidInput
from modelbank.money import mul


class Mode(StrEnum):
    """What a model does, which decides the unit it is metered in (DESIGN §4)."""

    CHAT = "chat"
    """Text generation (chat, completion, responses). Metered in input/output tokens."""
    EMBEDDING = "embedding"
    """Vector embeddings. Metered in input tokens; output tokens are normally free."""
    IMAGE_GENERATION = "image_generation"
    """Text-to-image. Metered per image (``per_unit_uusd``) and/or in image tokens."""
    IMAGE_EDIT = "image_edit"
    """Image-to-image editing. Metered like :attr:`IMAGE_GENERATION`."""
    VIDEO = "video"
    """Video generation. Metered per second of video (``per_unit_uusd``)."""
    AUDIO = "audio"
    """Speech-to-text and text-to-speech. Metered per second of audio and/or audio tokens."""


IMAGE_MODES: frozenset[Mode] = frozenset({Mode.IMAGE_GENERATION, Mode.IMAGE_EDIT})
"""Modes whose ``per_unit_uusd`` is a price per image."""


@dataclass(frozen=True, slots=True)
class ProviderCost:
    """The provider's price list for one model, as exact µUSD rates.

    Invariants (kept by the importers): every rate is a finite ``Decimal`` ≥ 0; ``None`` means
    the source has no such price, ``Decimal(0)`` means it says the price is zero.
    """

    model_ref: str
    """The model's name as the source keys it, e.g. ``"gpt-4o"``, ``"azure/gpt-4o"``."""
    provider: str
    """Provider id as the source names it, e.g. ``"openai"``, ``"bedrock"``."""
    mode: Mode
    input_uusd_per_mtok: Decimal
    """µUSD per 1M input tokens (USD/token × 10¹²)."""
    output_uusd_per_mtok: Decimal
    """µUSD per 1M output tokens."""
    cache_read_uusd_per_mtok: Decimal | None
    """µUSD per 1M cached input tokens read; ``None`` when the source has no cache-read rate."""
    per_request_uusd: Decimal
    """µUSD per request, on top of token costs (0 when none)."""
    per_unit_uusd: Decimal | None
    """µUSD per image (image modes) or per second (video, audio), when priced so."""
    max_input_tokens: int | None
    """Context window in tokens, when the source gives it."""
    source: str
    """Where the numbers come from: ``"genai-prices 0.2.3"`` or ``"litellm:<file name>"``."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A source entry an importer did not turn into a :class:`ProviderCost`, and why."""

    key: str
    reason: str


@dataclass(frozen=True)
class CostImport:
    """The result of importing one source: costs by key, and what was skipped.

    ``costs`` is keyed by the source's own key (LiteLLM: the sheet key; genai-prices:
    ``"<provider id>/<model id>"``). Every source entry lands in exactly one of the two.
    """

    costs: dict[str, ProviderCost]
    skipped: list[Skipped]
    source: str


def scaled_rate(rate: Decimal, factor: int) -> Decimal:
    """Exact ``rate × factor`` (a power of ten converting USD to µUSD units), tidied.

    No rounding: ``scaled_rate(Decimal("2.5E-6"), 10**12) == Decimal("2500000")``. Trailing
    zeros are dropped (``2500000``, not ``2500000.0000000``) so stored and printed rates read
    cleanly; the value is unchanged.
    """
    product = mul(rate, factor)
    if product == product.to_integral_value():
        return product.quantize(Decimal(1))
    return product.normalize()


class PriceSheetError(InvalidInput):
    """A price sheet that cannot be read at all: missing, unreadable, not JSON, not an object.

    One bad *entry* is never this error; it is listed in ``CostImport.skipped``.
    """

    code = "price_sheet_invalid"
