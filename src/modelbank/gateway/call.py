"""What one gateway request carries from admission to settlement (DESIGN §9): the
endpoints served, the gateway's settings, the admitted :class:`Call`, a whole
:class:`Reply`, and the response headers and route-log entry made from a call."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from modelbank.catalog.service import ModelInfo
from modelbank.gateway import allocated
from modelbank.gateway.estimate import Bound
from modelbank.gateway.usage import Usage
from modelbank.metering import service as metering
from modelbank.pool import routelog
from modelbank.pool.breaker import UpstreamFailure
from modelbank.pool.router import Attempt, RouteResult, Target, route_header
from modelbank.pricing.ratecard import RateCard

ENDPOINTS: dict[str, tuple[str, str]] = {
    "chat": ("/chat/completions", "chat"),
    "embeddings": ("/embeddings", "embedding"),
    "images": ("/images/generations", "image_generation"),
}
"""Gateway endpoint → (upstream path, usage type recorded)."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """``hold_timeout_s``: a pending hold's life (longer than any call, streams included);
    ``output_cap``: output tokens per choice when the caller sets none and the model's own
    limit is unknown."""

    hold_timeout_s: int = 3_600
    output_cap: int = 4_096


@dataclass(slots=True)
class Call:
    """One admitted request: who, which model and price, the bound held, the upstream body
    (its ``model`` replaced per resource) and the request's id."""

    request_id: str
    user_id: int
    model: ModelInfo
    card: RateCard
    endpoint: str
    stream: bool
    client_wants_usage: bool
    body: dict[str, Any]
    body_bytes: int
    bound: Bound
    hold_id: int
    limited_key_id: int | None = None
    """The caller's API key with a spend limit: a wallet hold is reserved on it (an
    allocation's is not)."""
    allocation: allocated.Allocated | None = None
    """Served from this marketplace allocation at provider cost (``hold_id`` is then 0:
    nothing is held on the wallet nor on the key: the order was paid when bought). Set to
    None when the call falls back to the wallet
    (:func:`modelbank.gateway.admission.fall_back`)."""
    started: float = field(default_factory=time.perf_counter)
    failures: list[Attempt] = field(default_factory=list)
    outcome: str = "failed"
    """How the call ended when it was not served (the route log's outcome)."""

    @property
    def path(self) -> str:
        return ENDPOINTS[self.endpoint][0]

    def upstream_body(self, target: Target) -> dict[str, Any]:
        return {**self.body, "model": target.upstream_model}


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole answer for the client: ``status``, JSON ``body``, ``headers``."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def caller_message(failure: UpstreamFailure) -> str:
    """The upstream's own error message for a request it refused (already scrubbed of the
    resource's key), else a generic one."""
    try:
        parsed = json.loads(failure.body or "")
        message = parsed["error"]["message"]
        if isinstance(message, str) and message:
            return message[:1_000]
    except (ValueError, KeyError, TypeError):
        pass
    return f"the upstream refused the request (HTTP {failure.status})"


def failed_header(call: Call) -> str:
    """``X-Modelbank-Route`` of a request no resource served: the last resource tried (none:
    ``-``), the attempts made and the request id."""
    last = call.failures[-1].resource_id if call.failures else "-"
    return f"resource={last}; attempts={len(call.failures)}; request={call.request_id}"


def nothing(used: Usage) -> bool:
    """True when ``used`` reports no tokens and no units (nothing to charge)."""
    return not (used.input_tokens or used.output_tokens or used.units)


def headers(call: Call, route: RouteResult[Any] | None) -> dict[str, str]:
    """The response headers of a call: ``X-Request-Id``, and ``X-Modelbank-Route`` when a
    resource served it."""
    result = {"X-Request-Id": call.request_id}
    if route is not None:
        result["X-Modelbank-Route"] = route_header(route)
    return result


def log_entry(
    call: Call,
    route: RouteResult[Any] | None,
    attempts: list[Attempt],
    outcome: str,
    result: metering.ChargeResult | None,
) -> routelog.RouteLogEntry:
    """The route log's row for a settled call (charge and cost 0 when nothing was charged)."""
    return routelog.RouteLogEntry(
        request_id=call.request_id,
        user_id=call.user_id,
        model_id=call.model.id,
        endpoint=call.endpoint,
        stream=call.stream,
        candidates=[] if route is None else route.candidates,
        attempts=attempts,
        resource_id=None if route is None else route.target.resource_id,
        outcome=outcome,
        hold_id=call.hold_id,
        usage_id=None if result is None else result.usage_id,
        charge_ucr=0 if result is None else result.charge_ucr,
        cost_uusd=0 if result is None else result.cost_uusd,
        latency_ms=(time.perf_counter() - call.started) * 1000,
    )
