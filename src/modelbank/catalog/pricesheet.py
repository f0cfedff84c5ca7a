"""Import provider costs from a LiteLLM ``model_prices_and_context_window.json`` sheet.

The sheet is one JSON object: key = model name as LiteLLM routes it (``gpt-4o``,
``azure/gpt-4o``, ``1024-x-1024/dall-e-2``), value = an object of fields (the copy shipped
in :mod:`modelbank.data` and its README describe them). Rules, in the order they apply to
each entry:

1. ``sample_spec`` is documentation: skipped, reason ``"documentation entry"``.
2. A value that is not an object: skipped (``"not an object: list"``).
3. Mode. LiteLLM ``chat``/``completion``/``responses`` → CHAT; ``embedding``;
   ``image_generation``; ``image_edit``; ``video_generation`` → VIDEO;
   ``audio_transcription``/``audio_speech`` → AUDIO. Every other mode is skipped with
   ``"unsupported mode: <mode>"``: rerank, moderation, ocr, search, evaluation, decisions,
   extraction, guardrail, vector_store (billed per query/page/unit, not per token) and
   **realtime** (billed mostly in audio tokens at 10-20× the text rate; the metering
   pipeline records only input/output tokens, so importing it as CHAT would bill audio at
   the text rate). No ``mode``: IMAGE_GENERATION when the entry has a per-image or per-pixel
   cost, EMBEDDING when it has token-cost fields and ``embed`` in its key, CHAT when it has
   token-cost fields, else skipped.
4. Rates (fields absent or ``null`` → 0, or ``None`` where the type allows it):
   per-token fields × 10¹² → µUSD per 1M tokens; per-request, per-image, per-second
   fields × 10⁶ → µUSD. The token rate read depends on the mode: image modes read
   ``output_cost_per_image_token`` before ``output_cost_per_token`` (output tokens of an
   image model are image tokens), AUDIO reads ``*_cost_per_audio_token`` first.
   ``per_unit_uusd``: image modes take ``output_cost_per_image``, else
   ``input_cost_per_image`` (LiteLLM's per-image price for ``gpt-image-1*`` keys), else a
   per-pixel price × width × height, with the size parsed from the key
   (``hd/1024-x-1792/dall-e-3`` → 1024×1792; **assumed 1024×1024** when the key has none,
   the most common size and LiteLLM's default); VIDEO takes ``output_cost_per_second``
   (or ``output_cost_per_video_per_second``); AUDIO takes the per-second price of the
   direction it bills (input for transcription, output for speech).
5. A field this importer reads that is not a number (``"abc"``, ``true``, a dict), or is
   negative, skips the entry with a reason naming the field. Fields it does not read are
   ignored whatever their type (``search_context_cost_per_query`` is a dict).
6. An entry whose read rates are all zero but that has a positive price in a field this
   importer does not read (``input_cost_per_character`` for TTS, ``ocr_cost_per_page``) is
   skipped: importing it would make a paid model free. Entries with every cost zero are kept
   (free, or unknown); the caller decides what to do with them.

Every value is parsed exactly: the JSON is decoded with ``parse_float=Decimal`` so
``2.5e-06`` is ``Decimal("2.5E-6")`` (the same number as ``Decimal(str(2.5e-06))``).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Final

from modelbank.catalog.costs import (
    IMAGE_MODES,
    CostImport,
    Mode,
    PriceSheetError,
    ProviderCost,
    Skipped,
    scaled_rate,
)
from modelbank.money import MoneyError, mul, parse_decimal

DOCUMENTATION_KEY: Final = "sample_spec"
"""The sheet's self-description entry; not a model."""

LITELLM_MODES: Final[Mapping[str, Mode]] = {
    "chat": Mode.CHAT,
    "completion": Mode.CHAT,
    "responses": Mode.CHAT,
    "embedding": Mode.EMBEDDING,
    "image_generation": Mode.IMAGE_GENERATION,
    "image_edit": Mode.IMAGE_EDIT,
    "video_generation": Mode.VIDEO,
    "audio_transcription": Mode.AUDIO,
    "audio_speech": Mode.AUDIO,
}
"""LiteLLM ``mode`` → :class:`Mode`. Any other mode is skipped (see the module docstring)."""

DEFAULT_IMAGE_SIZE: Final = (1024, 1024)
"""Width × height assumed for a per-pixel price when the key names no size."""

UUSD_PER_MTOK_PER_USD_PER_TOKEN: Final = 10**12
"""USD per token → µUSD per 1M tokens: × 10⁶ (µUSD/USD) × 10⁶ (tokens/Mtok)."""
UUSD_PER_USD: Final = 10**6

