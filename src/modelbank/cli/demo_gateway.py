"""``modelbank demo --gateway``: the request path on real data (DESIGN §9, §15); the work is
in :mod:`modelbank.demo_gateway`, this module picks the database and the data and prints."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from modelbank.catalog.pricesheet import load_litellm_sheet
from modelbank.cli.common import console, err_console, migrated_engine, settings_for
from modelbank.cli.report import progress_bar
from modelbank.data import AZURE_TRACE, PRICE_SHEET, credit_line, require
from modelbank.demo_gateway import PROMPT_CAP_TOKENS, emit_report, run_gateway_demo
from modelbank.demo_gateway.run import STREAM_EVERY, TRIAL_CALLERS
from modelbank.errors import InvalidInput
from modelbank.traces.readers import read_trace


def gateway_demo(
    db: str | None,
    events: int,
    seed: int,
    as_json: bool,
    trace: Path | None = None,
    prices: Path | None = None,
) -> None:
    """Run the gateway demo on ``db`` (default: a fresh SQLite database in a temporary folder,
    removed afterwards) with the first ``events`` requests of ``trace`` and the chat prices
    of the LiteLLM sheet ``prices`` (defaults: the data folder's), and print its report;
    exit 1 when the ledger check fails."""
    if events < 1:
        raise InvalidInput(f"--events must be at least 1, got {events}")
    with tempfile.TemporaryDirectory(prefix="modelbank-gateway-demo-") as folder:
        url = db or f"sqlite:///{Path(folder) / 'gateway-demo.db'}"
        settings = settings_for(url)
        say = err_console.print if as_json else console.print
        trace_path = trace or require(settings.data_dir, AZURE_TRACE)
        sheet_path = prices or require(settings.data_dir, PRICE_SHEET)
        requests = read_trace(trace_path)[:events]
        costs = load_litellm_sheet(sheet_path)
        say(f"replaying the first {len(requests):,} requests of {trace_path.name} through the"
            " gateway", highlight=False)  # fmt: skip
        engine = migrated_engine(settings)
        try:
            with progress_bar(len(requests), "through the gateway") as advance:
                report = run_gateway_demo(
                    settings,
                    engine,
                    requests,
                    costs,
                    seed=seed,
                    on_call=lambda: advance(1),
                    on_stage=lambda line: err_console.print(line, highlight=False),
                )
        finally:
            engine.dispose()
    name = trace_path.name.removesuffix(".gz")
    report.sources = [
        f"trace: {credit_line(name) if name == AZURE_TRACE else trace_path}",
        f"chat prices and provider cost: {prices or credit_line(PRICE_SHEET)}",
    ]
    report.notes = [
        f"prompts of exactly the trace's input tokens, cut at {PROMPT_CAP_TOKENS:,} tokens"
        f" ({report.prompt_capped:,} of {report.events:,} were longer); max_tokens = the"
        f" trace's output tokens; every {STREAM_EVERY}rd request streamed; sent as fast as"
        f" {report.workers} callers allow, not at the trace's arrival times",
        f"callers and models assigned from seed {seed} (Zipf, as `modelbank demo`);"
        f" {' and '.join(sorted(TRIAL_CALLERS))} hold 0.01 credit, so their requests are"
        " refused with 402 before any upstream call",
        "the demo's resources are suspended at the end (their fake upstreams stop with it),"
        " so nothing later routes to them; their deposit credit stays",
    ]
    emit_report(
        report,
        as_json=as_json,
        console=console,
        err_console=err_console,
        extra={"database": url if db else "temporary (removed)", "seed": seed},
    )
    if not report.ledger_ok:
        raise typer.Exit(1)
