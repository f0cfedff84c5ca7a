"""Structured JSON logs (``structlog``), one object per line on stderr, with the request id.

:func:`configure` routes the standard library's logging (uvicorn's, ours) through one
``structlog`` formatter: every line is JSON with ``timestamp`` (UTC ISO 8601), ``level``,
``logger``, ``event`` and what was bound, among it the ``request_id`` of the request being
served (:func:`bind_request`). Nothing secret reaches a line: :func:`redact` runs last
before rendering, over every value (messages and tracebacks included) and replaces

* values of fields whose name says secret (``authorization``, ``api_key``, ``secret``,
  ``password``, ``token``, ``cookie``…) by ``"[redacted]"``;
* anything shaped like a modelbank API key (``mb_<role>_…``), a bearer credential, a
  provider key (``sk-…``, ``sk_live_…``, ``rk_…``), a webhook signing secret (``whsec_…``)
  or a Fernet token (``gAAAAA…``) inside any string by ``[redacted]``.

Request bodies and headers are never logged; the redaction is the second wall.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar, Token
from typing import Any, TextIO

import structlog

REDACTED = "[redacted]"

SECRET_FIELD = re.compile(
    r"(authorization|api[_-]?key|secret|passw|token|cookie|credential|private[_-]?key)", re.I
)
"""Field names whose values are never logged."""

SECRET_TEXT = re.compile(
    r"mb_[a-z]_[A-Za-z0-9_\-]{16,}"  # modelbank API keys
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"  # Authorization values
    r"|\b(?:sk|rk|pk)[-_](?:live_|test_|proj-|ant-)?[A-Za-z0-9_\-]{12,}"  # provider keys
    r"|whsec_[A-Za-z0-9+/=_\-]{8,}"  # webhook signing secrets
    r"|gAAAAA[A-Za-z0-9_\-=]{20,}"  # Fernet tokens (secrets sealed at rest)
)
"""Secrets recognised inside any logged text."""

_request_id: ContextVar[str | None] = ContextVar("modelbank_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request this code serves (None outside a request)."""
    return _request_id.get()


def bind_request(request_id: str) -> Token[str | None]:
    """Bind ``request_id`` to the current context (every log line written while serving it,
    :func:`current_request_id`); returns the token for :func:`unbind_request`."""
    return _request_id.set(request_id)


def unbind_request(token: Token[str | None]) -> None:
    """Undo :func:`bind_request`."""
    _request_id.reset(token)


def add_request_id(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: the current request's id, when there is one."""
    request_id = _request_id.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def scrub(value: Any) -> Any:
    """``value`` with secrets replaced (strings, and the strings inside lists, tuples and
    dicts, recursively)."""
    if isinstance(value, str):
        return SECRET_TEXT.sub(REDACTED, value)
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and SECRET_FIELD.search(k) else scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: see the module doc."""
    for key, value in event_dict.items():
        if SECRET_FIELD.search(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str | dict | list | tuple):
            event_dict[key] = scrub(value)
    return event_dict


def _scrub_path(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    # Request lines hold fixed fields (method, route template, status, duration) and the
    # path: only the path is the client's text (the full redact cost 4× the rest of a line).
    path = event_dict.get("path")
    if path is not None:
        event_dict["path"] = scrub(path)
    return event_dict


_request_log: Any = None
"""The fast logger of request lines (:func:`request_log`), set by :func:`configure`."""


def request_log() -> Any:
    """The logger the HTTP layer writes one line per request to (None until
    :func:`configure`). A structlog logger of its own, straight to the stream: the standard
    library's path (record, formatter, handler lock) cost ~4× as much per line."""
    return _request_log


def configure(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Send every log record of the process as one JSON line to ``stream`` (stderr) at
    ``level`` and above; uvicorn's loggers included (their own handlers removed). Safe to
    call again (the previous handler is replaced). Returns the handler (for
    :func:`unconfigure`)."""
    global _request_log
    stream = stream or sys.stderr
    pre: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *pre,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*pre, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.set_name("modelbank-json")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "modelbank-json"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    # uvicorn's access log stays as uvicorn set it (off unless --access-log: the request
    # lines below say more); only its text handler goes
    logging.getLogger("uvicorn.access").handlers.clear()
    _request_log = None
    if logging.getLevelName(level.upper()) <= logging.INFO:
        _request_log = structlog.wrap_logger(
            structlog.WriteLogger(stream),
            processors=[
                add_request_id,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _scrub_path,
                structlog.processors.JSONRenderer(),
            ],
            context_class=dict,
            logger_name="modelbank.http",
        )
    return handler


def unconfigure(handler: logging.Handler) -> None:
    """Undo :func:`configure` (tests)."""
    global _request_log
    _request_log = None
    root = logging.getLogger()
    root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()


def get_logger(name: str) -> Any:
    """A structlog logger named ``name`` (``log.info("event", key=value)``)."""
    return structlog.stdlib.get_logger(name)


__all__ = [
    "REDACTED",
    "add_request_id",
    "bind_request",
    "configure",
    "current_request_id",
    "get_logger",
    "redact",
    "request_log",
    "scrub",
    "unbind_request",
    "unconfigure",
]
