"""Webhook errors (DomainError subclasses with stable codes)."""

from __future__ import annotations

from modelbank.errors import NotFound


class WebhookEndpointNotFound(NotFound):
    """No webhook endpoint with that id."""

    code = "webhook_endpoint_not_found"


class WebhookDeliveryNotFound(NotFound):
    """No webhook delivery with that id."""

    code = "webhook_delivery_not_found"
