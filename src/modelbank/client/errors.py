"""Typed errors of :mod:`modelbank.client`: one per kind of RFC 9457 problem the API answers
(DESIGN §12). Every error keeps the problem's fields and its whole body."""

from __future__ import annotations

from typing import Any


class ModelbankError(Exception):
    """An error answer of the modelbank API (``application/problem+json``).

    ``status``: the HTTP status; ``type``: ``urn:modelbank:problem:<code>``; ``code``: the
    stable snake_case error code (e.g. ``insufficient_funds``); ``title`` and ``detail``:
    human text; ``body``: the whole problem, context fields included (e.g. ``needed_ucr``).
    """

    def __init__(
        self,
        status: int,
        *,
        type: str = "about:blank",
        title: str = "",
        detail: str = "",
        code: str = "",
        body: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.code = code
        self.body: dict[str, Any] = dict(body or {})
        super().__init__(f"{status} {code or title}: {detail}" if detail else f"{status} {code}")


class AuthError(ModelbankError):
    """401 (no, unknown or revoked API key) or 403 (the key's role may not do this, or a
    premium model without bought access)."""


class InsufficientFunds(ModelbankError):
    """402: the wallet's available balance does not cover the charge; nothing was written.
    ``body`` carries ``available_ucr`` and ``needed_ucr`` when the server gives them."""


class NotFoundError(ModelbankError):
    """404: unknown, or another user's (the API does not reveal which)."""


class ConflictError(ModelbankError):
    """409: an ``Idempotency-Key`` reused with another body, a duplicate, or a state
    conflict (hold already captured, …)."""


class ValidationError(ModelbankError):
    """422: invalid input; nothing was written. ``body["errors"]`` lists the fields."""


class ServerError(ModelbankError):
    """5xx (after the retries, for calls that are retried)."""


_BY_STATUS: dict[int, type[ModelbankError]] = {
    401: AuthError,
    402: InsufficientFunds,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
}


def error_for(status: int, body: Any, text: str = "") -> ModelbankError:
    """The typed error of an error answer: ``body`` is the decoded JSON (a problem, or
    anything else a proxy may have sent), ``text`` the raw body for a non-JSON answer."""
    problem = body if isinstance(body, dict) else {}
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ModelbankError)
    return kind(
        status,
        type=str(problem.get("type", "about:blank")),
        title=str(problem.get("title", "")),
        detail=str(problem.get("detail", text[:500])),
        code=str(problem.get("code", "")),
        body=problem,
    )
