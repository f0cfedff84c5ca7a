"""``POST /v1/chat/completions`` of the fake upstream: usage from the request, a JSON answer
or an SSE stream paced by ``ttft_ms`` and ``tokens_per_s``."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from modelbank.gateway.fake_upstream.asgi import (
    SSE,
    BadRequest,
    Receive,
    Request,
    Send,
    chunk,
    pause,
    respond,
    wait_disconnect,
)
from modelbank.gateway.fake_upstream.rules import (
    WORDS,
    chat_prompt_tokens,
    completion_text,
    usage_json,
)

if TYPE_CHECKING:
    from modelbank.gateway.fake_upstream.app import FakeUpstream

# A stream chunk is a per-request prefix (id, created, model) + one of these + "\n\n".
_ROLE = (
    ',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
    '"logprobs":null,"finish_reason":null}]}\n\n'
)
_CONTENT = tuple(
    f',"choices":[{{"index":0,"delta":{{"content":"{word}"}},'
    '"logprobs":null,"finish_reason":null}]}\n\n'
    for word in WORDS
)
_STOP = ',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
_DONE = "data: [DONE]\n\n"


def chat_usage(app: FakeUpstream, request: Request) -> dict[str, Any]:
    """The usage of this chat request (package docstring), with the header overrides.
    Raises BadRequest for missing messages or a non-integer ``max_tokens``."""
    body = request.body
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        raise BadRequest("'max_tokens' must be an integer.")
    completion = request.count("completion-tokens")
    if completion is None:
        config = app.config
        completion = config.default_completion_tokens if limit is None else limit
        completion = max(0, min(completion, config.max_completion_tokens))
    prompt = request.count("prompt-tokens")
    return usage_json(
        chat_prompt_tokens(messages) if prompt is None else prompt,
        completion,
        request.count("cached-tokens"),
    )


async def chat(app: FakeUpstream, request: Request, receive: Receive, send: Send) -> None:
    """Check, draw the failure, wait the latency, then fail, answer or stream."""
    if not await app.open("chat.completions", request, receive, send):
        return
    usage = chat_usage(app, request)
    stream = request.body.get("stream") is True
    kind = app.failure(request, "chat.completions")
    await app.latency(request)
    if kind and not (kind == "midstream" and stream):
        await app.fail(kind, receive, send, sse=stream)
    elif stream:
        await _stream(app, request, usage, receive, send, drop=kind == "midstream")
    else:
        await _complete(app, request, usage, send)


def _timing(app: FakeUpstream, request: Request) -> tuple[float, float]:
    """(seconds to the first token, seconds between tokens) for this request."""
    ttft = request.number("ttft-ms", app.config.ttft_ms) / 1000
    rate = request.number("tokens-per-s", app.config.tokens_per_s)
    return ttft, (1 / rate if rate > 0 else 0.0)


async def _complete(app: FakeUpstream, request: Request, usage: dict[str, Any], send: Send) -> None:
    """A ``chat.completion`` object, sent when the same stream would have ended."""
    tokens = usage["completion_tokens"]
    ttft, gap = _timing(app, request)
    wait = ttft + gap * max(0, tokens - 1)
    if wait > 0:
        await asyncio.sleep(wait)
    message = {"role": "assistant", "content": completion_text(tokens), "refusal": None}
    payload = {
        "id": app.next_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.body["model"],
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage,
        "system_fingerprint": "fp_fake",
    }
    await respond(send, 200, json.dumps(payload).encode())


async def _stream(
    app: FakeUpstream,
    request: Request,
    usage: dict[str, Any],
    receive: Receive,
    send: Send,
    *,
    drop: bool,
) -> None:
    """SSE headers now, then :func:`_emit`, while a task watches for the client leaving;
    counts the stream completed, cancelled (client left) or dropped (``midstream``)."""
    await send({"type": "http.response.start", "status": 200, "headers": SSE})
    watcher = asyncio.ensure_future(wait_disconnect(receive))
    try:
        outcome = await _emit(app, request, usage, send, watcher, drop=drop)
    finally:
        watcher.cancel()
    if outcome == "cancelled":
        app.stats.streams_cancelled += 1
    elif outcome == "completed":
        app.stats.streams_completed += 1
    else:
        app.stats.errors["midstream"] += 1


async def _emit(
    app: FakeUpstream,
    request: Request,
    usage: dict[str, Any],
    send: Send,
    watcher: asyncio.Future[None],
    *,
    drop: bool,
) -> str:
    """The chunks: role + first token at ``ttft``, token ``i`` at ``ttft + i × gap`` (all at
    once when ``gap`` is 0), then the stop chunk, the usage chunk when asked, ``[DONE]``.
    Returns "completed", "cancelled" or "dropped" (half the tokens, then no end)."""
    tokens = usage["completion_tokens"]
    ttft, gap = _timing(app, request)
    model = json.dumps(request.body["model"])
    prefix = (
        f'data: {{"id":"{app.next_id("chatcmpl")}","object":"chat.completion.chunk",'
        f'"created":{int(time.time())},"model":{model},"system_fingerprint":"fp_fake"'
    )
    loop = asyncio.get_running_loop()
    start = loop.time() + ttft
    if await pause(ttft, watcher):
        return "cancelled"
    pending = [prefix + _ROLE]
    for i in range(tokens // 2 if drop else tokens):
        if gap and i > 0:  # send what is due, then wait for token i's time
            await send(chunk(pending))
            if await pause(start + i * gap - loop.time(), watcher):
                return "cancelled"
        pending.append(prefix + _CONTENT[i % len(_CONTENT)])
    if drop:
        await send(chunk(pending))
        return "dropped"
    pending.append(prefix + _STOP)
    options = request.body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        pending.append(f'{prefix},"choices":[],"usage":{json.dumps(usage)}}}\n\n')
    pending.append(_DONE)
    await send({"type": "http.response.body", "body": "".join(pending).encode()})
    return "completed"