_IMAGE_SIZE_IN_KEY: Final = re.compile(r"(?<![0-9])(\d{2,5})-x-(\d{2,5})(?![0-9])")
_TOKEN_FIELDS: Final = ("input_cost_per_token", "output_cost_per_token")
_IMAGE_FIELDS: Final = (
    "output_cost_per_image",
    "input_cost_per_image",
    "output_cost_per_pixel",
    "input_cost_per_pixel",
)
_PIXEL_FIELDS: Final = ("output_cost_per_pixel", "input_cost_per_pixel")
# Per-second fields by LiteLLM mode, in order of preference (the direction that is billed).
_PER_SECOND_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "video_generation": ("output_cost_per_second", "output_cost_per_video_per_second"),
    "audio_transcription": ("input_cost_per_second", "output_cost_per_second"),
    "audio_speech": ("output_cost_per_second", "input_cost_per_second"),
}
_ZERO: Final = Decimal(0)
_REPR_LIMIT: Final = 40  # keep skip reasons one short line


class _SkipEntry(Exception):
    """Internal: this entry cannot be imported, for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_litellm_sheet(path: str | Path) -> CostImport:
    """Read a LiteLLM price sheet file (gunzipped when its name ends in ``.gz``) and import
    every entry (rules: module docstring).

    Returns a :class:`CostImport` whose ``costs`` are keyed by the sheet key, rates in µUSD
    per 1M tokens / per request / per image or second, ``source = "litellm:<file name>"``;
    every key of the sheet is either in ``costs`` or in ``skipped``. The real 3 MB sheet
    imports in well under a second.

    Raises :class:`PriceSheetError` when the file cannot be read, is not JSON, or is not a
    JSON object. Bad entries never raise; they are skipped with a reason.
    """
    sheet_path = Path(path)
    try:
        raw = sheet_path.read_bytes()
        if sheet_path.name.lower().endswith(".gz"):  # the sheet shipped in modelbank.data
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise PriceSheetError(
            f"cannot read price sheet {sheet_path}: {getattr(exc, 'strerror', None) or exc}",
            path=str(sheet_path),
        ) from exc
    try:
        sheet = json.loads(raw, parse_float=Decimal)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PriceSheetError(
            f"price sheet {sheet_path} is not valid JSON: {exc}", path=str(sheet_path)
        ) from exc
    if not isinstance(sheet, dict):
        raise PriceSheetError(
            f"price sheet {sheet_path} is not a JSON object but {type(sheet).__name__}",
            path=str(sheet_path),
        )
    name = sheet_path.name.removesuffix(".gz")
    return import_litellm_sheet(sheet, source=f"litellm:{name}")


def import_litellm_sheet(sheet: Mapping[str, object], *, source: str) -> CostImport:
    """Import an already decoded LiteLLM sheet (same rules and result as the file loader).

    Numbers may be ``int``, ``float`` (parsed via ``str``), ``Decimal`` or numeric strings.
    Never raises for a bad entry.
    """
    costs: dict[str, ProviderCost] = {}
    skipped: list[Skipped] = []
    for key, entry in sheet.items():
        try:
            costs[key] = _entry_cost(key, entry, source)
        except _SkipEntry as skip:
            skipped.append(Skipped(key=key, reason=skip.reason))
    return CostImport(costs=costs, skipped=skipped, source=source)


def _entry_cost(key: str, entry: object, source: str) -> ProviderCost:
    if key == DOCUMENTATION_KEY:
        raise _SkipEntry("documentation entry")
    if not isinstance(entry, dict):
        raise _SkipEntry(f"not an object: {type(entry).__name__}")
    litellm_mode, mode = _mode(key, entry)
    input_rate = _first_rate(entry, _input_token_fields(mode))
    output_rate = _first_rate(entry, _output_token_fields(mode))
    cache_read = _rate(entry, "cache_read_input_token_cost")
    per_request = _rate(entry, "input_cost_per_request")
    per_unit = _per_unit_usd(key, entry, mode, litellm_mode)
    read = (input_rate, output_rate, cache_read, per_request, per_unit)
    if not any(rate for rate in read):
        _refuse_unread_prices(entry)
    return ProviderCost(
        model_ref=key,
        provider=_provider(key, entry),
        mode=mode,
        input_uusd_per_mtok=scaled_rate(input_rate or _ZERO, UUSD_PER_MTOK_PER_USD_PER_TOKEN),
        output_uusd_per_mtok=scaled_rate(output_rate or _ZERO, UUSD_PER_MTOK_PER_USD_PER_TOKEN),
        cache_read_uusd_per_mtok=(
            None if cache_read is None else scaled_rate(cache_read, UUSD_PER_MTOK_PER_USD_PER_TOKEN)
        ),
        per_request_uusd=scaled_rate(per_request or _ZERO, UUSD_PER_USD),
        per_unit_uusd=None if per_unit is None else scaled_rate(per_unit, UUSD_PER_USD),
        max_input_tokens=_token_count(entry.get("max_input_tokens")),
        source=source,
    )


def _mode(key: str, entry: Mapping[str, object]) -> tuple[str | None, Mode]:
    """The entry's LiteLLM mode (``None`` when inferred) and our :class:`Mode`."""
    raw = entry.get("mode")
    if raw is None:
        if any(_rate(entry, name) is not None for name in _IMAGE_FIELDS):
            return None, Mode.IMAGE_GENERATION
        if any(_rate(entry, name) is not None for name in _TOKEN_FIELDS):
            return None, Mode.EMBEDDING if "embed" in key.lower() else Mode.CHAT
        raise _SkipEntry("no mode and no token or image cost")
    if isinstance(raw, str) and raw in LITELLM_MODES:
        return raw, LITELLM_MODES[raw]
    raise _SkipEntry(f"unsupported mode: {raw if isinstance(raw, str) else _short(raw)}")


