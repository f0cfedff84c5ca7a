"""The gateway's flow for one request (DESIGN §9): **hold** the maximum cost → **route** to a
pool resource with failover → **capture** the reported usage through the normal charge
pipeline, or **void** the hold when no upstream answered.

* A call admitted on a marketplace allocation is routed to the allocation's resource alone;
  when that cannot serve it before the first byte it goes the normal way (the allocation
  hold voided, a wallet hold placed: :func:`modelbank.gateway.admission.fall_back`), one
  route log row for both.
* One hold per request, placed before the retry loop, keyed ``gw:<request id>``; the capture
  is the usage event ``hold:<hold id>`` (:mod:`modelbank.metering.capture`'s key), so no step
  applies twice. No caller skips the hold.
* Database work runs on worker threads (``anyio.to_thread``), each step one short
  transaction: admit (price, bound, hold), settle (capture or void, provider cost booked on the
  resource's quota, usage row linked to the resource, route log), all or nothing.
* A process that dies between hold and settle leaves a pending hold that expires
  (``hold_timeout_s``, jobs): the user pays nothing for a call never settled.

This module is the facade; the steps live beside it: :mod:`~modelbank.gateway.call` (what a
request carries), :mod:`~modelbank.gateway.admission` (price and hold),
:mod:`~modelbank.gateway.settlement` (capture or void, route log) and
:mod:`~modelbank.gateway.streaming` (the streamed reply).
"""

from __future__ import annotations

from typing import Any

import anyio
from sqlalchemy.orm import Session, sessionmaker

from modelbank.gateway import admission, settlement, usage
from modelbank.gateway.call import (
    ENDPOINTS,
    Call,
    GatewaySettings,
    Reply,
    caller_message,
    failed_header,
    headers,
)
from modelbank.gateway.errors import UpstreamRejected
from modelbank.gateway.streaming import StreamReply
from modelbank.gateway.upstream import Answer, OpenStream, Upstream
from modelbank.gateway.usage import Usage
from modelbank.metering import service as metering
from modelbank.pool.breaker import UpstreamFailure
from modelbank.pool.router import (
    AllAttemptsFailed,
    Attempt,
    NoRoute,
    RouteFailed,
    Router,
    RouteResult,
    Target,
)

__all__ = ["ENDPOINTS", "Call", "Gateway", "GatewaySettings", "Reply", "StreamReply"]


