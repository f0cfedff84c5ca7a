"""``modelbank demo``: the main job (DESIGN §15) on real data, zero configuration."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from modelbank.catalog.costs import CostImport
from modelbank.catalog.genai import load_genai_costs
from modelbank.catalog.pricesheet import load_litellm_sheet
from modelbank.cli.common import (
    DB_OPTION_HELP,
    cli_errors,
    console,
    err_console,
    migrated_engine,
    settings_for,
)
from modelbank.cli.report import emit, progress_bar
from modelbank.db.engine import session_factory
from modelbank.demo import DEMO_STARTING_CREDITS, demo_catalog, demo_users
from modelbank.money import UCR_PER_CREDIT
from modelbank.replay import replay_catalog
from modelbank.traces.readers import TraceRequest, read_trace, synthetic_azure_trace

AZURE_TRACE = "AzureLLMInferenceTrace_code.csv"
PRICE_SHEET = "litellm_model_prices_and_context_window.json"
CREDITS = {
    AZURE_TRACE: "Azure LLM inference trace 2023, Microsoft Azure Public Dataset"
    " (https://github.com/Azure/AzurePublicDataset), CC-BY-4.0",
    PRICE_SHEET: "LiteLLM model price sheet (BerriAI/litellm 1.109.1), MIT",
    "genai": "genai-prices (pydantic/genai-prices), MIT",
}


def demo(
    db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the user/model assignment.")] = 0,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Build a catalog of real models (chat models priced from genai-prices provider costs,
    image models at per-operation prices, creators' models with earnings rules), 40 users
    and 3 creators, then replay the real Azure LLM code trace from the data folder
    ($MODELBANK_DATA_DIR, default ../shared/data) through pricing, wallets, charges and
    earnings, and verify the ledger. Without the trace file, a trace generated from its
    published statistics is used, and the report says so. Each run is a new replay (its own
    idempotency keys) into the same database; `modelbank verify` checks it afterwards."""
    with cli_errors():
        settings = settings_for(db)
        say = err_console.print if json else console.print
        trace_path = settings.data_dir / AZURE_TRACE
        synthetic = not trace_path.is_file()
        requests: list[TraceRequest]
        if synthetic:
            say(
                f"[yellow]{trace_path} not found: replaying a synthetic trace generated from"
                " the Azure code trace's published statistics (8,819 requests)[/]"
            )
            requests = synthetic_azure_trace(seed=seed)
        else:
            requests = read_trace(trace_path)
            say(f"trace: {CREDITS[AZURE_TRACE]}")
        costs: CostImport = load_genai_costs()
        say(f"chat prices: {CREDITS['genai']} ({costs.source}, {len(costs.costs):,} models)")
        sheet_path = settings.data_dir / PRICE_SHEET
        image_costs = load_litellm_sheet(sheet_path) if sheet_path.is_file() else costs
        if sheet_path.is_file():
            say(f"image costs: {CREDITS[PRICE_SHEET]}")
        entries = demo_catalog(costs, image_costs)
        names = demo_users()
        engine = migrated_engine(settings)
        factory = session_factory(engine)
        run = f"demo:{time.strftime('%Y%m%dT%H%M%S')}:{time.monotonic_ns() % 1_000_000}"
        with progress_bar(len(requests), "charging the trace") as advance:
            report = replay_catalog(
                factory,
                requests,
                entries=entries,
                user_names=names,
                credits_ucr=DEMO_STARTING_CREDITS * UCR_PER_CREDIT,
                seed=seed,
                key_prefix=run,
                on_batch=advance,
                credits_per_usd=settings.credits_per_usd,
            )
        engine.dispose()
    emit(
        report,
        as_json=json,
        extra={
            "trace": "synthetic (Azure code trace statistics)" if synthetic else str(trace_path),
            "synthetic_trace": synthetic,
            "run": run,
            "database": settings.database_url,
            "models": [e.slug for e in entries],
            "data_credits": [CREDITS[AZURE_TRACE], CREDITS["genai"]]
            + ([CREDITS[PRICE_SHEET]] if sheet_path.is_file() else []),
        },
    )
    if not json:
        console.print(f"database: {settings.database_url} (check it with `modelbank verify`)")
    if not report.ledger_ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(demo)
