"""``modelbank replay TRACE``: charge a usage trace through the full pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelbank.catalog.costs import CostImport
from modelbank.catalog.genai import load_genai_costs
from modelbank.catalog.pricesheet import load_litellm_sheet
from modelbank.cli import whatif
from modelbank.cli.common import (
    DB_OPTION_HELP,
    cli_errors,
    err_console,
    migrated_engine,
    settings_for,
)
from modelbank.cli.demo import GENAI_CREDIT, describe
from modelbank.cli.report import emit, progress_bar
from modelbank.config import Settings
from modelbank.data import PRICE_SHEET, require
from modelbank.db.engine import session_factory
from modelbank.money import UCR_PER_CREDIT
from modelbank.replay import (
    CatalogEntry,
    ReplayReport,
    TopUpPolicy,
    assign_creators,
    chat_catalog,
    replay_catalog,
)
from modelbank.traces.readers import TraceFormat, TraceRequest, read_trace


def load_costs(prices: str, settings: Settings) -> tuple[CostImport, str]:
    """The price source and its credit line: ``genai`` → the genai-prices snapshot;
    ``litellm`` → the LiteLLM sheet of the data folder; anything else is a LiteLLM sheet
    path (plain or .gz)."""
    if prices == "genai":
        costs = load_genai_costs()
        return costs, f"{GENAI_CREDIT} ({costs.source})"
    path = require(settings.data_dir, PRICE_SHEET) if prices == "litellm" else Path(prices)
    return load_litellm_sheet(path), describe(path)


def replay(
    trace: Annotated[
        Path, typer.Argument(help="The trace file (plain or .gz).", show_default=False)
    ],
    format: Annotated[
        TraceFormat | None, typer.Option("--format", help="Trace format (default: detected).")
    ] = None,
    prices: Annotated[
        str,
        typer.Option(
            help="Price source: genai (the genai-prices package), litellm (the LiteLLM sheet"
            " of the data folder) or a LiteLLM price sheet JSON path."
        ),
    ] = "genai",
    users: Annotated[
        int,
        typer.Option(
            min=1,
            max=100_000,
            help="Users user-001… that requests without a user are spread over.",
        ),
    ] = 50,
    models: Annotated[
        int, typer.Option(min=1, max=1_000, help="Chat models of the price source to spread over.")
    ] = 6,
    seed: Annotated[int, typer.Option(help="Seed of the user/model assignment.")] = 0,
    credits: Annotated[
        int, typer.Option(min=0, help="Purchased credits every user starts with.")
    ] = 400,
    top_up: Annotated[
        str | None,
        typer.Option(
            "--top-up",
            help="Package slug (e.g. popular) that users buy through the manual provider,"
            " confirmed at once, when they run low (under 50 credits) or are refused for"
            " want of credits; at most 15 per user. Default: nobody tops up.",
            show_default=False,
        ),
    ] = None,
    db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    what_if: whatif.WhatIfOption = None,
    markup: whatif.MarkupOption = None,
    demand: whatif.DemandOption = None,
) -> None:
    """Replay a usage trace through pricing, wallets, charges and earnings, then verify the
    ledger.

    Formats: an Azure LLM inference CSV (TIMESTAMP,ContextTokens,GeneratedTokens), a
    Mooncake JSONL (timestamp ms, input_length, output_length, hash_ids: prefix blocks seen
    before are billed at the cache-read rate) or a generic CSV with the header
    user,model,input_tokens,output_tokens,timestamp (and optionally cached_input_tokens).

    Users: a user the trace names (alice0, u7) is created by that external id the first time
    it appears; requests without a user go to user-001…user-NNN (--users). Every user starts
    with --credits purchased credits and 5 bonus credits; a user who runs dry is rejected
    (counted), never overdrawn, unless --top-up lets them buy more.

    Models: the catalog gets --models chat models of the price source, every second one
    created by a user who earns the default rule (20% of the charge, DESIGN §7). A model the
    trace names is found by slug in the catalog; one the catalog lacks is created from the
    price source when the source prices it; otherwise its events are rejected and counted as
    model_not_found.

    Assignment of requests without a user or model: users are ranked user-001 first and
    models in catalog order; rank k has Zipf weight 1/k^1.1. A random.Random(--seed)
    generator draws two numbers per request in trace order, the first picking the user and
    the second the model (the first rank whose cumulative probability exceeds the draw), so
    the same seed and trace always give the same assignment.

    Each event's key is replay:<trace file>:<seed>:<row>: replaying the same trace into the
    same database charges nothing twice.

    Examples:
      modelbank replay mine.csv --format csv --prices litellm
      modelbank replay trace.jsonl --users 200 --top-up popular --json
      modelbank replay trace.csv --markup large=1.54 --demand gpt-4o=high
    """
    with cli_errors():
        settings = settings_for(db)
        proposal = whatif.proposal_of(what_if, markup, demand)
        requests = read_trace(trace, format)
        costs, price_credit = load_costs(prices, settings)
        if costs.skipped and not json:
            err_console.print(
                f"price source {costs.source}: {len(costs.costs):,} models imported,"
                f" {len(costs.skipped):,} skipped"
            )
        entries = chat_catalog(costs, models)
        user_names = [f"user-{i:03d}" for i in range(1, users + 1)]
        entries = assign_creators(entries, user_names)
        policy = TopUpPolicy(package=top_up, max_per_user=15) if top_up else None
        if proposal is not None:  # price only, write nothing (modelbank.trace_whatif)
            args = (settings, trace, requests, proposal, entries, user_names)
            whatif.run(*args, seed=seed, credits=credits, costs=costs, as_json=json)
            return
        report = _charge(
            settings, trace, requests, entries, user_names, seed, credits, costs, policy
        )
    report.sources = [f"trace: {describe(trace)}", f"prices: {price_credit}"]
    emit(
        report,
        as_json=json,
        extra={
            "trace": str(trace),
            "prices": costs.source,
            "seed": seed,
            "users": users,
            "models": [e.slug for e in entries],
        },
    )
    if not report.ledger_ok:
        raise typer.Exit(1)


def _charge(
    settings: Settings,
    trace: Path,
    requests: list[TraceRequest],
    entries: list[CatalogEntry],
    user_names: list[str],
    seed: int,
    credits: int,
    costs: CostImport,
    policy: TopUpPolicy | None,
) -> ReplayReport:
    """Charge ``requests`` into the (migrated) database with a progress bar; every event's
    key starts ``replay:<trace file>:<seed>``; ``credits``: purchased credits per user."""
    engine = migrated_engine(settings)
    try:
        factory = session_factory(engine)
        prefix = f"replay:{trace.name}:{seed}"
        with progress_bar(len(requests), f"replaying {trace.name}") as advance:
            return replay_catalog(
                factory,
                requests,
                entries=entries,
                user_names=user_names,
                credits_ucr=credits * UCR_PER_CREDIT,
                seed=seed,
                key_prefix=prefix,
                on_batch=advance,
                credits_per_usd=settings.credits_per_usd,
                costs=costs,
                top_ups=policy,
            )
    finally:
        engine.dispose()


def register(app: typer.Typer) -> None:
    app.command()(replay)
