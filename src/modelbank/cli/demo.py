"""``modelbank demo``: the main job (DESIGN §15) on real data, zero configuration."""

from __future__ import annotations

import time
from pathlib import Path
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
from modelbank.cli.demo_gateway import gateway_demo
from modelbank.cli.report import emit, progress_bar
from modelbank.config import Settings
from modelbank.data import AZURE_TRACE, PRICE_SHEET, SOURCES, credit_line, require
from modelbank.db.engine import session_factory
from modelbank.demo import (
    DEMO_BATCH_EVENTS,
    DEMO_STARTING_CREDITS,
    DEMO_TOP_UP,
    demo_catalog,
    demo_users,
)
from modelbank.demo_gateway.run import DEFAULT_EVENTS
from modelbank.money import UCR_PER_CREDIT
from modelbank.replay import CatalogEntry, ReplayReport, replay_catalog
from modelbank.traces.readers import TraceRequest, read_trace, synthetic_azure_trace

GENAI_CREDIT = "genai-prices (pydantic/genai-prices, https://github.com/pydantic/genai-prices), MIT"
SYNTHETIC = (
    "synthetic trace (--synthetic): 8,819 requests generated from the Azure code trace's"
    " summary statistics, not real traffic"
)


def describe(path: Path) -> str:
    """The credit line of a shipped data file (``name`` or ``name.gz``), else the path."""
    name = path.name.removesuffix(".gz")
    return credit_line(name) if name in SOURCES else str(path)


def demo(
    db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None,
    trace: Annotated[
        Path | None,
        typer.Option(
            help="Trace to replay instead of the Azure code trace of the data folder"
            " (any format `modelbank replay` reads; plain or .gz).",
            show_default=False,
        ),
    ] = None,
    prices: Annotated[
        Path | None,
        typer.Option(
            help="LiteLLM price sheet JSON (plain or .gz) for the image models' provider"
            " cost (with --gateway: the chat models' prices), instead of the data folder's.",
            show_default=False,
        ),
    ] = None,
    synthetic: Annotated[
        bool,
        typer.Option(
            "--synthetic",
            help="Replay a synthetic trace shaped like the Azure code trace (no real data).",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the user/model assignment.")] = 0,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    gateway: Annotated[
        bool,
        typer.Option(
            "--gateway",
            help="Run the request path instead: fake upstreams (steady, slow, flaky), keys"
            " deposited by users, the trace sent through /v1 with the official openai client;"
            " without --db on a fresh SQLite database in a temporary folder.",
        ),
    ] = False,
    events: Annotated[
        int,
        typer.Option(help="With --gateway: trace requests to send (default: about 45 s)."),
    ] = DEFAULT_EVENTS,
) -> None:
    """Run the main job on real data: a catalog of real models, 43 users who top up, and
    the real Azure LLM code trace charged through pricing, wallets, charges and earnings.

    The catalog: chat models priced from genai-prices provider costs with the tier and
    demand markups, image models at per-operation prices, and creators' models that earn
    by rule. 40 users and 3 creators start with 200 purchased credits each; half of them
    have auto top-up on (the Popular package below 50 credits: their charges start the
    purchase), the others buy it by hand when they run low; either way through the manual
    payment provider, and the demo's operator step confirms it, as an operator without
    Stripe would.

    The data folder is MODELBANK_DATA_DIR, by default the data shipped inside modelbank
    (gzipped, with its licences); --trace and --prices replace single files. The report
    gives revenue per category, provider cost, creator earnings, the platform's margin,
    top-ups, rejections and where the data came from, then the ledger check. Each run is a
    new replay (its own idempotency keys) into the same database.

    With --gateway the demo runs the request path (DESIGN §9) instead: three fake
    upstreams in-process (steady, slow, flaky: 20 % HTTP 500), modelbank served on loopback,
    three users depositing the upstreams' keys (earning 90 % of their quota's credit value)
    beside the platform's own key, and the first --events requests of the trace sent through
    /v1 by 12 callers with the official openai client (prompts of the trace's input tokens,
    capped at 4,096; max_tokens = its output tokens; every third streamed). The report gives
    requests served, failed and refused, routing share, failovers and breaker state per
    resource, depositors' credits and quota used, the platform's spread and fees, the total
    charged and the ledger check.

    Example: modelbank demo --json > report.json

    Example: modelbank demo --gateway --events 300
    """
    if gateway:
        with cli_errors():
            gateway_demo(db, events, seed, json, trace, prices)
        return
    with cli_errors():
        settings = settings_for(db)
        say = err_console.print if json else console.print
        requests, trace_name, trace_credit = _trace(settings.data_dir, trace, synthetic, seed)
        costs: CostImport = load_genai_costs()
        sheet_path = prices or require(settings.data_dir, PRICE_SHEET)
        image_costs = load_litellm_sheet(sheet_path)
        sources = [
            f"trace: {trace_credit}",
            f"chat prices: {GENAI_CREDIT} ({costs.source}, {len(costs.costs):,} models)",
            f"image costs: {describe(sheet_path)}",
        ]
        say(f"replaying {trace_name} ({len(requests):,} requests)", highlight=False)
        entries = demo_catalog(costs, image_costs)
        report, run = _charge(settings, requests, entries, seed)
    report.sources = sources
    emit(
        report,
        as_json=json,
        extra={
            "trace": trace_name,
            "synthetic_trace": synthetic,
            "run": run,
            "database": settings.database_url,
            "models": [e.slug for e in entries],
        },
    )
    if not json:
        console.print(f"database: {settings.database_url} (check it with `modelbank verify`)")
    if not report.ledger_ok:
        raise typer.Exit(1)


def _charge(
    settings: Settings, requests: list[TraceRequest], entries: list[CatalogEntry], seed: int
) -> tuple[ReplayReport, str]:
    """Charge the trace into the (migrated) database with a progress bar, as a new run
    (its own idempotency keys ``demo:<time>:<ns>``): returns the report and the run's key
    prefix."""
    engine = migrated_engine(settings)
    try:
        factory = session_factory(engine)
        run = f"demo:{time.strftime('%Y%m%dT%H%M%S')}:{time.monotonic_ns() % 1_000_000}"
        with progress_bar(len(requests), "charging the trace") as advance:
            report = replay_catalog(
                factory,
                requests,
                entries=entries,
                user_names=demo_users(),
                credits_ucr=DEMO_STARTING_CREDITS * UCR_PER_CREDIT,
                seed=seed,
                key_prefix=run,
                on_batch=advance,
                credits_per_usd=settings.credits_per_usd,
                top_ups=DEMO_TOP_UP,
                batch_events=DEMO_BATCH_EVENTS,
            )
    finally:
        engine.dispose()
    return report, run


def _trace(
    data_dir: Path, trace: Path | None, synthetic: bool, seed: int
) -> tuple[list[TraceRequest], str, str]:
    """(requests, file name, credit line) of the trace the demo replays."""
    if synthetic:
        return synthetic_azure_trace(seed=seed), "synthetic", SYNTHETIC
    path = trace or require(data_dir, AZURE_TRACE)
    return read_trace(path), path.name, describe(path)


def register(app: typer.Typer) -> None:
    app.command()(demo)
