"""What a route is made of (DESIGN §9): the :class:`Target` an attempt goes to, each
:class:`Attempt`'s record, the :class:`RouteResult` of a served request, the router's
refusals (:class:`NoRoute`, :class:`AllAttemptsFailed`) and the ``X-Modelbank-Route`` header.
:mod:`modelbank.pool.router` re-exports all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from modelbank.errors import DomainError
from modelbank.pool.breaker import Outcome, UpstreamFailure
from modelbank.pool.scoring import Scored

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Target:
    """Where one attempt goes. ``api_key`` is the plaintext provider key, in memory only
    (left out of ``repr``): never log, store or return it."""

    resource_id: int
    base_url: str
    api_key: str = field(repr=False)
    upstream_model: str
    provider: str
    owner_id: int | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a request: ``outcome`` and, when it failed, the ``failure``; times
    in milliseconds (``ttft_ms`` for streams). ``probe``: it was the half-open probe."""

    resource_id: int
    outcome: Outcome
    latency_ms: float
    ttft_ms: float | None = None
    failure: UpstreamFailure | None = None
    probe: bool = False

    @property
    def status(self) -> int | None:
        return None if self.failure is None else self.failure.status

    @property
    def kind(self) -> str:
        return "success" if self.failure is None else self.failure.kind

    def as_json(self) -> dict[str, Any]:
        """The route log's shape (no body, no key)."""
        return {
            "resource_id": self.resource_id,
            "outcome": self.outcome.value,
            "kind": self.kind,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 3),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 3),
            "probe": self.probe,
        }


@dataclass(slots=True)
class RouteResult(Generic[T]):
    """A served request: the attempt's ``value``, the ``target`` that served it, every
    ``attempts`` (failed ones first, the success last) and the ranked ``candidates``."""

    value: T
    target: Target
    attempts: list[Attempt]
    candidates: list[Scored]
    request_id: str | None = None


class RouteFailed(DomainError):
    """Base of the router's refusals. Context: ``model_id``; attributes ``attempts`` and
    ``candidates`` for the route log."""

    def __init__(
        self,
        message: str,
        *,
        model_id: int,
        attempts: Sequence[Attempt] = (),
        candidates: Sequence[Scored] = (),
        last: UpstreamFailure | None = None,
    ) -> None:
        super().__init__(message, model_id=model_id, attempts=len(attempts))
        self.attempts = list(attempts)
        self.candidates = list(candidates)
        self.last = last


class NoRoute(RouteFailed):
    """No resource can serve the model now: none active with quota left, or every breaker
    open. Nothing was sent upstream."""

    code = "no_route"


class AllAttemptsFailed(RouteFailed):
    """Every attempt failed (or the attempts or the deadline ran out); ``last`` is the last
    failure. Nothing reached the client."""

    code = "upstream_unavailable"


def route_header(
    result: RouteResult[Any] | RouteFailed | UpstreamFailure, request_id: str | None = None
) -> str:
    """The ``X-Modelbank-Route`` value: ``resource=12; attempts=2; request=<id>`` for a
    served request; for a refused one (:class:`RouteFailed`, or a caller error raised by
    :meth:`Router.route` with its ``attempts``) the resource is ``none`` (nothing served
    it). ``request_id`` defaults to the result's own."""
    if isinstance(result, RouteResult):
        resource: object = result.target.resource_id
        attempts = len(result.attempts)
        request_id = request_id or result.request_id
    else:
        resource = "none"
        attempts = len(getattr(result, "attempts", ()))
    value = f"resource={resource}; attempts={attempts}"
    return value if request_id is None else f"{value}; request={request_id}"


__all__ = [
    "AllAttemptsFailed",
    "Attempt",
    "NoRoute",
    "RouteFailed",
    "RouteResult",
    "Target",
    "route_header",
]
