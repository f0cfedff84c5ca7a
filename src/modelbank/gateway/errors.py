"""Gateway errors (DESIGN §9). Shown on ``/v1`` in OpenAI's error shape by
:mod:`modelbank.api.gateway`; like every :class:`~modelbank.errors.DomainError` they know
nothing of HTTP.

Tree::

    DomainError
    ├── NoRoute           (code: no_route)          no active resource serves the model
    ├── UpstreamFailed    (code: upstream_failed)   every attempt failed: the user paid nothing
    └── UpstreamRejected  (code: upstream_rejected) the upstream refused the caller's request
"""

from __future__ import annotations

from modelbank.errors import DomainError


class NoRoute(DomainError):
    """No active resource with quota left and a closed (or probing) breaker serves the
    model; the hold was voided."""

    code = "no_route"


class UpstreamFailed(DomainError):
    """Every attempt failed (connect error, timeout, 429, 5xx); the hold was voided.
    ``status`` is the last upstream status (None: no answer)."""

    code = "upstream_failed"


class UpstreamRejected(DomainError):
    """The upstream refused the request itself (400, 404, 413, 422, content filter): the
    caller's to fix, never retried, never counted against the resource. ``status`` and
    ``body`` are the upstream's (the resource's key scrubbed)."""

    code = "upstream_rejected"
