"""A Python client of the modelbank HTTP API (httpx; sync :class:`Client`, async
:class:`AsyncClient`, the same typed methods on both).

    from modelbank.client import Client, InsufficientFunds

    with Client("http://127.0.0.1:8000", api_key="mb_s_…") as mb:
        try:
            usage = mb.charge(user_id=7, character_id="luna", input_tokens=1200,
                              output_tokens=300, idempotency_key="req-81f2")
        except InsufficientFunds as e:
            ...  # e.body["needed_ucr"], e.body["available_ucr"]
        print(usage.charge_ucr, usage.balance_ucr, usage.replayed)

Idempotency keys are generated (uuid4) when not given; safe and idempotent calls are
retried with exponential backoff and jitter on connection errors, 429 and 5xx
(:class:`RetryPolicy`); problem+json answers raise :class:`ModelbankError` subclasses.
Imports nothing of the server: ``pip install modelbank`` on a platform's backend needs only
httpx and pydantic from it.
"""

from __future__ import annotations

from modelbank.client import models
from modelbank.client._client import AsyncClient, Client
from modelbank.client._core import NO_RETRIES, Operation, RetryPolicy
from modelbank.client.errors import (
    AuthError,
    ConflictError,
    InsufficientFunds,
    ModelbankError,
    NotFoundError,
    ServerError,
    ValidationError,
)

__all__ = [
    "NO_RETRIES",
    "AsyncClient",
    "AuthError",
    "Client",
    "ConflictError",
    "InsufficientFunds",
    "ModelbankError",
    "NotFoundError",
    "Operation",
    "RetryPolicy",
    "ServerError",
    "ValidationError",
    "models",
]
