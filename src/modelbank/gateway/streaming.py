"""A streamed gateway answer (DESIGN §9): relay the upstream's SSE events and settle the
call's hold once when the stream ends for any reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import anyio
import httpx

from modelbank.gateway import usage
from modelbank.gateway.call import Call, headers
from modelbank.gateway.upstream import OpenStream
from modelbank.gateway.usage import StreamTally, Usage
from modelbank.metering import service as metering
from modelbank.pool.breaker import classify
from modelbank.pool.router import Attempt, Router, RouteResult


class Settles(Protocol):
    """What a stream needs of the gateway: its ``router`` (to report a broken stream) and
    its ``settle`` (:meth:`modelbank.gateway.service.Gateway.settle`)."""

    router: Router

    def settle(
        self,
        call: Call,
        route: RouteResult[Any] | None,
        used: Usage | None,
        outcome: str,
        failures: list[Attempt] | None = None,
    ) -> metering.ChargeResult | None: ...


class StreamReply:
    """A streamed answer: :meth:`events` relays the upstream's SSE events (without the
    usage-only chunk the client did not ask for); :meth:`finish` — called by the HTTP layer
    when the response ends for any reason, client disconnect included — closes the upstream
    (cancelling it) and settles the hold once: the reported usage, else an estimate from the
    text streamed (``usage_estimated``), else nothing."""

    def __init__(self, gateway: Settles, call: Call, route: RouteResult[OpenStream]) -> None:
        self.gateway = gateway
        self.call = call
        self.route = route
        self.tally = StreamTally()
        self.completed = False
        self.broken = False
        self._finished = False
        self.charge: metering.ChargeResult | None = None

    @property
    def headers(self) -> dict[str, str]:
        return headers(self.call, self.route)

    async def events(self) -> AsyncIterator[bytes]:
        """The SSE bytes to send, event by event. The call is settled *before* the last
        event (``data: [DONE]``) is sent, so a client that saw the end of the stream sees
        its charge booked."""
        stream = self.route.value
        for event in self._relay(stream.first):
            yield await self._before_sending(event)
        try:
            async for chunk in stream.rest():
                for event in self._relay(chunk):
                    yield await self._before_sending(event)
        except httpx.HTTPError as exc:
            self.broken = True  # mid-stream: no failover after the first byte
            await self.gateway.router.report(self.route.target.resource_id, classify(error=exc))
            await self.finish()
            return
        self.completed = True
        await self.finish()
        rest = self.tally.rest()
        if rest:
            yield rest

    async def _before_sending(self, event: bytes) -> bytes:
        if self.tally.done and not self._finished and _is_done(event):
            self.completed = True
            await self.finish()
        return event

    def _relay(self, chunk: bytes) -> list[bytes]:
        return [
            event
            for event, usage_only in self.tally.feed(chunk)
            if not usage_only or self.call.client_wants_usage
        ]

    async def finish(self) -> None:
        """Close the upstream and settle (idempotent; shielded from cancellation)."""
        if self._finished:
            return
        self._finished = True
        with anyio.CancelScope(shield=True):
            await self.route.value.close()
            used = self.tally.usage
            if used is None:
                used = usage.estimate(self.call.body_bytes, self.tally.text_bytes)
            outcome = "served" if self.completed else ("broken" if self.broken else "disconnected")
            self.charge = await anyio.to_thread.run_sync(
                self.gateway.settle, self.call, self.route, used, outcome
            )


def _is_done(event: bytes) -> bool:
    return any(line.strip() == b"data: [DONE]" for line in event.split(b"\n"))
