"""Request and response bodies of the HTTP API (the HTTP contract, so it lives beside the
routes; domains know nothing of it). Amounts: ``*_ucr`` integers in micro-credits with a
display string beside them; costs ``*_uusd`` in micro-dollars; times UTC ISO 8601."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from modelbank.catalog.costs import Mode
from modelbank.catalog.tiers import Tier
from modelbank.metering.events import (
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    METADATA_MAX_KEY_LENGTH,
    METADATA_MAX_KEYS,
    metadata_problem,
)
from modelbank.money import format_credits, format_usd

MAX_UCR = 10**15
"""Largest amount accepted in one request (1e9 credits): keeps sums far from 2⁶³."""
MAX_COUNT = 10**12
"""Largest token or unit count of one usage event."""

MAX_ID = 2**63 - 1
"""Ids are signed 64-bit integers in the database."""
Id = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _text_only(value: Any) -> Any:
    """A timestamp arrives as ISO 8601 text: a number is refused rather than read as Unix
    time (``"occurred_at": 12345`` was 1970-01-01T03:25:45Z, issue 16 D6)."""
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO 8601 string with a time zone")
    return value


def _in_range(value: datetime) -> datetime:
    if not EARLIEST <= value <= LATEST:
        raise ValueError("must be between 1970-01-01 and 9000-01-01 (UTC)")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_text_only), AfterValidator(_in_range)]
"""A timestamp with a time zone (naive ones are refused), 1970 … 9000."""
NO_NUL = r"^[^\x00]*$"
"""Pattern for query strings: PostgreSQL cannot store NUL characters."""

Ucr = Annotated[
    StrictInt, Field(ge=0, le=MAX_UCR, description="micro-credits (1 credit = 10⁶ µcr)")
]
PositiveUcr = Annotated[StrictInt, Field(gt=0, le=MAX_UCR, description="micro-credits, > 0")]
Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]


def _bounded_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value:
        problem = metadata_problem(value)
        if problem is not None:
            raise ValueError(problem)
    return value


Metadata = Annotated[
    dict[str, Any] | None,
    AfterValidator(_bounded_metadata),
    Field(
        description=f"labels: at most {METADATA_MAX_KEYS} keys (all depths) of at most"
        f" {METADATA_MAX_KEY_LENGTH} characters, {METADATA_MAX_DEPTH} levels deep,"
        f" {METADATA_MAX_BYTES} bytes as JSON; strings are stored cut to 100 characters",
    ),
]


def _finite_rate(value: Decimal) -> Decimal:
    if not value.is_finite() or value < 0 or value > MAX_UCR:
        raise ValueError("must be a finite number between 0 and 1e15")
    return value


Rate = Annotated[
    Decimal,
    AfterValidator(_finite_rate),
    Field(description="a rate ≥ 0 as a number or decimal string (exact)"),
]
Multiplier = Annotated[
    Decimal,
    AfterValidator(_finite_rate),
    Field(description="a multiplier ≥ 0 as a number or decimal string"),
]


def _no_nul(value: Any) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_nul(k)
            _no_nul(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _no_nul(v)


class Strict(BaseModel):
    """Bodies reject unknown fields (a typo is an error, not a silent default) and NUL
    characters in any string (PostgreSQL cannot store them)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _strings_without_nul(cls, value: Any) -> Any:
        _no_nul(value)
        return value


def credits(ucr: int) -> str:
    return format_credits(ucr)


