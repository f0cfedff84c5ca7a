"""What a gateway call used: read from the upstream's answer, or estimated when a stream
ended before the upstream reported it (DESIGN §9 "capture the actual usage").

Pure: no I/O. OpenAI-compatible upstreams report ``usage`` on a completion
(``prompt_tokens``, ``completion_tokens``, ``prompt_tokens_details.cached_tokens``), on the
last chunk of a stream asked for ``stream_options.include_usage``, and on embeddings; an
image generation is charged per image returned.

**Estimate** (a client that left mid-stream, upstream usage never seen): output tokens =
⌈UTF-8 bytes of the text streamed / 4⌉, input tokens = ⌈request body bytes / 4⌉ (about four
bytes per token for English text with BPE vocabularies; OpenAI's rule of thumb). The usage
row is marked ``usage_estimated``. A stream that produced no text costs nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
"""An SSE event ends at a blank line; lines end in CRLF, LF or CR (the SSE specification)."""
_LINE_END = re.compile(rb"\r\n|\n|\r")

BYTES_PER_TOKEN = 4
"""The estimate's bytes per token (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Counts to charge: tokens (``cached_input_tokens`` ⊆ ``input_tokens``) and ``units``
    (images). ``estimated``: not reported by the upstream."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    units: int = 0
    estimated: bool = False


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def from_report(report: Mapping[str, Any] | None) -> Usage | None:
    """The :class:`Usage` of an OpenAI ``usage`` object (None when absent or not an object).
    Cached tokens are capped at the input tokens; negative or non-integer counts read 0."""
    if not isinstance(report, Mapping):
        return None
    prompt = _count(report.get("prompt_tokens"))
    details = report.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    return Usage(
        input_tokens=prompt,
        output_tokens=_count(report.get("completion_tokens")),
        cached_input_tokens=min(cached, prompt),
    )


def of_images(answer: Mapping[str, Any]) -> Usage:
    """An image generation's usage: one unit per image in ``data``."""
    data = answer.get("data")
    return Usage(units=len(data) if isinstance(data, list) else 0)


def estimate(request_bytes: int, streamed_text_bytes: int) -> Usage:
    """The estimated usage of a stream cut short (module docstring); all zero when nothing
    was streamed."""
    if streamed_text_bytes <= 0:
        return Usage(estimated=True)
    return Usage(
        input_tokens=-(-request_bytes // BYTES_PER_TOKEN),
        output_tokens=-(-streamed_text_bytes // BYTES_PER_TOKEN),
        estimated=True,
    )


def answer_text_bytes(answer: Mapping[str, Any]) -> int:
    """UTF-8 bytes of the text a non-streamed chat answer carries (every choice's message
    content, refusal and tool calls)."""
    total = 0
    for choice in answer.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            total += _text_bytes([{"delta": message}])
    return total


def of_answer(endpoint: str, answer: Mapping[str, Any], request_bytes: int) -> Usage:
    """The usage of a whole (non-streamed) answer: images by count; chat and embeddings as
    the upstream reported, else estimated like a cut stream (chat: from the answer's text;
    embeddings: the request's bytes), marked ``estimated``: an answer is never free for
    lack of a usage report."""
    if endpoint == "images":
        return of_images(answer)
    reported = from_report(answer.get("usage"))
    if reported is not None:
        return reported
    if endpoint == "embeddings":
        return Usage(input_tokens=-(-request_bytes // BYTES_PER_TOKEN), estimated=True)
    return estimate(request_bytes, answer_text_bytes(answer))


@dataclass(slots=True)
class StreamTally:
    """Reads a chat completion's SSE stream event by event: the usage chunk when it comes,
    the bytes of text streamed (for an estimate), whether ``[DONE]`` was seen."""

    usage: Usage | None = None
    text_bytes: int = 0
    done: bool = False
    events: int = 0
    _buffer: bytes = field(default=b"", repr=False)

    def feed(self, chunk: bytes) -> list[tuple[bytes, bool]]:
        """Split ``chunk`` into complete SSE events; for each, ``(event bytes with its blank
        line, is_usage_only)``: a usage-only event is the final chunk with no choices that
        ``include_usage`` asks for. Incomplete trailing bytes wait for the next chunk."""
        self._buffer += chunk
        out: list[tuple[bytes, bool]] = []
        while True:
            end = _EVENT_END.search(self._buffer)
            if end is None:
                return out
            event, self._buffer = self._buffer[: end.end()], self._buffer[end.end() :]
            out.append((event, self._read(event)))

    def rest(self) -> bytes:
        """Bytes left that never formed a complete event."""
        rest, self._buffer = self._buffer, b""
        return rest

    def _read(self, event: bytes) -> bool:
        self.events += 1
        usage_only = False
        for line in _LINE_END.split(event):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                self.done = True
                continue
            try:
                payload = json.loads(data)
            except ValueError:
                continue
            if not isinstance(payload, dict):
                continue
            reported = from_report(payload.get("usage"))
            if reported is not None:
                self.usage = reported
            chunk_choices = payload.get("choices")
            if isinstance(chunk_choices, list):
                self.text_bytes += _text_bytes(chunk_choices)
                usage_only = reported is not None and not chunk_choices
        return usage_only


def _text_bytes(chunk_choices: list[Any]) -> int:
    total = 0
    for choice in chunk_choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        for key in ("content", "reasoning_content", "refusal"):
            text = delta.get(key)
            if isinstance(text, str):
                total += len(text.encode())
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            total += len(json.dumps(calls).encode())
    return total
