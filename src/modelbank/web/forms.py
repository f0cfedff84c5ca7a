"""Reading the dashboard's HTML forms: the parsed form as a dependency, typed fields, and
amounts, rates and dates typed by people (credits and dollars, turned into µcr / µUSD
exactly). A bad field raises :class:`~modelbank.errors.InvalidInput` (shown on the form's
page).

Forms that move credits or create money records are submitted once
(:func:`submit_once`, :func:`start_once`): each carries a one-time ``form_key`` and the
operation runs through the idempotency store (DESIGN §12), so a double click or a replayed
POST repeats nothing and lands on the same page with the same message."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from modelbank.errors import IdempotencyConflict, InvalidInput
from modelbank.idempotency import service as idempotency
from modelbank.money import UCR_PER_CREDIT, UUSD_PER_USD, mul
from modelbank.pricing.formulas import Rates
from modelbank.web.render import flash_redirect, redirect
from modelbank.web.session import CSRF_FIELD, FORM_KEY_FIELD, Viewer, state_of

MAX_FIELD_LENGTH = 2_000
"""Longest text field accepted (names, slugs, categories are far shorter)."""
MAX_FORM_NUMBER = Decimal(10) ** 12
"""Largest rate or amount a form accepts (credits or dollars): beyond it is a typo."""


async def form_data(request: Request) -> FormData:
    """The request's form (parsed once; the CSRF check reads the same one)."""
    return await request.form()


Form = Annotated[FormData, Depends(form_data)]


def text_field(form: FormData, name: str, *, required: bool = False, label: str = "") -> str:
    """A text field, stripped; "" when absent. Raises :class:`InvalidInput` when
    ``required`` and blank, longer than :data:`MAX_FIELD_LENGTH`, or holding a NUL
    character (PostgreSQL cannot store one)."""
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if "\x00" in text:
        raise InvalidInput(f"{label or name} must not contain NUL characters")
    if required and not text:
        raise InvalidInput(f"{label or name} is required")
    if len(text) > MAX_FIELD_LENGTH:
        raise InvalidInput(f"{label or name} is too long")
    return text


def optional_text(form: FormData, name: str) -> str | None:
    """A text field, stripped; None when blank."""
    return text_field(form, name) or None


def int_field(form: FormData, name: str, label: str = "") -> int:
    """A positive 64-bit integer field (an id). Raises :class:`InvalidInput`."""
    text = text_field(form, name, required=True, label=label)
    return _positive_int(text, label or name)


def optional_int(form: FormData, name: str, label: str = "") -> int | None:
    """A positive integer field, None when blank. Raises :class:`InvalidInput`."""
    text = text_field(form, name, label=label)
    return _positive_int(text, label or name) if text else None


def int_list(form: FormData, name: str, label: str = "") -> list[int]:
    """Every value of a repeated integer field (checkboxes), in order, without repeats."""
    values = [v for v in form.getlist(name) if isinstance(v, str) and v.strip()]
    return list(dict.fromkeys(_positive_int(v.strip(), label or name) for v in values))


def checkbox(form: FormData, name: str) -> bool:
    """Whether a checkbox was ticked (present with any value)."""
    return form.get(name) is not None


def _positive_int(text: str, label: str) -> int:
    if not text.isdigit() or len(text) > 19 or not 1 <= int(text) < 2**63:
        raise InvalidInput(f"{label} must be a positive whole number")
    return int(text)


# ---------------------------------------------------------------- amounts and dates


def decimal_field(text: str | None, label: str) -> Decimal | None:
    """A non-negative decimal typed in a form (``,`` thousands separators allowed); None
    when blank. Raises :class:`InvalidInput` naming ``label``."""
    if text is None or not text.strip():
        return None
    try:
        value = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        raise InvalidInput(f"{label}: {text.strip()[:40]!r} is not a number") from None
    if not value.is_finite() or value < 0 or value > MAX_FORM_NUMBER:
        raise InvalidInput(f"{label} must be a number between 0 and 10^12")
    return value


def credits_rates(fields: dict[str, str | None]) -> Rates | None:
    """A µcr rate card from credit amounts typed in ``price_input`` / ``price_output`` /
    ``price_cached`` / ``price_request`` / ``price_unit`` (credits per 1M tokens, per
    request, per unit); None when all are blank. Exact: credits × 1,000,000."""
    return _rates(fields, "price", UCR_PER_CREDIT, "credits")


def usd_rates(fields: dict[str, str | None]) -> Rates | None:
    """A µUSD cost card from dollar amounts typed in ``cost_*`` fields; None when blank."""
    return _rates(fields, "cost", UUSD_PER_USD, "dollars")


def _rates(fields: dict[str, str | None], prefix: str, scale: int, unit: str) -> Rates | None:
    parsed = {
        name: decimal_field(fields.get(f"{prefix}_{name}"), f"{name} ({unit})")
        for name in ("input", "output", "cached", "request", "unit")
    }
    if all(v is None for v in parsed.values()):
        return None

    def scaled(value: Decimal | None) -> Decimal:
        return Decimal(0) if value is None else mul(value, scale)

    return Rates(
        input_per_mtok=scaled(parsed["input"]),
        output_per_mtok=scaled(parsed["output"]),
        cache_read_per_mtok=None if parsed["cached"] is None else scaled(parsed["cached"]),
        per_request=scaled(parsed["request"]),
        per_unit=scaled(parsed["unit"]),
    )


def credits_amount(text: str | None, label: str) -> int | None:
    """Credits typed in a form as µcr (must be a whole number of µcr); None when blank."""
    value = decimal_field(text, label)
    if value is None:
        return None
    ucr = mul(value, UCR_PER_CREDIT)
    if ucr != ucr.to_integral_value():
        raise InvalidInput(f"{label} has more than 6 decimals")
    return int(ucr)


