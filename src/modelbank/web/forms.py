"""Reading the dashboard's HTML forms: the parsed form as a dependency, typed fields, and
amounts, rates and dates typed by people (credits and dollars, turned into µcr / µUSD
exactly). A bad field raises :class:`~modelbank.errors.InvalidInput` (shown on the form's
page)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from modelbank.errors import InvalidInput
from modelbank.money import UCR_PER_CREDIT, UUSD_PER_USD, mul
from modelbank.pricing.formulas import Rates

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
    ``required`` and blank, or when longer than :data:`MAX_FIELD_LENGTH`."""
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
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
