"""The gateway's flow for one request (DESIGN §9): **hold** the maximum cost → **route** to a
pool resource with failover → **capture** the reported usage through the normal charge
pipeline, or **void** the hold when no upstream answered.

* One hold per request, placed before the retry loop, keyed ``gw:<request id>``; the capture
  is the usage event ``hold:<hold id>`` (:mod:`modelbank.metering.capture`'s key), so no step
  applies twice. No caller skips the hold.
* Database work runs on worker threads (``anyio.to_thread``), each step one short
  transaction: admit (price, bound, hold), settle (capture or void, provider cost booked on the
  resource's quota, usage row linked to the resource, route log), all or nothing.
* A process that dies between hold and settle leaves a pending hold that expires
  (``hold_timeout_s``, jobs): the user pays nothing for a call never settled.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import anyio
import httpx
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from modelbank.auth import limits as key_limits
from modelbank.catalog import access
from modelbank.catalog.errors import ModelNotFound
from modelbank.catalog.service import ModelInfo
from modelbank.db.base import utcnow
from modelbank.errors import DomainError, InvalidInput
from modelbank.gateway import allocated, estimate, usage
from modelbank.gateway.errors import UpstreamRejected
from modelbank.gateway.estimate import Bound
from modelbank.gateway.upstream import Answer, OpenStream, Upstream
from modelbank.gateway.usage import StreamTally, Usage
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.ledger.errors import InsufficientFunds
from modelbank.metering import reference
from modelbank.metering import service as metering
from modelbank.metering.models import usage_events_table
from modelbank.pool import routelog
from modelbank.pool import service as pool
from modelbank.pool.breaker import UpstreamFailure, classify
from modelbank.pool.router import Attempt, RouteFailed, Router, RouteResult, Target, route_header
from modelbank.pricing.errors import NoPrice
from modelbank.pricing.ratecard import RateCard
from modelbank.wallets import holds

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
    """The caller's API key with a spend limit: the hold is reserved on it."""
    allocation: allocated.Allocated | None = None
    """Served from this marketplace allocation at provider cost (``hold_id`` is then 0:
    nothing is held on the wallet nor on the key: the order was paid when bought)."""
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
        """Price the request and hold its upper bound, in one transaction: on the user's
        marketplace allocation serving the model when they have one with room
        (:mod:`~modelbank.gateway.allocated`: provider cost, no wallet hold, no key limit
        spent), else on the wallet; with ``limited_key_id`` (the caller's key has a spend
        limit) a wallet hold is reserved on the key too. Raises
        :class:`~modelbank.catalog.errors.ModelNotFound`,
        :class:`~modelbank.catalog.errors.AccessRequired`,
        :class:`~modelbank.pricing.errors.NoPrice`, :class:`InvalidInput`,
        :class:`~modelbank.ledger.errors.InsufficientFunds`,
        :class:`~modelbank.auth.errors.KeyLimitReached` (nothing held)."""
        request_id = uuid.uuid4().hex
        slug = body.get("model")
        if not isinstance(slug, str) or not slug:
            raise InvalidInput("model is required")
        # Everything that can refuse the request is checked before the hold: nothing may
        # raise between the hold's commit and the Call that settles it.
        stream = body.get("stream") is True
        if stream and endpoint != "chat":
            raise InvalidInput(f"stream is not supported on {endpoint}", param="stream")
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise InvalidInput("stream_options must be an object", param="stream_options")
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        upstream_body = dict(body)
        if stream:
            upstream_body["stream_options"] = {**(options or {}), "include_usage": True}
        with self.writes() as session, session.begin():
            now = utcnow()
            info, card = _price(session, slug, now)
            access.require_access(session, user_id, info)
            bought = allocated.admit(
                session,
                user_id=user_id,
                model_id=info.id,
                card=card,
                endpoint=endpoint,
                body=body,
                body_bytes=body_bytes,
                request_id=request_id,
                output_cap=self.settings.output_cap,
                timeout_s=self.settings.hold_timeout_s,
                now=now,
            )
            hold_id = 0
            if bought is not None:
                bound = bought.bound
            else:
                key = None
                if limited_key_id is not None:
                    key = key_limits.state(session.connection(), limited_key_id, now)
                bound = self._bound(session, user_id, endpoint, card, body, body_bytes, key)
                if bound.max_tokens == 0:
                    needed = card.charge_ucr(bound.input_tokens, 0, 1, 0)
                    if key is not None and limited_key_id is not None and key.left_ucr < needed:
                        raise key_limits.limit_reached(key, limited_key_id, needed)
                    raise _short_of_funds(user_id, card, bound)
                hold_id = holds.place(
                    session,
                    user_id,
                    max(bound.hold_ucr, 1),
                    timeout_s=self.settings.hold_timeout_s,
                    idempotency_key=f"gw:{request_id}",
                    model=info.id,
                    now=now,
                    limited_key_id=limited_key_id,
                ).id
        if bound.max_tokens is not None:
            upstream_body["max_tokens"] = bound.max_tokens
        return Call(
            request_id=request_id,
            user_id=user_id,
            model=info,
            card=card,
            endpoint=endpoint,
            stream=stream,
            client_wants_usage=wants_usage,
            body=upstream_body,
            body_bytes=body_bytes,
            bound=bound,
            hold_id=hold_id,
            limited_key_id=None if bought is not None else limited_key_id,
            allocation=bought,
        )

    def _bound(
        self,
        session: Session,
        user_id: int,
        endpoint: str,
        card: RateCard,
        body: Mapping[str, Any],
        body_bytes: int,
        key: key_limits.KeyUsage | None = None,
    ) -> Bound:
        """The request's upper bound. A chat without ``max_tokens`` gets as many as the
        wallet's available balance covers, and the key's limit left (``key``) too."""
        if endpoint == "embeddings":
            return estimate.embeddings_bound(card, body, body_bytes)
        if endpoint == "images":
            return estimate.images_bound(card, body)
        available = 0
        if estimate.requested_output(body) is None:
            wallet = ledger.lock_user_accounts(session, [user_id], AccountCode.USER_WALLET)
            available = wallet[user_id].available if user_id in wallet else 0
            if key is not None:
                available = min(available, key.left_ucr)
        return estimate.chat_bound(
            card, body, body_bytes, available_ucr=available, output_cap=self.settings.output_cap
        )

    def settle(
        self,
        call: Call,
        route: RouteResult[Any] | None,
        used: Usage | None,
        outcome: str,
        failures: list[Attempt] | None = None,
    ) -> metering.ChargeResult | None:
        """Capture ``used`` on the call's hold (None: void it), book the provider cost on the
        serving resource's quota, link the usage row to it, mark resources whose key was
        refused as failed, and write the route log — one transaction. Returns the charge
        (None when voided). A capture refused by the pipeline (the hold expired during a very
        long call) is logged as ``unbilled``, never raised: the answer was already sent."""
        attempts = route.attempts if route is not None else (failures or [])
        self._fail_refused_keys(attempts)
        if call.allocation is not None:
            self._settle_allocated(call, route, used, outcome, attempts)
            return None
        with self.writes() as session, session.begin():
            now = utcnow()
            result = None
            if used is None or _nothing(used):
                self._release(session, call, now)
            else:
                try:
                    with session.begin_nested():
                        result = self._capture(session, call, route, used, now)
                except DomainError:  # the hold expired (or was voided) during the call
                    result = None
                if result is None or result.status == "rejected":
                    outcome = "unbilled"
                    result = None
                    self._release(session, call, now)
            routelog.write(session, _log_entry(call, route, attempts, outcome, result))
            return result

    def _settle_allocated(
        self,
        call: Call,
        route: RouteResult[Any] | None,
        used: Usage | None,
        outcome: str,
        attempts: list[Attempt],
    ) -> None:
        """Settle a call served from an allocation (:mod:`modelbank.gateway.allocated`):
        cost booked there, escrow released; no charge, so no :class:`ChargeResult`."""
        with self.writes() as session, session.begin():
            served = route is not None and used is not None and not _nothing(used)
            cost = allocated.settle(
                session, call.request_id, call.card, used if served else None, now=utcnow()
            )
            entry = _log_entry(call, route, attempts, outcome, None)
            routelog.write(session, replace(entry, hold_id=None, cost_uusd=cost))

    def _release(self, session: Session, call: Call, now: datetime) -> None:
        """Void the call's hold if it is still pending (an expired or already voided hold is
        left to what ended it: the jobs void expired ones)."""
        with contextlib.suppress(DomainError), session.begin_nested():
            holds.void(session, call.hold_id, now=now)

    def _fail_refused_keys(self, attempts: list[Attempt]) -> None:
        """Mark the resources whose key the provider refused as failed (clawback included),
        each in its own transaction: never inside a capture (its wallet locks would then be
        taken in two orders)."""
        for attempt in attempts:
            failure = attempt.failure
            # Only an unambiguous 401 (the key itself refused) ends a resource: a 403 can be
            # the provider's moderation answering one caller's prompt (one-api #1276), and
            # must not let a caller end someone's deposit; it counts in the breaker instead.
            if failure is not None and failure.permanent and failure.status == 401:
                with self.writes() as session, session.begin():
                    pool.fail(session, attempt.resource_id, f"key refused ({failure.kind})")

    def _capture(
        self,
        session: Session,
        call: Call,
        route: RouteResult[Any] | None,
        used: Usage,
        now: datetime,
    ) -> metering.ChargeResult:
        fresh = used.input_tokens - used.cached_input_tokens
        priced = call.card.charge_ucr(
            fresh, used.cached_input_tokens, used.output_tokens, used.units
        )
        result = metering.charge(
            session,
            metering.UsageEvent(
                idempotency_key=f"hold:{call.hold_id}",
                user_id=call.user_id,
                model=call.model.id,
                usage_type=ENDPOINTS[call.endpoint][1],
                input_tokens=used.input_tokens,
                output_tokens=used.output_tokens,
                cached_input_tokens=used.cached_input_tokens,
                units=used.units,
                metadata={"request_id": call.request_id, "gateway": call.endpoint},
                # Above the hold only if the upstream broke the limits it was sent: the
                # user pays at most what was held.
                charge_ucr=None if priced <= call.bound.hold_ucr else call.bound.hold_ucr,
                hold_id=call.hold_id,
                limited_key_id=call.limited_key_id,
            ),
            now=now,
        )
        if result.status != "charged" or result.usage_id is None:
            return result
        resource_id = route.target.resource_id if route is not None else None
        session.execute(
            update(usage_events_table)
            .where(usage_events_table.c.id == result.usage_id)
            .values(resource_id=resource_id, usage_estimated=used.estimated)
        )
        if resource_id is not None and result.cost_uusd > 0:
            pool.book_consumption(session, resource_id, result.cost_uusd, now=now)
        return result

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
            headers = _headers(call, answer_route)
            return Reply(200, answer.body, headers)
        finally:
            if not settled:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._settle_failed, call)

    async def _call_whole(self, call: Call, target: Target) -> Answer:
        return await self.upstream.call(target, call.path, call.upstream_body(target))

    async def _open_stream(self, call: Call, target: Target) -> OpenStream:
        return await self.upstream.open_stream(target, call.path, call.upstream_body(target))

    async def _route(self, call: Call, attempt: Any) -> RouteResult[Any]:
        async def one(target: Target) -> Any:
            return await attempt(call, target)

        try:
            return await self.router.route(
                call.model.id,
                one,
                request_id=call.request_id,
                only_resource=None if call.allocation is None else call.allocation.resource_id,
            )
        except RouteFailed as exc:
            call.failures = list(exc.attempts)
            call.outcome = "no_route" if exc.code == "no_route" else "failed"
            exc.route_header = _failed_header(call)  # type: ignore[attr-defined]
            raise
        except UpstreamFailure as exc:  # the caller's own error: no failover, not counted
            call.failures = list(getattr(exc, "attempts", []))
            call.outcome = "rejected"
            rejected = UpstreamRejected(
                _caller_message(exc), status=exc.status or 400, upstream_code=exc.kind
            )
            rejected.route_header = _failed_header(call)  # type: ignore[attr-defined]
            raise rejected from exc

    def _settle_failed(self, call: Call) -> None:
        self.settle(call, None, None, call.outcome, call.failures)


