"""Presentation for the dashboard: display strings, chart specifications and table rows.
No decisions about money here: amounts arrive computed by the services and are only
formatted (exactly: integer µcr / µUSD through :mod:`modelbank.money`).

Charts are plain Plotly figure dicts ``{"data": [...], "layout": {...}}`` rendered in the
browser by ``static/app.js``; their y values are credits as JSON numbers (display only,
the exact amounts are in the table beside each chart).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from modelbank.analytics.service import DayActivity, ModelEarningLine
from modelbank.catalog.service import ModelInfo
from modelbank.db.base import utcnow
from modelbank.money import UCR_PER_CREDIT, UUSD_PER_USD, format_credits, format_usd
from modelbank.pricing.admin import PricingRow
from modelbank.pricing.formulas import Rates
from modelbank.wallets.alerts import AlertState

ACCENT = "#4338ca"
ACCENT_2 = "#0f766e"


# ---------------------------------------------------------------- display strings


def _trim(text: str, keep: int = 2) -> str:
    """Drop trailing zeros of a decimal string, keeping ``keep`` decimals."""
    whole, dot, frac = text.partition(".")
    if not dot:
        return text
    frac = frac.rstrip("0")
    frac = frac + "0" * max(0, keep - len(frac))
    return f"{whole}.{frac}" if frac else whole


def credits(amount_ucr: int, keep: int = 2) -> str:
    """µcr as credits, exact, thousands separated, at least ``keep`` decimals:
    ``1,234.50``."""
    return _trim(format_credits(amount_ucr).removesuffix(" cr"), keep)


def usd(amount_uusd: int, places: int | None = None) -> str:
    """µUSD as dollars: exact with at least 2 decimals (``$4.99``, ``$0.075``), or rounded
    half-even to ``places`` decimals (``$0.0900``)."""
    if places is not None:
        return format_usd(amount_uusd, places=places)
    return _trim(format_usd(amount_uusd, places=6))


def when(moment: datetime | None) -> str:
    """A UTC timestamp to the minute: ``2025-01-31 14:05 UTC``; ``—`` for None."""
    if moment is None:
        return "—"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def day(moment: date | datetime | None) -> str:
    """A date: ``2025-01-31``; ``—`` for None."""
    return "—" if moment is None else moment.strftime("%Y-%m-%d")


def percent_bps(bps: int | None) -> str:
    """Basis points as a percentage with one decimal: ``3825`` → ``38.3%``."""
    if bps is None:
        return "—"
    return f"{Decimal(bps) / 100:.1f}%"


def multiplier(value: Decimal | None) -> str:
    """A markup multiplier: ``×1.65``."""
    if value is None:
        return "—"
    text = f"{value.normalize():f}"
    return "×" + _trim(text if "." in text else text + ".0", keep=2)


def decimal_text(value: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: ``2.5``, ``10``."""
    text = f"{value.normalize():f}"
    return _trim(text, keep=0)


def rate_credits(rate_ucr: Decimal) -> str:
    """A µcr rate as credits (exact): ``2_500_000`` → ``2.5``."""
    return decimal_text(rate_ucr / UCR_PER_CREDIT)


def rate_usd(rate_uusd: Decimal) -> str:
    """A µUSD rate as dollars (exact): ``150_000`` → ``0.15``."""
    return decimal_text(rate_uusd / UUSD_PER_USD)


def rate_summary(rates: Rates, *, money: str) -> str:
    """The non-zero rates of a card, e.g. ``in 2.5 · out 10 /1M tok · 8 /unit``; ``money``
    is ``credits`` (µcr rates) or ``usd`` (µUSD rates, ``$`` prefixed)."""
    show = rate_credits if money == "credits" else rate_usd
    prefix = "" if money == "credits" else "$"
    parts = []
    if rates.input_per_mtok or rates.output_per_mtok:
        parts.append(
            f"in {prefix}{show(rates.input_per_mtok)} · out {prefix}{show(rates.output_per_mtok)}"
            " /1M tok"
        )
    if rates.per_unit:
        parts.append(f"{prefix}{show(rates.per_unit)} /unit")
    if rates.per_request:
        parts.append(f"{prefix}{show(rates.per_request)} /request")
    return " · ".join(parts) or ("free" if money == "credits" else "none")