def _input_token_fields(mode: Mode) -> tuple[str, ...]:
    if mode is Mode.AUDIO:
        return ("input_cost_per_audio_token", "input_cost_per_token")
    return ("input_cost_per_token",)


def _output_token_fields(mode: Mode) -> tuple[str, ...]:
    if mode in IMAGE_MODES:
        return ("output_cost_per_image_token", "output_cost_per_token")
    if mode is Mode.AUDIO:
        return ("output_cost_per_audio_token", "output_cost_per_token")
    return ("output_cost_per_token",)


def _per_unit_usd(
    key: str, entry: Mapping[str, object], mode: Mode, litellm_mode: str | None
) -> Decimal | None:
    """USD per image (image modes) or per second (video, audio); ``None`` when unpriced."""
    if mode in IMAGE_MODES:
        per_image = _first_rate(entry, ("output_cost_per_image", "input_cost_per_image"))
        if per_image:
            return per_image
        per_pixel = _first_rate(entry, _PIXEL_FIELDS)
        if per_pixel is None:
            return per_image
        width, height = _image_size(key)
        return mul(per_pixel, width, height)
    per_second_fields = _PER_SECOND_FIELDS.get(litellm_mode or "")
    return None if per_second_fields is None else _first_rate(entry, per_second_fields)


def _image_size(key: str) -> tuple[int, int]:
    match = _IMAGE_SIZE_IN_KEY.search(key)
    if match is None:
        return DEFAULT_IMAGE_SIZE
    return int(match.group(1)), int(match.group(2))


def _first_rate(entry: Mapping[str, object], names: tuple[str, ...]) -> Decimal | None:
    """The first positive rate among ``names``; else 0 if one is present; else ``None``."""
    present: Decimal | None = None
    for name in names:
        rate = _rate(entry, name)
        if rate:
            return rate
        if rate is not None and present is None:
            present = rate
    return present


def _rate(entry: Mapping[str, object], name: str) -> Decimal | None:
    """Field ``name`` as an exact non-negative Decimal; ``None`` when absent or null."""
    value = entry.get(name)
    if value is None:
        return None
    try:
        rate = parse_decimal(value)
    except MoneyError as exc:
        raise _SkipEntry(f"{name} is not a number: {_short(value)}") from exc
    if rate < 0:
        raise _SkipEntry(f"{name} is negative: {rate}")
    return rate


def _refuse_unread_prices(entry: Mapping[str, object]) -> None:
    """Skip an entry that is free by the fields we read but priced by others (rule 6)."""
    unread = sorted(
        name
        for name, value in entry.items()
        if "cost" in name
        and isinstance(value, int | float | Decimal)
        and not isinstance(value, bool)
        and value > 0
    )
    if unread:
        raise _SkipEntry(f"priced only in units this importer does not read: {', '.join(unread)}")


def _provider(key: str, entry: Mapping[str, object]) -> str:
    """``litellm_provider``, else the key's first path segment, else ``"unknown"``."""
    provider = entry.get("litellm_provider")
    if isinstance(provider, str) and provider:
        return provider
    head, slash, _ = key.partition("/")
    return head if slash and head else "unknown"


def _token_count(value: object) -> int | None:
    """A non-negative integral token count, or ``None`` (text, bool, fractions, negatives)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return None
    if isinstance(value, Decimal) and (not value.is_finite() or value != value.to_integral()):
        return None
    count = int(value)
    return count if count >= 0 else None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 1] + "…"