class Problem(BaseModel):
    """An RFC 9457 problem (``application/problem+json``); the error's context fields (e.g.
    ``available_ucr``, ``needed_ucr``) and, for 422, ``errors`` may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="urn:modelbank:problem:<code>")
    title: str
    status: int
    detail: str
    code: str = Field(description="stable snake_case error code")


# --- users and keys -------------------------------------------------------------------------


class UserIn(Strict):
    external_id: str = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")
    display_name: str | None = Field(default=None, max_length=200)
    referral_code: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="another user's referral code: both get a bonus on this user's first purchase",
    )


class UserOut(BaseModel):
    id: int
    external_id: str
    display_name: str
    created_at: datetime


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


class KeyIn(Strict):
    """A new user key. ``limit_ucr`` (µcr; none: no limit) caps what the key may charge per
    ``limit_period`` (default ``never``: a lifetime budget); periods are UTC calendar days,
    ISO weeks from Monday, calendar months."""

    name: str = Field(default="", max_length=200, pattern=NO_NUL)
    limit_ucr: StrictInt | None = Field(default=None, ge=0, le=MAX_UCR)
    limit_period: Literal["day", "week", "month", "never"] | None = None

    @model_validator(mode="after")
    def _period_needs_limit(self) -> KeyIn:
        if self.limit_period is not None and self.limit_ucr is None:
            raise ValueError("limit_period needs limit_ucr")
        return self


class KeyLimitIn(Strict):
    """A change to a key's spend limit: ``limit_ucr`` (µcr; ``null``: the key loses its limit)
    and/or ``limit_period``; a field left out stays as it is. What was spent in the current
    period stays spent (also when the period changes); a limit below it leaves 0."""

    limit_ucr: StrictInt | None = Field(default=None, ge=0, le=MAX_UCR)
    limit_period: Literal["day", "week", "month", "never"] | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> KeyLimitIn:
        if not self.model_fields_set:
            raise ValueError("give limit_ucr or limit_period")
        if self.removes_limit and self.limit_period is not None:
            raise ValueError("limit_ucr null removes the limit: give no limit_period")
        return self

    @property
    def removes_limit(self) -> bool:
        """``limit_ucr`` was sent as ``null``."""
        return "limit_ucr" in self.model_fields_set and self.limit_ucr is None


class ServiceKeyIn(Strict):
    role: Literal["admin", "service"]
    name: str = Field(default="", max_length=200)


class KeyOut(BaseModel):
    id: int
    role: str
    user_id: int | None
    name: str
    prefix: str
    key: str = Field(description="the secret: shown once, store it now")
    created_at: datetime
    limit_ucr: int | None = Field(description="the spend limit per period (µcr); null: none")
    limit_period: str | None = Field(description="day, week, month or never; null: no limit")


class KeyLimitOut(BaseModel):
    """A key's spend limit now: µcr spent in the current period, reserved by pending holds,
    left (never below 0), and when the period resets (null: never)."""

    limit_ucr: int
    limit: str
    period: str
    spent_ucr: int
    spent: str
    reserved_ucr: int
    left_ucr: int
    left: str
    resets_at: datetime | None


class KeyInfoOut(BaseModel):
    """A key as listed (never its secret)."""

    id: int
    role: str
    user_id: int | None
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    limit: KeyLimitOut | None = Field(description="null: the key has no spend limit")


class KeyList(BaseModel):
    items: list[KeyInfoOut]


# --- wallets and ledger ---------------------------------------------------------------------


class GrantIn(Strict):
    amount_ucr: PositiveUcr
    source: Literal["bonus", "purchased"] = "bonus"
    expires_at: Timestamp | None = Field(
        default=None, description="recorded with the grant; must be in the future"
    )


class GrantOut(BaseModel):
    transfer_id: int
    user_id: int
    amount_ucr: int
    amount: str
    source: str
    expires_at: datetime | None
    balance_ucr: int
    balance: str


class WalletOut(BaseModel):
    user_id: int
    balance_ucr: int
    balance: str
    pending_ucr: int
    pending: str
    available_ucr: int
    available: str
    earnings_ucr: int = Field(description="unpaid creator earnings (earnings account)")
    earnings: str


class TransferOut(BaseModel):
    id: int
    code: str
    kind: str
    direction: Literal["in", "out"]
    amount_ucr: int
    amount: str
    debit_account_id: int
    credit_account_id: int
    pending_id: int | None
    reverses_id: int | None
    ref_type: str | None
    ref_id: int | None
    created_at: datetime
    metadata: dict[str, Any] | None


class TransferPage(BaseModel):
    items: list[TransferOut]
    next_cursor: str | None


# --- models ---------------------------------------------------------------------------------


class PriceIn(Strict):
    input_ucr_per_mtok: Rate = Decimal(0)
    output_ucr_per_mtok: Rate = Decimal(0)
    cache_read_ucr_per_mtok: Rate | None = None
    per_request_ucr: Rate = Decimal(0)
    per_unit_ucr: Rate = Decimal(0)


class CostIn(Strict):
    input_uusd_per_mtok: Rate = Decimal(0)
    output_uusd_per_mtok: Rate = Decimal(0)
    cache_read_uusd_per_mtok: Rate | None = None
    per_request_uusd: Rate = Decimal(0)
    per_unit_uusd: Rate = Decimal(0)


class EarningsRuleIn(Strict):
    per_use_ucr: Ucr = 0
    per_token_ucr: Rate = Decimal(0)
    share_bps: StrictInt | None = Field(default=None, ge=0, le=10_000)
    popularity_tiers: (
        list[tuple[Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)], Multiplier]] | None
    ) = None
    type_multipliers: (
        dict[Annotated[str, Field(min_length=1, max_length=32)], Multiplier] | None
    ) = None


CharacterId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^\s\x00]([^\x00]*[^\s\x00])?$",
        description="the operator's character id (1–200 characters, no surrounding spaces)",
    ),
]


class ModelIn(Strict):
    slug: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    provider: str = Field(default="platform", min_length=1, max_length=64)
    provider_model_ref: str | None = Field(default=None, max_length=200)
    mode: Mode = Mode.CHAT
    category: str = Field(default="General", min_length=1, max_length=64)
    tier: Tier | None = None
    demand: Literal["high", "medium", "low"] = "medium"
    creator_id: StrictInt | None = Field(default=None, ge=1, le=MAX_ID)
    is_premium: StrictBool = False
    access_price_ucr: Ucr = 0
    character_id: CharacterId | None = Field(
        default=None,
        description="the character this model answers as: usage may then be charged by"
        " character id; unique among active models (409 character_in_use)",
    )
    price: PriceIn | None = None
    cost: CostIn | None = None
    earnings_rule: EarningsRuleIn | None = None


class ModelPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    category: str | None = Field(default=None, min_length=1, max_length=64)
    tier: Tier | None = None
    demand: Literal["high", "medium", "low"] | None = None
    is_premium: StrictBool | None = None
    access_price_ucr: Ucr | None = None
    is_active: StrictBool | None = None
    character_id: CharacterId | None = Field(
        default=None,
        description="link to this character (409 character_in_use when another active model"
        " has it); an explicit null unlinks; absent leaves the link as it is",
    )
    price: PriceIn | None = Field(default=None, description="a new explicit price version")
    earnings_rule: EarningsRuleIn | None = Field(
        default=None, description="a new earnings rule version"
    )


class PriceOut(BaseModel):
    version: int
    effective_from: datetime
    source: str
    input_ucr_per_mtok: str
    output_ucr_per_mtok: str
    cache_read_ucr_per_mtok: str | None
    per_request_ucr: str
    per_unit_ucr: str
    input_uusd_per_mtok: str
    output_uusd_per_mtok: str
    per_request_uusd: str
    per_unit_uusd: str


class EarningsRuleOut(BaseModel):
    version: int
    per_use_ucr: int
    per_token_ucr: str
    share_bps: int
    popularity_tiers: list[tuple[int, str]]
    type_multipliers: dict[str, str]
    other_multiplier: str


class ModelOut(BaseModel):
    # Every field is always sent: the response schema lists them all as required.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    id: int
    slug: str
    name: str
    provider: str
    provider_model_ref: str
    mode: str
    category: str
    tier: str
    demand: str
    creator_id: int | None
    is_active: bool
    is_premium: bool
    access_price_ucr: int
    access_price: str
    character_id: str | None = Field(description="the character linked to this model")
    price: PriceOut | None
    purchased: bool = Field(description="the caller bought access (premium models)")
    owned: bool = Field(description="the caller created the model")
    earnings_rule: EarningsRuleOut | None = None


class ModelPage(BaseModel):
    items: list[ModelOut]
    next_cursor: str | None


class PurchaseIn(Strict):
    user_id: StrictInt | None = Field(
        default=None, ge=1, le=MAX_ID, description="admin/service keys: the buyer; user keys: omit"
    )


class AccessOut(BaseModel):
    user_id: int
    model_id: int
    price_ucr: int
    price: str
    transfer_id: int | None
    purchased_at: datetime
    balance_ucr: int
    balance: str


# --- usage ----------------------------------------------------------------------------------


ModelRef = Id | Annotated[str, Field(min_length=1, max_length=200)]
"""A model by id or slug."""


class UsageIn(Strict):
    """One usage event; the model is named by ``model`` (id or slug) or by ``character_id``
    (the active model linked to that character), exactly one of the two."""

    user_id: Id
    model: ModelRef | None = Field(default=None, description="model id or slug")
    character_id: CharacterId | None = Field(
        default=None, description="instead of model: charge the active model of this character"
    )
    usage_type: str = Field(default="chat", min_length=1, max_length=32)
    input_tokens: Count = 0
    output_tokens: Count = 0
    cached_input_tokens: Count = 0
    units: Count = 0
    occurred_at: Timestamp | None = None
    metadata: Metadata = None

    @model_validator(mode="after")
    def _one_model_reference(self) -> UsageIn:
        if (self.model is None) == (self.character_id is None):
            raise ValueError("give exactly one of model and character_id")
        return self


class BatchEventIn(UsageIn):
    idempotency_key: str = Field(min_length=1, max_length=200)


class BatchIn(Strict):
    events: list[BatchEventIn] = Field(min_length=1, max_length=1000)


class EarningOut(BaseModel):
    user_id: int
    amount_ucr: int


class UsageOut(BaseModel):
    usage_id: int
    model_id: int
    charge_ucr: int
    charge: str
    cost_uusd: int
    cost: str
    balance_ucr: int
    balance: str
    earnings: list[EarningOut]
    price_version_id: int | None


class BatchError(BaseModel):
    code: str
    detail: str


class BatchResultOut(BaseModel):
    idempotency_key: str
    status: Literal["charged", "replayed", "rejected"]
    usage_id: int | None
    charge_ucr: int
    balance_ucr: int | None
    earnings: list[EarningOut]
    error: BatchError | None


class BatchOut(BaseModel):
    charged: int
    replayed: int
    rejected: int
    results: list[BatchResultOut]


# --- analytics ------------------------------------------------------------------------------


class ModelEarningOut(BaseModel):
    model_id: int
    name: str
    uses: int
    tokens: int
    earnings_ucr: int
    earnings: str
    last_used_at: datetime | None


class EarningsOut(BaseModel):
    user_id: int
    period: str
    total_ucr: int
    total: str
    total_tokens: int
    total_uses: int
    models: list[ModelEarningOut]


class CategoryOut(BaseModel):
    category: str
    uses: int
    spent_ucr: int
    spent: str


class DayOut(BaseModel):
    day: date
    uses: int
    spent_ucr: int
    earned_ucr: int


class ModelAnalyticsOut(BaseModel):
    user_id: int
    models_available: int
    models_purchased: int
    models_owned: int
    credits_spent_ucr: int
    credits_spent: str
    usage_spent_ucr: int
    access_spent_ucr: int
    earnings_from_owned_ucr: int
    earnings_from_owned: str
    most_profitable_model: ModelEarningOut | None
    by_category: list[CategoryOut]
    activity_30d: list[DayOut]


class PricingRowOut(BaseModel):
    model_id: int
    slug: str
    name: str
    mode: str
    category: str
    tier: str
    demand: str
    is_active: bool
    is_premium: bool
    price: PriceOut | None
    markup: str | None = Field(description="tier markup × demand markup of the version in force")
    margin_bps: int | None = Field(
        description="margin on 1M input + 1M output tokens + 1 request + 1 unit"
    )


class PricingPage(BaseModel):
    items: list[PricingRowOut]
    next_cursor: str | None


class RecalculateIn(Strict):
    model_ids: list[Id] | None = Field(
        default=None, max_length=10_000, description="None: every active model (or the filters)"
    )
    category: str | None = Field(default=None, max_length=64)
    mode: Mode | None = None
    include_explicit: StrictBool = False


class RecalculateOut(BaseModel):
    updated: list[PricingRowOut]
    unchanged: list[int]
    skipped: dict[str, str]


class RecognitionOut(BaseModel):
    """Credits burned by usage (net of usage refunds), by grant source."""

    purchased_ucr: int
    purchased: str
    purchased_basis_uusd: int = Field(description="cash basis of the purchased credits burned")
    purchased_basis: str
    bonus_ucr: int
    bonus: str
    by_source_ucr: dict[str, int]


class StatsOut(BaseModel):
    usage_revenue_ucr: int
    usage_revenue: str
    access_revenue_ucr: int
    provider_cost_uusd: int
    provider_cost: str
    margin_ucr: int
    margin: str
    creator_earnings_ucr: int
    earnings_owed_ucr: int
    wallet_balances_ucr: int
    users: int
    active_models: int
    usage_events: int
    revenue_recognition: RecognitionOut = Field(
        description="usage revenue split by the grants it burned: purchased credits (with"
        " their cash basis, the revenue to recognise) and bonus credits"
    )
    usage_refunded_ucr: int = Field(description="µcr of usage charges refunded")


__all__ = ["credits", "format_usd"]
