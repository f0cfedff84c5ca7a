"""Every API call the client offers, as a function that builds its :class:`Operation`
(path, query, body, idempotency key, how to decode the answer). The sync and async clients
run the same operations (modelbank.client._client). Paths: DESIGN §12, the server's
``/openapi.json``. None-valued arguments are left out of the request (server defaults)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from modelbank.client import models as m
from modelbank.client._core import (
    Operation,
    decode,
    get,
    new_key,
    nothing,
    replayable,
    send,
)

V1 = "/api/v1"
Period = Literal["7d", "30d", "90d", "365d", "all"]
ModelRef = int | str


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a time zone (UTC)")
    return value.isoformat()


# --- service --------------------------------------------------------------------------


def healthz() -> Operation[dict[str, Any]]:
    """``GET /healthz``: ``{"status": "ok"}`` while the server runs."""
    return get("/healthz", lambda r: dict(r.json()))


# --- users and keys -------------------------------------------------------------------


def create_user(
    external_id: str, *, display_name: str | None = None, referral_code: str | None = None
) -> Operation[m.User]:
    """Create a user (admin). 409 ``user_exists`` when the external id is taken;
    ``referral_code``: another user's code (404 ``referral_code_not_found`` when unknown)."""
    body = {
        "external_id": external_id,
        "display_name": display_name,
        "referral_code": referral_code,
    }
    return send("POST", f"{V1}/users", decode(m.User), body)


def get_user(user_id: int) -> Operation[m.User]:
    """One user (yourself with a user key)."""
    return get(f"{V1}/users/{user_id}", decode(m.User))


def list_users(*, limit: int | None = None, cursor: str | None = None) -> Operation[m.UserPage]:
    """Users in id order, a page at a time (admin)."""
    return get(f"{V1}/users", decode(m.UserPage), limit=limit, cursor=cursor)


def create_user_key(
    user_id: int,
    *,
    name: str | None = None,
    limit_ucr: int | None = None,
    limit_period: Literal["day", "week", "month", "never"] | None = None,
) -> Operation[m.Key]:
    """A new ``user`` key for ``user_id`` (admin, service, or that user): the secret is in
    ``Key.key``, shown once. ``limit_ucr`` caps what the key may charge per
    ``limit_period`` (default ``never``); past it: 402 ``key_limit_reached``."""
    body = {"name": name, "limit_ucr": limit_ucr, "limit_period": limit_period}
    return send("POST", f"{V1}/users/{user_id}/keys", decode(m.Key), body)


def user_keys(user_id: int, *, include_revoked: bool | None = None) -> Operation[m.KeyList]:
    """The user's keys (never the secrets), with each limit's spent, reserved and left."""
    return get(f"{V1}/users/{user_id}/keys", decode(m.KeyList), include_revoked=include_revoked)


def revoke_user_key(user_id: int, key_id: int) -> Operation[None]:
    """Revoke one of the user's keys (admin, service, or that user): it stops working."""
    return send("DELETE", f"{V1}/users/{user_id}/keys/{key_id}", nothing)


def create_service_key(
    role: Literal["admin", "service"], *, name: str | None = None
) -> Operation[m.Key]:
    """A new ``admin`` or ``service`` key (admin)."""
    return send("POST", f"{V1}/admin/keys", decode(m.Key), {"role": role, "name": name})


def revoke_key(key_id: int) -> Operation[None]:
    """Revoke a key (admin): it stops working at once."""
    return send("DELETE", f"{V1}/admin/keys/{key_id}", nothing)


# --- wallets --------------------------------------------------------------------------


def wallet(user_id: int) -> Operation[m.Wallet]:
    """The user's balance, pending holds and what is available, in µcr."""
    return get(f"{V1}/users/{user_id}/wallet", decode(m.Wallet))


