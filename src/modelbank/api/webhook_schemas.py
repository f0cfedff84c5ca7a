"""Request and response bodies of the admin webhook routes (``/api/v1/admin/webhooks``).

Times are UTC ISO 8601. The signing secret appears in the creation response only.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from modelbank.api.schemas import Strict
from modelbank.webhooks.events import EVENT_TYPES, MAX_PATTERNS
from modelbank.webhooks.models import DeliveryStatus
from modelbank.webhooks.service import (
    MAX_DESCRIPTION_LENGTH,
    MAX_URL_LENGTH,
    DeliveryInfo,
    EndpointInfo,
)

_EVENTS_HELP = (
    "event types to receive: "
    + ", ".join(EVENT_TYPES)
    + "; or a family wildcard such as `payout.*`, or `*` for all"
)


class WebhookIn(Strict):
    url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="http(s) URL that receives signed POSTs; no user:password@",
        examples=["https://example.com/hooks/modelbank"],
    )
    events: list[str] = Field(
        min_length=1,
        max_length=MAX_PATTERNS,
        description=_EVENTS_HELP,
        examples=[["wallet.low_balance", "payout.*"]],
    )
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    description: str | None
    is_active: bool
    created_at: datetime
    disabled_at: datetime | None

    @classmethod
    def of(cls, info: EndpointInfo) -> WebhookOut:
        """The body of an endpoint (never its secret)."""
        return cls(
            id=info.id,
            url=info.url,
            events=list(info.events),
            description=info.description,
            is_active=info.is_active,
            created_at=info.created_at,
            disabled_at=info.disabled_at,
        )


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(
        description="signing secret (`whsec_…`, Standard Webhooks): verify the"
        " `webhook-signature` header with it. Shown once, store it now"
    )


class WebhookPage(BaseModel):
    items: list[WebhookOut]
    next_cursor: str | None


class DeliveryOut(BaseModel):
    id: int
    endpoint_id: int
    event_id: int
    message_id: str = Field(description="the `webhook-id` header sent (same on every retry)")
    event_type: str
    status: DeliveryStatus
    attempts: int = Field(description="HTTP attempts made so far")
    last_status_code: int | None = Field(description="HTTP status of the newest attempt")
    last_error: str | None = Field(description="why the newest attempt got no response")
    next_attempt_at: datetime | None = Field(description="when it is retried; null once final")
    delivered_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, info: DeliveryInfo) -> DeliveryOut:
        """The body of a delivery-log row."""
        return cls(
            id=info.id,
            endpoint_id=info.endpoint_id,
            event_id=info.event_id,
            message_id=info.message_id,
            event_type=info.event_type,
            status=info.status,
            attempts=info.attempts,
            last_status_code=info.last_status_code,
            last_error=info.last_error,
            next_attempt_at=info.next_attempt_at,
            delivered_at=info.delivered_at,
            created_at=info.created_at,
        )


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None
