"""Costs from the embedded genai-prices snapshot.

The expected figures are those of the pinned snapshot (genai-prices 0.2.3); a newer package
with changed prices fails here on purpose, so the change is looked at.
"""

from __future__ import annotations

from datetime import UTC, datetime

import genai_prices

from modelbank.catalog.costs import Mode
from modelbank.catalog.genai import GENAI_SOURCE, genai_cost, load_genai_costs


def test_gpt_4o_rates() -> None:
    cost = genai_cost("gpt-4o")
    assert cost is not None
    assert cost.input_uusd_per_mtok == 2_500_000
    assert cost.output_uusd_per_mtok == 10_000_000
    assert cost.cache_read_uusd_per_mtok == 1_250_000
    assert (cost.provider, cost.model_ref, cost.mode) == ("openai", "gpt-4o", Mode.CHAT)
    assert cost.max_input_tokens == 128_000
    assert cost.source == f"genai-prices {genai_prices.__version__}" == GENAI_SOURCE


def test_unknown_model_and_provider_are_none() -> None:
    assert genai_cost("definitely-not-a-model-xyz") is None
    assert genai_cost("gpt-4o", provider="no-such-provider") is None


def test_provider_pins_the_lookup() -> None:
    cost = genai_cost("gpt-4o", provider="azure")
    assert cost is not None
    assert cost.provider == "azure"


def test_name_the_snapshot_cannot_attribute_falls_back_to_a_listing_provider() -> None:
    cost = genai_cost("text-embedding-3-small")
    assert cost is not None
    assert cost.mode is Mode.EMBEDDING
    assert cost.input_uusd_per_mtok == 20_000  # $0.02 per 1M tokens


def test_per_request_and_per_second_units() -> None:
    sonar = genai_cost("sonar", provider="perplexity")
    assert sonar is not None
    assert sonar.per_request_uusd == 12_000  # $12 per 1,000 requests
    whisper = genai_cost("whisper-1", provider="openai")
    assert whisper is not None
    assert (whisper.mode, whisper.per_unit_uusd) == (Mode.AUDIO, 100)  # $0.36/hour


def test_time_of_day_prices_take_the_dearest_window() -> None:
    # deepseek-chat: $0.135/$0.55 off-peak, $0.27/$1.10 in the 00:30-16:30 UTC window.
    off_peak_hour = datetime(2025, 6, 1, 20, 0, tzinfo=UTC)
    cost = genai_cost("deepseek-chat", provider="deepseek", as_of=off_peak_hour)
    assert cost is not None
    assert (cost.input_uusd_per_mtok, cost.output_uusd_per_mtok) == (270_000, 1_100_000)


def test_start_dated_price_follows_as_of() -> None:
    # mistral-large-4: $0.68 until 2026-10-20, $1.36 from then, $0.70 from 2026-10-29.
    def input_rate(day: datetime) -> object:
        cost = genai_cost("mistral-large-4", provider="mistral", as_of=day)
        assert cost is not None
        return cost.input_uusd_per_mtok

    assert input_rate(datetime(2026, 10, 1, tzinfo=UTC)) == 680_000
    assert input_rate(datetime(2026, 10, 25, tzinfo=UTC)) == 1_360_000
    assert input_rate(datetime(2026, 11, 1, tzinfo=UTC)) == 700_000


def test_load_all_models() -> None:
    result = load_genai_costs()
    assert result.source == GENAI_SOURCE
    assert len(result.costs) > 2_000
    assert result.costs["openai/gpt-4o"].input_uusd_per_mtok == 2_500_000
    assert result.costs["anthropic/claude-3-5-sonnet"].output_uusd_per_mtok == 15_000_000
    reasons = {skip.key: skip.reason for skip in result.skipped}
    assert (
        reasons["openai/tts-1"] == "priced only in units this importer does not read: input_mchars"
    )
    models = sum(len(p.models) for p in genai_prices.data_snapshot.get_snapshot().providers)
    assert len(result.costs) + len(result.skipped) == models
    assert result.costs["openai/gpt-image-1"].mode is Mode.IMAGE_GENERATION
