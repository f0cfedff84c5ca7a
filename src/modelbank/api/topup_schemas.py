"""HTTP bodies of auto top-up and email-notice routes (issue 13)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StrictBool, StrictInt

from modelbank.api.schemas import MAX_UCR, Id, Strict, Ucr
from modelbank.money import format_credits, format_usd
from modelbank.notices.service import MAX_EMAIL_LENGTH, Recipient
from modelbank.wallets.autotopup import MAX_CAP_COUNT, AutoTopupInfo

Uusd = Annotated[StrictInt, Field(ge=0, le=MAX_UCR, description="micro-dollars (1 USD = 10⁶ µUSD)")]


class AutoTopupIn(Strict):
    """Auto top-up: buy ``package_id`` when the available balance falls below
    ``threshold_ucr``, at most ``monthly_cap_count`` times and ``monthly_cap_uusd`` µUSD per
    calendar month (UTC)."""

    enabled: StrictBool
    threshold_ucr: Ucr
    package_id: Id
    monthly_cap_count: Annotated[StrictInt, Field(ge=0, le=MAX_CAP_COUNT)]
    monthly_cap_uusd: Uusd


class AutoTopupOut(BaseModel):
    user_id: int
    enabled: bool
    threshold_ucr: int
    threshold: str
    package_id: int | None
    monthly_cap_count: int
    monthly_cap_uusd: int
    monthly_cap: str
    provider: str = Field(description="the payment provider top-ups use: stripe or manual")
    has_payment_method: bool = Field(description="a card is saved with Stripe")
    consecutive_failures: int
    last_error: str | None
    disabled_reason: str | None = Field(description="failures: it switched itself off")
    pending: bool = Field(description="a crossing asked for a top-up not yet settled")


def auto_topup_out(info: AutoTopupInfo, provider: str) -> AutoTopupOut:
    return AutoTopupOut(
        user_id=info.user_id,
        enabled=info.enabled,
        threshold_ucr=info.threshold_ucr,
        threshold=format_credits(info.threshold_ucr),
        package_id=info.package_id,
        monthly_cap_count=info.monthly_cap_count,
        monthly_cap_uusd=info.monthly_cap_uusd,
        monthly_cap=format_usd(info.monthly_cap_uusd),
        provider=provider,
        has_payment_method=info.has_payment_method,
        consecutive_failures=info.consecutive_failures,
        last_error=info.last_error,
        disabled_reason=info.disabled_reason,
        pending=info.triggered_at is not None,
    )


class PaymentMethodSetupOut(BaseModel):
    checkout_url: str = Field(description="Stripe Checkout (setup mode): the user saves a card")
    session_id: str


class EmailNoticesIn(Strict):
    email: Annotated[str, Field(min_length=3, max_length=MAX_EMAIL_LENGTH)]
    enabled: StrictBool = True


class EmailNoticesOut(BaseModel):
    user_id: int
    email: str | None
    enabled: bool
    updated_at: datetime | None


def email_notices_out(user_id: int, found: Recipient | None) -> EmailNoticesOut:
    if found is None:
        return EmailNoticesOut(user_id=user_id, email=None, enabled=False, updated_at=None)
    return EmailNoticesOut(
        user_id=user_id, email=found.email, enabled=found.enabled, updated_at=found.updated_at
    )