def price_form_values(rates: Rates | None) -> dict[str, str]:
    """A price card as the edit form's fields (credits)."""
    if rates is None:
        return dict.fromkeys(
            ("price_input", "price_output", "price_cached", "price_request", "price_unit"), ""
        )
    return {
        "price_input": rate_credits(rates.input_per_mtok),
        "price_output": rate_credits(rates.output_per_mtok),
        "price_cached": ""
        if rates.cache_read_per_mtok is None
        else rate_credits(rates.cache_read_per_mtok),
        "price_request": rate_credits(rates.per_request),
        "price_unit": rate_credits(rates.per_unit),
    }


# ---------------------------------------------------------------- charts


def _layout(y_title: str, **extra: Any) -> dict[str, Any]:
    return {
        "margin": {"t": 16, "r": 12, "b": 48, "l": 56},
        "height": 300,
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13},
        "yaxis": {"title": {"text": y_title}, "rangemode": "tozero", "gridcolor": "#e5e7eb"},
        "xaxis": {"automargin": True},
        "showlegend": False,
        **extra,
    }


def _as_credits(amount_ucr: int) -> float:
    return amount_ucr / UCR_PER_CREDIT  # a chart coordinate, never a balance


def bar_chart(labels: Sequence[str], amounts_ucr: Sequence[int]) -> dict[str, Any]:
    """A bar chart of credit amounts by label."""
    return {
        "data": [
            {
                "type": "bar",
                "x": list(labels),
                "y": [_as_credits(a) for a in amounts_ucr],
                "marker": {"color": ACCENT},
                "hovertemplate": "%{x}: %{y:,.2f} credits<extra></extra>",
            }
        ],
        "layout": _layout("credits"),
    }


def activity_chart(days: Iterable[DayActivity]) -> dict[str, Any]:
    """Credits spent and earned per day (two lines)."""
    listed = list(days)
    x = [d.day.isoformat() for d in listed]
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "spent",
                "x": x,
                "y": [_as_credits(d.spent_ucr) for d in listed],
                "line": {"color": ACCENT, "width": 2},
                "hovertemplate": "%{x}: spent %{y:,.2f} credits<extra></extra>",
            },
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "earned",
                "x": x,
                "y": [_as_credits(d.earned_ucr) for d in listed],
                "line": {"color": ACCENT_2, "width": 2, "dash": "dot"},
                "hovertemplate": "%{x}: earned %{y:,.2f} credits<extra></extra>",
            },
        ],
        "layout": _layout(
            "credits",
            showlegend=True,
            legend={"orientation": "h", "y": 1.12, "x": 0},
            xaxis={"type": "date", "tickformat": "%b %d", "automargin": True},
        ),
    }


SERIES_COLOURS = (ACCENT, ACCENT_2, "#b45309")
"""Line colours of a multi-series chart, in order (AA contrast on white)."""


def daily_chart(
    days: Sequence[date],
    series: Sequence[tuple[str, Sequence[int]]],
    *,
    unit: str = "credits",
    bars: bool = False,
) -> dict[str, Any]:
    """One value per UTC day for each ``(name, values)`` series: µcr amounts shown as
    credits (``unit="credits"``) or plain counts (``unit="uses"``); bars for a single
    series when ``bars``, else lines (a legend when there are several)."""
    x = [d.isoformat() for d in days]
    credit_amounts = unit == "credits"
    shown = ":,.2f" if credit_amounts else ":,d"
    data = []
    for i, (name, values) in enumerate(series):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        trace: dict[str, Any] = {
            "name": name,
            "x": x,
            "y": [_as_credits(v) for v in values] if credit_amounts else list(values),
            "hovertemplate": f"%{{x}}: {name} %{{y{shown}}} {unit}<extra></extra>",
        }
        if bars:
            trace |= {"type": "bar", "marker": {"color": colour}}
        else:
            dash = ("solid", "dot", "dash")[i % 3]
            trace |= {
                "type": "scatter",
                "mode": "lines",
                "line": {"color": colour, "width": 2, "dash": dash},
            }
        data.append(trace)
    several = len(series) > 1
    return {
        "data": data,
        "layout": _layout(
            unit,
            showlegend=several,
            legend={"orientation": "h", "x": 0, "y": 1.08, "yanchor": "bottom"},
            xaxis={"type": "date", "tickformat": "%b %d", "automargin": True},
        ),
    }


def share_bps(part: int, whole: int) -> int | None:
    """``part`` as basis points of ``whole`` (a display ratio, e.g. margin ÷ revenue),
    truncated toward zero; None when ``whole`` is not positive."""
    if whole <= 0:
        return None
    return int(Decimal(part) * 10_000 / Decimal(whole))


# ---------------------------------------------------------------- tables