def _caller_message(failure: UpstreamFailure) -> str:
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


def _failed_header(call: Call) -> str:
    """``X-Modelbank-Route`` of a request no resource served: the last resource tried (none:
    ``-``), the attempts made and the request id."""
    last = call.failures[-1].resource_id if call.failures else "-"
    return f"resource={last}; attempts={len(call.failures)}; request={call.request_id}"


def _is_done(event: bytes) -> bool:
    return any(line.strip() == b"data: [DONE]" for line in event.split(b"\n"))


def _nothing(used: Usage) -> bool:
    return not (used.input_tokens or used.output_tokens or used.units)


def _price(session: Session, slug: str, now: datetime) -> tuple[ModelInfo, RateCard]:
    snap = reference.snapshot(session, [slug])
    info = snap.resolve([slug]).get(slug)
    if info is None:
        raise ModelNotFound(f"no active model {slug!r}", model=slug)
    card = snap.models[info.id].card_at(now)
    if card is None:
        raise NoPrice(f"model {slug!r} has no price in force", model_id=info.id)
    return info, card


def _short_of_funds(user_id: int, card: RateCard, bound: Bound) -> Exception:
    needed = card.charge_ucr(bound.input_tokens, 0, 1, 0)
    return InsufficientFunds(
        f"wallet of user {user_id} cannot cover this request's prompt and one output token",
        needed_ucr=needed,
    )


def _headers(call: Call, route: RouteResult[Any] | None) -> dict[str, str]:
    headers = {"X-Request-Id": call.request_id}
    if route is not None:
        headers["X-Modelbank-Route"] = route_header(route)
    return headers


def _log_entry(
    call: Call,
    route: RouteResult[Any] | None,
    attempts: list[Attempt],
    outcome: str,
    result: metering.ChargeResult | None,
) -> routelog.RouteLogEntry:
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


class StreamReply:
    """A streamed answer: :meth:`events` relays the upstream's SSE events (without the
    usage-only chunk the client did not ask for); :meth:`finish` — called by the HTTP layer
    when the response ends for any reason, client disconnect included — closes the upstream
    (cancelling it) and settles the hold once: the reported usage, else an estimate from the
    text streamed (``usage_estimated``), else nothing."""

    def __init__(self, gateway: Gateway, call: Call, route: RouteResult[OpenStream]) -> None:
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
        return _headers(self.call, self.route)

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