class Gateway:
    """Holds, routes and captures gateway requests. ``writes``: the write session factory;
    ``router``: the pool's router; ``upstream``: the HTTP client."""

    def __init__(
        self,
        writes: sessionmaker[Session],
        router: Router,
        upstream: Upstream,
        settings: GatewaySettings | None = None,
    ) -> None:
        self.writes = writes
        self.router = router
        self.upstream = upstream
        self.settings = settings or GatewaySettings()

    # -- steps on worker threads -------------------------------------------------------

    def admit(
        self,
        user_id: int,
        endpoint: str,
        body: dict[str, Any],
        body_bytes: int,
        limited_key_id: int | None = None,
    ) -> Call:
        """Price the request and hold its upper bound: :func:`modelbank.gateway.admission.admit`
        (what it raises, nothing held)."""
        return admission.admit(
            self.writes, self.settings, user_id, endpoint, body, body_bytes, limited_key_id
        )

    def settle(
        self,
        call: Call,
        route: RouteResult[Any] | None,
        used: Usage | None,
        outcome: str,
        failures: list[Attempt] | None = None,
    ) -> metering.ChargeResult | None:
        """Capture or void the call's hold and write the route log:
        :func:`modelbank.gateway.settlement.settle` (the charge, None when voided)."""
        return settlement.settle(self.writes, call, route, used, outcome, failures)

    # -- the request ---------------------------------------------------------------------

    async def handle(
        self,
        user_id: int,
        endpoint: str,
        body: dict[str, Any],
        body_bytes: int,
        limited_key_id: int | None = None,
    ) -> Reply | StreamReply:
        """Serve one request: a :class:`Reply` (non-streamed) or a :class:`StreamReply`;
        ``limited_key_id``: the caller's key when it has a spend limit (the hold and the
        charge count against it). Raises what :meth:`admit` raises (nothing held),
        :class:`~modelbank.pool.router.NoRoute`,
        :class:`~modelbank.pool.router.AllAttemptsFailed`, :class:`UpstreamRejected` (the
        hold voided, the user paid nothing)."""
        call = await anyio.to_thread.run_sync(
            self.admit, user_id, endpoint, body, body_bytes, limited_key_id
        )
        settled = False
        try:
            if call.stream:
                route = await self._route(call, self._open_stream)
                settled = True  # from here the stream reply settles it
                return StreamReply(self, call, route)
            answer_route = await self._route(call, self._call_whole)
            answer = answer_route.value
            used = usage.of_answer(endpoint, answer.body, body_bytes)
            settled = True
            await anyio.to_thread.run_sync(self.settle, call, answer_route, used, "served")
            return Reply(200, answer.body, headers(call, answer_route))
        finally:
            if not settled:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._settle_failed, call)

    async def _call_whole(self, call: Call, target: Target) -> Answer:
        return await self.upstream.call(target, call.path, call.upstream_body(target))

    async def _open_stream(self, call: Call, target: Target) -> OpenStream:
        return await self.upstream.open_stream(target, call.path, call.upstream_body(target))

    async def _route(self, call: Call, attempt: Any) -> RouteResult[Any]:
        """Route ``call`` with ``attempt``: on its allocation's resource first when it has
        one, the normal way when that cannot serve (:meth:`_off_allocation`)."""

        async def one(target: Target) -> Any:
            return await attempt(call, target)

        earlier: list[Attempt] = []
        try:
            if call.allocation is not None:
                try:
                    return await self.router.route(
                        call.model.id,
                        one,
                        request_id=call.request_id,
                        only_resource=call.allocation.resource_id,
                    )
                except RouteFailed as exc:
                    earlier = list(exc.attempts)
                    await self._off_allocation(call, earlier)
            route = await self.router.route(
                call.model.id,
                one,
                request_id=call.request_id,
                exclude={a.resource_id for a in earlier},
            )
        except RouteFailed as exc:
            call.failures = [*earlier, *exc.attempts]
            if earlier and isinstance(exc, NoRoute):  # nothing else to try: it failed
                failed = AllAttemptsFailed(
                    f"no upstream served model {call.model.id}: {len(call.failures)} attempt(s)",
                    model_id=call.model.id,
                    attempts=call.failures,
                    last=call.failures[-1].failure,
                )
                failed.route_header = failed_header(call)  # type: ignore[attr-defined]
                call.outcome = "failed"
                raise failed from exc
            call.outcome = "no_route" if exc.code == "no_route" else "failed"
            exc.route_header = failed_header(call)  # type: ignore[attr-defined]
            raise
        except UpstreamFailure as exc:  # the caller's own error: no failover, not counted
            call.failures = [*earlier, *getattr(exc, "attempts", [])]
            call.outcome = "rejected"
            rejected = UpstreamRejected(
                caller_message(exc), status=exc.status or 400, upstream_code=exc.kind
            )
            rejected.route_header = failed_header(call)  # type: ignore[attr-defined]
            raise rejected from exc
        route.attempts = [*earlier, *route.attempts]
        return route

    async def _off_allocation(self, call: Call, earlier: list[Attempt]) -> None:
        """The allocation's resource could not serve ``call`` (``earlier``: its attempts):
        void the allocation hold and hold on the wallet instead
        (:func:`modelbank.gateway.admission.fall_back`). When the wallet refuses, the call
        ends with that refusal (402…), settled as failed on the allocation."""
        call.failures, call.outcome = list(earlier), "failed"
        await anyio.to_thread.run_sync(admission.fall_back, self.writes, self.settings, call)
        call.failures = []

    def _settle_failed(self, call: Call) -> None:
        self.settle(call, None, None, call.outcome, call.failures)