@dataclass(frozen=True, slots=True)
class OwnedModelRow:
    """A model the user created (or holds a stake in) with what it earned them."""

    model_id: int
    name: str
    slug: str
    category: str
    relation: str
    is_active: bool
    is_premium: bool
    uses: int
    tokens: int
    earnings_ucr: int
    last_used_at: datetime | None


def owned_rows(
    user_id: int, models: Iterable[ModelInfo], lines: Iterable[ModelEarningLine]
) -> list[OwnedModelRow]:
    """The user's models (created by them) joined with their earning lines, plus models
    they earn from through a stake; highest earnings first."""
    by_model = {line.model_id: line for line in lines}
    catalog = {m.id: m for m in models}
    rows = []
    for model_id in {m.id for m in catalog.values() if m.creator_id == user_id} | set(by_model):
        line = by_model.get(model_id)
        info = catalog.get(model_id)
        rows.append(
            OwnedModelRow(
                model_id=model_id,
                name=info.name if info else (line.name if line else str(model_id)),
                slug=info.slug if info else "",
                category=info.category if info else "",
                relation="creator" if info and info.creator_id == user_id else "stake",
                is_active=info.is_active if info else False,
                is_premium=info.is_premium if info else False,
                uses=line.uses if line else 0,
                tokens=line.tokens if line else 0,
                earnings_ucr=line.earnings_ucr if line else 0,
                last_used_at=line.last_used_at if line else None,
            )
        )
    rows.sort(key=lambda r: (-r.earnings_ucr, r.name))
    return rows


def low_balance(alert: AlertState) -> bool:
    """Whether the wallet shows its low-balance warning: the alert is on, or the available
    balance is at or below the threshold (the rule of :mod:`modelbank.wallets.alerts`, for
    a wallet no movement has re-checked yet)."""
    return alert.alerted or alert.available_ucr <= alert.threshold_ucr


def utc_now() -> datetime:
    """Now, in UTC (for "expires in" texts)."""
    return utcnow()


def expiry(expires_at: datetime | None, now: datetime) -> str:
    """``never``, ``expired`` or ``in 3 days`` / ``in 5 hours``."""
    if expires_at is None:
        return "never"
    left = expires_at - now
    if left.total_seconds() <= 0:
        return "expired"
    if left.days >= 1:
        return f"in {left.days} day{'s' if left.days != 1 else ''}"
    hours = max(1, int(left.total_seconds() // 3600))
    return f"in {hours} hour{'s' if hours != 1 else ''}"


def query_string(params: Mapping[str, object], **extra: object) -> str:
    """``?a=1&b=2`` of the non-blank ``params`` and ``extra`` ("" when none)."""
    kept = {k: str(v) for k, v in {**params, **extra}.items() if v not in (None, "")}
    return f"?{urlencode(kept)}" if kept else ""


@dataclass(frozen=True, slots=True)
class PricingView:
    """One row of the admin pricing table, formatted; ``edit`` is the edit dialog's
    field values as JSON (read by ``app.js``)."""

    row: PricingRow
    price_text: str
    cost_text: str
    source: str
    version: int | None
    edit: str


def pricing_views(rows: Iterable[PricingRow]) -> list[PricingView]:
    """Format pricing-panel rows for the table and the edit dialog."""
    out = []
    for row in rows:
        m, price = row.model, row.price
        fields: dict[str, object] = {
            "title": f"{m.name} ({m.slug})",
            "category": m.category,
            "tier": m.tier.value,
            "demand": m.demand,
            "is_premium": m.is_premium,
            "access_price": _trim(credits(m.access_price_ucr).replace(",", ""), keep=0),
            **price_form_values(price.price_ucr if price else None),
        }
        out.append(
            PricingView(
                row=row,
                price_text="no price"
                if price is None
                else rate_summary(price.price_ucr, money="credits"),
                cost_text="—" if price is None else rate_summary(price.cost_uusd, money="usd"),
                source="—" if price is None else price.source,
                version=None if price is None else price.version,
                edit=json.dumps(fields),
            )
        )
    return out


def buyable(user_id: int, models: Iterable[ModelInfo], bought: set[int]) -> list[ModelInfo]:
    """Active premium models ``user_id`` neither bought nor created, cheapest first: what
    the "models still available" table offers (free models need no purchase)."""
    found = [
        m
        for m in models
        if m.is_active and m.is_premium and m.id not in bought and m.creator_id != user_id
    ]
    found.sort(key=lambda m: (m.access_price_ucr, m.name))
    return found
