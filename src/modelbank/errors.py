"""The domain error base (STYLE §5).

Every error a service raises for bad input or a refused operation is a :class:`DomainError`
with a stable snake_case ``code`` and a ``context`` dict. Errors know nothing of HTTP: the API
maps codes to statuses in one place, the CLI prints ``str(error)`` on one line.

Tree::

    DomainError
    ├── NotFound                    (code: not_found; per-domain subclasses refine it)
    ├── InvalidInput                (code: invalid_input)
    ├── IdempotencyConflict         (code: idempotency_key_reused)
    └── ledger.errors.LedgerError   (insufficient_funds, hold_not_pending, …)
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every expected, user-facing failure. ``code`` is stable API."""

    code: ClassVar[str] = "domain_error"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return self.message


class NotFound(DomainError):
    """A referenced entity does not exist (or is not visible to the caller)."""

    code = "not_found"


class InvalidInput(DomainError):
    """Input that is well-formed but not acceptable (negative tokens, unknown mode…)."""

    code = "invalid_input"


class IdempotencyConflict(DomainError):
    """The idempotency key was used before with a different request body."""

    code = "idempotency_key_reused"
