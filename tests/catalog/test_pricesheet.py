"""LiteLLM price-sheet import: the real sheet and hand-written edge cases."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from modelbank.catalog.costs import CostImport, Mode, PriceSheetError, Skipped
from modelbank.catalog.pricesheet import load_litellm_sheet
from modelbank.data import PACKAGED_DATA_DIR, PRICE_SHEET, require

SHEET_NAME = PRICE_SHEET
SHEET = require(PACKAGED_DATA_DIR, SHEET_NAME)  # shipped gzipped with the package: never absent
SHEET_KEYS = 4_553  # 4,552 models + sample_spec (modelbank/data/README.md)


@pytest.fixture(scope="module")
def real() -> CostImport:
    return load_litellm_sheet(SHEET)


def _write(tmp_path: Path, sheet: object, name: str = "sheet.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(sheet), encoding="utf-8")
    return path


def _reasons(result: CostImport) -> dict[str, str]:
    return {skip.key: skip.reason for skip in result.skipped}


# --- the real sheet ----------------------------------------------------------------------


def test_real_gpt_4o_rates_are_exact(real: CostImport) -> None:
    cost = real.costs["gpt-4o"]
    assert cost.input_uusd_per_mtok == 2_500_000
    assert cost.output_uusd_per_mtok == 10_000_000
    assert cost.cache_read_uusd_per_mtok == 1_250_000
    assert isinstance(cost.input_uusd_per_mtok, Decimal)
    assert (cost.provider, cost.mode, cost.max_input_tokens) == ("openai", Mode.CHAT, 128_000)
    assert cost.source == f"litellm:{SHEET_NAME}"
    assert real.source == f"litellm:{SHEET_NAME}"


def test_real_gpt_35_turbo_rates(real: CostImport) -> None:
    cost = real.costs["gpt-3.5-turbo"]
    assert (cost.input_uusd_per_mtok, cost.output_uusd_per_mtok) == (500_000, 1_500_000)
    assert cost.cache_read_uusd_per_mtok is None
    assert cost.per_request_uusd == 0
    assert cost.per_unit_uusd is None


def test_real_sample_spec_is_skipped_as_documentation(real: CostImport) -> None:
    assert _reasons(real)["sample_spec"] == "documentation entry"
    assert "sample_spec" not in real.costs


def test_real_every_key_is_imported_or_skipped_once(real: CostImport) -> None:
    skipped_keys = [skip.key for skip in real.skipped]
    assert len(real.costs) + len(skipped_keys) == SHEET_KEYS
    assert len(set(skipped_keys)) == len(skipped_keys)
    assert not set(skipped_keys) & real.costs.keys()


def test_real_modes_skipped_and_mapped(real: CostImport) -> None:
    reasons = _reasons(real)
    # 55 realtime, 39 rerank, 20 ocr entries in this sheet (README §1).
    assert sum(r == "unsupported mode: realtime" for r in reasons.values()) == 55
    assert sum(r == "unsupported mode: rerank" for r in reasons.values()) == 39
    assert sum(r == "unsupported mode: ocr" for r in reasons.values()) == 20
    assert real.costs["text-embedding-3-small"].mode is Mode.EMBEDDING
    assert real.costs["whisper-1"].mode is Mode.AUDIO
    assert real.costs["whisper-1"].per_unit_uusd == 100  # $0.0001 per second
    # a paid TTS priced only per character must not import as free
    assert reasons["azure/speech/azure-tts"].startswith("priced only in units")


def test_real_dall_e_3_gets_per_image_cost_from_pixels(real: CostImport) -> None:
    cost = real.costs["azure/hd/1024-x-1024/dall-e-3"]
    assert cost.mode is Mode.IMAGE_GENERATION
    # 8.39233e-08 USD/pixel × 1024 × 1024 pixels × 10⁶ µUSD/USD, exactly
    assert cost.per_unit_uusd == Decimal("8.39233e-08") * 1024 * 1024 * 10**6
    assert cost.per_unit_uusd == Decimal("87999.9582208")
    wide = real.costs["azure/hd/1792-x-1024/dall-e-3"]
    assert wide.per_unit_uusd == Decimal("7.19343e-08") * 1792 * 1024 * 10**6


def test_real_per_image_price(real: CostImport) -> None:
    assert real.costs["aiml/dall-e-3"].per_unit_uusd == 52_000  # $0.052 per image
    assert real.costs["high/1024-x-1024/gpt-image-1"].per_unit_uusd == 167_000


# --- a hand-written sheet -------------------------------------------------------------------


def test_small_sheet_edge_cases(tmp_path: Path) -> None:
    sheet = {
        "sample_spec": {"mode": "one of: chat, embedding"},
        "search-model": {
            "mode": "chat",
            "litellm_provider": "acme",
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 2e-06,
            "search_context_cost_per_query": {"search_context_size_low": 0.005},
            "max_input_tokens": 8192,
        },
        "acme/no-mode-chat": {"input_cost_per_token": 3e-07, "output_cost_per_token": 6e-07},
        "no-mode-image": {"output_cost_per_image": 0.04},
        "no-mode-nothing": {"max_tokens": 10},
        "garbage": {"mode": "chat", "input_cost_per_token": "abc"},
        "negative": {"mode": "chat", "input_cost_per_token": -1e-06},
        "not-a-dict": [1, 2, 3],
        "reranker": {"mode": "rerank", "input_cost_per_query": 0.002},
        "free-model": {"mode": "chat", "input_cost_per_token": 0, "output_cost_per_token": 0.0},
        "pixel-image-no-size": {"mode": "image_generation", "input_cost_per_pixel": 1e-08},
        "veo": {"mode": "video_generation", "output_cost_per_second": 0.35},
        "tts": {"mode": "audio_speech", "input_cost_per_character": 1.5e-05},
        "per-request": {
            "mode": "chat",
            "input_cost_per_request": 0.005,
            "output_cost_per_token": 2.8e-06,
        },
    }
    result = load_litellm_sheet(_write(tmp_path, sheet, "tiny.json"))
    reasons = _reasons(result)

    assert result.source == "litellm:tiny.json"
    assert len(result.costs) + len(result.skipped) == len(sheet)

    nested = result.costs["search-model"]
    assert (nested.input_uusd_per_mtok, nested.output_uusd_per_mtok) == (1_000_000, 2_000_000)
    assert (nested.provider, nested.max_input_tokens) == ("acme", 8192)

    inferred_chat = result.costs["acme/no-mode-chat"]
    assert inferred_chat.mode is Mode.CHAT
    assert inferred_chat.provider == "acme"  # from the key when litellm_provider is absent
    assert inferred_chat.input_uusd_per_mtok == 300_000

    inferred_image = result.costs["no-mode-image"]
    assert inferred_image.mode is Mode.IMAGE_GENERATION
    assert inferred_image.per_unit_uusd == 40_000
    assert inferred_image.provider == "unknown"

    assert reasons["sample_spec"] == "documentation entry"
    assert reasons["no-mode-nothing"] == "no mode and no token or image cost"
    assert reasons["garbage"] == "input_cost_per_token is not a number: 'abc'"
    assert reasons["negative"].startswith("input_cost_per_token is negative")
    assert reasons["not-a-dict"] == "not an object: list"
    assert reasons["reranker"] == "unsupported mode: rerank"
    assert reasons["tts"] == (
        "priced only in units this importer does not read: input_cost_per_character"
    )

    free = result.costs["free-model"]
    assert (free.input_uusd_per_mtok, free.output_uusd_per_mtok) == (0, 0)

    # no size in the key: 1024 × 1024 pixels assumed
    assert result.costs["pixel-image-no-size"].per_unit_uusd == Decimal("1e-08") * 1024**2 * 10**6
    video = result.costs["veo"]
    assert (video.mode, video.per_unit_uusd) == (Mode.VIDEO, 350_000)
    assert result.costs["per-request"].per_request_uusd == 5_000


def test_exact_decimal_parsing_not_float(tmp_path: Path) -> None:
    # 17 significant digits: float would round this; the importer keeps every digit.
    path = tmp_path / "exact.json"
    path.write_text('{"m": {"mode": "chat", "input_cost_per_token": 1.2345678901234567e-07}}')
    cost = load_litellm_sheet(path).costs["m"]
    assert cost.input_uusd_per_mtok == Decimal("123456.78901234567")


@pytest.mark.parametrize(
    "content",
    [b"[1, 2, 3]", b"not json {", b"\xff\xfe\x00garbage", b'"a string"'],
    ids=["array", "invalid-json", "not-utf8", "string"],
)
def test_non_object_or_unreadable_sheet_raises(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(PriceSheetError) as info:
        load_litellm_sheet(path)
    assert info.value.code == "price_sheet_invalid"


def test_missing_sheet_raises(tmp_path: Path) -> None:
    with pytest.raises(PriceSheetError, match="cannot read price sheet"):
        load_litellm_sheet(tmp_path / "absent.json")


def test_skipped_is_a_value() -> None:
    assert Skipped("k", "r") == Skipped(key="k", reason="r")