def date_range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """Form dates ``YYYY-MM-DD`` as a UTC range ``[since 00:00, until + 1 day 00:00)``: the
    ``to`` day is included. Raises :class:`InvalidInput`."""

    def parse(text: str | None, label: str) -> date | None:
        if not text:
            return None
        try:
            return date.fromisoformat(text.strip())
        except ValueError:
            raise InvalidInput(f"{label} must be a date (YYYY-MM-DD)") from None

    start, end = parse(since, "from"), parse(until, "to")
    if start and end and end < start:
        raise InvalidInput("the 'to' date is before the 'from' date")
    return (
        None if start is None else datetime.combine(start, time.min, tzinfo=UTC),
        None if end is None else datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
    )


# ---------------------------------------------------------------- submitted once

FORM_KEY_PREFIX = "web:"
"""Dashboard form keys are stored as ``web:<form_key>`` beside the API's Idempotency-Keys
of the same principal."""
STALE_FORM = "This form is out of date: reload the page and submit it again. Nothing was done."
REUSED_FORM = (
    "This form was already submitted with other values: reload the page to send a new one."
    " Nothing more was done."
)
Transaction = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True, slots=True)
class Done:
    """Where a submitted form ends: a 303 to ``url`` with the flash message ``text``
    (``kind`` ``ok`` or ``error``), or without one when ``text`` is None (e.g. to Stripe
    Checkout). Stored as the idempotent response, so a replay ends the same way."""

    url: str
    text: str | None = None
    kind: str = "ok"

    def response(self, request: Request) -> Response:
        """The redirect (with its flash message)."""
        if self.text is None:
            return redirect(self.url)
        return flash_redirect(request, self.url, self.text, kind=self.kind)

    @classmethod
    def of(cls, body: dict[str, Any]) -> Done:
        """The :class:`Done` stored as ``body`` by :func:`submit_once`."""
        return cls(str(body["url"]), body.get("text"), str(body.get("kind", "ok")))


@dataclass(frozen=True, slots=True)
class _Claim:
    scope: str
    key: str
    request_hash: str


def _claim(request: Request, viewer: Viewer, form: FormData) -> _Claim:
    """The idempotency scope, key and fingerprint of a posted form: the signed-in
    principal's scope, ``web:<form_key>``, and the route with the form's other fields.
    Raises :class:`InvalidInput` (:data:`STALE_FORM`) when the form has no valid key."""
    given = form.get(FORM_KEY_FIELD)
    key = FORM_KEY_PREFIX + (given.strip() if isinstance(given, str) else "")
    if key == FORM_KEY_PREFIX:
        raise InvalidInput(STALE_FORM)
    try:
        idempotency.check_key(key)
    except InvalidInput:
        raise InvalidInput(STALE_FORM) from None
    fields = sorted(
        [name, value]
        for name, value in form.multi_items()
        if name not in (CSRF_FIELD, FORM_KEY_FIELD) and isinstance(value, str)
    )
    digest = idempotency.fingerprint(request.method, request.url.path, fields)
    return _Claim(viewer.principal.scope, key, digest)


def _lookup(session: Session, claim: _Claim) -> idempotency.StoredResponse | None:
    try:
        return idempotency.lookup(session, claim.scope, claim.key, claim.request_hash)
    except IdempotencyConflict:
        raise IdempotencyConflict(REUSED_FORM, key=claim.key) from None


def submit_once(
    request: Request, viewer: Viewer, form: FormData, run: Callable[[Session], Done]
) -> Response:
    """Run ``run(session)`` in one write transaction, once per form key: the first time its
    :class:`Done` is stored with it (same transaction: both or neither); the same form
    posted again gets that :class:`Done` and nothing is repeated. An error raised by
    ``run`` stores nothing (the form can be corrected and sent again). Raises
    :class:`InvalidInput` (no ``form_key``),
    :class:`~modelbank.errors.IdempotencyConflict` (the key came with other fields) and
    what ``run`` raises."""
    claim = _claim(request, viewer, form)
    with state_of(request).db.write() as session:
        stored = _lookup(session, claim)
        if stored is not None:
            done = Done.of(stored.body)
        else:
            done = run(session)
            body = asdict(done)
            idempotency.store(session, claim.scope, claim.key, claim.request_hash, 303, body)
    return done.response(request)


class _Replayed(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__("form already submitted")
        self.body = body


def start_once(
    request: Request,
    viewer: Viewer,
    form: FormData,
    run: Callable[[Transaction], Done],
    *,
    recorded: Callable[[Session], dict[str, Any]],
    replay: Callable[[dict[str, Any]], Done],
) -> Response:
    """:func:`submit_once` for an operation made of several short write transactions
    (buying credits: no lock is held while the payment provider is called). ``run`` gets
    the transaction factory to use; the key is looked up and stored in its *first*
    transaction, with ``recorded(session)`` (called at the end of that transaction) as
    the stored body. A replay skips ``run`` and ends with ``replay(body)``. Raises what
    :func:`submit_once` raises."""
    claim = _claim(request, viewer, form)
    db = state_of(request).db
    opened = False

    @contextmanager
    def first() -> Iterator[Session]:
        with db.write() as session:
            stored = _lookup(session, claim)
            if stored is not None:
                raise _Replayed(stored.body)
            yield session
            body = recorded(session)
            idempotency.store(session, claim.scope, claim.key, claim.request_hash, 303, body)

    def transaction() -> AbstractContextManager[Session]:
        nonlocal opened
        if opened:
            return db.write()
        opened = True
        return first()

    try:
        done = run(transaction)
    except _Replayed as hit:
        done = replay(hit.body)
    return done.response(request)
