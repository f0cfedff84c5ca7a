"""Rate-limit errors."""

from __future__ import annotations

from modelbank.errors import DomainError


class RateLimited(DomainError):
    """A limit was reached: ``limit`` names it (``key_requests_per_s``,
    ``user_requests_per_s``, ``key_tokens_per_min``, ``user_tokens_per_min``),
    ``retry_after_s`` says when the window ends (whole seconds, ≥ 1)."""

    code = "rate_limited"