def transfers(
    user_id: int,
    *,
    code: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Operation[m.TransferPage]:
    """The ledger transfers of the user's wallet, newest first."""
    return get(
        f"{V1}/users/{user_id}/transfers",
        decode(m.TransferPage),
        code=code,
        since=_time(since),
        until=_time(until),
        limit=limit,
        cursor=cursor,
    )


def grant(
    user_id: int,
    amount_ucr: int,
    *,
    source: Literal["bonus", "purchased"] | None = None,
    expires_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> Operation[m.GrantResult]:
    """Grant credits to a user (admin). Idempotent: the key (generated when not given)
    makes a retry return the first grant."""
    body = {"amount_ucr": amount_ucr, "source": source, "expires_at": _time(expires_at)}
    return send(
        "POST",
        f"{V1}/users/{user_id}/grants",
        decode(m.GrantResult),
        body,
        idempotency_key=idempotency_key,
        keyed=True,
    )


def grants(
    user_id: int,
    *,
    open: bool | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Operation[m.GrantPage]:
    """The user's grants (``open``: only those with credits left)."""
    return get(
        f"{V1}/users/{user_id}/grants", decode(m.GrantPage), open=open, limit=limit, cursor=cursor
    )


def packages(*, include_inactive: bool | None = None) -> Operation[m.PackageList]:
    """The credit packages on sale."""
    return get(f"{V1}/packages", decode(m.PackageList), include_inactive=include_inactive)


def start_purchase(
    user_id: int,
    package_id: int,
    *,
    provider: Literal["manual", "stripe"] | None = None,
    success_url: str | None = None,
    cancel_url: str | None = None,
) -> Operation[m.Purchase]:
    """Start buying a package (Stripe: follow ``checkout_url``; manual: an admin
    confirms). Nothing is granted yet. Not retried (the route takes no idempotency key)."""
    body = {
        "package_id": package_id,
        "provider": provider,
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    return send("POST", f"{V1}/users/{user_id}/purchases", decode(m.Purchase), body)


def purchases(
    user_id: int,
    *,
    status: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Operation[m.PurchasePage]:
    """The user's purchases."""
    return get(
        f"{V1}/users/{user_id}/purchases",
        decode(m.PurchasePage),
        status=status,
        limit=limit,
        cursor=cursor,
    )


def get_purchase(purchase_id: int) -> Operation[m.Purchase]:
    """One purchase."""
    return get(f"{V1}/purchases/{purchase_id}", decode(m.Purchase))


def confirm_purchase(
    purchase_id: int, *, idempotency_key: str | None = None
) -> Operation[m.Purchase]:
    """Confirm a manual purchase (admin): its credits are granted."""
    return send(
        "POST",
        f"{V1}/admin/purchases/{purchase_id}/confirm",
        decode(m.Purchase),
        idempotency_key=idempotency_key,
        keyed=True,
    )


def refund_purchase(
    purchase_id: int, *, amount_ucr: int | None = None, idempotency_key: str | None = None
) -> Operation[m.PurchaseRefund]:
    """Refund a purchase (admin): ``amount_ucr`` µcr of its unspent credits (default: all
    that is unspent)."""
    return send(
        "POST",
        f"{V1}/purchases/{purchase_id}/refund",
        decode(m.PurchaseRefund),
        {"amount_ucr": amount_ucr},
        idempotency_key=idempotency_key,
        keyed=True,
    )


def place_hold(
    user_id: int,
    amount_ucr: int,
    *,
    timeout_s: int,
    model: ModelRef | None = None,
    character_id: str | None = None,
    idempotency_key: str | None = None,
) -> Operation[m.Hold]:
    """Reserve ``amount_ucr`` µcr for ``timeout_s`` seconds (pending: the available balance
    drops at once), optionally for a model (``model``, id or slug, or
    ``character_id``). 402 when the available balance is short."""
    body = {
        "amount_ucr": amount_ucr,
        "timeout_s": timeout_s,
        "model": model,
        "character_id": character_id,
    }
    return send(
        "POST",
        f"{V1}/users/{user_id}/holds",
        decode(m.Hold),
        body,
        idempotency_key=idempotency_key,
        keyed=True,
    )


def holds(
    user_id: int,
    *,
    status: Literal["pending", "posted", "voided"] | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Operation[m.HoldPage]:
    """The user's holds, oldest first."""
    return get(
        f"{V1}/users/{user_id}/holds", decode(m.HoldPage), status=status, limit=limit, cursor=cursor
    )


def get_hold(hold_id: int) -> Operation[m.Hold]:
    """One hold."""
    return get(f"{V1}/holds/{hold_id}", decode(m.Hold))


def capture_hold(
    hold_id: int,
    amount_ucr: int,
    *,
    model: ModelRef | None = None,
    character_id: str | None = None,
    usage_type: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    units: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Operation[m.Capture]:
    """Charge ``amount_ucr`` µcr (≤ held) of a pending hold as a usage event and release
    the rest. 409 when it is no longer pending."""
    body = {
        "amount_ucr": amount_ucr,
        "model": model,
        "character_id": character_id,
        "usage_type": usage_type,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "units": units,
        "metadata": None if metadata is None else dict(metadata),
    }
    return send(
        "POST",
        f"{V1}/holds/{hold_id}/capture",
        decode(m.Capture),
        body,
        idempotency_key=idempotency_key,
        keyed=True,
    )


def void_hold(hold_id: int, *, idempotency_key: str | None = None) -> Operation[m.Hold]:
    """Release a pending hold entirely."""
    return send(
        "POST",
        f"{V1}/holds/{hold_id}/void",
        decode(m.Hold),
        idempotency_key=idempotency_key,
        keyed=True,
    )


def refund_usage(
    usage_id: int,
    *,
    amount_ucr: int | None = None,
    reason: str | None = None,
    idempotency_key: str | None = None,
) -> Operation[m.UsageRefund]:
    """Refund a usage charge (admin): ``amount_ucr`` µcr (default: all that
    is left of it); the creator earnings it paid are reversed in proportion."""
    return send(
        "POST",
        f"{V1}/usage/{usage_id}/refund",
        decode(m.UsageRefund),
        {"amount_ucr": amount_ucr, "reason": reason},
        idempotency_key=idempotency_key,
        keyed=True,
    )


def low_balance(user_id: int) -> Operation[m.LowBalance]:
    """The user's low-balance alert threshold and state."""
    return get(f"{V1}/users/{user_id}/low-balance", decode(m.LowBalance))


def set_low_balance(user_id: int, threshold_ucr: int | None) -> Operation[m.LowBalance]:
    """Set the user's low-balance threshold in µcr (None: back to the platform default)."""
    return Operation(
        "PUT",
        f"{V1}/users/{user_id}/low-balance",
        decode(m.LowBalance),
        json={"threshold_ucr": threshold_ucr},
        retryable=True,  # a PUT sets a value: sending it twice does the same
    )


# --- models ---------------------------------------------------------------------------


def list_models(
    *,
    category: str | None = None,
    mode: str | None = None,
    premium: bool | None = None,
    search: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Operation[m.ModelPage]:
    """Active models with their price in force, a page at a time."""
    return get(
        f"{V1}/models",
        decode(m.ModelPage),
        category=category,
        mode=mode,
        premium=premium,
        search=search,
        limit=limit,
        cursor=cursor,
    )


def get_model(model_id: int) -> Operation[m.Model]:
    """One model."""
    return get(f"{V1}/models/{model_id}", decode(m.Model))


def create_model(slug: str, name: str, **fields: Any) -> Operation[m.Model]:
    """Add a model (admin). ``fields``: the other ``ModelIn`` fields of the OpenAPI
    document (``price``, ``cost``, ``mode``, ``character_id``, ``creator_id``, …)."""
    return send("POST", f"{V1}/models", decode(m.Model), {"slug": slug, "name": name, **fields})


def purchase_model_access(
    model_id: int, *, user_id: int | None = None, idempotency_key: str | None = None
) -> Operation[m.Access]:
    """Buy access to a premium model with credits (a user key for itself; admin and
    service keys name ``user_id``). Buying again returns the first purchase."""
    return send(
        "POST",
        f"{V1}/models/{model_id}/purchase",
        decode(m.Access),
        {"user_id": user_id},
        idempotency_key=idempotency_key,
        keyed=True,
    )


# --- usage ----------------------------------------------------------------------------


def charge(
    user_id: int,
    *,
    model: ModelRef | None = None,
    character_id: str | None = None,
    usage_type: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cached_input_tokens: int | None = None,
    units: int | None = None,
    occurred_at: datetime | None = None,
    metadata: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Operation[m.Usage]:
    """Charge one usage event to ``user_id``'s wallet: the model by ``model`` (id or
    slug) or by ``character_id`` (exactly one). The idempotency key identifies the event
    (generated when not given; give your own request id to make your retries safe):
    a retry returns the first result with ``Usage.replayed`` True. Raises
    :class:`~modelbank.client.errors.InsufficientFunds` (402),
    :class:`~modelbank.client.errors.NotFoundError` (unknown user, model or character)."""
    body = {
        "user_id": user_id,
        "model": model,
        "character_id": character_id,
        "usage_type": usage_type,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_input_tokens": cached_input_tokens,
        "units": units,
        "occurred_at": _time(occurred_at),
        "metadata": None if metadata is None else dict(metadata),
    }
    return send(
        "POST",
        f"{V1}/usage",
        replayable(m.Usage),
        body,
        idempotency_key=idempotency_key,
        keyed=True,
    )


def charge_batch(events: Sequence[m.BatchEvent]) -> Operation[m.Batch]:
    """Charge up to 1,000 events in one request (admin and service keys); each succeeds or
    is rejected on its own, results in order. Events without an ``idempotency_key`` get a
    uuid4: every event is then keyed, so the whole request is safe to retry."""
    keyed: list[dict[str, Any]] = []
    for event in events:
        body: dict[str, Any] = {k: v for k, v in event.items() if v is not None}
        body.setdefault("idempotency_key", new_key())
        if isinstance(body.get("occurred_at"), datetime):
            body["occurred_at"] = _time(body["occurred_at"])
        keyed.append(body)
    return send("POST", f"{V1}/usage/batch", decode(m.Batch), {"events": keyed}, retryable=True)


# --- analytics ------------------------------------------------------------------------


def earnings(user_id: int, *, period: Period | None = None) -> Operation[m.Earnings]:
    """What the user earned from others' use of their models, per model."""
    return get(f"{V1}/users/{user_id}/earnings", decode(m.Earnings), period=period)


def model_analytics(user_id: int, *, period: Period | None = None) -> Operation[m.UserAnalytics]:
    """The user's spending, purchases, owned models and portfolio figures."""
    return get(f"{V1}/users/{user_id}/model-analytics", decode(m.UserAnalytics), period=period)


def creator_analytics(
    user_id: int, *, period: Period | None = None, model_id: int | None = None
) -> Operation[m.CreatorAnalytics]:
    """A creator's earnings dashboard (optionally one model's)."""
    return get(
        f"{V1}/users/{user_id}/creator-analytics",
        decode(m.CreatorAnalytics),
        period=period,
        model_id=model_id,
    )


def admin_analytics(*, period: Period | None = None) -> Operation[m.AdminAnalytics]:
    """Platform revenue, cost, earnings and margin per model, category and day (admin)."""
    return get(f"{V1}/admin/analytics", decode(m.AdminAnalytics), period=period)


def stats() -> Operation[m.Stats]:
    """Platform totals (admin)."""
    return get(f"{V1}/admin/stats", decode(m.Stats))
