"""Render and send email notices (the ``email`` task handler; see :mod:`modelbank.notices`).

Templates are plain text, ``web/templates/email/<kind>.txt``: the first line is
``Subject: …``, then a blank line, then the body. Filters ``credits`` (µcr → "12.5 cr") and
``usd`` (µUSD → "$4.99") format amounts. Sent with :mod:`smtplib` (STARTTLS when the server
offers it and ``smtp_starttls`` is on; login when a username is set).
"""

from __future__ import annotations

import smtplib
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from modelbank.config import Settings
from modelbank.money import format_credits, format_usd

TEMPLATES = Path(__file__).resolve().parents[1] / "web" / "templates" / "email"
"""Where the email templates live (beside the dashboard's)."""

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    undefined=StrictUndefined,
    autoescape=False,  # plain-text mail, never HTML
    keep_trailing_newline=True,
)
_env.filters["credits"] = lambda ucr: format_credits(int(ucr), 2)
_env.filters["usd"] = lambda uusd: format_usd(int(uusd))


def render(kind: str, context: Mapping[str, Any]) -> tuple[str, str]:
    """``(subject, body)`` of notice ``kind`` with ``context``. Raises
    ``jinja2.TemplateNotFound`` / ``UndefinedError`` for a bad kind or context."""
    text = _env.get_template(f"{kind}.txt").render(**context)
    head, _, body = text.partition("\n\n")
    subject = head.removeprefix("Subject:").strip()
    return subject, body.strip() + "\n"


def build_message(
    settings: Settings, to: str, kind: str, context: Mapping[str, Any]
) -> EmailMessage:
    """The email of one notice."""
    subject, body = render(kind, context)
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


def send(settings: Settings, message: EmailMessage) -> None:
    """Send ``message`` through ``settings.smtp_*``. Raises ``OSError`` /
    ``smtplib.SMTPException`` on failure (the task is retried)."""
    assert settings.smtp_host is not None
    with smtplib.SMTP(
        settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s
    ) as smtp:
        smtp.ehlo()
        if settings.smtp_starttls and (smtp.has_extn("starttls") or settings.smtp_username):
            smtp.starttls()
            smtp.ehlo()
        if settings.smtp_username:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            smtp.login(settings.smtp_username, password)
        smtp.send_message(message)


def handler(settings: Settings) -> Any:
    """The ``email`` task handler for :func:`modelbank.tasks.service.run_due`: render and
    send; without ``smtp_host`` the task is done without sending (notices are optional)."""

    def run(task_id: int, user_id: int | None, payload: Mapping[str, Any]) -> None:
        if settings.smtp_host is None:
            return
        message = build_message(settings, payload["to"], payload["kind"], payload["context"])
        message["Message-ID"] = (
            f"<modelbank-notice-{task_id}@{settings.smtp_from.rpartition('@')[2]}>"
        )
        send(settings, message)

    return run
