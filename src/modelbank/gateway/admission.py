"""Admission of a gateway request (DESIGN §9): check it, price it, and **hold** its upper
bound in one transaction, on the user's marketplace allocation when one serves the model,
else on the wallet (and on the caller's key when it has a spend limit)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from modelbank.auth import limits as key_limits
from modelbank.catalog import access
from modelbank.catalog.errors import ModelNotFound
from modelbank.catalog.service import ModelInfo
from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.gateway import allocated, estimate
from modelbank.gateway.call import Call, GatewaySettings
from modelbank.gateway.estimate import Bound
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.ledger.errors import InsufficientFunds
from modelbank.metering import reference
from modelbank.pricing.errors import NoPrice
from modelbank.pricing.ratecard import RateCard
from modelbank.wallets import holds


@dataclass(frozen=True, slots=True)
class _Request:
    """What the request body asks for, checked: the model's slug, whether it streams,
    whether the client wants the usage chunk, and the body to send upstream."""

    slug: str
    stream: bool
    wants_usage: bool
    upstream_body: dict[str, Any]


def admit(
    writes: sessionmaker[Session],
    settings: GatewaySettings,
    user_id: int,
    endpoint: str,
    body: dict[str, Any],
    body_bytes: int,
    limited_key_id: int | None = None,
) -> Call:
    """Price the request and hold its upper bound, in one transaction: on the user's
    marketplace allocation serving the model when they have one with room
    (:mod:`~modelbank.gateway.allocated`: provider cost, no wallet hold, no key limit
    spent; :func:`fall_back` moves it to the wallet if the allocation cannot serve it),
    else on the wallet; with ``limited_key_id`` (the caller's key has a spend
    limit) a wallet hold is reserved on the key too. Raises
    :class:`~modelbank.catalog.errors.ModelNotFound`,
    :class:`~modelbank.catalog.errors.AccessRequired`,
    :class:`~modelbank.pricing.errors.NoPrice`, :class:`InvalidInput`,
    :class:`~modelbank.ledger.errors.InsufficientFunds`,
    :class:`~modelbank.auth.errors.KeyLimitReached` (nothing held)."""
    request_id = uuid.uuid4().hex
    # Everything that can refuse the request is checked before the hold: nothing may
    # raise between the hold's commit and the Call that settles it.
    request = _check(endpoint, body)
    upstream_body = request.upstream_body
    with writes() as session, session.begin():
        now = utcnow()
        info, card = _price(session, request.slug, now)
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
            output_cap=settings.output_cap,
            timeout_s=settings.hold_timeout_s,
            now=now,
        )
        hold_id = 0
        if bought is not None:
            bound = bought.bound
        else:
            bound, hold_id = _hold_on_wallet(
                session,
                settings,
                user_id,
                endpoint,
                info,
                card,
                body,
                body_bytes,
                request_id,
                limited_key_id,
                now,
            )
    if bound.max_tokens is not None:
        upstream_body["max_tokens"] = bound.max_tokens
    return Call(
        request_id=request_id,
        user_id=user_id,
        model=info,
        card=card,
        endpoint=endpoint,
        stream=request.stream,
        client_wants_usage=request.wants_usage,
        body=upstream_body,
        body_bytes=body_bytes,
        bound=bound,
        hold_id=hold_id,
        limited_key_id=limited_key_id,
        allocation=bought,
    )


def fall_back(writes: sessionmaker[Session], settings: GatewaySettings, call: Call) -> None:
    """Move a call admitted on an allocation whose resource could not serve it (its breaker
    open, or it failed before the first byte) to the normal way, in one transaction: void
    its allocation hold (the allocation pays nothing for it) and hold its bound on the
    wallet (and the caller's limited key) as :func:`admit` would have, the output limit the
    gateway chose for the allocation chosen again for the wallet. Updates ``call``
    (``allocation`` None, ``hold_id``, ``bound``, ``body``). Raises what a wallet hold
    raises (:class:`~modelbank.ledger.errors.InsufficientFunds`,
    :class:`~modelbank.auth.errors.KeyLimitReached`): then nothing changed, the allocation
    hold included."""
    bought = call.allocation
    if bought is None:
        return
    body = dict(call.body)
    if bought.bound.max_tokens is not None:  # the gateway's choice, not the caller's
        body.pop("max_tokens", None)
    with writes() as session, session.begin():
        now = utcnow()
        allocated.release(session, call.request_id, now=now)
        bound, hold_id = _hold_on_wallet(
            session,
            settings,
            call.user_id,
            call.endpoint,
            call.model,
            call.card,
            body,
            call.body_bytes,
            call.request_id,
            call.limited_key_id,
            now,
        )
    if bound.max_tokens is not None:
        body["max_tokens"] = bound.max_tokens
    call.allocation, call.hold_id, call.bound, call.body = None, hold_id, bound, body


def _check(endpoint: str, body: dict[str, Any]) -> _Request:
    """Check the body's ``model``, ``stream`` and ``stream_options`` (raises
    :class:`InvalidInput`); a stream always asks the upstream for its usage chunk."""
    slug = body.get("model")
    if not isinstance(slug, str) or not slug:
        raise InvalidInput("model is required")
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
    return _Request(slug, stream, wants_usage, upstream_body)


def _hold_on_wallet(
    session: Session,
    settings: GatewaySettings,
    user_id: int,
    endpoint: str,
    info: ModelInfo,
    card: RateCard,
    body: dict[str, Any],
    body_bytes: int,
    request_id: str,
    limited_key_id: int | None,
    now: datetime,
) -> tuple[Bound, int]:
    """Bound the request by the wallet (and the limited key) and place the hold keyed
    ``gw:<request id>``: returns (bound, hold id). Raises
    :class:`~modelbank.auth.errors.KeyLimitReached` or :class:`InsufficientFunds` when not
    even the prompt and one output token are covered."""
    key = None
    if limited_key_id is not None:
        key = key_limits.state(session.connection(), limited_key_id, now)
    bound = _bound(session, settings, user_id, endpoint, card, body, body_bytes, key)
    if bound.max_tokens == 0:
        needed = card.charge_ucr(bound.input_tokens, 0, 1, 0)
        if key is not None and limited_key_id is not None and key.left_ucr < needed:
            raise key_limits.limit_reached(key, limited_key_id, needed)
        raise _short_of_funds(user_id, card, bound)
    hold_id = holds.place(
        session,
        user_id,
        max(bound.hold_ucr, 1),
        timeout_s=settings.hold_timeout_s,
        idempotency_key=f"gw:{request_id}",
        model=info.id,
        now=now,
        limited_key_id=limited_key_id,
    ).id
    return bound, hold_id


def _bound(
    session: Session,
    settings: GatewaySettings,
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
        card, body, body_bytes, available_ucr=available, output_cap=settings.output_cap
    )


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
