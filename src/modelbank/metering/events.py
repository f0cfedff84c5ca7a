"""Usage events (DESIGN §6): what a caller asks to charge, what it gets back, the
validation every event passes and the request hash its idempotency key is bound to.

Pure: no database. The pipeline (:mod:`modelbank.metering.pipeline`) validates each event
with :func:`validate`, fingerprints it with :func:`request_hash` and answers with a
:class:`ChargeResult` per event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from modelbank.metering.errors import InvalidUsage

MAX_BATCH_EVENTS = 1_000
"""Events per batch: keeps one transaction's lock time and memory bounded (and the
``IN (…)`` lists under every backend's parameter limit)."""
MAX_KEY_LENGTH = 224
"""An event's stored idempotency key: a caller's 200 characters plus the ``u<user id>:``
prefix the API adds for user keys (at most 21 more); the column holds 256."""
METADATA_TEXT_LIMIT = 100
"""DESIGN §6: prompts and other strings in metadata are truncated to 100 characters."""
METADATA_MAX_KEYS = 64
"""Keys in an event's metadata, counted at every depth: a label set, not a document."""
METADATA_MAX_KEY_LENGTH = 64
"""Characters of one metadata key (values are truncated; keys are refused: a key is a name)."""
METADATA_MAX_DEPTH = 4
"""Nesting of objects and lists in metadata (the top object is depth 1)."""
METADATA_MAX_BYTES = 16 * 1024
"""Size of the metadata as compact JSON, before truncation: ~100 µs to check, and a row's
metadata stays far below a page even before the 100-character cut."""


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One model call to charge. Tokens and units are counts ≥ 0; ``cached_input_tokens`` is
    the part of ``input_tokens`` read from the provider's prompt cache. ``occurred_at`` None
    means now (and is then not part of the idempotency fingerprint)."""

    idempotency_key: str
    user_id: int
    model: int | str
    usage_type: str = "chat"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    units: int = 0
    occurred_at: datetime | None = None
    metadata: Mapping[str, Any] | None = None
    charge_ucr: int | None = None
    """A fixed charge (µcr) instead of the price sheet's: a captured hold's amount."""
    hold_id: int | None = None
    """The pending hold this charge captures: it is posted for the charge and the rest is
    released (the wallet's available balance includes the held amount for it)."""
    limited_key_id: int | None = None
    """The API key with a spend limit this charge counts against (None: no key limit, and
    no statement is run for it). With ``hold_id``: the key the hold was reserved on. Not
    part of the request hash: who sends an event does not change what it is."""
    prepaid: bool = False
    """The use was paid for outside the wallet (a gateway call served from a marketplace
    allocation, DESIGN §10): recorded with its provider cost, charged 0 µcr (no wallet
    transfer, no grant burned) and earning the model's creators nothing
    (:attr:`~modelbank.earnings.payer.NoEarnings.PREPAID`); it counts as a use in the
    model's aggregates and the rollups. Takes no ``charge_ucr`` (other than 0) nor
    ``hold_id``."""


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """What happened to one event. ``status``: ``charged``, ``replayed`` (the key was seen
    with the same body: the first result again) or ``rejected`` (``error_code`` says why;
    nothing was written). Amounts in µcr, cost in µUSD; ``balance_ucr`` is the wallet's posted
    balance right after this charge."""

    idempotency_key: str
    status: str
    usage_id: int | None = None
    model_id: int | None = None
    charge_ucr: int = 0
    cost_uusd: int = 0
    earnings: tuple[tuple[int, int], ...] = ()
    balance_ucr: int | None = None
    price_version_id: int | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def earnings_ucr(self) -> int:
        """Total creator earnings paid for this event (µcr)."""
        return sum(amount for _, amount in self.earnings)


def request_hash(event: UsageEvent) -> str:
    """SHA-256 of the event's canonical body (everything but the key), hex."""
    user_id, model, usage_type = event.user_id, event.model, event.usage_type
    if (
        not event.metadata
        and event.charge_ucr is None
        and event.hold_id is None
        and not event.prepaid
        and type(user_id) is int
        and type(usage_type) is str
        and (type(model) is int or type(model) is str)
        and type(event.input_tokens) is int
        and type(event.output_tokens) is int
        and type(event.cached_input_tokens) is int
        and type(event.units) is int
    ):
        # The common case, rendered directly: the same text as _canonical_body, without
        # building a dict and running the generic encoder for each event.
        occurred = event.occurred_at
        canonical = (
            f'{{"cached_input_tokens":{event.cached_input_tokens},'
            f'"input_tokens":{event.input_tokens},"metadata":null,'
            f'"model":{model if isinstance(model, int) else _json_str(model)},'
            f'"occurred_at":{"null" if occurred is None else _json_str(occurred.isoformat())},'
            f'"output_tokens":{event.output_tokens},"units":{event.units},'
            f'"usage_type":{_json_str(usage_type)},"user_id":{user_id}}}'
        )
    else:
        canonical = _canonical_body(event)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical_body(event: UsageEvent) -> str:
    """The body :func:`request_hash` hashes: sorted-key compact JSON, strings escaped to
    ASCII. Stored hashes depend on this text: never change it."""
    body = {
        "user_id": event.user_id,
        "model": event.model,
        "usage_type": event.usage_type,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "cached_input_tokens": event.cached_input_tokens,
        "units": event.units,
        "occurred_at": event.occurred_at.isoformat() if event.occurred_at else None,
        "metadata": clean_metadata(event.metadata),
    }
    # Added only when set, so that the hashes of ordinary events stay as they were.
    if event.charge_ucr is not None:
        body["charge_ucr"] = event.charge_ucr
    if event.hold_id is not None:
        body["hold_id"] = event.hold_id
    if event.prepaid:
        body["prepaid"] = True
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


_json_str = json.encoder.encode_basestring_ascii
"""A str as JSON text, exactly as ``json.dumps`` writes it (ensure_ascii)."""


def validate(event: UsageEvent) -> None:
    """Raise :class:`InvalidUsage` for a bad key, negative counts, cached > input, an
    empty usage type or a naive ``occurred_at``."""
    if not event.idempotency_key or len(event.idempotency_key) > MAX_KEY_LENGTH:
        raise InvalidUsage(f"idempotency_key must be 1–{MAX_KEY_LENGTH} characters")
    for name in ("input_tokens", "output_tokens", "cached_input_tokens", "units"):
        value = getattr(event, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidUsage(f"{name} must be an integer ≥ 0, got {value!r}")
    if event.cached_input_tokens > event.input_tokens:
        raise InvalidUsage("cached_input_tokens cannot exceed input_tokens")
    if not event.usage_type or len(event.usage_type) > 32:
        raise InvalidUsage("usage_type must be 1–32 characters")
    if event.occurred_at is not None and event.occurred_at.tzinfo is None:
        raise InvalidUsage("occurred_at must carry a time zone")
    if event.metadata:
        problem = metadata_problem(event.metadata)
        if problem is not None:
            raise InvalidUsage(problem)
    fixed = event.charge_ucr
    if fixed is not None and (not isinstance(fixed, int) or isinstance(fixed, bool) or fixed < 0):
        raise InvalidUsage(f"charge_ucr must be an integer ≥ 0, got {fixed!r}")
    if event.prepaid and (fixed or event.hold_id is not None):
        raise InvalidUsage("a prepaid event is charged nothing: no charge_ucr, no hold_id")


def metadata_problem(metadata: Mapping[str, Any]) -> str | None:
    """Why ``metadata`` is out of bounds (:data:`METADATA_MAX_KEYS` keys at all depths, keys
    of at most :data:`METADATA_MAX_KEY_LENGTH` characters, :data:`METADATA_MAX_DEPTH` levels,
    :data:`METADATA_MAX_BYTES` bytes of compact JSON), or None when it is within them.
    Stored values are truncated afterwards (:func:`clean_metadata`); keys never are."""
    keys = 0
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > METADATA_MAX_DEPTH:
            return f"metadata is nested deeper than {METADATA_MAX_DEPTH} levels"
        if isinstance(value, Mapping):
            keys += len(value)
            if keys > METADATA_MAX_KEYS:
                return f"metadata has more than {METADATA_MAX_KEYS} keys"
            for key, item in value.items():
                if len(str(key)) > METADATA_MAX_KEY_LENGTH:
                    return f"a metadata key is longer than {METADATA_MAX_KEY_LENGTH} characters"
                if isinstance(item, Mapping | list | tuple):
                    stack.append((item, depth + 1))
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, Mapping | list | tuple):
                    stack.append((item, depth + 1))
    try:
        size = len(json.dumps(metadata, separators=(",", ":"), default=str).encode())
    except (TypeError, ValueError):
        return "metadata must be JSON"
    if size > METADATA_MAX_BYTES:
        return f"metadata is larger than {METADATA_MAX_BYTES} bytes as JSON"
    return None


def clean_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Truncate strings to 100 characters (DESIGN §6); drop keys that look like secrets."""
    if not metadata:
        return None
    cleaned: dict[str, Any] = {}
    for key, value in metadata.items():
        lowered = str(key).lower()
        if any(word in lowered for word in ("key", "secret", "token", "password")):
            continue
        if isinstance(value, str):
            value = value[:METADATA_TEXT_LIMIT]
        elif not isinstance(value, int | bool | Decimal | None):
            value = str(value)[:METADATA_TEXT_LIMIT]
        cleaned[str(key)] = str(value) if isinstance(value, Decimal) else value
    return cleaned or None


def rejected(event: UsageEvent, code: str, message: str) -> ChargeResult:
    """The ``rejected`` result of ``event`` (nothing was written)."""
    return ChargeResult(
        idempotency_key=event.idempotency_key,
        status="rejected",
        error_code=code,
        error_message=message,
    )


def as_replay(first: ChargeResult) -> ChargeResult:
    """``first`` answered again to a retry with the same key and body."""
    return ChargeResult(
        idempotency_key=first.idempotency_key,
        status="replayed",
        usage_id=first.usage_id,
        model_id=first.model_id,
        charge_ucr=first.charge_ucr,
        cost_uusd=first.cost_uusd,
        earnings=first.earnings,
        balance_ucr=first.balance_ucr,
        price_version_id=first.price_version_id,
    )
