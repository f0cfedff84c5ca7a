"""``modelbank fake-upstream``: serve the OpenAI-compatible fake upstream with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from modelbank.cli.common import cli_errors, fail


def fake_upstream(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 9000,
    latency_ms: Annotated[float, typer.Option(help="Wait before any answer, in ms")] = 0.0,
    ttft_ms: Annotated[float, typer.Option(help="Further wait before a chat's first token")] = 0.0,
    tokens_per_s: Annotated[
        float, typer.Option(help="Streaming pace; 0 = as fast as possible")
    ] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Share of requests that fail, 0–1")] = 0.0,
    error_kind: Annotated[
        str, typer.Option(help="How they fail: 500, 429, timeout, reset or midstream")
    ] = "500",
    seed: Annotated[int, typer.Option(help="Seed of the failure draws")] = 0,
    key: Annotated[
        list[str] | None,
        typer.Option("--key", help="An accepted API key (repeatable; default: any key)"),
    ] = None,
    revoked_key: Annotated[
        list[str] | None,
        typer.Option("--revoked-key", help="A key that always gets 401 (repeatable)"),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="A model served (repeatable; default: any model)"),
    ] = None,
    default_completion_tokens: Annotated[
        int, typer.Option(help="Completion tokens of a chat without max_tokens")
    ] = 16,
    max_completion_tokens: Annotated[
        int, typer.Option(help="Cap on any chat's completion tokens")
    ] = 4096,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Serve an OpenAI-compatible fake upstream (chat with streaming, embeddings, images,
    models) for tests, the demo and benchmarks.

    Usage is deterministic: prompt_tokens = ceil(UTF-8 bytes of the messages' text / 4) + 3
    per message + 3; completion_tokens = max_tokens, or --default-completion-tokens without
    it, capped at --max-completion-tokens. Request headers override settings:
    X-Fake-Latency-Ms, X-Fake-Ttft-Ms, X-Fake-Tokens-Per-S, X-Fake-Error
    (500|429|timeout|reset|midstream|none), X-Fake-Prompt-Tokens, X-Fake-Completion-Tokens,
    X-Fake-Cached-Tokens. GET /_fake/stats counts requests, failures, streams the client
    cancelled and keys (SHA-256 fingerprints only); POST /_fake/reset clears them; POST
    /_fake/config changes settings (JSON).

    Example (slow and flaky, one key): modelbank fake-upstream --port 9001 --latency-ms 50
    --ttft-ms 200 --tokens-per-s 40 --error-rate 0.2 --error-kind 429 --key sk-test-1
    """
    import uvicorn

    from modelbank.gateway.fake_upstream import FakeUpstreamConfig, create_app

    if not 1 <= port <= 65535:
        raise fail(f"--port must be 1…65535, got {port}")
    with cli_errors():
        config = FakeUpstreamConfig(
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            tokens_per_s=tokens_per_s,
            error_rate=error_rate,
            error_kind=error_kind,
            seed=seed,
            api_keys=frozenset(key) if key else None,
            revoked_keys=frozenset(revoked_key or ()),
            models=tuple(model) if model else None,
            default_completion_tokens=default_completion_tokens,
            max_completion_tokens=max_completion_tokens,
        )
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        loop="auto",
        http="auto",
        lifespan="off",
    )


def register(app: typer.Typer) -> None:
    app.command(name="fake-upstream")(fake_upstream)
