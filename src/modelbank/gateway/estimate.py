"""The hold of a gateway request: an upper bound of what it can cost, before any upstream
call (DESIGN §9 "hold the maximum cost").

Pure: no I/O. Bounds, per request:

* **prompt tokens** ≤ the request body's UTF-8 byte length: a BPE token covers at least one
  byte of text, and the JSON framing of each message (``{"role":"user","content":""}``, ≥ 28
  bytes) outweighs the few template tokens a chat format adds per message. Each image part
  of a message (``image_url``) may cost more tokens than its URL has bytes, so it adds
  :data:`IMAGE_PART_TOKENS`;
* **output tokens** ≤ ``max_completion_tokens`` / ``max_tokens`` × ``n`` choices; when the
  caller sets neither, the gateway sets ``max_tokens`` itself to what the balance covers,
  capped at the model's output limit, and tells the upstream (:func:`affordable_output`);
* **images**: the per-image price × ``n``.

The hold is priced with the model's rate card (:mod:`modelbank.pricing.ratecard`), every
input token at the dearer of the fresh and cached rates, so it is never below the charge of
any usage within the bounds (``tests/gateway/test_estimate.py`` proves it over random cards).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelbank.pricing.ratecard import RateCard

IMAGE_PART_TOKENS = 2_000
"""Tokens bounded per ``image_url`` content part (OpenAI's high-detail tiles cost up to ~1,100
tokens per image; other vision models a little more)."""


@dataclass(frozen=True, slots=True)
class Bound:
    """An upper bound of a request's usage: ``input_tokens``, ``output_tokens`` (all choices),
    ``units`` (images), the ``hold_ucr`` it prices to, and ``max_tokens`` when the gateway
    chose the output limit itself (to send upstream; None: the caller's stands)."""

    input_tokens: int
    output_tokens: int
    units: int
    hold_ucr: int
    max_tokens: int | None = None


def image_parts(body: Mapping[str, Any]) -> int:
    """How many ``image_url`` content parts the chat request's messages carry."""
    count = 0
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            count += sum(
                1 for part in content if isinstance(part, dict) and part.get("type") == "image_url"
            )
    return count


def prompt_bound(body_bytes: int, body: Mapping[str, Any]) -> int:
    """Upper bound of a chat or embeddings request's input tokens: its body's byte length plus
    :data:`IMAGE_PART_TOKENS` per image part."""
    return body_bytes + IMAGE_PART_TOKENS * image_parts(body)


def requested_output(body: Mapping[str, Any]) -> int | None:
    """The caller's output limit per choice (``max_completion_tokens``, else ``max_tokens``);
    None when it set none."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value is not None:
            return value
    return None


def choices(body: Mapping[str, Any]) -> int:
    """``n``, the number of choices (1 when absent)."""
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def affordable_output(card: RateCard, input_tokens: int, available_ucr: int, cap: int) -> int:
    """The most output tokens (≤ ``cap``) whose charge, with ``input_tokens`` fresh input
    tokens, fits in ``available_ucr`` µcr (0 when not even the input fits). Exact: the
    largest ``k`` with ``card.charge_ucr(input, 0, k, 0) ≤ available``."""
    if card.charge_ucr(input_tokens, 0, 0, 0) > available_ucr:
        return 0
    charge = card.charge
    if charge.output <= 0:
        return cap
    # charge_ucr rounds half-even: ≤ available whenever numerator ≤ (available + ½) × den.
    room = (2 * available_ucr + 1) * charge.den - 2 * charge.numerator(input_tokens, 0, 0, 0)
    k = min(cap, max(0, room // (2 * charge.output)))
    while k > 0 and card.charge_ucr(input_tokens, 0, k, 0) > available_ucr:
        k -= 1
    while k < cap and card.charge_ucr(input_tokens, 0, k + 1, 0) <= available_ucr:
        k += 1
    return k


def chat_bound(
    card: RateCard,
    body: Mapping[str, Any],
    body_bytes: int,
    *,
    available_ucr: int,
    output_cap: int,
) -> Bound:
    """The hold of a chat completion (see the module docstring). ``available_ucr``: the
    wallet's available balance, used only when the caller set no output limit;
    ``output_cap``: the model's output limit (tokens per choice)."""
    prompt = prompt_bound(body_bytes, body)
    n = choices(body)
    asked = requested_output(body)
    chosen: int | None = None
    if asked is None:
        per_choice = affordable_output(card, prompt, available_ucr, output_cap * n) // n
        chosen = per_choice
        asked = per_choice
    output = asked * n
    return Bound(prompt, output, 0, _input_bound(card, prompt, output), chosen)


def _input_bound(card: RateCard, prompt: int, output: int) -> int:
    """The charge with every input token at the dearer of the fresh and cached rates."""
    return max(card.charge_ucr(prompt, 0, output, 0), card.charge_ucr(0, prompt, output, 0))


def embeddings_bound(card: RateCard, body: Mapping[str, Any], body_bytes: int) -> Bound:
    """The hold of an embeddings request: its input tokens bounded by the body's bytes."""
    prompt = prompt_bound(body_bytes, body)
    return Bound(prompt, 0, 0, _input_bound(card, prompt, 0))


def images_bound(card: RateCard, body: Mapping[str, Any]) -> Bound:
    """The hold of an image generation: the per-image price × ``n``."""
    n = choices(body)
    return Bound(0, 0, n, card.charge_ucr(0, 0, 0, n))
