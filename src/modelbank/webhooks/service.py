"""Webhook endpoints, the outbox (:func:`emit`) and the delivery log.

Every function takes the caller's ``Session`` and never commits (STYLE §4). Delivery itself
is :func:`modelbank.webhooks.delivery.deliver_due` (re-exported here), which manages its own
short transactions because it makes HTTP calls.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.secrets import SecretBox
from modelbank.webhooks.delivery import (
    BACKOFF_BASE_S,
    BACKOFF_MAX_S,
    MAX_ATTEMPTS,
    DeliveryReport,
    backoff_s,
    deliver_due,
    message_body,
)
from modelbank.webhooks.errors import WebhookDeliveryNotFound, WebhookEndpointNotFound
from modelbank.webhooks.events import EVENT_TYPES, check_event_type, check_patterns, subscribed
from modelbank.webhooks.models import DeliveryStatus
from modelbank.webhooks.models import outbox_events_table as events
from modelbank.webhooks.models import webhook_attempts_table as attempts
from modelbank.webhooks.models import webhook_deliveries_table as deliveries
from modelbank.webhooks.models import webhook_endpoints_table as endpoints

SECRET_PREFIX = "whsec_"
"""Standard Webhooks secret prefix."""
SECRET_BYTES = 24
"""Random bytes per signing secret (192 bits; base64 without padding)."""
MAX_URL_LENGTH = 2000
"""Longest endpoint URL accepted (the column size; browsers' practical limit)."""
MAX_DESCRIPTION_LENGTH = 500
MAX_PAYLOAD_BYTES = 64 * 1024
"""Largest event payload (JSON, UTF-8): events carry ids and amounts, not documents."""
MAX_PAGE = 500
"""Largest page of a listing."""


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """A webhook endpoint as shown to admins (never its secret)."""

    id: int
    url: str
    events: tuple[str, ...]
    description: str | None
    is_active: bool
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    """One event to one endpoint: status, ``attempts`` made, the newest attempt's HTTP status
    or error, when the next attempt is due (None once final)."""

    id: int
    endpoint_id: int
    event_id: int
    message_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One HTTP attempt of a delivery (``status_code`` None: no response, see ``error``)."""

    id: int
    delivery_id: int
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


def new_secret() -> str:
    """A fresh Standard Webhooks signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host, without user info or
    whitespace, at most :data:`MAX_URL_LENGTH` characters; else :class:`InvalidInput`."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"url: at most {MAX_URL_LENGTH} characters", length=len(url))
    if not url.isprintable() or any(c.isspace() for c in url):
        raise InvalidInput("url: must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
        host = parts.hostname
    except ValueError:
        raise InvalidInput("url: not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidInput("url: only http and https URLs are accepted")
    if not host:
        raise InvalidInput("url: a host is required")
    if "@" in parts.netloc:
        raise InvalidInput("url: user info (user:password@) is not allowed; send no credentials")
    return url


def _endpoint(row: RowMapping) -> EndpointInfo:
    return EndpointInfo(
        id=row["id"],
        url=row["url"],
        events=tuple(row["events"]),
        description=row["description"],
        is_active=row["is_active"],
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
    )


_ENDPOINT_COLUMNS = (
    endpoints.c.id,
    endpoints.c.url,
    endpoints.c.events,
    endpoints.c.description,
    endpoints.c.is_active,
    endpoints.c.created_at,
    endpoints.c.disabled_at,
)


def create_endpoint(
    session: Session,
    box: SecretBox,
    *,
    url: str,
    events: list[str],
    description: str | None = None,
    now: datetime | None = None,
) -> tuple[EndpointInfo, str]:
    """Register an endpoint for the event ``events`` (types or patterns, see
    :func:`~modelbank.webhooks.events.check_patterns`). Returns it with its signing secret
    (``whsec_…``), which is stored only encrypted with ``box``: show it once.

    Raises :class:`InvalidInput` for a bad ``url``, ``events`` or ``description``."""
    check_url(url)
    patterns = check_patterns(events)
    if description is not None and len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidInput(f"description: at most {MAX_DESCRIPTION_LENGTH} characters")
    secret = new_secret()
    endpoint_id = session.execute(
        insert(endpoints)
        .values(
            url=url,
            events=patterns,
            secret_encrypted=box.encrypt(secret),
            is_active=True,
            description=description,
            created_at=now or utcnow(),
        )
        .returning(endpoints.c.id)
    ).scalar_one()
    info = get_endpoint(session, endpoint_id)
    audit.record(session, "webhook.create", "webhook_endpoint", endpoint_id, after=info, now=now)
    return info, secret


def get_endpoint(session: Session, endpoint_id: int) -> EndpointInfo:
    """One endpoint. Raises :class:`WebhookEndpointNotFound`."""
    row = (
        session.execute(select(*_ENDPOINT_COLUMNS).where(endpoints.c.id == endpoint_id))
        .mappings()
        .first()
    )
    if row is None:
        raise WebhookEndpointNotFound(
            f"no webhook endpoint {endpoint_id}", webhook_endpoint_id=endpoint_id
        )
    return _endpoint(row)


def list_endpoints(
    session: Session, *, include_disabled: bool = True, after_id: int = 0, limit: int = 100
) -> list[EndpointInfo]:
    """Endpoints in id order after ``after_id`` (a cursor), at most ``limit`` (≤ 500)."""
    query = select(*_ENDPOINT_COLUMNS).where(endpoints.c.id > after_id)
    if not include_disabled:
        query = query.where(endpoints.c.is_active.is_(True))
    query = query.order_by(endpoints.c.id).limit(min(limit, MAX_PAGE))
    return [_endpoint(row) for row in session.execute(query).mappings()]


def disable_endpoint(
    session: Session, endpoint_id: int, *, now: datetime | None = None
) -> EndpointInfo:
    """Disable an endpoint (idempotent: the first ``disabled_at`` is kept). Its pending
    deliveries become ``failed`` with ``last_error`` "endpoint disabled"; it gets no new
    ones. Raises :class:`WebhookEndpointNotFound`."""
    before = get_endpoint(session, endpoint_id)
    now = now or utcnow()
    session.execute(
        update(endpoints)
        .where(endpoints.c.id == endpoint_id, endpoints.c.is_active.is_(True))
        .values(is_active=False, disabled_at=now)
    )
    session.execute(
        update(deliveries)
        .where(
            deliveries.c.endpoint_id == endpoint_id,
            deliveries.c.status == DeliveryStatus.PENDING.value,
        )
        .values(
            status=DeliveryStatus.FAILED.value, next_attempt_at=None, last_error="endpoint disabled"
        )
    )
    after = get_endpoint(session, endpoint_id)
    if before.is_active:
        audit.record(
            session,
            "webhook.disable",
            "webhook_endpoint",
            endpoint_id,
            before=before,
            after=after,
            now=now,
        )
    return after


def _check_payload(value: Any, where: str = "payload") -> None:
    """JSON values without floats (amounts are integers: DESIGN §2)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{where}: keys must be strings")
            _check_payload(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_payload(item, f"{where}[{index}]")
    elif isinstance(value, float) or not (value is None or isinstance(value, str | int | bool)):
        raise InvalidInput(
            f"{where}: only strings, integers, booleans, null, lists and objects"
            f" (got {type(value).__name__}; send amounts as integer µcr)"
        )


def emit(
    session: Session, event_type: str, payload: dict[str, Any], *, now: datetime | None = None
) -> int:
    """Record event ``event_type`` with ``payload`` in the outbox and queue one pending
    delivery, due at once, to every active endpoint subscribed to it, all in the caller's
    transaction: it commits or rolls back with the change it reports. Cost: one select of
    the active endpoints and two inserts. Returns the event id.

    The body later sent is ``{"type": event_type, "timestamp": <ISO 8601 UTC of now>,
    "data": payload}``. Raises :class:`InvalidInput` for an unknown type (see
    :data:`~modelbank.webhooks.events.EVENT_TYPES`), a payload with floats or non-JSON
    values, or one over :data:`MAX_PAYLOAD_BYTES`."""
    check_event_type(event_type)
    _check_payload(payload)
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidInput(f"payload: at most {MAX_PAYLOAD_BYTES} bytes of JSON", size=size)
    now = now or utcnow()
    event_id: int = session.execute(
        insert(events)
        .values(
            message_id=f"msg_{uuid.uuid4().hex}",
            event_type=event_type,
            payload=payload,
            created_at=now,
        )
        .returning(events.c.id)
    ).scalar_one()
    targets = [
        row.id
        for row in session.execute(
            select(endpoints.c.id, endpoints.c.events).where(endpoints.c.is_active.is_(True))
        )
        if subscribed(row.events, event_type)
    ]
    if targets:
        session.execute(
            insert(deliveries),
            [
                {
                    "event_id": event_id,
                    "endpoint_id": endpoint_id,
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for endpoint_id in targets
            ],
        )
    return event_id


_DELIVERY_COLUMNS = (
    deliveries.c.id,
    deliveries.c.endpoint_id,
    deliveries.c.event_id,
    events.c.message_id,
    events.c.event_type,
    deliveries.c.status,
    deliveries.c.attempts,
    deliveries.c.next_attempt_at,
    deliveries.c.last_status_code,
    deliveries.c.last_error,
    deliveries.c.delivered_at,
    deliveries.c.created_at,
)


def _delivery(row: RowMapping) -> DeliveryInfo:
    values = dict(row)
    values["status"] = DeliveryStatus(values["status"])
    return DeliveryInfo(**values)


def list_deliveries(
    session: Session,
    *,
    endpoint_id: int | None = None,
    status: DeliveryStatus | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[DeliveryInfo]:
    """The delivery log, newest first: deliveries with id below ``before_id`` (a cursor),
    of ``endpoint_id`` and in ``status`` when given; at most ``limit`` (≤ 500). Raises
    :class:`WebhookEndpointNotFound` for an unknown ``endpoint_id``."""
    if endpoint_id is not None:
        get_endpoint(session, endpoint_id)
    query = select(*_DELIVERY_COLUMNS).join(events, events.c.id == deliveries.c.event_id)
    if endpoint_id is not None:
        query = query.where(deliveries.c.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(deliveries.c.status == status.value)
    if before_id is not None:
        query = query.where(deliveries.c.id < before_id)
    query = query.order_by(deliveries.c.id.desc()).limit(min(limit, MAX_PAGE))
    return [_delivery(row) for row in session.execute(query).mappings()]


def get_delivery(session: Session, delivery_id: int) -> DeliveryInfo:
    """One delivery. Raises :class:`WebhookDeliveryNotFound`."""
    row = (
        session.execute(
            select(*_DELIVERY_COLUMNS)
            .join(events, events.c.id == deliveries.c.event_id)
            .where(deliveries.c.id == delivery_id)
        )
        .mappings()
        .first()
    )
    if row is None:
        raise WebhookDeliveryNotFound(
            f"no webhook delivery {delivery_id}", webhook_delivery_id=delivery_id
        )
    return _delivery(row)


def list_attempts(session: Session, delivery_id: int) -> list[AttemptInfo]:
    """Every HTTP attempt of a delivery (the log), oldest first. Raises
    :class:`WebhookDeliveryNotFound`."""
    get_delivery(session, delivery_id)
    rows = session.execute(
        select(attempts).where(attempts.c.delivery_id == delivery_id).order_by(attempts.c.id)
    ).mappings()
    return [AttemptInfo(**dict(row)) for row in rows]


__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_MAX_S",
    "EVENT_TYPES",
    "MAX_ATTEMPTS",
    "AttemptInfo",
    "DeliveryInfo",
    "DeliveryReport",
    "DeliveryStatus",
    "EndpointInfo",
    "backoff_s",
    "check_url",
    "create_endpoint",
    "deliver_due",
    "disable_endpoint",
    "emit",
    "get_delivery",
    "get_endpoint",
    "list_attempts",
    "list_deliveries",
    "list_endpoints",
    "message_body",
    "new_secret",
]
