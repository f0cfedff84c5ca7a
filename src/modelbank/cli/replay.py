"""``modelbank replay TRACE``: charge a usage trace through the full pipeline."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from modelbank.catalog.costs import CostImport
from modelbank.catalog.genai import load_genai_costs
from modelbank.catalog.pricesheet import load_litellm_sheet
from modelbank.cli.common import (
    DB_OPTION_HELP,
    cli_errors,
    err_console,
    migrated_engine,
    settings_for,
)
from modelbank.cli.report import emit, progress_bar
from modelbank.db.engine import session_factory
from modelbank.money import UCR_PER_CREDIT
from modelbank.replay import assign_creators, chat_catalog, replay_catalog
from modelbank.traces.assign import Assigner
from modelbank.traces.readers import TraceFormat, read_trace

HELP = (
    "Replay a usage trace (Azure LLM inference CSV, Mooncake JSONL or a generic CSV"
    " `user,model,input_tokens,output_tokens,timestamp`) through pricing, wallets, charges and"
    " earnings, then verify the ledger.\n\n"
    "Users `user-001…` start with --credits purchased credits; a user who runs dry is"
    " rejected (counted), never overdrawn. Models are --models chat models of the price"
    " source (--prices genai, or a LiteLLM price sheet JSON); every other one is created by a"
    " user, who earns the default rule (20% of the charge, DESIGN §7). Each event's key is"
    " `replay:<trace file>:<seed>:<row>`: replaying the same trace into the same database"
    " charges nothing twice.\n\n"
    "Requests without user/model are assigned so: "
)


def load_costs(prices: str) -> CostImport:
    """``genai`` → the genai-prices snapshot; anything else is a LiteLLM sheet path."""
    return load_genai_costs() if prices == "genai" else load_litellm_sheet(Path(prices))


def replay(
    trace: Annotated[Path, typer.Argument(help="The trace file.")],
    format: Annotated[
        TraceFormat | None, typer.Option("--format", help="Trace format (default: detected).")
    ] = None,
    prices: Annotated[
        str, typer.Option(help="genai, or a LiteLLM price sheet JSON path.")
    ] = "genai",
    users: Annotated[
        int, typer.Option(min=1, max=100_000, help="Users to spread requests over.")
    ] = 50,
    models: Annotated[int, typer.Option(min=1, max=1_000, help="Chat models to spread over.")] = 6,
    seed: Annotated[int, typer.Option(help="Seed of the user/model assignment.")] = 0,
    credits: Annotated[int, typer.Option(min=0, help="Purchased credits per user.")] = 400,
    db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    with cli_errors():
        settings = settings_for(db)
        requests = read_trace(trace, format)
        costs = load_costs(prices)
        if costs.skipped and not json:
            err_console.print(
                f"price source {costs.source}: {len(costs.costs):,} models imported,"
                f" {len(costs.skipped):,} skipped"
            )
        entries = chat_catalog(costs, models)
        user_names = [f"user-{i:03d}" for i in range(1, users + 1)]
        entries = assign_creators(entries, user_names)
        engine = migrated_engine(settings)
        factory = session_factory(engine)
        prefix = f"replay:{trace.name}:{seed}"
        with progress_bar(len(requests), f"replaying {trace.name}") as advance:
            report = replay_catalog(
                factory,
                requests,
                entries=entries,
                user_names=user_names,
                credits_ucr=credits * UCR_PER_CREDIT,
                seed=seed,
                key_prefix=prefix,
                on_batch=advance,
                credits_per_usd=settings.credits_per_usd,
            )
        engine.dispose()
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


replay.__doc__ = HELP + (inspect.getdoc(Assigner) or "").split("\n\n")[1]


def register(app: typer.Typer) -> None:
    app.command(help=replay.__doc__)(replay)
