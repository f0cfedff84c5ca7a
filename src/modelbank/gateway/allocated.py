"""Gateway calls served from a marketplace allocation (DESIGN §10): a buyer who bought quota
on a resource has their calls to that resource's models served from it first, **at provider
cost** (no markup, no wallet debit, no usage charge).

* **admit**: the call's bound (:mod:`~modelbank.gateway.estimate`, priced with the model's
  *cost* card, every input token at the dearer of the fresh and cached rates) is held against
  the allocation in µUSD (:func:`modelbank.marketplace.allocations.reserve`), keyed by the
  request id. A call whose bound exceeds what the allocation has free goes the normal way
  (a wallet hold, the pool, the platform's price).
* **route**: to the allocation's resource alone (the router's ``only_resource``). When it
  cannot serve (its breaker open, as the shared health store says; or a connect error,
  timeout, 429 or 5xx before the first byte), the allocation hold is voided (the
  allocation pays nothing for the failed attempt) and the call goes the normal way
  (:func:`modelbank.gateway.admission.fall_back`: a wallet hold, the pool without the
  resources that failed, the platform's price), failing as usual when that cannot serve
  either. A caller error (400…) fails the call at once, as on the pool.
* **settle**: the upstream's reported usage is costed with the cost card and booked on the
  allocation (capped at what it has left), releasing escrow to the seller 85/15 in
  proportion (:func:`modelbank.marketplace.allocations.settle`); nothing reported voids the
  allocation hold. The pool part's ``consumed_uusd`` is not touched: the spend is the market
  part's, sold once. The call is recorded as a *prepaid* usage event
  (:mod:`modelbank.gateway.settlement`): 0 µcr charged, its provider cost, no creator
  earnings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from modelbank.gateway import estimate
from modelbank.gateway.estimate import Bound
from modelbank.gateway.usage import Usage
from modelbank.marketplace import allocations
from modelbank.pricing.ratecard import RateCard

UNLIMITED_UCR = 10**15
"""The wallet balance :func:`estimate.chat_bound` is told when it picks ``max_tokens`` for an
allocation call: the output limit is then the model's (or the gateway's cap), and the
allocation's free µUSD decides whether the call is served from it."""


@dataclass(frozen=True, slots=True)
class Allocated:
    """A call admitted on an allocation: its id, resource, the bound and µUSD held."""

    allocation_id: int
    resource_id: int
    bound: Bound
    held_uusd: int


def cost_bound_uusd(card: RateCard, bound: Bound) -> int:
    """µUSD of provider cost of the worst usage within ``bound`` (≥ 1)."""
    fresh = card.quote_counts(bound.input_tokens, 0, bound.output_tokens, bound.units).cost_uusd
    cached = card.quote_counts(0, bound.input_tokens, bound.output_tokens, bound.units).cost_uusd
    return max(fresh, cached, 1)


def admit(
    session: Session,
    *,
    user_id: int,
    model_id: int,
    card: RateCard,
    endpoint: str,
    body: Mapping[str, Any],
    body_bytes: int,
    request_id: str,
    output_cap: int,
    timeout_s: int,
    now: datetime,
) -> Allocated | None:
    """Hold the call's cost bound on the user's allocation serving ``model_id``; None when
    there is none or it has too little free (the caller then holds on the wallet)."""
    target = allocations.find(session, user_id, model_id, now=now)
    if target is None:
        return None
    if endpoint == "embeddings":
        bound = estimate.embeddings_bound(card, body, body_bytes)
    elif endpoint == "images":
        bound = estimate.images_bound(card, body)
    else:
        bound = estimate.chat_bound(
            card, body, body_bytes, available_ucr=UNLIMITED_UCR, output_cap=output_cap
        )
    held = cost_bound_uusd(card, bound)
    if held > target.free_uusd:
        return None
    if not allocations.reserve(
        session, target.allocation_id, request_id, model_id, held, timeout_s=timeout_s, now=now
    ):
        return None
    return Allocated(target.allocation_id, target.resource_id, bound, held)


def release(session: Session, request_id: str, *, now: datetime) -> None:
    """Void the call's allocation hold (its allocation could not serve it)."""
    allocations.void(session, request_id, now=now)


def settle(
    session: Session, request_id: str, card: RateCard, used: Usage | None, *, now: datetime
) -> int:
    """Book the call's provider cost on its allocation (None: void the hold); return the
    µUSD booked."""
    if used is None:
        allocations.void(session, request_id, now=now)
        return 0
    fresh = used.input_tokens - used.cached_input_tokens
    cost = card.quote_counts(
        fresh, used.cached_input_tokens, used.output_tokens, used.units
    ).cost_uusd
    result = allocations.settle(
        session,
        request_id,
        cost,
        input_tokens=used.input_tokens,
        output_tokens=used.output_tokens,
        now=now,
    )
    return 0 if result is None else result.cost_uusd
