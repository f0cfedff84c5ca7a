"""Provider costs from the embedded ``genai-prices`` snapshot (Pydantic team; DESIGN §4).

``genai-prices`` ships ``Decimal`` prices in **USD per 1M tokens** (``input_mtok``,
``output_mtok``, ``cache_read_mtok``…), so µUSD per 1M tokens = USD × 10⁶, exactly.
Other units it uses: ``requests_kcount`` (USD per 1,000 requests → µUSD per request = × 10³)
and ``audio_hours`` (USD per hour of audio → µUSD per second = × 10⁶ / 3600; the only
conversion here that is not a power of ten: a 60-digit quotient, far beyond µUSD precision).

Which price of a model is used:

* A ``TieredPrices`` (a cheaper/dearer rate above e.g. 200k prompt tokens) contributes its
  ``base`` rate; the tiers are not modelled (the price applies to prompts below the first tier).
* A list of ``ConditionalPrice`` is resolved as the library does, last to first, at ``as_of``
  (default: now): the last entry with no constraint or a started ``StartDateConstraint`` is the
  base. ``TimeOfDateConstraint`` entries (peak/off-peak windows, e.g. DeepSeek) that follow it
  cannot be followed by a price that is fixed per version, so the **dearest** of the base and
  those windows (by input + output rate) is taken: the platform never bills below provider cost.

Mode: the snapshot has no mode field and is mostly text models, so a model is CHAT unless its
name says ``embed`` (EMBEDDING) or ``image``/``imagen``/``dall-e`` (IMAGE_GENERATION; their output
rate is ``output_image_mtok`` when present), or it has no token price but a price per audio hour
(AUDIO, ``per_unit_uusd`` per second). A model priced only in units not read here (characters,
document pages, text messages) is skipped; a model with no price at all is kept, free.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Final

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import (
    ConditionalPrice,
    ModelInfo,
    ModelPrice,
    Provider,
    StartDateConstraint,
    TieredPrices,
    TimeOfDateConstraint,
)

from modelbank.catalog.costs import CostImport, Mode, ProviderCost, Skipped, scaled_rate

GENAI_SOURCE: Final = f"genai-prices {genai_prices.__version__}"
"""``ProviderCost.source`` for costs from this module, e.g. ``"genai-prices 0.2.3"``."""

UUSD_PER_USD: Final = 10**6
REQUESTS_PER_KCOUNT: Final = 1000
SECONDS_PER_HOUR: Final = 3600

_EMBEDDING_NAME: Final = re.compile(r"embed")
_IMAGE_NAME: Final = re.compile(r"(?<![a-z])(?:image|imagen|dall-e)(?![a-z])")
_AUDIO_HOUR_KEYS: Final = ("audio_hours", "input_audio_hours", "output_audio_hours")
_READ_KEYS: Final = frozenset(
    {"input_mtok", "output_mtok", "cache_read_mtok", "output_image_mtok", "requests_kcount"}
    | set(_AUDIO_HOUR_KEYS)
)
# 60 significant digits, as in modelbank.money: the per-hour → per-second quotient keeps far
# more precision than the µUSD posting it feeds (rounded once, later, half-even).
_DIVISION: Final = Context(prec=60, rounding=ROUND_HALF_EVEN)


class _SkipModel(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def genai_cost(
    model_ref: str, provider: str | None = None, *, as_of: datetime | None = None
) -> ProviderCost | None:
    """The cost of one model, looked up the way ``genai_prices.calc_price`` does.

    ``model_ref`` is any name the snapshot matches (``"gpt-4o"``, ``"gpt-4o-2024-08-06"``,
    ``"claude-3-5-sonnet-latest"``); ``provider`` an optional provider id (``"openai"``,
    ``"azure"``) to pin the provider, else the snapshot picks it from the name (or, failing
    that, the first provider listing the model: :func:`_find_model`). ``as_of``
    (aware or naive-UTC datetime, default now) selects dated prices (module docstring).

    Returns a :class:`ProviderCost` in µUSD per 1M tokens / per request / per unit, with
    ``model_ref`` = the snapshot's model id and ``source`` = :data:`GENAI_SOURCE`; ``None``
    when the snapshot knows no such model or provider, or prices the model only in units not
    read here. Raises nothing for unknown names.
    """
    found = _find_model(model_ref, provider)
    if found is None:
        return None
    try:
        return _model_cost(*found, _as_of(as_of))
    except _SkipModel:
        return None


def _find_model(model_ref: str, provider: str | None) -> tuple[Provider, ModelInfo] | None:
    """The snapshot's own lookup; without ``provider``, fall back to the first provider (in
    snapshot order, alphabetical by id) that lists the model, for names such as
    ``text-embedding-3-small`` or ``sonar`` from which the snapshot cannot infer a provider."""
    snapshot = data_snapshot.get_snapshot()
    try:
        return snapshot.find_provider_model(model_ref, None, provider, None)
    except LookupError:
        if provider is not None:
            return None
    for candidate in snapshot.providers:
        # No all_providers: a provider's fallback chain must not claim another's model here.
        if (model := candidate.find_model(model_ref)) is not None:
            return candidate, model
    return None


def load_genai_costs(*, as_of: datetime | None = None) -> CostImport:
    """Every model of every provider in the snapshot, as one :class:`CostImport`.

    Keys are ``f"{provider.id}/{model.id}"`` (e.g. ``"openai/gpt-4o"``); rates in µUSD as in
    :func:`genai_cost`; models that cannot be priced are in ``skipped`` with a reason. Every
    (provider, model) pair of the snapshot lands in exactly one of the two. Raises nothing.
    """
    when = _as_of(as_of)
    costs: dict[str, ProviderCost] = {}
    skipped: list[Skipped] = []
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            key = f"{provider.id}/{model.id}"
            try:
                costs[key] = _model_cost(provider, model, when)
            except _SkipModel as skip:
                skipped.append(Skipped(key=key, reason=skip.reason))
    return CostImport(costs=costs, skipped=skipped, source=GENAI_SOURCE)


def _as_of(as_of: datetime | None) -> datetime:
    return datetime.now(tz=UTC) if as_of is None else as_of


def _model_cost(provider: Provider, model: ModelInfo, as_of: datetime) -> ProviderCost:
    price = _current_price(model.prices, as_of)
    name = model.id.lower()
    input_rate = _usd(price, "input_mtok")
    output_rate = _usd(price, "output_mtok")
    audio_hour = next(
        (rate for key in _AUDIO_HOUR_KEYS if (rate := _usd(price, key)) is not None), None
    )
    per_unit: Decimal | None = None
    if _EMBEDDING_NAME.search(name):
        mode = Mode.EMBEDDING
    elif _IMAGE_NAME.search(name):
        mode = Mode.IMAGE_GENERATION
        output_rate = _usd(price, "output_image_mtok") or output_rate
    elif input_rate is None and output_rate is None and audio_hour is not None:
        mode = Mode.AUDIO
        per_second = _DIVISION.divide(audio_hour, Decimal(SECONDS_PER_HOUR))
        per_unit = scaled_rate(per_second, UUSD_PER_USD)
    else:
        mode = Mode.CHAT
    cache_read = _usd(price, "cache_read_mtok")
    per_kcount = _usd(price, "requests_kcount")
    if input_rate is None and output_rate is None and per_unit is None and per_kcount is None:
        _refuse_unread_prices(price)
    return ProviderCost(
        model_ref=model.id,
        provider=provider.id,
        mode=mode,
        input_uusd_per_mtok=scaled_rate(input_rate or Decimal(0), UUSD_PER_USD),
        output_uusd_per_mtok=scaled_rate(output_rate or Decimal(0), UUSD_PER_USD),
        cache_read_uusd_per_mtok=None
        if cache_read is None
        else scaled_rate(cache_read, UUSD_PER_USD),
        per_request_uusd=scaled_rate(per_kcount or Decimal(0), UUSD_PER_USD // REQUESTS_PER_KCOUNT),
        per_unit_uusd=per_unit,
        max_input_tokens=model.context_window,
        source=GENAI_SOURCE,
    )


def _current_price(prices: ModelPrice | Sequence[ConditionalPrice], as_of: datetime) -> ModelPrice:
    """The price in force at ``as_of``, the dearest time-of-day window included (docstring)."""
    if isinstance(prices, ModelPrice):
        return prices
    if not prices:
        return ModelPrice()
    windows: list[ModelPrice] = []
    base = prices[0].prices
    for conditional in reversed(prices):
        constraint = conditional.constraint
        if isinstance(constraint, TimeOfDateConstraint):
            windows.append(conditional.prices)
        elif constraint is None or (
            isinstance(constraint, StartDateConstraint) and constraint.active(as_of)
        ):
            base = conditional.prices
            break
    return max([base, *windows], key=_token_rate_sum)


def _token_rate_sum(price: ModelPrice) -> Decimal:
    return (_usd(price, "input_mtok") or Decimal(0)) + (_usd(price, "output_mtok") or Decimal(0))


def _usd(price: ModelPrice, key: str) -> Decimal | None:
    """Price ``key`` in USD per its unit: a ``Decimal``, a tier's ``base``, or ``None``."""
    value = price.__dict__.get(key)
    if isinstance(value, TieredPrices):
        value = value.base
    if value is None:
        return None
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise _SkipModel(f"{key} is not a non-negative number: {value!r}")
    return value


def _refuse_unread_prices(price: ModelPrice) -> None:
    """Skip a model priced only in units not read here (it would otherwise look free)."""
    unread = sorted(
        key for key, value in price.__dict__.items() if value is not None and key not in _READ_KEYS
    )
    if unread:
        raise _SkipModel(f"priced only in units this importer does not read: {', '.join(unread)}")
