"""Tier detection from a model's name and mode (the table in catalog/tiers.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from modelbank.catalog.costs import Mode
from modelbank.catalog.tiers import Tier, detect_tier, parameter_billions
from modelbank.errors import InvalidInput


@pytest.mark.parametrize(
    ("name", "mode", "tier"),
    [
        # modes decide first
        ("azure/hd/1024-x-1024/dall-e-3", Mode.IMAGE_GENERATION, Tier.IMAGE),
        ("black_forest_labs/flux-kontext-pro", "image_edit", Tier.IMAGE),
        ("vertex_ai/veo-3.0-generate-preview", Mode.VIDEO, Tier.IMAGE),
        ("whisper-1", Mode.AUDIO, Tier.AUDIO),
        ("llama-3.1-70b-tts", Mode.AUDIO, Tier.AUDIO),
        # parameter counts
        ("meta-llama/Llama-3.2-1B-Instruct", Mode.CHAT, Tier.MICRO),
        ("qwen2.5-1.5b-instruct", Mode.CHAT, Tier.MICRO),
        ("groq/llama-3.1-8b-instant", Mode.CHAT, Tier.SMALL),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", Mode.CHAT, Tier.MEDIUM),  # 56B
        ("together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo", Mode.CHAT, Tier.MEDIUM),
        ("bedrock/meta.llama3-1-405b-instruct-v1:0", Mode.CHAT, Tier.LARGE),
        ("mixtral-8x22b", Mode.CHAT, Tier.LARGE),  # 176B
        ("qwen/qwen3-235b-a22b", Mode.CHAT, Tier.LARGE),  # total, not active
        ("llama-3.2-11b-vision-instruct", Mode.CHAT, Tier.SMALL),  # size beats vision
        # families without a size
        ("gpt-4o-mini", Mode.CHAT, Tier.SMALL),
        ("o3-mini", Mode.CHAT, Tier.SMALL),
        ("claude-3-5-haiku-20241022", Mode.CHAT, Tier.SMALL),
        ("gemini-2.0-flash", Mode.CHAT, Tier.SMALL),
        ("gemini-2.5-flash-lite", Mode.CHAT, Tier.MICRO),
        ("gpt-5-nano", Mode.CHAT, Tier.MICRO),
        ("gpt-3.5-turbo", Mode.CHAT, Tier.SMALL),
        ("gpt-4o", Mode.CHAT, Tier.MEDIUM),
        ("claude-3-5-sonnet-20241022", Mode.CHAT, Tier.MEDIUM),
        ("gemini-pro", Mode.CHAT, Tier.MEDIUM),
        ("gemini-1.5-pro", Mode.CHAT, Tier.MEDIUM),
        ("gpt-4", Mode.CHAT, Tier.LARGE),
        ("gpt-4-turbo", Mode.CHAT, Tier.LARGE),
        ("claude-3-opus-20240229", Mode.CHAT, Tier.LARGE),
        ("o1", Mode.CHAT, Tier.LARGE),
        ("azure/o3", Mode.CHAT, Tier.LARGE),
        ("gpt-5", Mode.CHAT, Tier.LARGE),
        ("gpt-5-mini", Mode.CHAT, Tier.SMALL),
        ("mistral-large-latest", Mode.CHAT, Tier.LARGE),
        ("minimax/minimax-m2", Mode.CHAT, Tier.MEDIUM),  # "mini" inside a word is not mini
        ("gpt-4-vision-preview", Mode.CHAT, Tier.VISION),
        ("some-unknown-model", "chat", Tier.MEDIUM),
    ],
)
def test_detect_tier(name: str, mode: Mode | str, tier: Tier) -> None:
    assert detect_tier(name, mode) is tier


def test_supports_vision_only_without_another_signal() -> None:
    assert detect_tier("acme-omni", Mode.CHAT, supports_vision=True) is Tier.VISION
    assert detect_tier("gpt-4o", Mode.CHAT, supports_vision=True) is Tier.MEDIUM
    assert detect_tier("llama-3-8b", Mode.CHAT, supports_vision=True) is Tier.SMALL


def test_unknown_mode_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="unknown model mode"):
        detect_tier("gpt-4o", "rerank")


@pytest.mark.parametrize(
    ("name", "billions"),
    [
        ("llama-3.1-8b", Decimal(8)),
        ("mixtral-8x7b", Decimal(56)),
        ("qwen2.5-1.5b", Decimal("1.5")),
        ("fireworks-ai-embedding-150m-to-350m", Decimal("0.15")),
        ("gemma-3n-e4b-it", Decimal(4)),
        ("gpt-4o", None),
        ("claude-3-5-sonnet-20241022", None),
    ],
)
def test_parameter_billions(name: str, billions: Decimal | None) -> None:
    assert parameter_billions(name) == billions


def test_tier_values_are_lowercase_names() -> None:
    assert [tier.value for tier in Tier] == [
        "micro",
        "small",
        "medium",
        "large",
        "vision",
        "audio",
        "image",
    ]
